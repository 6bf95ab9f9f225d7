"""The optimization pipeline: `optimize` as its phases, over one options object and one run state.

`optimize(model, output, **options)` builds an `OptimizeOptions` and runs the phases of
`PHASES` in order on an `OptimizeRun` (the state they pass along), timing each:

1. **load**: reads the model (`superopt.load`); symbolic dims (a dynamic batch or sequence)
   stay symbolic through the whole run and in the written model, and get representative sizes
   only where numbers are needed (`superopt.pipeline.shapes`: costs, the gate's timings, the
   check, which runs at two sets of sizes); `input_shapes` fixes dims instead. Then the rules
   (only `proved` ones unless told, minus `skip_rules`; a proof that does not come from the
   intact shipped database is re-proved first, `superopt.pipeline.trust`);
2. **search**: searches for the cheapest graph under the cost model (region by region for large
   graphs); the search returns records: the path of steps to each candidate, with the graphs
   before and after every rewrite, per-expansion iterations and a typed stop reason. With
   measured costs a second, shorter search ranks by the device's analytic roofline, and its
   best graph is one more candidate (`roofline_candidate`): one-node timings miss what a whole
   session pays per op, and the gate, not either cost model, decides;
3. **export**: the original and the best distinct candidates to ONNX;
4. **gate**: times the original and the candidates as whole models at ONNX Runtime's default
   level (ENABLE_ALL), interleaved, over fresh sessions (`superopt.pipeline.gate.compare_models`);
   a candidate is written only if it is faster beyond the measured spread, else the original is
   kept (re-exported unchanged) and the result says so. A candidate ORT cannot load is dropped
   and the run goes on;
5. **check**: original vs result on valid random inputs (indices within their tables, positive
   values where the model needs them) through ORT's CPU provider: NaN/Inf patterns must match
   and finite values agree within rtol/atol by dtype (`superopt.pipeline.check`); a failure, or
   a result the check cannot compare, raises `CheckError` and writes nothing;
6. **write**: atomically (`superopt.core.onnx_io.write_model`), unless an interrupt was noted
   (`superopt.core.atomic.raise_if_interrupted`: a Ctrl-C swallowed on the way still stops it);
7. **describe**: the report's data for each rewrite (`superopt.pipeline.describe`), from the
   graphs the search recorded; nothing is matched or applied again.

Ops ONNX's shape inference does not know (ORT's contrib ops in `com.microsoft`, ops of a
custom domain) pass through as opaque nodes; when ONNX cannot infer their outputs, the load
phase takes their types from ONNX Runtime (`ort_typed_opaque_outputs`).

The result (`OptimizeResult`) is the report's data; `to_json()` is the `superopt-report/2`
document (`REPORT_FORMAT`, docs/report-schema.md) that the face renders.

Example:
    >>> result = superopt.optimize("model.onnx", "model.opt.onnx", device="cpu")  # doctest: +SKIP
    >>> result.original_kept, result.verdict, result.speedup                       # doctest: +SKIP
    (False, 'written: faster', 1.21)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import onnx

from superopt.core.atomic import raise_if_interrupted
from superopt.core.errors import ModelError, ShapeError, UsageError
from superopt.core.ir import Graph, Node
from superopt.core.onnx_io import load, read_model, to_onnx, write_model
from superopt.core.rules import (
    SEAL_KEY,
    Rule,
    RuleSet,
    is_shipped_path,
    load_rules,
    seal_state,
)
from superopt.core.version import __version__
from superopt.pipeline.check import DEFAULT_CHECK_N, CheckResult, check_result
from superopt.pipeline.describe import Description, describe_step
from superopt.pipeline.shapes import ShapeHints, Sizes

if TYPE_CHECKING:
    from superopt.pipeline.trust import ProofCache
    from superopt.search import SearchResult, Step, StopReason

#: the format string of the report document `OptimizeResult.to_json()` produces
REPORT_FORMAT = "superopt-report/2"
#: the earlier formats `superopt inspect` still reads (docs/report-schema.md says what changed)
READABLE_REPORT_FORMATS = ("superopt-report/1", REPORT_FORMAT)
DEFAULT_BUDGET = 300
DEFAULT_TIME_LIMIT_S = 30.0
#: seconds of the end-to-end gate (`superopt.pipeline.gate.DEFAULT_BUDGET_S`, repeated here so
#: that importing the pipeline does not load ONNX Runtime; a test keeps the two equal)
DEFAULT_GATE_BUDGET_S = 6.0

# progress(phase, done, total, detail): phases "load", "rules", "measure", "search", "gate",
# "check", "write", "describe"; total None when unknown.
PipelineProgress = Callable[[str, int, "int | None", str], None]

__all__ = ["DEFAULT_BUDGET", "DEFAULT_CHECK_N", "DEFAULT_TIME_LIMIT_S", "PHASES", "REPORT_FORMAT",
           "CheckResult", "OptimizeOptions", "OptimizeResult", "OptimizeRun", "check_static",
           "default_output_path", "optimize", "ort_typed_opaque_outputs", "run_phases",
           "select_rules"]


# ---------------------------------------------------------------------------------------------
# options, run state, result


@dataclass(frozen=True)
class OptimizeOptions:
    """The keywords of `optimize`, with their defaults (see `optimize`)."""

    rules: RuleSet | Sequence[Rule] | str | os.PathLike | None = None
    device: str = "auto"
    cost: str = "measured"
    alpha: float = 1.05
    budget: int = DEFAULT_BUDGET
    time_limit: float = DEFAULT_TIME_LIMIT_S
    input_shapes: Mapping[str | None, Sequence[int]] | None = None
    # the sizes of symbolic dims to optimize for (`superopt.pipeline.shapes.choose_sizes`)
    shape_hints: ShapeHints | None = None
    skip_rules: Iterable[str] = ()
    check: bool = True
    check_n: int = DEFAULT_CHECK_N
    rtol: float | None = None
    atol: float | None = None
    save_as_external_data: bool | None = None
    progress: PipelineProgress | None = None
    include_unproved: bool = False
    gate: bool = True
    gate_budget_s: float = DEFAULT_GATE_BUDGET_S
    cost_model: Any = None
    write: bool = True
    # also search with the device's analytic roofline and let the gate time its best graph
    # (`search_phase`); only with measured costs (analytic costs are that search already)
    roofline_candidate: bool = True

    def __post_init__(self) -> None:
        if self.check_n < 1:
            raise UsageError("--check-n must be at least 1")


class Exported(NamedTuple):
    """A graph the run may write: its ONNX model, its graph and the search steps to it."""

    proto: onnx.ModelProto
    graph: Graph
    steps: list[Step]
    source: str = "search"  # "search", or "roofline": the analytic roofline's best graph


@dataclass
class OptimizeRun:
    """The state the phases pass along: each phase reads what earlier ones set and adds its own.

    Set at the start: `options`, `model`, `input_path`, `output`, `device` (resolved), `say`.
    load: `graph`, `rules`; search: `cost_model`, `search`; export: `baseline`, `exported`;
    gate: `chosen`, `kept_reason`, latencies, `speedup`, `ab_summary`, `dropped`; check:
    `check`; write: `written`; describe: `step_subgraphs`, `candidate_step_subgraphs`.
    """

    options: OptimizeOptions
    model: str | os.PathLike | onnx.ModelProto
    input_path: str | None
    output: str | os.PathLike | None
    device: str
    say: PipelineProgress
    phase_s: dict[str, float] = field(default_factory=dict)
    graph: Graph | None = None
    rules: list[Rule] = field(default_factory=list)
    cost_model: Any = None
    search: SearchResult | None = None
    roofline: SearchResult | None = None  # the roofline candidate's search (`search_phase`)
    baseline: onnx.ModelProto | None = None
    exported: list[Exported] = field(default_factory=list)
    chosen: Exported | None = None
    kept_reason: str = ""
    latency_before: dict | None = None
    latency_after: dict | None = None
    speedup: float = 1.0
    ab_summary: str = ""
    gate: dict | None = None  # the gate's result (`ABResult.to_json`), None when not timed
    dropped: list[str] = field(default_factory=list)
    check: CheckResult | None = None
    written: bool = False
    step_subgraphs: list = field(default_factory=list)
    candidate_step_subgraphs: list = field(default_factory=list)
    # load: the sizes of symbolic dims (None when every input is static)
    sizes: Sizes | None = None

    @property
    def kept(self) -> bool:
        """Whether a candidate (not the original) was chosen."""
        return self.chosen is not None and self.chosen.graph is not self.graph


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
    # True: a candidate was chosen (and written when `written`); False: the original was kept
    # (see `original_kept`, which says it the other way round, and `verdict`)
    kept: bool
    kept_reason: str  # one line: why (the gate's measured ratio, or why there was no candidate)
    op_counts_before: dict[str, int]  # nodes of the input model as given (the file as written)
    op_counts_after: dict[str, int]  # nodes of the output model
    size_before: int  # bytes of the input file on disk (external data included)
    size_after: int  # bytes of the output model
    latency_before: dict | None  # {"median_s", "spread"} from the A/B
    latency_after: dict | None
    speedup: float
    search_stats: dict
    stop_reason: StopReason  # the report shows its text ("queue empty", "budget", ...)
    steps: list  # search Steps of the written graph (empty when the original was kept)
    candidate_steps: list  # the steps of the best candidate found, even when not kept
    rules: dict  # rule id -> {"name", "src", "dst", "proof"} for every rule applied
    rules_loaded: int
    phase_s: dict[str, float]
    check: CheckResult | None
    ab_summary: str = ""
    # the gate's result (`superopt.pipeline.gate.ABResult.to_json`); None when nothing was timed
    gate: dict | None = None
    dropped_candidates: list[str] = field(default_factory=list)
    # For each of `steps` / `candidate_steps`: {"before", "after"} subgraph descriptions
    # (`superopt.pipeline.describe.describe_step`, from the search's records).
    step_subgraphs: list = field(default_factory=list)
    candidate_step_subgraphs: list = field(default_factory=list)
    graph_before: Graph | None = field(default=None, repr=False)
    graph_after: Graph | None = field(default=None, repr=False)
    # The search's records: its path, candidates, iterations and stop reason.
    search: SearchResult | None = field(default=None, repr=False)
    # nodes after import-time cleanup (Constant nodes, static shape computations folded): the
    # graph the search started from
    op_counts_imported: dict[str, int] = field(default_factory=dict)
    # e.g. "written: faster", "original kept: not faster beyond the noise" (`verdict_of`)
    verdict: str = ""
    # the roofline candidate (`_roofline_json`); None when no such search ran
    roofline: dict | None = None

    @property
    def original_kept(self) -> bool:
        """True when the original model was kept (no candidate was chosen)."""
        return not self.kept

    @property
    def import_folded(self) -> int:
        """Nodes import-time cleanup removed (Constant nodes, static shape computations)."""
        if not self.op_counts_imported:
            return 0
        return sum(self.op_counts_before.values()) - sum(self.op_counts_imported.values())

    def to_json(self) -> dict[str, Any]:
        """Stable keys, `"format": "superopt-report/2"` (docs/report-schema.md)."""
        return {
            "format": REPORT_FORMAT,
            "input": self.input_path, "output": self.output_path, "written": self.written,
            "device": self.device, "provider": self.provider, "device_name": self.device_name,
            "ort_version": self.ort_version, "superopt_version": self.superopt_version,
            "cost_model": self.cost_model, "original_kept": self.original_kept,
            "verdict": self.verdict, "kept_reason": self.kept_reason,
            "op_counts": {"before": self.op_counts_before,
                          "imported": self.op_counts_imported or dict(self.op_counts_before),
                          "after": self.op_counts_after},
            "size_bytes": {"before": self.size_before, "after": self.size_after},
            "latency": {"before": self.latency_before, "after": self.latency_after,
                        "speedup": self.speedup, "ab": self.ab_summary,
                        "gate": self.gate},
            "search": {"stats": self.search_stats, "stop_reason": str(self.stop_reason),
                       "roofline": self.roofline},
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


# ---------------------------------------------------------------------------------------------
# the entry point


def optimize(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike | None = None,
             *, rules: RuleSet | Sequence[Rule] | str | os.PathLike | None = None,
             device: str = "auto", cost: str = "measured", alpha: float = 1.05,
             budget: int = DEFAULT_BUDGET, time_limit: float = DEFAULT_TIME_LIMIT_S,
             input_shapes: Mapping[str | None, Sequence[int]] | None = None,
             shape_hints: ShapeHints | None = None,
             skip_rules: Iterable[str] = (), check: bool = True, check_n: int = DEFAULT_CHECK_N,
             rtol: float | None = None, atol: float | None = None,
             save_as_external_data: bool | None = None,
             progress: PipelineProgress | None = None, include_unproved: bool = False,
             gate: bool = True, gate_budget_s: float = DEFAULT_GATE_BUDGET_S,
             cost_model: Any = None,
             write: bool = True, roofline_candidate: bool = True) -> OptimizeResult:
    """Optimize an ONNX model; see the module doc for the phases.

    `output` None writes nothing unless `model` is a path (then IN.opt.onnx). `cost_model`
    overrides `cost` with a ready CostModel (tests). `gate=False` skips the end-to-end timing
    and writes the cheapest candidate by the cost model (still checked numerically).
    `roofline_candidate` (with measured costs): the gate also times the best graph of a second,
    shorter search ranked by the device's analytic roofline (see `search_phase`).
    `rtol`/`atol` None: the numerical check's tolerances follow each output's element type
    (`superopt.pipeline.check.DEFAULT_TOLERANCES`). Symbolic input dims are kept; `shape_hints`
    picks the sizes to cost and time at (`{"input_ids": (8, 256)}`, or `{"seq": 256}` by
    symbol; default: batch-like dims 1, others 128, `superopt.pipeline.shapes`), while
    `input_shapes` fixes dims for good (the written model then takes only those shapes).
    """
    options = OptimizeOptions(
        rules=rules, device=device, cost=cost, alpha=alpha, budget=budget, time_limit=time_limit,
        input_shapes=input_shapes, shape_hints=shape_hints, skip_rules=skip_rules, check=check,
        check_n=check_n,
        rtol=rtol, atol=atol, save_as_external_data=save_as_external_data, progress=progress,
        include_unproved=include_unproved, gate=gate, gate_budget_s=gate_budget_s,
        cost_model=cost_model, write=write, roofline_candidate=roofline_candidate)
    return run_phases(model, output, options)


def run_phases(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike | None,
               options: OptimizeOptions) -> OptimizeResult:
    """Start a run (`start_run`), run `PHASES` in order timing each, and build the result."""
    run = start_run(model, output, options)
    for key, phase in PHASES:
        t = time.perf_counter()
        phase(run)
        run.phase_s[key] = run.phase_s.get(key, 0.0) + time.perf_counter() - t
    return result_of(run)


def start_run(model: str | os.PathLike | onnx.ModelProto, output: str | os.PathLike | None,
              options: OptimizeOptions) -> OptimizeRun:
    """The run state before any phase: the device resolved (DeviceError for a CUDA that does
    not work) and the output path decided."""
    from superopt.runtime import resolve_device

    resolved = resolve_device(options.device)
    input_path = None if isinstance(model, onnx.ModelProto) else str(model)
    if output is None and input_path is not None and options.write:
        output = default_output_path(input_path)
    return OptimizeRun(options=options, model=model, input_path=input_path, output=output,
                       device=resolved, say=options.progress or (lambda *a: None))


# ---------------------------------------------------------------------------------------------
# the phases, in order


def load_phase(run: OptimizeRun) -> None:
    """Read the model into a Graph, symbolic dims kept (ShapeError names an input whose rank
    is unknown), and choose the sizes of its symbols (`superopt.pipeline.shapes`)."""
    run.say("load", 0, 1, "reading the model")
    shapes = dict(run.options.input_shapes) if run.options.input_shapes else None
    if shapes:
        from superopt.pipeline.shapes import fixed_symbols_note
        from superopt.pipeline.trust import stderr_line

        note = fixed_symbols_note(run.model, shapes)
        if note:
            stderr_line(note)
    run.graph = load(run.model, input_shapes=shapes)
    # Contrib and custom-domain ops ONNX cannot infer: their output types from ONNX Runtime.
    run.graph = ort_typed_opaque_outputs(run.graph, run.model, shapes)
    check_static(run.graph)
    run.sizes = _sizes_of(run, shapes)
    detail = f"{len(run.graph.nodes)} nodes"
    if run.sizes is not None:
        detail += f"; symbolic dims kept, costed and timed at {run.sizes.describe()}"
    run.say("load", 1, 1, detail)


def _sizes_of(run: OptimizeRun, shapes: dict | None) -> Sizes | None:
    """The sizes of the graph's symbolic input dims (None when it has none) and, when opaque
    nodes carry symbols of their own (ONNX's `unk__3`), the sized types of every value from
    loading the model again at those sizes (the cost model's `known` types)."""
    from superopt.core.errors import SuperoptError
    from superopt.pipeline.shapes import choose_sizes

    sizes = choose_sizes({v.name: v.type.shape for v in run.graph.inputs},
                         run.options.shape_hints)
    if sizes is None:
        return None
    own = [d for n in run.graph.nodes if n.is_opaque for o in n.outputs
           for d in (o.type.shape or ()) if not isinstance(d, int) and d not in sizes.sizes]
    if not own:
        return sizes
    fixed = dict(sizes.shapes)
    fixed.update({k: v for k, v in (shapes or {}).items() if k is not None})
    try:
        sized = load(run.model, input_shapes=fixed)
    except SuperoptError:
        return sizes  # costs then size only the symbols of the inputs
    known = {v.name: v.type for v in list(sized.inputs) + sized.constants()}  # folded there
    known.update((o.name, o.type) for n in sized.nodes for o in n.outputs if o.type.is_static)
    return Sizes(sizes.sizes, sizes.shapes, sizes.second, sizes.hinted, known)


def rules_phase(run: OptimizeRun) -> None:
    """Select the rules (`select_rules`): proofs not from the intact shipped database are
    re-proved (cached), and a rule whose proof does not hold again is refused on stderr."""
    run.say("rules", 0, 1, "reading the rule database")
    o = run.options
    run.rules = select_rules(o.rules, o.skip_rules, o.include_unproved,
                             progress=lambda done, total: run.say(
                                 "rules", done, total, "re-proving the rules' proofs"))
    run.say("rules", 1, 1, f"{len(run.rules)} rules")


def search_phase(run: OptimizeRun) -> None:
    """Make the cost model (unless given) and search (`superopt.search.search_auto`)."""
    from superopt.cost_model import make_cost_model
    from superopt.cost_model.measured import MeasuredCost
    from superopt.search import SearchLimits, search_auto

    o, say, graph = run.options, run.say, run.graph

    def at_sizes(cost: Any) -> Any:
        if run.sizes is None:
            return cost
        from superopt.cost_model.symbolic import AtSizes

        # The graph keeps its symbols; the cost model sees it at the representative sizes.
        return AtSizes(cost, run.sizes.sizes, run.sizes.known)

    def search(cost: Any, time_limit: float, label: Callable[[float], str]) -> SearchResult:
        limits = SearchLimits(alpha=o.alpha, budget=o.budget, time_limit_s=time_limit)
        return search_auto(graph, run.rules, cost, limits, progress=lambda done, total, best:
                           say("search", done, total, label(best)))

    run.cost_model = o.cost_model
    if run.cost_model is None:
        kwargs = {}
        if o.cost == "measured":
            kwargs["progress"] = lambda label, done, total: say("measure", done, total, label)
        run.cost_model = make_cost_model(o.cost, run.device, **kwargs)
    # by name, or a measured model the caller made (the bench shares one across models)
    measured = isinstance(run.cost_model, MeasuredCost)
    run.cost_model = at_sizes(run.cost_model)
    say("search", 0, o.budget, f"{len(run.rules)} rules, {len(graph.nodes)} nodes")
    run.search = search(run.cost_model, o.time_limit, lambda best: f"best {best * 1e3:.3f} ms")
    if o.roofline_candidate and measured:
        # A second opinion for the gate. One-node timings miss what a whole session pays per
        # op, so they can rank a graph with far fewer ops as no cheaper: on the 2-core CPU,
        # nasrnn's measured search (fresh cache) found nothing, while the roofline's best
        # graph (its 8 MatMuls per input merged into one) was timed 1.065x faster end to end.
        # A third of the time limit: the roofline search needs no timing.
        from superopt.cost_model.analytic import AnalyticCost

        say("search", 0, o.budget, "the analytic roofline's candidate")
        run.roofline = search(at_sizes(AnalyticCost.for_device(run.device)),
                              max(1.0, o.time_limit / 3), lambda best: "the roofline's candidate")


def export_phase(run: OptimizeRun) -> None:
    """The original and the two cheapest candidates other than it, as ONNX models (none when
    the search found nothing cheaper than the original), and the roofline's best graph."""
    run.baseline = to_onnx(run.graph)
    run.chosen = Exported(run.baseline, run.graph, [])
    candidates = []
    if run.search.steps and run.search.best != run.graph:  # else it ranks all above the original
        candidates = [c for c in run.search.candidates if c.graph != run.graph][:2]
    run.exported = [Exported(to_onnx(c.graph), c.graph, c.steps) for c in candidates]
    r = run.roofline
    if r is not None and r.steps and r.best != run.graph and \
            all(r.best != c.graph for c in candidates):
        run.exported.append(Exported(to_onnx(r.best), r.best, r.steps, "roofline"))


def gate_phase(run: OptimizeRun) -> None:
    """Choose what to write. When there is no candidate (the search's best graph is the
    original, and the roofline's too or it did not run), nothing is timed. Otherwise drop the
    candidates ORT cannot load, then choose the fastest candidate that beats the original
    beyond the A/A′ noise (`compare_models`), the cheapest without the gate, or the original."""
    if not run.exported:
        run.kept_reason = "the search found no graph cheaper than the original"
        return
    viable = []
    for exported in run.exported:
        why = _ort_loads(exported.proto)
        if why is None:
            viable.append(exported)
        else:
            run.dropped.append(f"candidate with {len(exported.steps)} rewrites dropped: {why}")
    ab = None
    if not run.exported:
        run.kept_reason = "the search found no graph cheaper than the original"
    elif not viable:
        run.kept_reason = "every candidate failed to load in ONNX Runtime"
    elif not run.options.gate:
        run.chosen = viable[0]
        run.kept_reason = "written without the end-to-end gate (gate disabled)"
    else:
        from superopt.pipeline.gate import compare_models

        say = run.say
        say("gate", 0, None, f"timing the original twice (A/A′) and {len(viable)} "
                             "candidate(s)")
        try:
            feeds = None
            if run.sizes is not None:  # symbolic dims: timed at the representative sizes
                from superopt.runtime import random_feeds

                feeds = random_feeds(run.baseline, 0, run.sizes.overrides)
            ab = compare_models(run.baseline, [v.proto for v in viable], run.device,
                                budget_s=run.options.gate_budget_s, feeds=feeds,
                                progress=lambda d, n: say("gate", d, n, "A/A′/B rounds"))
        except ModelError as e:
            # E.g. a custom-domain op ORT has no kernel for: nothing can be timed, and superopt
            # never writes what it could not show to be faster. The model passes through.
            run.kept_reason = ("kept the original: ONNX Runtime cannot run the original model "
                               f"here, so no candidate could be timed "
                               f"({str(e).splitlines()[0][:200]})")
    if ab is None:
        return
    run.ab_summary = ab.summary()
    run.gate = ab.to_json()
    run.latency_before = {"median_s": ab.baseline.median_s, "spread": ab.baseline.spread}
    if ab.best_index is None:
        i = max(range(len(viable)), key=lambda k: ab.ratios[k])
        run.kept_reason = (f"kept the original: the best candidate measured "
                           f"{ab.ratios[i]:.3f}x (p = {ab.p_values[i]:.2g}), not faster "
                           f"beyond the noise (needs > {1 + ab.margins[i]:.3f}x at alpha "
                           f"{ab.alpha:g}; A/A′ {ab.control_ratio:.3f}x)")
        run.latency_after = dict(run.latency_before)
    else:
        i = ab.best_index
        run.chosen = viable[i]
        run.latency_after = {"median_s": ab.candidates[i].median_s,
                             "spread": ab.candidates[i].spread}
        # before / after median (docs/report-schema.md); the reason gives the paired estimate
        run.speedup = ab.baseline.median_s / ab.candidates[i].median_s
        run.kept_reason = (f"candidate faster end to end: {ab.ratios[i]:.3f}x on {run.device} "
                           f"(p = {ab.p_values[i]:.2g} against A/A′ {ab.control_ratio:.3f}x, "
                           f"alpha {ab.alpha:g})"
                           + ("; the analytic roofline's candidate"
                              if viable[i].source == "roofline" else ""))


def check_phase(run: OptimizeRun) -> None:
    """The numerical check of the chosen model against the original (`check_result`)."""
    o = run.options
    if not o.check:
        return
    # Symbolic dims: checked at the representative sizes and at a second set; both must pass.
    sets = None if run.sizes is None else [run.sizes.overrides, run.sizes.second.overrides]
    total = o.check_n * (len(sets) if sets else 1)
    run.say("check", 0, total, "original vs result on the CPU provider")
    original = run.model if isinstance(run.model, onnx.ModelProto) else run.input_path
    run.check = check_result(original, run.chosen.proto, baseline=run.baseline,
                             changed=run.kept, n=o.check_n, rtol=o.rtol, atol=o.atol,
                             shapes=sets,
                             progress=lambda k: run.say("check", k, total, "inputs"))


def write_phase(run: OptimizeRun) -> None:
    """Write the chosen model atomically (when told to and there is an output path); an
    interrupt noted earlier (even one swallowed on the way) raises KeyboardInterrupt instead."""
    if not run.options.write or run.output is None:
        return
    raise_if_interrupted()
    run.say("write", 0, 1, str(run.output))
    write_model(run.chosen.proto, run.output, external_data=run.options.save_as_external_data)
    run.written = True
    run.say("write", 1, 1, str(run.output))


def describe_phase(run: OptimizeRun) -> None:
    """The report's subgraph data for each rewrite, from the search's records (each distinct
    step described once: the chosen path is usually the best candidate's)."""
    run.say("describe", 0, None, "describing the rewrites for the report")
    described: dict[int, dict[str, Description]] = {}

    def describe(steps: Sequence[Step]) -> list[dict[str, Description]]:
        for s in steps:
            if id(s) not in described:
                described[id(s)] = describe_step(s)
        return [described[id(s)] for s in steps]

    run.candidate_step_subgraphs = describe(run.search.steps)
    run.step_subgraphs = describe(run.chosen.steps)
    run.say("describe", 1, 1, f"{len(run.search.steps)} rewrites")


#: (phase_s key, phase) in order; the rules phase is timed with the model's loading
PHASES: tuple[tuple[str, Callable[[OptimizeRun], None]], ...] = (
    ("load", load_phase), ("load", rules_phase), ("search", search_phase),
    ("export", export_phase), ("gate", gate_phase), ("check", check_phase),
    ("write", write_phase), ("describe", describe_phase))


def result_of(run: OptimizeRun) -> OptimizeResult:
    """The `OptimizeResult` of a run whose phases all ran."""
    from superopt.runtime import device_name, runtime_fingerprint

    fp = runtime_fingerprint(run.device)
    result = run.search
    used = {s.rule_id for s in result.steps} | {s.rule_id for s in run.chosen.steps}
    rule_info = {r.id: {"name": r.name, "src": [str(p) for p in r.src],
                        "dst": [str(p) for p in r.dst], "proof": dict(r.proof)}
                 for r in run.rules if r.id in used}
    chosen = run.chosen
    counts_in, size_in = _input_model_stats(run)
    return OptimizeResult(
        input_path=run.input_path,
        output_path=str(run.output) if run.output is not None else None,
        written=run.written, device=run.device, provider=fp["provider"],
        device_name=device_name(run.device), ort_version=fp["ort"],
        superopt_version=__version__, cost_model=run.cost_model.describe(), kept=run.kept,
        kept_reason=run.kept_reason, op_counts_before=counts_in,
        op_counts_after=_onnx_op_counts(chosen.proto), size_before=size_in,
        size_after=chosen.proto.ByteSize(), latency_before=run.latency_before,
        latency_after=run.latency_after, speedup=run.speedup,
        search_stats=result.stats.to_json(), stop_reason=result.stop_reason,
        steps=list(chosen.steps), candidate_steps=list(result.steps), rules=rule_info,
        rules_loaded=len(run.rules), phase_s=run.phase_s, check=run.check,
        ab_summary=run.ab_summary, gate=run.gate, dropped_candidates=run.dropped,
        step_subgraphs=run.step_subgraphs,
        candidate_step_subgraphs=run.candidate_step_subgraphs, graph_before=run.graph,
        graph_after=chosen.graph, search=result,
        op_counts_imported=_onnx_op_counts(run.baseline), verdict=verdict_of(run),
        roofline=_roofline_json(run))


def _roofline_json(run: OptimizeRun) -> dict | None:
    """What the roofline candidate's search found, and whether its graph was chosen."""
    r = run.roofline
    if r is None:
        return None
    timed = any(e.source == "roofline" for e in run.exported)
    return {"rewrites": len(r.steps), "cost_ratio": (r.stats.best_cost / r.stats.initial_cost
                                                     if r.stats.initial_cost else 1.0),
            "elapsed_s": round(r.stats.elapsed_s, 3), "stop_reason": str(r.stop_reason),
            "timed": timed, "chosen": run.kept and run.chosen.source == "roofline"}


def verdict_of(run: OptimizeRun) -> str:
    """The outcome in a few words: what happened to the output, then why.

    "written: faster" (the gate measured a candidate faster beyond the noise), "written:
    cheapest by the cost model (gate off)", "original kept: not faster beyond the noise",
    "original kept: no cheaper graph", "original kept: no candidate ONNX Runtime could load",
    "original kept: not timed (ONNX Runtime cannot run the original)"; "chosen (not written)"
    in place of "written" when nothing was to be written.
    """
    if run.kept:
        head = "written" if run.written else "chosen (not written)"
        why = "faster" if run.options.gate else "cheapest by the cost model (gate off)"
        return f"{head}: {why}"
    if not run.exported:
        why = "no cheaper graph"
    elif len(run.dropped) >= len(run.exported):
        why = "no candidate ONNX Runtime could load"
    elif run.latency_before is None:
        why = "not timed (ONNX Runtime cannot run the original)"
    else:
        why = "not faster beyond the noise"
    return f"original kept: {why}"


# ---------------------------------------------------------------------------------------------
# helpers


def default_output_path(input_path: str | os.PathLike) -> Path:
    """IN.onnx -> IN.opt.onnx."""
    p = Path(input_path)
    stem = p.name.removesuffix(".onnx")
    return p.with_name(f"{stem}.opt.onnx")


def select_rules(rules: RuleSet | Sequence[Rule] | str | os.PathLike | None,
                 skip_rules: Iterable[str] = (), include_unproved: bool = False, *,
                 warn: Callable[[str], None] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 proof_cache: ProofCache | None = None) -> list[Rule]:
    """The rules a run uses: from a file (default: the shipped database) or given, only proved
    ones unless `include_unproved`, minus `skip_rules` (ids, id prefixes or names).

    Proofs are checked, not trusted: the rules of a file other than the shipped database, and
    of a shipped database whose seal does not hold (`seal_state`; one warning line), are
    re-proved before use (`superopt.pipeline.trust.recheck_rules`, cached in `proof_cache`,
    default the on-disk one); a rule the verifier does not prove again is left out with one
    line to `warn` (default: stderr). Rules given as objects are the caller's own claims and
    are used as given; so are all rules with `include_unproved`, which ignores proofs anyway.
    """
    trusted = True
    if rules is None or isinstance(rules, (str, os.PathLike)):
        ruleset = load_rules(rules)
        trusted = is_shipped_path(rules) and _shipped_intact(ruleset, rules, warn)
    elif isinstance(rules, RuleSet):
        ruleset = rules
    else:
        ruleset = RuleSet(list(rules))
    skip: set[str] = set()
    for rid in skip_rules:
        skip.add(ruleset.by_id(rid).id)  # RulesError names an unknown id
    chosen = [r for r in ruleset.rules if (include_unproved or r.proved) and r.id not in skip]
    if trusted or include_unproved:
        return chosen
    from superopt.pipeline.trust import recheck_rules

    return recheck_rules(chosen, cache=proof_cache, warn=warn, progress=progress)


def _shipped_intact(ruleset: RuleSet, path: str | os.PathLike | None,
                    warn: Callable[[str], None] | None) -> bool:
    """Whether the shipped database's seal holds; if not, one warning line."""
    state = seal_state(ruleset)
    if state == "intact":
        return True
    from superopt.core import rules as core_rules
    from superopt.pipeline.trust import stderr_line

    where = path if path is not None else core_rules.default_rules_path()
    why = ("carries no digest" if state == "unsealed" else
           f"does not match its digest (meta.{SEAL_KEY})")
    (warn or stderr_line)(f"warning: the shipped rule database {where} {why}; its proofs are "
                          "re-checked as a user file's")
    return False


def check_static(graph: Graph) -> None:
    """Shapes the search can work with: every input and every registry node's output of known
    rank. Symbolic dims are fine (they are kept, `superopt.pipeline.shapes`); an unknown rank
    is not: say which input to fix, in one line."""
    for v in graph.inputs:
        if v.type.shape is None:
            raise ShapeError(f"input {v.name!r} has no declared shape (its rank is unknown); "
                             f"fix it with --overwrite-input-shape {v.name}:1,...")
    for n in graph.nodes:
        if n.is_opaque:
            continue
        for o in n.outputs:
            if o.type.shape is None:
                raise ShapeError(f"the shape of {o.name!r} (node {n.name}) cannot be inferred; "
                                 "fix the input shapes with --overwrite-input-shape")


def _input_model_stats(run: OptimizeRun) -> tuple[dict[str, int], int]:
    """Op counts and size of the input model as given: the file as written (its external data
    files included in the size), or the ModelProto passed in."""
    if isinstance(run.model, onnx.ModelProto) or run.input_path is None:
        model = run.model if isinstance(run.model, onnx.ModelProto) else run.baseline
        return _onnx_op_counts(model), model.ByteSize()
    path = Path(run.input_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # read once already by the load phase; never fail the report on it
        return _onnx_op_counts(run.baseline), run.baseline.ByteSize()
    return _onnx_op_counts(model), _file_size_with_data(path, model)


def _file_size_with_data(path: Path, model: onnx.ModelProto) -> int:
    """Bytes of a model file plus the distinct external data files its tensors name."""
    size = path.stat().st_size
    seen: set[str] = set()
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                data = path.parent / entry.value
                if data.is_file():
                    size += data.stat().st_size
    return size


def _onnx_op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def ort_typed_opaque_outputs(graph: Graph, model: str | os.PathLike | onnx.ModelProto,
                             input_shapes: Mapping[str | None, Sequence[int]] | None = None
                             ) -> Graph:
    """`graph` with the output types of its custom-domain opaque nodes (ORT's contrib ops in
    `com.microsoft`, ops of a custom op library) taken from ONNX Runtime where ONNX's shape
    inference could not find them; `graph` itself when there is nothing to find.

    ORT's own shape inference, or one run at the model's static shapes
    (`superopt.runtime.infer_shapes_by_running`), gives each unknown output's element type and
    shape; `model` is then loaded again with them as value_info, so ONNX's inference carries
    them through the rest of the graph. When ORT cannot load the model (an op with no kernel
    here) and the search needs those types (`check_static`), a `ModelError` names the node and
    says to register its library with `--custom-lib`; when it does not, the op passes through.
    """
    unknown = [(n, o) for n in graph.nodes if n.is_opaque
               and (n.attr("domain") or "") not in ("", "ai.onnx")
               for o in n.outputs if o.name and not o.type.is_static]
    if not unknown:
        return graph
    from superopt.runtime import CUSTOM_LIB_HINT, infer_shapes_by_running, unregistered_op

    try:
        found = infer_shapes_by_running(to_onnx(graph), [o.name for _, o in unknown])
    except ModelError as e:
        try:
            check_static(graph)
            return graph  # the search can do without those types: the op just passes through
        except ShapeError:
            pass
        blamed = unregistered_op(str(e.__cause__ or e))
        node = next((n for n, _ in unknown if (n.attr("domain"), n.attr("op_type")) == blamed),
                    None)
        if node is not None:
            raise ModelError(f"{node_label(node)}: ONNX cannot infer its output shapes and ONNX "
                             f"Runtime has no kernel for it; {CUSTOM_LIB_HINT}") from None
        reason = str(e).removeprefix("ONNX Runtime cannot load the model: ")
        raise ModelError(f"{node_label(unknown[0][0])}: ONNX cannot infer its output shapes and "
                         f"ONNX Runtime cannot load the model to find them ({reason})") from None
    learned = {name: t for name, t in found.items() if t[1] is not None}
    if not learned:
        return graph
    source, _ = read_model(model)
    typed = onnx.ModelProto()
    typed.CopyFrom(source)
    _set_value_types(typed.graph, learned)
    return load(typed, input_shapes=dict(input_shapes) if input_shapes else None)


def node_label(node: Node) -> str:
    """A node as messages name it: its name, op type and domain; the output it writes when the
    node has no name.

    Example:
        >>> node_label(graph.nodes[3])                        # doctest: +SKIP
        "node MyOp (domain com.example, output 'g')"
    """
    op_type = node.attr("op_type") if node.is_opaque else node.op
    domain = (node.attr("domain") if node.is_opaque else "") or "ai.onnx"
    if node.name:
        return f"node {node.name!r} ({op_type}, domain {domain})"
    first = next((o.name for o in node.outputs if o.name), "?")
    return f"node {op_type} (domain {domain}, output {first!r})"


def _set_value_types(g: onnx.GraphProto,
                     types: Mapping[str, tuple[int, tuple[int | str | None, ...]]]) -> None:
    """Record `types` ({name: (elem_type, dims)}, a dim None unknown) in `g`: on the graph
    output of that name when it has no shape yet, else as value_info (replacing one there)."""
    from onnx import helper

    def info(name: str) -> onnx.ValueInfoProto:
        elem, dims = types[name]
        shape = [d if d is not None else None for d in dims]
        return helper.make_tensor_value_info(name, elem, shape)

    outputs = {o.name: o for o in g.output}
    rest = dict(types)
    for name in list(rest):
        out = outputs.get(name)
        if out is None:
            continue
        tt = out.type.tensor_type
        if not out.type.HasField("tensor_type") or not tt.HasField("shape") or not tt.elem_type:
            out.type.CopyFrom(info(name).type)
        del rest[name]
    kept = [vi for vi in g.value_info if vi.name not in rest]
    del g.value_info[:]
    g.value_info.extend(kept + [info(name) for name in rest])


def _ort_loads(model: onnx.ModelProto) -> str | None:
    """None if ORT can load the model on the CPU provider, else why (one line)."""
    from superopt.runtime import make_session

    try:
        make_session(model, "cpu", level="disable")
    except ModelError as e:
        return str(e)
    return None
