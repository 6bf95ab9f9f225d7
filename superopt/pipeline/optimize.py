"""The optimization pipeline: load, search, end-to-end A/B gate, numerical check, atomic write.

`optimize(model, output)`:
1. loads the model (`superopt.load`; dynamic dims must be fixed with `input_shapes`),
2. loads the rules (only `proved` ones unless told, minus `skip_rules`),
3. searches for the cheapest graph under the cost model (region by region for large graphs),
4. **gate**: times the original and the best distinct candidates as whole models at ONNX
   Runtime's default level (ENABLE_ALL), interleaved, over fresh sessions
   (`superopt.pipeline.gate.compare_models`); a candidate is written only if it is faster beyond the
   measured spread, else the original is kept (re-exported unchanged) and the result says so.
   A candidate ORT cannot load is dropped and the run goes on;
5. **check**: original vs result on random inputs through ORT's CPU provider (deterministic
   fp32) within rtol/atol; a failure raises `CheckError` and writes nothing;
6. writes atomically (`superopt.core.onnx_io.write_model`).

Example:
    >>> result = superopt.optimize("model.onnx", "model.opt.onnx", device="cpu")  # doctest: +SKIP
    >>> result.kept, result.speedup                                                # doctest: +SKIP
    (True, 1.21)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from superopt.core.errors import CheckError, ModelError, ShapeError, UsageError
from superopt.core.ir import Graph
from superopt.core.onnx_io import load, to_onnx, write_model
from superopt.core.rules import Rule, RuleSet, load_rules
from superopt.core.version import __version__

REPORT_FORMAT = "superopt-report/1"
DEFAULT_BUDGET = 300
DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_CHECK_N = 3

# progress(phase, done, total, detail): phases "load", "measure", "search", "gate", "check",
# "write"; total None when unknown.
PipelineProgress = Callable[[str, int, "int | None", str], None]


@dataclass
class CheckResult:
    """The numerical check: original vs result through ORT on the CPU provider."""

    passed: bool
    n: int
    rtol: float
    atol: float
    max_abs_error: float
    max_rel_error: float
    skipped: bool = False
    note: str = ""  # why the check was skipped, when it was

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OptimizeResult:
    """Everything a report needs about one `optimize` run (see `to_json`)."""

    input_path: str | None
    output_path: str | None
    written: bool
    device: str
    provider: str
    device_name: str
    ort_version: str
    superopt_version: str
    cost_model: dict
    kept: bool  # True: the optimized candidate was written; False: the original was kept
    kept_reason: str
    op_counts_before: dict[str, int]
    op_counts_after: dict[str, int]
    size_before: int
    size_after: int
    latency_before: dict | None  # {"median_s", "spread"} from the A/B
    latency_after: dict | None
    speedup: float
    search_stats: dict
    stop_reason: str
    steps: list  # search Steps of the written graph (empty when the original was kept)
    candidate_steps: list  # the steps of the best candidate found, even when not kept
    rules: dict  # rule id -> {"name", "src", "dst", "proof"} for every rule applied
    rules_loaded: int
    phase_s: dict[str, float]
    check: CheckResult | None
    ab_summary: str = ""
    dropped_candidates: list[str] = field(default_factory=list)
    # For each of `steps` / `candidate_steps`: {"before", "after"} subgraph descriptions
    # (`superopt.face.drawing.describe_subgraph`), None where the step could not be replayed.
    step_subgraphs: list = field(default_factory=list)
    candidate_step_subgraphs: list = field(default_factory=list)
    graph_before: Graph | None = field(default=None, repr=False)
    graph_after: Graph | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Stable keys, `"format": "superopt-report/1"`."""
        return {
            "format": REPORT_FORMAT,
            "input": self.input_path, "output": self.output_path, "written": self.written,
            "device": self.device, "provider": self.provider, "device_name": self.device_name,
            "ort_version": self.ort_version, "superopt_version": self.superopt_version,
            "cost_model": self.cost_model, "kept": self.kept, "kept_reason": self.kept_reason,
            "op_counts": {"before": self.op_counts_before, "after": self.op_counts_after},
            "size_bytes": {"before": self.size_before, "after": self.size_after},
            "latency": {"before": self.latency_before, "after": self.latency_after,
                        "speedup": self.speedup, "ab": self.ab_summary},
            "search": {"stats": self.search_stats, "stop_reason": self.stop_reason},
            "steps": _steps_json(self.steps, self.step_subgraphs),
            "candidate_steps": _steps_json(self.candidate_steps, self.candidate_step_subgraphs),
            "rules": self.rules, "rules_loaded": self.rules_loaded,
            "phase_s": {k: round(v, 4) for k, v in self.phase_s.items()},
            "check": self.check.to_json() if self.check else None,
            "dropped_candidates": self.dropped_candidates,
        }


