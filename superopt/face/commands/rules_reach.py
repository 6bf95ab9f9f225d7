"""`superopt rules reach`: how far the rules reach on real models, recorded as Markdown.

    superopt rules reach [--models zoo,shared] [--out benchmarks/results/reach.md]
                         [--time-limit S] [--shared DIR] [--costs analytic,measured]
                         [--rules FILE [--include-unproved]]

For every model of the zoo (`superopt.zoo`) and every `DIR/*.onnx` export of the shared folder
(default `../shared/models`; skipped with a note when absent), the search (`search_auto`, no A/B
gate, no numerical check inside) runs once per cost model:

- `analytic`: the analytic CUDA roofline (`AnalyticCost.for_device("cuda")`; needs no GPU);
- `measured`: op costs timed with ONNX Runtime on this machine's CPU (cached on disk).

Each row records the rewrites on the search's best path, the rule families they belong to
(`superopt.face.commands.rules_explain.family_of`) with counts, the nodes before and after (those
that run in the exported model, `runtime_nodes`: computations on weights alone fold at export),
why the search stopped, and whether the rewritten model equals its input numerically: both run
in ONNX Runtime (CPU) on the same random inputs, drawn from each input's valid values
(`superopt.pipeline.check.numerical_check`, which draws with `superopt.runtime.random_feeds`).
A rewritten model that differs, fails to load or fails to run is a failure (`FAIL`); an
unchanged model needs no check (`unchanged`).

A model with symbolic input dims is loaded and searched by `optimize`'s own phases
(`load_phase`, `search_phase`): its symbols are kept and costs are taken at the representative
sizes (batch 1, others 128; `superopt.pipeline.shapes`), and its numerics are compared at those
sizes and at the second set, as `optimize`'s check does; the row's note says so.

`--models` takes `zoo`, `shared` and single model names (a zoo name or a shared file's stem),
comma-separated. Each search is bounded by `--time-limit` seconds and
`--budget` expansions; that bound, the date, the machine, the versions and the command are
written into the file with a short "what this means" note computed from the rows.

Exit status: 0 when the file was written (numerical failures are recorded, not raised), 2 with
one line on stderr for bad options, an unreadable rules file or an output path that cannot be
written.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superopt.face.commands import add_verbosity

if TYPE_CHECKING:
    import onnx

    from superopt.core.costing import CostModel
    from superopt.core.rules import Rule

DEFAULT_OUT = "benchmarks/results/reach.md"
DEFAULT_SHARED = Path("..") / "shared" / "models"
# 30 s, not optimize's 15: in whole runs over the zoo and the shared models on the 2-core
# machine, shufflenet_v2_x0_5_bn's analytic search (about 4 s alone, stopped by its budget)
# was cut by a window's share of 15 s in 3 of 6 runs (47, 50 and 53 of its 56 folds). It ran
# up to twice as slow after other models in the same process; the cause was not found (not
# the garbage collector, no thread left running), and a record should not depend on it.
DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_BUDGET = 300
DEFAULT_CHECK_N = 2
#: the cost models a row can use, and how they are labelled in the table
COSTS = {"analytic": "analytic (CUDA roofline)", "measured": "measured (CPU, ORT)"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add `reach` to the `superopt rules` subcommands."""
    p = sub.add_parser("reach", help="search every zoo model and shared export with both cost "
                                     "models and record rewrites, families and numerics as "
                                     "Markdown",
                       description="Record how far the rules reach on real models (see "
                                   "`superopt.face.commands.rules_reach`).")
    p.add_argument("--models", default="zoo,shared", metavar="LIST",
                   help="comma-separated: zoo, shared, or model names (zoo name or shared file "
                        "stem); default zoo,shared")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="FILE.md",
                   help=f"where to write the Markdown (default {DEFAULT_OUT})")
    p.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                   help=f"search seconds per model and cost model (default "
                        f"{DEFAULT_TIME_LIMIT_S:g})")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, metavar="N",
                   help=f"graphs each search expands at most (default {DEFAULT_BUDGET})")
    p.add_argument("--shared", default=str(DEFAULT_SHARED), metavar="DIR",
                   help="folder of the shared exporter models (default ../shared/models)")
    p.add_argument("--costs", default="analytic,measured", metavar="LIST",
                   help="cost models, comma-separated: analytic (CUDA roofline), measured "
                        "(CPU timings); default both")
    p.add_argument("--rules", metavar="FILE",
                   help="rules file (default: the shipped database; others are re-proved)")
    p.add_argument("--include-unproved", action="store_true",
                   help="use the file's rules without proofs too, unchecked (to test that an "
                        "unsound rule shows as a numerics failure)")
    p.add_argument("--check-n", type=int, default=DEFAULT_CHECK_N, metavar="N",
                   help=f"random input sets per numerical comparison (default {DEFAULT_CHECK_N})")
    add_verbosity(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# the rows


# a best graph estimated above this fraction of the original's cost does not count as reached
MARGINAL = 0.99


@dataclass
class ReachModel:
    """One model to search: a zoo build (a ModelProto) or a file."""

    name: str
    source: str  # "zoo" or "shared"
    model: onnx.ModelProto | Path


@dataclass
class ReachRow:
    """One model searched with one cost model."""

    model: str
    source: str
    cost: str  # a key of COSTS
    nodes_before: int | None = None  # nodes that run in the exported model (`runtime_nodes`)
    nodes_after: int | None = None
    rewrites: int = 0
    estimate: float | None = None  # the cost model's best cost / the original's
    families: dict[str, int] = field(default_factory=dict)  # family -> rewrites
    stop: str = ""
    numerics: str = ""  # "ok (...)", "FAIL: ...", "unchanged", "not checked: ..."
    passed: bool | None = None  # numerics: True equal, False a failure, None not compared
    note: str = ""  # the sizes symbolic dims were costed at, ...
    error: str = ""  # the model could not be searched (load, shapes, ...)

    @property
    def failed(self) -> bool:
        return self.passed is False


def zoo_models(names: Sequence[str] | None = None) -> list[ReachModel]:
    """The zoo's models (all, or `names`), built with seed 0."""
    from superopt import zoo

    return [ReachModel(n, "zoo", zoo.build(n, seed=0)) for n in (names or zoo.list_models())]


def shared_models(folder: str | os.PathLike, names: Sequence[str] | None = None
                  ) -> list[ReachModel]:
    """`folder/*.onnx` (all, or those whose stem is in `names`), sorted by name."""
    paths = sorted(Path(folder).glob("*.onnx"))
    return [ReachModel(p.stem, "shared", p) for p in paths if names is None or p.stem in names]


def cost_model(kind: str) -> CostModel:
    """The cost model of a row: "analytic" (CUDA roofline) or "measured" (CPU)."""
    if kind == "analytic":
        from superopt.cost_model.analytic import AnalyticCost

        return AnalyticCost.for_device("cuda")
    from superopt.cost_model import make_cost_model

    return make_cost_model("measured", "cpu")


def reach(models: Sequence[ReachModel], rules: Sequence[Rule], *,
          costs: Sequence[str] = tuple(COSTS), time_limit: float = DEFAULT_TIME_LIMIT_S,
          budget: int = DEFAULT_BUDGET, check_n: int = DEFAULT_CHECK_N,
          progress: Callable[[ReachRow], None] | None = None) -> list[ReachRow]:
    """Search every model with every cost model (see the module doc); one row each, in order.

    Loading and searching are `optimize`'s own phases (`load_phase`, `search_phase`), so a
    model with symbolic dims is searched as `optimize` would: symbols kept, costed at the
    representative sizes; its numerics are compared at those sizes and at the second set.

    Example:
        >>> rows = reach(zoo_models(["squeezenet"]), rules, costs=["analytic"])  # doctest: +SKIP
        >>> rows[0].rewrites, rows[0].numerics                                      # doctest: +SKIP
        (0, 'unchanged')
    """
    from superopt.core.costing import runtime_nodes
    from superopt.core.errors import SuperoptError
    from superopt.core.onnx_io import to_onnx
    from superopt.pipeline.optimize import OptimizeOptions, load_phase, search_phase, start_run

    rows: list[ReachRow] = []

    def emit(row: ReachRow) -> None:
        rows.append(row)
        if progress is not None:
            progress(row)

    def options(cost: CostModel | None = None) -> OptimizeOptions:
        return OptimizeOptions(rules=list(rules), device="cpu", budget=budget,
                               time_limit=time_limit, gate=False, check=False, write=False,
                               cost_model=cost)

    for m in models:
        source = str(m.model) if isinstance(m.model, Path) else m.model
        try:
            loaded = start_run(source, None, options())
            load_phase(loaded)
            assert loaded.graph is not None
            graph, sizes = loaded.graph, loaded.sizes
            baseline = to_onnx(graph)
        except (SuperoptError, OSError, ValueError) as e:
            for kind in costs:
                emit(ReachRow(m.name, m.source, kind, error=_line(e)))
            continue
        note = f"symbolic dims kept, costed at {sizes.describe()}" if sizes is not None else ""
        sets = None if sizes is None or sizes.second is None else [sizes.overrides,
                                                                   sizes.second.overrides]
        for kind in costs:
            row = ReachRow(m.name, m.source, kind, nodes_before=len(runtime_nodes(graph)),
                           note=note)
            try:
                run = start_run(source, None, options(cost_model(kind)))
                run.graph, run.sizes, run.rules = graph, sizes, list(rules)
                search_phase(run)
                result = run.search
                assert result is not None
            except (SuperoptError, OSError, ValueError, RuntimeError) as e:
                row.error = f"search failed: {_line(e)}"
                emit(row)
                continue
            row.rewrites = len(result.steps)
            if result.stats.initial_cost > 0:
                row.estimate = result.stats.best_cost / result.stats.initial_cost
            row.families = dict(Counter(_family(s.rule) for s in result.steps).most_common())
            row.nodes_after = len(runtime_nodes(result.best))
            row.stop = str(result.stop_reason)
            if result.best == graph or not result.steps:
                row.numerics, row.passed = "unchanged", None
            else:
                row.numerics, row.passed = _compare(source, baseline, result.best, check_n,
                                                    sets)
            emit(row)
    return rows


def _family(rule: Rule) -> str:
    from superopt.face.commands.rules_explain import family_of

    return family_of(rule)


def _compare(original: str | onnx.ModelProto, baseline: onnx.ModelProto, best: Any, n: int,
             sets: list | None) -> tuple[str, bool | None]:
    """("ok ..." | "FAIL: ..." | "not checked: ...", passed) for the rewritten graph `best`
    against the original model (its export `baseline` where ORT cannot load the original):
    both through ORT's CPU provider on the same valid random inputs, at each size set of
    `sets` (symbolic dims) or at the declared shapes."""
    from superopt.core.errors import CheckError, SuperoptError
    from superopt.core.onnx_io import to_onnx
    from superopt.pipeline.check import numerical_check

    try:
        rewritten = to_onnx(best)
    except (SuperoptError, ValueError) as e:
        return f"FAIL: the rewritten graph does not export ({_line(e)})", False
    try:
        record = numerical_check(original, rewritten, n=n, baseline_fallback=baseline,
                                 shapes=sets)
    except CheckError as e:
        text = _line(e)
        if text.startswith("cannot check"):
            return f"not checked: {text}", None
        return f"FAIL: {text}", False
    except SuperoptError as e:  # the original does not run in ORT: nothing to compare with
        return f"not checked: {_line(e)}", None
    if not record.passed:
        return f"FAIL: {record.failure}", False
    err = "" if record.max_abs_error is None else f", max abs error {record.max_abs_error:.2g}"
    at = f" at {len(sets)} size sets" if sets else ""
    return f"ok ({record.n} input sets{at}{err})", True


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# the Markdown


def markdown(rows: Sequence[ReachRow], *, command: str, rules_label: str, time_limit: float,
             budget: int, check_n: int, notes: Sequence[str] = (),
             date: str | None = None) -> str:
    """The reach file: header (date, machine, versions, command, settings), the table, the
    notes (models skipped) and a "what this means" paragraph computed from the rows."""
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Rule reach",
        "",
        "How far the proved rules reach on the zoo and on real exporter models: the rewrites "
        "the search applies, with no A/B gate and no check inside, and whether the rewritten "
        "model still computes what its input computes. Written by `superopt rules reach`; "
        "regenerate it, do not edit it.",
        "",
        f"- date: {date}",
        f"- machine: {_machine()}",
        f"- versions: {_versions()}",
        f"- command: `{command}`",
        f"- rules: {rules_label}",
        f"- search: `search_auto` (region by region above 150 nodes), budget {budget} "
        f"expansions, time limit {time_limit:g} s per model and cost model; cost models: "
        f"{'; '.join(f'{k} = {v}' for k, v in COSTS.items())}",
        "- nodes: those that run in the exported model (computations on weights alone, such as "
        "a folded BatchNorm's new kernel, fold at export)",
        f"- numerics: original and rewritten model in ONNX Runtime (CPU), {check_n} sets of "
        "valid random inputs (`random_feeds`), NaN/Inf positions equal and finite values "
        "within the dtype's tolerance (float32: rtol 1e-4, atol 1e-5) or, beyond it, within "
        "twice the original's own rounding noise (its outputs with ORT's graph optimizations "
        "off against on, same inputs; `superopt.pipeline.check`)",
        "",
        "- estimate: the cost model's cost of the rewritten model over the original's",
        "",
        "| model | source | cost model | nodes | rewrites | rule families used | nodes after "
        "| estimate | numerics | search stopped |",
        "|---|---|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in rows:
        name = r.model + (f" ({r.note})" if r.note else "")
        if r.error:
            lines.append(f"| {_cell(name)} | {r.source} | {r.cost} | "
                         f"{'' if r.nodes_before is None else r.nodes_before} | - | - | - | - | "
                         f"error: {_cell(r.error)} | - |")
            continue
        fams = ", ".join(f"{k} ×{v}" for k, v in r.families.items()) or "-"
        numerics = f"**{r.numerics}**" if r.failed else r.numerics
        estimate = "-" if r.estimate is None else f"{r.estimate:.3f}"
        lines.append(f"| {_cell(name)} | {r.source} | {r.cost} | {r.nodes_before} | "
                     f"{r.rewrites} | {_cell(fams)} | {r.nodes_after} | {estimate} | "
                     f"{_cell(numerics)} | {r.stop} |")
    if notes:
        lines += ["", *[f"Note: {n}" for n in notes]]
    lines += ["", "## What this means", "", *_meaning(rows, time_limit)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _meaning(rows: Sequence[ReachRow], time_limit: float) -> list[str]:
    searched = [r for r in rows if not r.error]
    models = list(dict.fromkeys((r.source, r.model) for r in searched))
    marginal = [r for r in searched if r.rewrites and r.estimate is not None
                and r.estimate > MARGINAL]
    reached = {(r.source, r.model) for r in searched if r.rewrites and r not in marginal}
    shared = [m for m in models if m[0] == "shared"]
    shared_reached = [m for m in shared if m in reached]
    failures = [r for r in searched if r.failed]
    families: Counter = Counter()
    for r in searched:
        families.update(r.families)
    out = [
        f"- {len(reached)} of {len(models)} models get at least one rewrite that lowers the "
        "estimate by more than 1% under some cost model"
        + (f"; of the {len(shared)} real exports, {len(shared_reached)}"
           + (f" ({', '.join(m[1] for m in shared_reached)})" if shared_reached else "")
           if shared else "") + ".",
        "- Families used, over all rows: " + (", ".join(f"{k} ×{v}" for k, v in
                                                        families.most_common()) or "none") + ".",
        ("- Numerics: every rewritten model computes what its input computes."
         if not failures else
         f"- **Numerics: {len(failures)} rewritten model(s) differ from their input**: "
         + "; ".join(f"{r.model} ({r.cost}): {r.numerics}" for r in failures)
         + ". A rewrite that changes what a model computes is a bug in a rule or in the "
           "matcher, whatever it saves."),
        "- A rewrite count is what the search kept on its best path within "
        f"{time_limit:g} s: 0 means no proved rule both matched the graph and made it cheaper "
        "under that cost model. The analytic column ranks by the CUDA roofline (no GPU used), "
        "the measured column by op timings on this CPU, so its choices follow this machine and "
        "its noise. Neither column is a speed claim; `superopt optimize` decides by timing the "
        "whole model.",
        *(["- Not counted above, as the best graph's estimate is within 1% of the "
           "original's (under the measured costs that is within their noise; under the "
           "roofline, too small a gain to show end to end): "
           + ", ".join(f"{r.model} ({r.cost}, {r.estimate:.4f})" for r in marginal) + "."]
          if marginal else []),
        "- Where a model gets no rewrite, `superopt rules explain MODEL.onnx` says why, node "
        "by node: which families matched where and what one rewrite there would change in the "
        "estimated cost (a match that is not cheaper is left alone), where a rule was refused "
        "and why, and what differs where no rule matched.",
    ]
    return out


def _machine() -> str:
    from superopt.runtime import device_name

    return f"{device_name('cpu')}; measured costs on the CPU"


def _versions() -> str:
    import platform

    import numpy
    import onnx
    import onnxruntime

    from superopt.core.version import __version__

    return (f"superopt {__version__}, onnx {onnx.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, numpy {numpy.__version__}, Python "
            f"{platform.python_version()}")


# ---------------------------------------------------------------------------------------------
# the command


def run(args: argparse.Namespace) -> int:
    from superopt.core.atomic import atomic_write
    from superopt.core.errors import OutputError, UsageError
    from superopt.face.console import Console
    from superopt.pipeline.optimize import select_rules

    if args.time_limit <= 0:
        raise UsageError("--time-limit must be positive")
    if args.budget < 1:
        raise UsageError("--budget must be at least 1")
    if args.check_n < 1:
        raise UsageError("--check-n must be at least 1")
    costs = [c.strip() for c in args.costs.split(",") if c.strip()]
    bad = [c for c in costs if c not in COSTS]
    if bad or not costs:
        raise UsageError(f"--costs {args.costs!r}: choose from {', '.join(COSTS)}")
    out = Path(args.out)
    if out.is_dir() or not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise OutputError(f"{out}: cannot write there (a folder, or its folder does not exist)")
    models, notes = _select_models(args.models, Path(args.shared))
    rules = select_rules(args.rules, include_unproved=args.include_unproved)
    console = Console(stderr=True, quiet=args.quiet)
    console.print(f"reach: {len(models)} models x {len(costs)} cost models, {len(rules)} rules, "
                  f"{args.time_limit:g} s per search", markup=False)

    def say(row: ReachRow) -> None:
        what = row.error or (f"{row.rewrites} rewrites, {row.nodes_before} -> "
                             f"{row.nodes_after} nodes, numerics {row.numerics}")
        console.print(f"  {row.model} [{row.cost}]: {what}", markup=False)

    rows = reach(models, rules, costs=costs, time_limit=args.time_limit, budget=args.budget,
                 check_n=args.check_n, progress=say)
    label = (f"{args.rules or 'the shipped database'}: {len(rules)} rules used"
             + (" (unproved included, unchecked)" if args.include_unproved else "")
             + ("" if args.include_unproved else _seal_note(args.rules)))
    text = markdown(rows, command=_command_line(args), rules_label=label,
                    time_limit=args.time_limit, budget=args.budget, check_n=args.check_n,
                    notes=notes)
    atomic_write(out, text)
    failures = sum(r.failed for r in rows)
    console.print(f"wrote {out}: {len(rows)} rows"
                  + (f", {failures} numerics failure(s)" if failures else ""), markup=False)
    return 0


def _seal_note(path: str | None) -> str:
    """For the shipped database: whether its digest held (else its proofs were re-checked)."""
    from superopt.core.rules import is_shipped_path, load_rules, seal_state

    if not is_shipped_path(path):
        return " (proofs re-checked before use)"
    state = seal_state(load_rules(path))
    return ("; digest intact" if state == "intact" else
            f"; digest {state}, so its proofs were re-checked before use")


def _select_models(spec: str, shared: Path) -> tuple[list[ReachModel], list[str]]:
    """The models `--models` names, and notes (the shared folder skipped, ...)."""
    from superopt import zoo
    from superopt.core.errors import UsageError

    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError("--models is empty: give zoo, shared or model names")
    shared_stems = sorted(p.stem for p in shared.glob("*.onnx")) if shared.is_dir() else []
    zoo_names: list[str] = []
    shared_names: list[str] = []
    notes: list[str] = []
    for item in items:
        if item == "zoo":
            zoo_names += zoo.list_models()
        elif item == "shared":
            if shared.is_dir():
                shared_names += shared_stems
            else:
                notes.append(f"the shared models folder {shared} is absent; its models were "
                             "skipped")
        elif item in zoo.MODELS:
            zoo_names.append(item)
        elif item in shared_stems:
            shared_names.append(item)
        else:
            raise UsageError(f"--models: unknown model {item!r} (zoo, shared, a zoo model: "
                             f"{', '.join(zoo.list_models())}"
                             + (f", or a shared model: {', '.join(shared_stems)}"
                                if shared_stems else "") + ")")
    models = zoo_models(list(dict.fromkeys(zoo_names))) if zoo_names else []
    if shared_names:
        models += shared_models(shared, list(dict.fromkeys(shared_names)))
    return models, notes


def _command_line(args: argparse.Namespace) -> str:
    """The command that wrote the file, from the options it ran with (defaults left out)."""
    parts = ["superopt rules reach", f"--models {args.models}", f"--out {args.out}",
             f"--time-limit {args.time_limit:g}"]
    if args.budget != DEFAULT_BUDGET:
        parts.append(f"--budget {args.budget}")
    if args.shared != str(DEFAULT_SHARED):
        parts.append(f"--shared {args.shared}")
    if args.costs != "analytic,measured":
        parts.append(f"--costs {args.costs}")
    if args.rules:
        parts.append(f"--rules {args.rules}")
    if args.include_unproved:
        parts.append("--include-unproved")
    if args.check_n != DEFAULT_CHECK_N:
        parts.append(f"--check-n {args.check_n}")
    return " ".join(parts)
