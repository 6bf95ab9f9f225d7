"""`superopt bench [NAME ...]`: each model as built, at ORT's best level, and after superopt,
timed in one run. This module holds the command's parser, its logic and its rendering.

The models are the zoo's and the ONNX exports in `../shared/models` (read in place; `--shared`
moves the folder, and a missing folder is a note). For every model `run_bench` builds or reads
it, optimizes it with `superopt.pipeline.optimize.optimize` (the measured cost model on the
chosen device, the shipped rules unless told), then times, in **one interleaved run**, the
variants

- ``ORT disable``: the model as built, at ORT_DISABLE_ALL,
- ``ORT all``: the model as built, at ORT_ENABLE_ALL,
- ``superopt``: superopt's output (what `optimize` would write), at ORT_ENABLE_ALL,
- ``onnxslim``: onnxslim's output at ORT_ENABLE_ALL, when onnxslim is installed (a peer),
- ``ORT transformers``: for transformer models (a Softmax, MatMuls and a LayerNorm or RMSNorm),
  the output of ONNX Runtime's own offline transformer optimizer
  (`onnxruntime.transformers.optimizer.optimize_model`, model type "bert", heads and hidden size
  detected, its Python fusions only: opt_level 0) at ORT_ENABLE_ALL (a peer; it needs sympy, and
  a failure is one line in the row's notes),

with the A/B gate's measuring loop, `superopt.runtime.time_interleaved`: fresh sessions per
variant, several rounds whose order rotates, the best of a few runs per round, the median over
rounds and the spread (p90 - p10) / median; a ratio counts as significant by the gate's rule
(`superopt.pipeline.gate.noise_margin`). Unlike the gate, each variant has its own optimization
level, and a variant that fails (a peer's output ORT cannot load) is reported, not fatal.

A model that fails anywhere is reported in its row; the others still run. `write_markdown`
renders the results (rewritten after every model, so a run cut short leaves its rows).

Example:
    >>> report = run_bench(["squeezenet"], device="cpu", rounds=3)    # doctest: +SKIP
    >>> report.models[0].speedup_over_all                              # doctest: +SKIP
    1.004
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from superopt.core.atomic import atomic_write
from superopt.core.errors import UsageError
from superopt.core.onnx_io import to_onnx
from superopt.core.version import __version__
from superopt.face.commands import add_verbosity

if TYPE_CHECKING:
    from superopt.runtime import Timing

DEFAULT_ROUNDS = 9
DEFAULT_TIMING_BUDGET_S = 8.0
DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_SHARED = Path("..") / "shared" / "models"
ORT_TRANSFORMERS = "ORT transformers"
#: the targets of the CPU benchmark (issue 13): a NasRNN speedup and a geomean over ORT all
TARGET_NASRNN = 1.10
TARGET_GEOMEAN = 1.05
#: the smallest relative difference ever called significant (the A/B gate's `min_margin`)
NOISE_FLOOR = 0.01

Log = Callable[[str], None]
Builder = Callable[[str], onnx.ModelProto]


@dataclass
class ModelBench:
    """One model's row: sizes, timings by variant label, the optimizer's work, errors."""

    name: str
    nodes_before: int | None = None
    nodes_after: int | None = None
    timings: dict[str, Timing] = field(default_factory=dict)
    optimize_s: float | None = None
    cache_state: str = ""  # "cold", "warm" or "partial" (of the measured-cost cache)
    rewrites: dict[str, int] = field(default_factory=dict)  # rule label -> times applied
    kept: bool | None = None  # True: superopt's candidate was kept by its gate
    kept_reason: str = ""
    error: str | None = None  # the failure that stopped this model, in one line
    notes: list[str] = field(default_factory=list)  # lesser failures (a peer, a variant)
    phase_s: dict[str, float] = field(default_factory=dict)
    runs_per_round: int | None = None
    sessions: int | None = None

    def round_ratios(self, reference: str, variant: str = "superopt") -> list[float] | None:
        """reference / variant within each round (the two timed in the same round), or None
        when the two have no rounds in common."""
        ref, var = self.timings.get(reference), self.timings.get(variant)
        if (ref is None or var is None or not ref.samples
                or len(ref.samples) != len(var.samples)):
            return None
        pairs = [r / v for r, v in zip(ref.samples, var.samples) if v > 0]
        return pairs or None

    def ratio(self, reference: str, variant: str = "superopt") -> float | None:
        """The median over rounds of reference / variant in the same round (above 1: `variant`
        is faster), or None. Paired within the round, so a change of the machine's speed
        between rounds, which moves every variant alike, cancels (on the 2-core VM a whole
        run can shift by 35% for minutes). Without common rounds: the ratio of the medians."""
        pairs = self.round_ratios(reference, variant)
        if pairs is not None:
            return float(np.median(pairs))
        ref, var = self.timings.get(reference), self.timings.get(variant)
        if ref is None or var is None or var.median_s <= 0:
            return None
        return ref.median_s / var.median_s

    def significant(self, reference: str, variant: str = "superopt") -> bool | None:
        """Whether `ratio(reference, variant)` differs from 1 beyond the noise: by the gate's
        rule for unpaired timings (|ratio - 1| > max(1%, hypot of the two spreads)) and, from
        three common rounds up, with 1 outside the 10th-90th percentile range of the per-round
        ratios too; None without timings. Both, because neither is enough alone: the pairing
        cannot see that a variant's two sessions run a few percent apart for their whole life
        (a model compared with itself read 1.020x, 1 outside its per-round range), and a shift
        of the machine's speed between rounds widens the spreads of an unpaired comparison."""
        from superopt.pipeline.gate import noise_margin

        ratio = self.ratio(reference, variant)
        if ratio is None:
            return None
        margin = noise_margin(self.timings[reference], self.timings[variant], NOISE_FLOOR)
        if abs(ratio - 1.0) <= margin:
            return False
        pairs = self.round_ratios(reference, variant)
        if pairs is not None and len(pairs) >= 3:
            low, high = np.percentile(pairs, [10, 90])
            return not low <= 1.0 <= high
        return True

    @property
    def speedup_over_all(self) -> float | None:
        return self.ratio("ORT all")

    @property
    def speedup_over_disable(self) -> float | None:
        return self.ratio("ORT disable")