def _steps_json(steps: Sequence, subgraphs: Sequence) -> list[dict]:
    out = []
    for i, s in enumerate(steps):
        doc = s.to_json()
        doc["subgraph"] = subgraphs[i] if i < len(subgraphs) else None
        out.append(doc)
    return out


def describe_steps(graph: Graph, steps: Sequence, rules: Iterable[Rule]) -> list[dict | None]:
    """Replay `steps` from `graph` and describe, for each, the subgraph before and after.

    The search keeps only names (matched and created nodes); replaying the same rule at the
    same matched nodes rebuilds the intermediate graphs (the IR is deterministic), from which
    `superopt.face.drawing.describe_subgraph` takes the affected nodes and their neighbours. A step
    that cannot be replayed (it should not happen) gets None, and so do the steps after it.
    """
    from superopt.face.drawing import describe_subgraph
    from superopt.search.match import Refused, apply_match, find_matches

    by_id = {r.id: r for r in rules}
    out: list[dict | None] = []
    g: Graph | None = graph
    for step in steps:
        rule = by_id.get(step.rule_id)
        applied = None
        if g is not None and rule is not None:
            for m in find_matches(g, rule):
                if m.matched_names != tuple(step.matched_nodes):
                    continue
                try:
                    applied = apply_match(g, m)
                except Refused:
                    continue
                break
        if applied is None:
            out.append(None)
            g = None
            continue
        after_focus = list(applied.created_names)
        if not after_focus:  # the target reuses existing values: show their new readers
            readers = {u.name for v in applied.match.roots for u, _ in g.users.get(v, ())}
            after_focus = [n.name for n in applied.graph.nodes if n.name in readers]
        out.append({"before": describe_subgraph(g, step.matched_nodes),
                    "after": describe_subgraph(applied.graph, after_focus)})
        g = applied.graph
    return out


def default_output_path(input_path: str | os.PathLike) -> Path:
    """IN.onnx -> IN.opt.onnx."""
    p = Path(input_path)
    stem = p.name.removesuffix(".onnx")
    return p.with_name(f"{stem}.opt.onnx")


def select_rules(rules: RuleSet | Sequence[Rule] | str | os.PathLike | None,
                 skip_rules: Iterable[str] = (), include_unproved: bool = False) -> list[Rule]:
    """The rules a run uses: from a file (default: the shipped database) or given, only proved
    ones unless `include_unproved`, minus `skip_rules` (ids, id prefixes or names)."""
    if rules is None or isinstance(rules, (str, os.PathLike)):
        ruleset = load_rules(rules)
    elif isinstance(rules, RuleSet):
        ruleset = rules
    else:
        ruleset = RuleSet(list(rules))
    skip: set[str] = set()
    for rid in skip_rules:
        skip.add(ruleset.by_id(rid).id)  # RulesError names an unknown id
    return [r for r in ruleset.rules
            if (include_unproved or r.proved) and r.id not in skip]