@dataclass
class BenchReport:
    """A whole benchmark run: the environment, the method and one `ModelBench` per model."""

    device: str
    device_name: str
    provider: str
    versions: dict[str, str]
    command: str
    date: str
    rounds: int
    timing_budget_s: float
    rules_label: str
    models: list[ModelBench] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)  # peers whose outputs are timed


def geomean(values: Sequence[float | None]) -> float | None:
    """Geometric mean of the values that are not None (None if there are none).

    Example:
        >>> geomean([2.0, 0.5, None, 1.0])
        1.0
    """
    present = [v for v in values if v is not None]
    if not present:
        return None
    return float(math.exp(sum(math.log(v) for v in present) / len(present)))


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark the zoo models: ORT disabled, ORT all, superopt",
        description="For each zoo model: optimize it with superopt, then time the model at "
                    "ORT_DISABLE_ALL, at ORT_ENABLE_ALL and superopt's output at ORT_ENABLE_ALL "
                    "(and onnxslim's, if installed) in one interleaved run; print a table and "
                    "write it as Markdown.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="zoo models (see `superopt zoo list`), stems of the shared folder's "
                        "exports, or the groups `zoo` and `shared` (default: both groups)")
    p.add_argument("--shared", default=str(DEFAULT_SHARED), metavar="DIR",
                   help="folder of shared ONNX exports benchmarked with the zoo, read in place "
                        f"(default {DEFAULT_SHARED})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to time the models (auto: CUDA if it really works, else CPU)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"interleaved timing rounds per model (default {DEFAULT_ROUNDS})")
    p.add_argument("--timing-budget", type=float, default=DEFAULT_TIMING_BUDGET_S, metavar="S",
                   help="seconds of timing rounds per model, sessions not counted "
                        f"(default {DEFAULT_TIMING_BUDGET_S:g})")
    p.add_argument("--out", metavar="FILE.md",
                   help="Markdown results (default: benchmarks/results/<device>.md)")
    p.add_argument("--json", metavar="FILE.json",
                   help="also write the results as JSON, with every round's time")
    p.add_argument("--rules", help="rules file (default: the shipped database)")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                   help=f"search seconds per model (default {DEFAULT_TIME_LIMIT_S:g})")
    p.add_argument("--gate-budget", type=float, metavar="SEC",
                   help="seconds of end-to-end gate timing per model (default: optimize's)")
    p.add_argument("--max-total", type=float, metavar="S",
                   help="start no model after this many seconds (the rest are listed as skipped)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also time onnxslim's output when it is installed, and ORT's transformer "
                        "optimizer's on transformer models (default: on)")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a line for the results' notes, e.g. what else ran on the machine "
                        "(repeatable)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="measured-cost cache folder (default: $SUPEROPT_CACHE_DIR or "
                        "~/.cache/superopt)")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from superopt.face.console import Console
    from superopt.runtime import device_name, resolve_device

    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if args.timing_budget <= 0 or args.time_limit <= 0:
        raise UsageError("--timing-budget and --time-limit must be positive")
    if args.gate_budget is not None and not args.gate_budget > 0:
        raise UsageError("--gate-budget must be positive")
    console = Console(stderr=True, quiet=args.quiet)
    device = resolve_device(args.device)  # DeviceError in one line for a CUDA that does not work
    out = args.out or default_out_path(device, device_name(device))
    command = _command_line(args)
    report = run_bench(args.names, device=device, rounds=args.rounds,
                       timing_budget_s=args.timing_budget, rules=args.rules,
                       time_limit=args.time_limit, peers=args.peers, cache_dir=args.cache_dir,
                       out=out, json_out=args.json, command=command, max_total_s=args.max_total,
                       shared_dir=args.shared, notes=args.note, gate_budget_s=args.gate_budget,
                       log=lambda line: console.print(line, markup=False))
    table = _console_table(report)
    if not args.quiet:
        Console(stderr=False, width=140).print(table)
        for note in report.notes:
            console.print(note, markup=False)
        console.print(f"wrote {out}")
    return 1 if any(m.error for m in report.models) else 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed when run from the shell, else rebuilt from the parsed options."""
    if sys.argv and sys.argv[0].endswith(("superopt", "__main__.py")) and \
            "bench" in sys.argv[1:]:
        return "superopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    parts = ["superopt", "bench", *args.names, "--device", args.device, "--rounds",
             str(args.rounds), "--timing-budget", f"{args.timing_budget:g}", "--time-limit",
             f"{args.time_limit:g}"]
    for flag, value in (("--out", args.out), ("--json", args.json), ("--rules", args.rules),
                        ("--max-total", args.max_total), ("--cache-dir", args.cache_dir),
                        ("--gate-budget", args.gate_budget)):
        if value is not None:
            parts += [flag, str(value)]
    if args.shared != str(DEFAULT_SHARED):
        parts += ["--shared", args.shared]
    parts += [] if args.peers else ["--no-peers"]
    return " ".join(shlex.quote(p) for p in parts)


def _console_table(report):
    """The Markdown table without its widest column: rewrites become a count."""
    from superopt.face.console import Table

    headers, rows = table_rows(report)
    table = Table(title=f"superopt bench on {report.device} ({report.device_name})")
    for i, h in enumerate(headers[:-1] + ["rewrites"]):
        table.add_column(h, justify="left" if i == 0 else "right")
    for m, row in zip(report.models, rows):
        rewrites = "error" if m.error else ("—" if m.kept is None else
                                            str(sum(m.rewrites.values()) if m.kept else 0))
        table.add_row(*row[:-1], rewrites)
    table.add_section()
    table.add_row(*[c.replace("**", "") for c in rows[-1]])
    return table


# ---------------------------------------------------------------------------------------------
# The benchmark run
# ---------------------------------------------------------------------------------------------


def onnxslim_available() -> bool:
    """Whether the onnxslim peer can be imported."""
    import importlib.util

    return importlib.util.find_spec("onnxslim") is not None


def environment(device: str) -> tuple[str, str, dict[str, str]]:
    """(device name, provider, versions) of this run."""
    import onnxruntime as ort

    from superopt.runtime import PROVIDERS, device_name

    versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                "numpy": np.__version__, "superopt": __version__,
                "python": platform.python_version()}
    if onnxslim_available():
        import onnxslim

        versions["onnxslim"] = getattr(onnxslim, "__version__", "?")
    return device_name(device), PROVIDERS[device], versions


def run_bench(names: Sequence[str] | None = None, *, device: str = "cpu",
              rounds: int = DEFAULT_ROUNDS, timing_budget_s: float = DEFAULT_TIMING_BUDGET_S,
              rules: str | os.PathLike | None = None,
              time_limit: float = DEFAULT_TIME_LIMIT_S, peers: bool = True,
              cache_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
              json_out: str | os.PathLike | None = None, command: str = "",
              max_total_s: float | None = None, shared_dir: str | os.PathLike | None = None,
              notes: Sequence[str] = (), gate_budget_s: float | None = None,
              builder: Builder | None = None, log: Log | None = None) -> BenchReport:
    """Benchmark models `names` on `device`; see the module doc. A name is a zoo model, the stem
    of an export in `shared_dir`, or the group `zoo` or `shared`; the default is every zoo
    model, then every export of `shared_dir` (when given and present). `notes` go into the
    results' notes as given (what else ran on the machine). `gate_budget_s` is the end-to-end
    gate's timing budget per model (None: optimize's default).

    `out` (Markdown) and `json_out` (`report_json`), if given, are rewritten after every
    model. `max_total_s` skips the models that would start after that many seconds (noted in
    the report). `builder(name)` replaces `superopt.zoo.build` (tests). `log` receives one line
    per phase.
    """
    from superopt import zoo
    from superopt.pipeline.optimize import select_rules
    from superopt.runtime import resolve_device

    started = time.perf_counter()
    say = log or (lambda line: None)
    early_notes: list[str] = []
    if builder is None:
        names, builder, early_notes = _resolve_models(names, shared_dir)
    else:
        names = list(names) if names else zoo.list_models()
    resolved = resolve_device(device)
    rule_list = select_rules(rules)  # RulesError for a bad file, before any model is built
    name, provider, versions = environment(resolved)
    report = BenchReport(
        device=resolved, device_name=name, provider=provider, versions=versions,
        command=command, date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        rounds=rounds, timing_budget_s=timing_budget_s,
        rules_label=f"{len(rule_list)} proved rules from "
                    f"{rules if rules else 'the shipped database (superopt/rules_db/rules.json)'}")
    report.notes += [*notes, *early_notes]
    use_slim = peers and onnxslim_available()
    if use_slim:
        report.peers.append("onnxslim")
    elif peers:
        report.notes.append("onnxslim not installed: skipped (`pip install superopt[bench]`).")
    cost_model = _cost_model(resolved, cache_dir)
    load_before = _load_average()
    for k, model_name in enumerate(names):
        elapsed = time.perf_counter() - started
        if max_total_s is not None and elapsed > max_total_s:
            row = ModelBench(model_name, error=f"skipped: the run's time limit ({max_total_s:.0f}"
                                               f" s) was reached")
            report.models.append(row)
            say(f"[{k + 1}/{len(names)}] {model_name}: {row.error}")
            continue
        say(f"[{k + 1}/{len(names)}] {model_name}")
        row = bench_model(model_name, builder, resolved, rule_list, cost_model, rounds=rounds,
                          timing_budget_s=timing_budget_s, time_limit=time_limit,
                          use_slim=use_slim, use_transformers=peers, log=say,
                          gate_budget_s=gate_budget_s)
        if ORT_TRANSFORMERS in row.timings and ORT_TRANSFORMERS not in report.peers:
            report.peers.append(ORT_TRANSFORMERS)
        report.models.append(row)
        _save(report, out, json_out)
    if resolved == "cpu" and load_before is not None:
        # Other processes share the cores: the load says how much to trust small differences.
        report.notes.append(f"load average (1 min) {load_before:.2f} at the start, "
                            f"{_load_average():.2f} at the end.")
    _save(report, out, json_out)
    return report


def shared_models(folder: str | os.PathLike | None) -> dict[str, Path]:
    """The shared folder's exports by stem (empty when there is no such folder)."""
    if folder is None or not Path(folder).is_dir():
        return {}
    return {p.stem: p for p in sorted(Path(folder).glob("*.onnx"))}