def check_static(graph: Graph) -> None:
    """Static shapes are needed to search and measure: say which input to fix, in one line."""
    for v in graph.inputs:
        if not v.type.is_static:
            dims = ",".join(str(d) for d in (v.type.shape or ("?",)))
            raise ShapeError(f"input {v.name!r} has dynamic shape ({dims}); fix it with "
                             f"--overwrite-input-shape {v.name}:1,... (static shapes are needed)")
    for n in graph.nodes:
        if n.is_opaque:
            continue
        for o in n.outputs:
            if not o.type.is_static:
                raise ShapeError(f"the shape of {o.name!r} (node {n.name}) cannot be inferred; "
                                 "fix the input shapes with --overwrite-input-shape")


def optimize(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike | None = None,
             *, rules: RuleSet | Sequence[Rule] | str | os.PathLike | None = None,
             device: str = "auto", cost: str = "measured", alpha: float = 1.05,
             budget: int = DEFAULT_BUDGET, time_limit: float = DEFAULT_TIME_LIMIT_S,
             input_shapes: Mapping[str | None, Sequence[int]] | None = None,
             skip_rules: Iterable[str] = (), check: bool = True, check_n: int = DEFAULT_CHECK_N,
             rtol: float = 1e-4, atol: float = 1e-5, save_as_external_data: bool | None = None,
             progress: PipelineProgress | None = None, include_unproved: bool = False,
             gate: bool = True, gate_budget_s: float = 4.0, cost_model: Any = None,
             write: bool = True) -> OptimizeResult:
    """Optimize an ONNX model; see the module doc for the pipeline.

    `output` None writes nothing unless `model` is a path (then IN.opt.onnx). `cost_model`
    overrides `cost` with a ready CostModel (tests). `gate=False` skips the end-to-end timing
    and writes the cheapest candidate by the cost model (still checked numerically).
    """
    from superopt.cost_model import make_cost_model
    from superopt.runtime import device_name, resolve_device, runtime_fingerprint
    from superopt.search import SearchLimits, search_auto

    phases: dict[str, float] = {}
    say = progress or (lambda *a: None)
    if check_n < 1:
        raise UsageError("--check-n must be at least 1")
    resolved = resolve_device(device)  # DeviceError for a CUDA that does not work
    input_path = None if isinstance(model, onnx.ModelProto) else str(model)
    if output is None and input_path is not None and write:
        output = default_output_path(input_path)

    t = time.perf_counter()
    say("load", 0, 1, "reading the model")
    shapes = dict(input_shapes) if input_shapes else None
    graph = load(model, input_shapes=shapes)
    check_static(graph)
    say("load", 1, 1, f"{len(graph.nodes)} nodes")
    say("rules", 0, 1, "reading the rule database")
    rule_list = select_rules(rules, skip_rules, include_unproved)
    say("rules", 1, 1, f"{len(rule_list)} rules")
    phases["load"] = time.perf_counter() - t

    if cost_model is None:
        kwargs = {}
        if cost == "measured":
            kwargs["progress"] = lambda label, done, total: say("measure", done, total, label)
        cost_model = make_cost_model(cost, resolved, **kwargs)
    limits = SearchLimits(alpha=alpha, budget=budget, time_limit_s=time_limit)

    t = time.perf_counter()
    say("search", 0, budget, f"{len(rule_list)} rules, {len(graph.nodes)} nodes")
    result = search_auto(graph, rule_list, cost_model, limits,
                         progress=lambda done, total, best: say("search", done, total,
                                                                f"best {best * 1e3:.3f} ms"))
    phases["search"] = time.perf_counter() - t

    t = time.perf_counter()
    baseline = to_onnx(graph)
    candidates = [(g, steps) for c, g, steps in result.candidates if g != graph][:2]
    exported = [(to_onnx(g), g, steps) for g, steps in candidates]
    phases["export"] = time.perf_counter() - t

    t = time.perf_counter()
    dropped: list[str] = []
    viable = []
    for proto, g, steps in exported:
        why = _ort_loads(proto)
        if why is None:
            viable.append((proto, g, steps))
        else:
            dropped.append(f"candidate with {len(steps)} rewrites dropped: {why}")
    chosen_proto, chosen_graph, chosen_steps = baseline, graph, []
    latency_before = latency_after = None
    speedup, ab_summary, ab = 1.0, "", None
    if not candidates:
        reason = "the search found no graph cheaper than the original"
    elif not viable:
        reason = "every candidate failed to load in ONNX Runtime"
    elif not gate:
        chosen_proto, chosen_graph, chosen_steps = viable[0]
        reason = "written without the end-to-end gate (gate disabled)"
    else:
        from superopt.pipeline.gate import compare_models

        say("gate", 0, None, f"timing the original and {len(viable)} candidate(s)")
        try:
            ab = compare_models(baseline, [v[0] for v in viable], resolved, budget_s=gate_budget_s,
                                progress=lambda d, n: say("gate", d, n, "A/B rounds"))
        except ModelError as e:
            # E.g. a custom-domain op ORT has no kernel for: nothing can be timed, and superopt
            # never writes what it could not show to be faster. The model passes through.
            ab = None
            reason = ("kept the original: ONNX Runtime cannot run the original model here, so "
                      f"no candidate could be timed ({str(e).splitlines()[0][:200]})")
    if ab is not None:
        ab_summary = ab.summary()
        latency_before = {"median_s": ab.baseline.median_s, "spread": ab.baseline.spread}
        if ab.best_index is None:
            i = max(range(len(viable)), key=lambda k: ab.ratios[k])
            reason = (f"kept the original: the best candidate measured {ab.ratios[i]:.3f}x, "
                      f"not faster beyond the noise (needs > {1 + ab.margins[i]:.3f}x)")
            latency_after = dict(latency_before)
        else:
            i = ab.best_index
            chosen_proto, chosen_graph, chosen_steps = viable[i]
            latency_after = {"median_s": ab.candidates[i].median_s,
                             "spread": ab.candidates[i].spread}
            speedup = ab.ratios[i]
            reason = f"candidate faster end to end: {speedup:.3f}x on {resolved}"
    phases["gate"] = time.perf_counter() - t
    kept = chosen_graph is not graph

    t = time.perf_counter()
    check_result = None
    if check:
        say("check", 0, check_n, "original vs result on the CPU provider")
        try:
            check_result = numerical_check(
                model if isinstance(model, onnx.ModelProto) else input_path, chosen_proto,
                n=check_n, rtol=rtol, atol=atol, baseline_fallback=baseline,
                progress=lambda k: say("check", k, check_n, "inputs"))
        except ModelError as e:
            if kept:
                raise
            # The original passes through unchanged, but ORT cannot run it (e.g. a custom-domain
            # op): there is nothing to compare, and nothing was rewritten.
            check_result = CheckResult(True, 0, rtol, atol, 0.0, 0.0, skipped=True,
                                       note=f"not run: {str(e).splitlines()[0][:200]}")
        if not check_result.passed:
            raise CheckError(
                f"the optimized model differs from the original (max abs error "
                f"{check_result.max_abs_error:.3g}, max rel error {check_result.max_rel_error:.3g}"
                f", rtol {rtol}, atol {atol}); nothing was written")
    phases["check"] = time.perf_counter() - t

    t = time.perf_counter()
    written = False
    if write and output is not None:
        say("write", 0, 1, str(output))
        write_model(chosen_proto, output, external_data=save_as_external_data)
        written = True
        say("write", 1, 1, str(output))
    phases["write"] = time.perf_counter() - t

    t = time.perf_counter()
    say("describe", 0, None, "describing the rewrites for the report")
    candidate_subgraphs = describe_steps(graph, result.steps, rule_list)
    chosen_subgraphs = (candidate_subgraphs if list(chosen_steps) == list(result.steps)
                        else describe_steps(graph, chosen_steps, rule_list))
    say("describe", 1, 1, f"{len(result.steps)} rewrites")
    phases["describe"] = time.perf_counter() - t

    fp = runtime_fingerprint(resolved)
    used = {s.rule_id for s in result.steps}
    rule_info = {r.id: {"name": r.name, "src": [str(p) for p in r.src],
                        "dst": [str(p) for p in r.dst], "proof": dict(r.proof)}
                 for r in rule_list if r.id in used}
    return OptimizeResult(
        input_path=input_path, output_path=str(output) if output is not None else None,
        written=written, device=resolved, provider=fp["provider"],
        device_name=device_name(resolved), ort_version=fp["ort"],
        superopt_version=__version__, cost_model=cost_model.describe(), kept=kept,
        kept_reason=reason, op_counts_before=_onnx_op_counts(baseline),
        op_counts_after=_onnx_op_counts(chosen_proto), size_before=baseline.ByteSize(),
        size_after=chosen_proto.ByteSize(), latency_before=latency_before,
        latency_after=latency_after, speedup=speedup, search_stats=result.stats.to_json(),
        stop_reason=result.stop_reason, steps=list(chosen_steps),
        candidate_steps=list(result.steps), rules=rule_info, rules_loaded=len(rule_list),
        phase_s=phases, check=check_result, ab_summary=ab_summary, dropped_candidates=dropped,
        step_subgraphs=chosen_subgraphs, candidate_step_subgraphs=candidate_subgraphs,
        graph_before=graph, graph_after=chosen_graph)