def _resolve_models(names: Sequence[str] | None, shared_dir: str | os.PathLike | None
                    ) -> tuple[list[str], Builder, list[str]]:
    """(model names, a builder for them, notes): zoo names, shared stems and the groups."""
    from superopt import zoo

    shared = shared_models(shared_dir)
    notes = []
    if shared_dir is not None and not shared:
        notes.append(f"no shared exports in {shared_dir}: only zoo models were benchmarked.")
    wanted = list(names) if names else ["zoo", "shared"]
    out: list[str] = []
    for name in wanted:
        group = zoo.list_models() if name == "zoo" else list(shared) if name == "shared" \
            else [name]
        for n in group:
            if n not in zoo.MODELS and n not in shared:
                raise UsageError(f"unknown model {n!r}; valid names: zoo, shared, "
                                 f"{', '.join([*zoo.list_models(), *shared])}")
            if n not in out:
                out.append(n)

    def build(name: str) -> onnx.ModelProto:
        if name in zoo.MODELS:
            return zoo.build(name)
        return onnx.load(str(shared[name]))

    return out, build, notes


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _save(report: BenchReport, out: str | os.PathLike | None,
          json_out: str | os.PathLike | None) -> None:
    if out is not None:
        write_markdown(report, out)
    if json_out is not None:
        write_json(report, json_out)


def _cost_model(device: str, cache_dir: str | os.PathLike | None):
    from superopt.cost_model import make_cost_model
    from superopt.cost_model.cache import CostCache

    cache = CostCache(cache_dir) if cache_dir is not None else None
    # `is not None`: an empty CostCache is falsy (it has a length).
    return make_cost_model("measured", device, **({"cache": cache} if cache is not None else {}))


def bench_model(name: str, builder: Builder, device: str, rules: Sequence, cost_model, *,
                rounds: int, timing_budget_s: float, time_limit: float, use_slim: bool,
                log: Log, use_transformers: bool = False,
                gate_budget_s: float | None = None) -> ModelBench:
    """Build, optimize and time one model; every failure ends up in the returned row."""
    from superopt.pipeline.optimize import optimize
    from superopt.runtime import time_interleaved

    row = ModelBench(name)
    t = time.perf_counter()
    try:
        model = builder(name)
    except Exception as e:  # noqa: BLE001 - a broken builder must not stop the other models
        row.error = f"build failed: {_one_line(e)}"
        log(f"  {row.error}")
        return row
    row.phase_s["build"] = time.perf_counter() - t
    row.nodes_before = len(model.graph.node)

    variants: list[tuple[str, onnx.ModelProto, str]] = [
        ("ORT disable", model, "disable"), ("ORT all", model, "all")]
    t = time.perf_counter()
    measured_before = (getattr(cost_model, "measured", 0), getattr(cost_model, "cache_hits", 0))
    try:
        result = optimize(model, None, rules=list(rules), device=device, time_limit=time_limit,
                          cost_model=cost_model, write=False,
                          **({} if gate_budget_s is None else {"gate_budget_s": gate_budget_s}))
    except Exception as e:  # noqa: BLE001 - reported in the row; the ORT variants still run
        row.error = f"optimize failed: {_one_line(e)}"
        log(f"  {row.error}")
    else:
        row.optimize_s = time.perf_counter() - t
        row.cache_state = _cache_state(cost_model, measured_before)
        superopt_model = to_onnx(result.graph_after)
        row.nodes_after = len(superopt_model.graph.node)
        row.kept, row.kept_reason = result.kept, result.kept_reason
        row.rewrites = dict(Counter(_rule_label(s) for s in result.steps))
        variants.append(("superopt", superopt_model, "all"))
        log(f"  optimize {row.optimize_s:.1f} s (cost cache {row.cache_state}): "
            f"{sum(row.rewrites.values())} rewrites; {result.kept_reason}")
    row.phase_s["optimize"] = time.perf_counter() - t

    if use_slim:
        t = time.perf_counter()
        try:
            import onnxslim

            variants.append(("onnxslim", onnxslim.slim(_copy(model)), "all"))
        except Exception as e:  # noqa: BLE001 - a peer's failure is a note, not the model's
            row.notes.append(f"onnxslim failed: {_one_line(e)}")
        row.phase_s["onnxslim"] = time.perf_counter() - t
    if use_transformers and is_transformer(model):
        t = time.perf_counter()
        try:
            variants.append((ORT_TRANSFORMERS, ort_transformers_optimize(model), "all"))
        except Exception as e:  # noqa: BLE001 - a peer's failure is a note, not the model's
            row.notes.append(f"ORT transformer optimizer failed: {_one_line(e)}")
        row.phase_s["ort-transformers"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        timed = time_interleaved([v[1] for v in variants], device, level=[v[2] for v in variants],
                                 rounds=rounds, budget_s=timing_budget_s, feeds=_feeds(model),
                                 keep_going=True)
    except Exception as e:  # noqa: BLE001
        row.error = (row.error + "; " if row.error else "") + f"timing failed: {_one_line(e)}"
        log(f"  {row.error}")
        return row
    row.phase_s["timing"] = time.perf_counter() - t
    row.runs_per_round, row.sessions = timed.runs_per_round, timed.sessions
    for (label, _, _), timing, error in zip(variants, timed.timings, timed.errors):
        if timing is not None:
            row.timings[label] = timing
        else:
            row.notes.append(f"{label} output does not run in ONNX Runtime: {error}")
    parts = ", ".join(f"{label} {t.median_s * 1e3:.3f} ms" for label, t in row.timings.items())
    log(f"  timing {row.phase_s['timing']:.1f} s ({timed.rounds} rounds x "
        f"{timed.runs_per_round} runs, {timed.sessions} sessions): {parts}")
    return row


def is_transformer(model: onnx.ModelProto) -> bool:
    """A transformer for the ORT-transformers peer: Softmax, MatMul and a LayerNorm (as one op
    or as ReduceMean + Pow chains)."""
    ops = {n.op_type for n in model.graph.node}
    return {"Softmax", "MatMul"} <= ops and (
        "LayerNormalization" in ops or {"ReduceMean", "Pow"} <= ops)


def ort_transformers_optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX Runtime's offline transformer optimizer on `model` (type "bert", heads and hidden
    size detected from the graph, its Python fusions only: opt_level 0)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from onnxruntime.transformers.optimizer import optimize_model

    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        optimized = optimize_model(_copy(model), model_type="bert", num_heads=0, hidden_size=0,
                                   opt_level=0, use_gpu=False)
    return optimized.model


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Valid inputs: the zoo's (token ids below the vocabulary size) or generic random ones."""
    from superopt import zoo
    from superopt.runtime import random_feeds

    try:
        return zoo.input_feeds(model)
    except ValueError:
        return random_feeds(model)