def _onnx_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _ort_loads(model: onnx.ModelProto) -> str | None:
    """None if ORT can load the model on the CPU provider, else why (one line)."""
    from superopt.runtime import make_session

    try:
        make_session(model, "cpu", level="disable")
    except ModelError as e:
        return str(e)
    return None


def numerical_check(original: str | os.PathLike | onnx.ModelProto | None,
                    result: onnx.ModelProto, *, n: int = DEFAULT_CHECK_N, rtol: float = 1e-4,
                    atol: float = 1e-5, baseline_fallback: onnx.ModelProto | None = None,
                    seed: int = 0, progress: Callable[[int], None] | None = None
                    ) -> CheckResult:
    """Run original and result on `n` random inputs (seeds seed..seed+n-1, shapes from the
    result) through ORT's CPU provider; compare every output within rtol/atol.

    Example:
        >>> numerical_check("in.onnx", onnx.load("out.onnx")).passed   # doctest: +SKIP
        True
    """
    from superopt.runtime import make_session, random_feeds

    ref_model = original if original is not None else baseline_fallback
    try:
        ref = make_session(ref_model, "cpu", level="all")
    except ModelError:
        if baseline_fallback is None:
            raise
        ref = make_session(baseline_fallback, "cpu", level="all")
    try:
        out = make_session(result, "cpu", level="all")
    except ModelError as e:
        raise CheckError(f"the optimized model does not load in ONNX Runtime ({e}); "
                         "nothing was written") from None
    names = [o.name for o in out.get_outputs()]
    max_abs = max_rel = 0.0
    passed = True
    ref_inputs = {i.name for i in ref.get_inputs()}
    for k in range(n):
        feeds = random_feeds(result, seed=seed + k)
        want = dict(zip([o.name for o in ref.get_outputs()],
                        ref.run(None, {a: b for a, b in feeds.items() if a in ref_inputs})))
        got = dict(zip(names, out.run(None, feeds)))
        for name in names:
            if name not in want:
                raise CheckError(f"output {name!r} is missing from the original; "
                                 "nothing was written")
            a = np.asarray(want[name], dtype=np.float64)
            b = np.asarray(got[name], dtype=np.float64)
            if a.shape != b.shape:
                raise CheckError(f"output {name!r} has shape {b.shape}, the original "
                                 f"{a.shape}; nothing was written")
            if a.size == 0:
                continue
            diff = np.abs(a - b)
            max_abs = max(max_abs, float(np.nanmax(diff)))
            max_rel = max(max_rel, float(np.nanmax(diff / np.maximum(np.abs(a), 1e-12))))
            if not np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True):
                passed = False
        if progress is not None:
            progress(k + 1)
    return CheckResult(passed, n, rtol, atol, max_abs, max_rel)