def _cache_state(cost_model, before: tuple[int, int]) -> str:
    """How the measured-cost cache served this model: "cold: N ops measured" or "warm"."""
    measured = getattr(cost_model, "measured", 0) - before[0]
    hits = getattr(cost_model, "cache_hits", 0) - before[1]
    if measured:
        return f"cold: {measured} ops measured" + (f", {hits} cached" if hits else "")
    return "warm" if hits else "no op costs needed"


def _rule_label(step) -> str:
    return step.rule_name or step.rule_id[:12]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _one_line(error: BaseException) -> str:
    from superopt.runtime import error_line

    return error_line(error)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def default_out_path(device: str, device_name: str, folder: str | os.PathLike = "benchmarks/results"
                     ) -> Path:
    """benchmarks/results/cpu.md, or cuda-<gpu name slug>.md.

    Example:
        >>> default_out_path("cuda", "NVIDIA H100 80GB HBM3").name
        'cuda-nvidia-h100-80gb-hbm3.md'
    """
    if device == "cuda":
        slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "gpu"
        return Path(folder) / f"cuda-{slug}.md"
    return Path(folder) / f"{device}.md"


def _ms(t: Timing | None) -> str:
    return "—" if t is None else f"{t.median_s * 1e3:.3f} ± {t.spread:.0%}"


def _x(ratio: float | None, significant: bool | None = True) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:.3f}×" + ("" if significant else " (n.s.)")


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the results table (the geomean row last), as plain strings."""
    peers = [p for p in ("onnxslim", ORT_TRANSFORMERS) if p in report.peers]
    headers = ["model", "nodes before → after", "ORT disable (ms)", "ORT all (ms)",
               "superopt (ms)"]
    headers += [f"{p} (ms)" for p in peers]
    headers += ["superopt vs ORT all", "superopt vs disable"]
    headers += [f"{p} vs ORT all" for p in peers]
    headers += ["optimize (s)", "rewrites applied"]
    rows = []
    for m in report.models:
        nodes = "—" if m.nodes_before is None else (
            f"{m.nodes_before} → {m.nodes_after if m.nodes_after is not None else '—'}")
        row = [m.name, nodes, _ms(m.timings.get("ORT disable")), _ms(m.timings.get("ORT all")),
               _ms(m.timings.get("superopt"))]
        row += [_ms(m.timings.get(p)) for p in peers]
        row += [_x(m.speedup_over_all, m.significant("ORT all")),
                _x(m.speedup_over_disable, m.significant("ORT disable"))]
        row += [_x(m.ratio("ORT all", p), m.significant("ORT all", p)) for p in peers]
        opt = "—" if m.optimize_s is None else f"{m.optimize_s:.1f} ({m.cache_state})"
        row += [opt, _rewrites_cell(m)]
        rows.append(row)
    geo = ["**geomean**", "", "", "", ""] + [""] * len(peers)
    geo += [_x(geomean([m.speedup_over_all for m in report.models])),
            _x(geomean([m.speedup_over_disable for m in report.models]))]
    geo += [_x(geomean([m.ratio("ORT all", p) for m in report.models])) for p in peers]
    geo += ["", ""]
    rows.append(geo)
    return headers, rows


def _effective(m: ModelBench) -> float | None:
    """superopt's speedup over ORT all: 1.0 where superopt kept the original (the same model:
    its measured ratio is noise), else the measured ratio."""
    return 1.0 if m.kept is False and m.speedup_over_all is not None else m.speedup_over_all


def targets(report: BenchReport) -> list[str]:
    """The CPU targets, each met or not with its figure: NasRNN >= 1.10x and geomean >= 1.05x
    over ORT_ENABLE_ALL, no model slower than ORT_ENABLE_ALL beyond the noise. A model whose
    original superopt kept counts as 1.0x (the same model); a ratio within the noise does not
    meet a target."""
    lines = []
    nas = next((m for m in report.models if m.name == "nasrnn"), None)
    if nas is not None and nas.speedup_over_all is not None:
        x = nas.speedup_over_all
        if nas.kept is False:
            why = f"superopt kept the original; measured {x:.3f}×, noise"
            ok = False
        else:
            sig = bool(nas.significant("ORT all"))
            why = f"{x:.3f}×" + ("" if sig else ", within the noise")
            ok = sig and x >= TARGET_NASRNN
        lines.append(f"NasRNN at least {TARGET_NASRNN:.2f}× over ORT all: "
                     f"{'met' if ok else 'not met'} ({why}).")
    geo = geomean([_effective(m) for m in report.models])
    if geo is not None:
        measured = geomean([m.speedup_over_all for m in report.models])
        n = sum(m.speedup_over_all is not None for m in report.models)
        lines.append(f"geomean at least {TARGET_GEOMEAN:.2f}× over ORT all: "
                     f"{'met' if geo >= TARGET_GEOMEAN else 'not met'} ({geo:.3f}× over {n} "
                     f"model{'s' if n != 1 else ''} with the models whose original was kept at "
                     f"1.000×; {measured:.3f}× as measured).")
    slower = [m for m in report.models
              if m.kept is not False and m.speedup_over_all is not None
              and m.speedup_over_all < 1.0 and m.significant("ORT all")]
    if any(m.speedup_over_all is not None for m in report.models):
        lines.append("no model slower than ORT all beyond the noise: " + (
            "met." if not slower else "not met (" + ", ".join(
                f"{m.name} {m.speedup_over_all:.3f}×" for m in slower) + ")."))
    return lines


def _rewrites_cell(m: ModelBench) -> str:
    if m.error:
        return f"**error**: {m.error}"
    if m.kept is None:
        return "—"
    applied = ", ".join(f"{label} ×{n}" for label, n in sorted(m.rewrites.items()))
    if m.kept:
        return applied
    return f"none (original kept: {m.kept_reason})"


def render_markdown(report: BenchReport) -> str:
    """The report as Markdown: header fields, the table, the method and notes."""
    v = report.versions
    lines = [
        f"# superopt bench: {report.device} ({report.device_name})", "",
        f"- date: {report.date}",
        f"- device: {report.device_name}; provider: {report.provider}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- command: `{report.command}`" if report.command else "- command: (Python API)",
        f"- rules: {report.rules_label}", "",
    ]
    headers, rows = table_rows(report)
    lines.append("| " + " | ".join(headers) + " |")
    left = (0, 1, len(headers) - 1)  # names and text left, numbers right
    lines.append("|" + "|".join("---" if i in left else "---:" for i in range(len(headers))) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    runs = sorted({m.runs_per_round for m in report.models if m.runs_per_round})
    sessions = sorted({m.sessions for m in report.models if m.sessions})
    goals = targets(report)
    if goals:
        lines += ["", "Targets:", ""] + [f"- {g}" for g in goals]
    lines += [
        "",
        "Method: for each model the variants (the model as built at ORT_DISABLE_ALL and at "
        "ORT_ENABLE_ALL, superopt's output at ORT_ENABLE_ALL"
        + (", onnxslim's output at ORT_ENABLE_ALL" if "onnxslim" in report.peers else "")
        + (", for transformer models the output of ORT's offline transformer optimizer "
           "(`onnxruntime.transformers.optimizer`, model type bert, opt_level 0) at "
           "ORT_ENABLE_ALL" if ORT_TRANSFORMERS in report.peers else "") +
        ") are timed in one interleaved run: "
        f"{'/'.join(map(str, sessions)) or '?'} fresh sessions per variant, {report.rounds} rounds"
        " whose order rotates and that cycle over the sessions, the best of "
        f"{'/'.join(map(str, runs)) or '?'} runs per round (fitted to about "
        f"{report.timing_budget_s:g} s of timing per model), inputs bound once with IO binding"
        + (" (on the GPU, outputs stay there)" if report.device == "cuda" else "") + ", "
        "intra-op threads spinning within a run as in a default session and stopped when it "
        "returns, so that no session's threads spin on into another's run. "
        "Times are the median over rounds ± the spread (p90 − p10) / median; speedups are "
        "the median over rounds of reference / variant timed in the same round (above 1: "
        "faster; paired, so a shift of the machine's speed between rounds cancels); *n.s.* "
        "marks a speedup within the noise: within max(1%, the two spreads combined in "
        "quadrature) of 1, or with 1 within the 10th–90th percentile range of its per-round "
        "ratios. Optimize time is superopt's whole "
        "pipeline (cost measurement, search, end-to-end gate, numerical check) with the state of "
        "the measured-cost cache it started from. The geomean is over the models with a value.",
    ]
    notes = list(report.notes)
    for m in report.models:
        notes += [f"{m.name}: {n}" for n in m.notes]
    if report.device == "cpu":
        notes.append("CPU timings on a shared machine: other processes add noise; differences "
                     "within the spread are not significant.")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def report_json(report: BenchReport) -> dict:
    """The report as JSON-ready data, with every round's time (for looking into the noise)."""
    data = {k: v for k, v in report.__dict__.items() if k != "models"}
    data["format"] = "superopt-bench/1"
    data["models"] = []
    for m in report.models:
        row = {k: v for k, v in m.__dict__.items() if k != "timings"}
        row["timings"] = {label: {"median_s": t.median_s, "spread": t.spread,
                                  "rounds_s": t.samples} for label, t in m.timings.items()}
        row["speedup_over_all"], row["speedup_over_disable"] = (m.speedup_over_all,
                                                                m.speedup_over_disable)
        data["models"].append(row)
    data["geomean"] = {"over_all": geomean([m.speedup_over_all for m in report.models]),
                       "over_disable": geomean([m.speedup_over_disable for m in report.models])}
    return data


def report_from_json(data: Mapping) -> BenchReport:
    """The inverse of `report_json` (to re-render recorded results with `render_markdown`)."""
    from superopt.runtime import Timing

    if data.get("format") != "superopt-bench/1":
        raise UsageError("not a superopt bench JSON file (format superopt-bench/1)")
    fields = {k: v for k, v in data.items() if k in BenchReport.__dataclass_fields__}
    report = BenchReport(**{**fields, "models": []})
    for row in data["models"]:
        kwargs = {k: v for k, v in row.items() if k in ModelBench.__dataclass_fields__}
        kwargs["timings"] = {label: Timing(t["median_s"], t["spread"], list(t["rounds_s"]))
                             for label, t in row["timings"].items()}
        report.models.append(ModelBench(**kwargs))
    return report


def write_markdown(report: BenchReport, path: str | os.PathLike) -> Path:
    """Write `render_markdown(report)` to `path` atomically (temp file + rename)."""
    return _write_atomic(render_markdown(report), path)


def write_json(report: BenchReport, path: str | os.PathLike) -> Path:
    """Write `report_json(report)` to `path` atomically."""
    import json

    return _write_atomic(json.dumps(report_json(report), indent=1) + "\n", path)


def _write_atomic(text: str, path: str | os.PathLike) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text)
