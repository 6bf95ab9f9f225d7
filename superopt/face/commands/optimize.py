"""`superopt optimize IN.onnx [OUT.onnx]`: search, gate, check and write an optimized model."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import ClassVar

from superopt.core.atomic import (
    commit_outputs,
    make_temp,
    raise_if_interrupted,
    release_temp,
    staged_outputs,
)
from superopt.core.errors import OutputError, UsageError
from superopt.face.commands import add_verbosity
from superopt.face.console import PhaseProgress, format_bytes

EPILOG = """\
numerical check:
  Original and result run on valid random inputs (indices within the table they index,
  positive values where the model takes a log, a root or a quotient); NaN/Inf must sit at the
  same positions in both and finite values agree within rtol/atol, which follow each output's
  type unless set (float32 1e-4/1e-5, float16 and bfloat16 1e-2/1e-3, float64 1e-7/1e-9,
  integers exactly). When it cannot compare (an input whose valid values are unknown, outputs
  NaN/Inf everywhere), nothing is written.

exit status:
  0    done: the optimized model, or the original when no candidate was faster, was written
  2    bad input: unreadable model or rules file, bad option, dynamic shape to fix, CUDA
       missing, output not writable (one line on stderr; nothing written)
  3    the numerical check failed, or could not compare the models; nothing written
       (--no-check writes without the check)
  130  interrupted by Ctrl-C; nothing written (143: terminated by SIGTERM)
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "optimize", help="optimize an ONNX model with verified rewrites",
        description="Search for a faster equivalent graph using proved rules, time it against "
                    "the original end to end, check it numerically and write it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="the ONNX model to optimize")
    p.add_argument("output", nargs="?", help="where to write (default: IN.opt.onnx)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device to optimize for and time on (auto: CUDA when it works)")
    p.add_argument("--rules", metavar="RULES.json",
                   help="rules file (default: the shipped database); only proved rules are used")
    p.add_argument("--alpha", type=float, default=1.05,
                   help="search relaxation: keep graphs costing < alpha x best (default 1.05)")
    p.add_argument("--budget", type=int, default=300,
                   help="graphs the search expands at most (default 300)")
    p.add_argument("--time-limit", type=float, default=30.0, metavar="SEC",
                   help="search seconds at most; the best graph so far is used (default 30)")
    p.add_argument("--cost", choices=("measured", "analytic"), default="measured",
                   help="op costs timed with ONNX Runtime (cached on disk), or FLOPs/bytes "
                        "estimates (instant, deterministic)")
    p.add_argument("--overwrite-input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="fix an input's shape, e.g. input:1,3,224,224 (repeatable; the name "
                        "may be left out when the model has one input)")
    p.add_argument("--skip-rules", nargs="+", default=[], metavar="ID",
                   help="rules not to use (ids, id prefixes or names)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the numerical check of the result against the original")
    p.add_argument("--check-n", type=int, default=3, metavar="N",
                   help="random inputs for the numerical check (default 3)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance of the numerical check, for every output (default: "
                        "by output type, 1e-4 for float32)")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance of the numerical check, for every output (default: "
                        "by output type, 1e-5 for float32)")
    p.add_argument("--save-as-external-data", action="store_true", default=None,
                   help="store weights in OUT.onnx.data beside the model (automatic past 2 GB)")
    p.add_argument("--json", metavar="FILE.json",
                   help="write the run's report as JSON (schema: docs/report-schema.md)")
    p.add_argument("--report", metavar="FILE.html",
                   help="write a self-contained HTML report: summary and a drawing of every "
                        "rewrite")
    add_verbosity(p)
    p.set_defaults(func=run)


def parse_input_shapes(specs: list[str]) -> dict[str | None, tuple[int, ...]] | None:
    """["x:1,3,224,224", "1,128"] -> {"x": (1, 3, 224, 224), None: (1, 128)}."""
    if not specs:
        return None
    out: dict[str | None, tuple[int, ...]] = {}
    for spec in specs:
        name, _, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise UsageError(f"--overwrite-input-shape {spec!r}: expected NAME:1,3,224,224") \
                from None
        out[name or None] = shape
    if None in out and len(out) > 1:
        raise UsageError("--overwrite-input-shape: give names when fixing several inputs")
    return out


def check_writable(path: str | Path) -> None:
    """OutputError (one line) unless a file can be created at `path` (tries a temp file)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"{path}: cannot write, {folder} {what}")
    try:
        probe = make_temp(folder, f".{path.name}.", ".probe")
    except OSError as e:
        raise OutputError(f"{path}: cannot write in {folder} ({e.strerror})") from None
    release_temp(probe)


def run(args: argparse.Namespace) -> int:
    from superopt.face.console import Console  # rich when installed, plain text without it
    from superopt.pipeline.optimize import default_output_path, optimize

    console = Console(stderr=True, quiet=args.quiet)
    output = Path(args.output) if args.output else default_output_path(args.input)
    # Fail before minutes of search, not after: every output must be writable.
    for target in (output, args.json, args.report):
        if target:
            check_writable(target)
    writer = _report_writer() if args.report else None
    if args.report and writer is None:
        raise UsageError("--report needs superopt.face.report, which this installation lacks")

    # The model and the reports appear together, or not at all: their renames wait for the
    # commit, which an interrupt noted at any point before it (even one swallowed) prevents.
    with staged_outputs([t for t in (output, args.json, args.report) if t]):
        with _Progress(console, args.quiet) as progress:
            result = optimize(
                args.input, output, rules=args.rules, device=args.device, cost=args.cost,
                alpha=args.alpha, budget=args.budget, time_limit=args.time_limit,
                input_shapes=parse_input_shapes(args.overwrite_input_shape),
                skip_rules=args.skip_rules, check=not args.no_check, check_n=args.check_n,
                rtol=args.rtol, atol=args.atol,
                save_as_external_data=args.save_as_external_data,
                progress=_checking_interrupts(progress.update))
        if args.json:
            from superopt.face.report import write_json

            write_json(result, args.json)
        if writer is not None:
            writer(result, args.report)
        commit_outputs()
    if not args.quiet:
        _print_summary(console, result, args.verbose)
    return 0


def _checking_interrupts(update):
    """`update`, first raising KeyboardInterrupt if an interrupt was noted: a Ctrl-C that Python
    swallowed stops the run at its next progress report, not only at the write."""

    def checked(*args) -> None:
        raise_if_interrupted()
        update(*args)

    return checked


def _report_writer():
    """`superopt.face.report.write_report(result, path)` when that module exists."""
    try:
        module = importlib.import_module("superopt.face.report")
    except ModuleNotFoundError as e:
        if e.name == "superopt.face.report":
            return None
        raise
    return getattr(module, "write_report", None)


class _Progress(PhaseProgress):
    """One progress bar per pipeline phase (rich), or one line per phase without rich."""

    LABELS: ClassVar[dict[str, str]] = {
        "load": "Loading the model", "rules": "Loading rules", "measure": "Measuring ops",
        "search": "Searching", "gate": "Timing end to end", "check": "Checking numerics",
        "write": "Writing", "describe": "Describing rewrites"}



def _print_summary(console, result, verbose: bool) -> None:
    from superopt.face.console import Table

    table = Table(title=f"superopt optimize: {result.input_path}")
    table.add_column("op type")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    ops = sorted(set(result.op_counts_before) | set(result.op_counts_after))
    for op in ops:
        b, a = result.op_counts_before.get(op, 0), result.op_counts_after.get(op, 0)
        style = "green" if a < b else ("yellow" if a > b else "")
        table.add_row(op, str(b), f"[{style}]{a}[/{style}]" if style else str(a))
    table.add_section()
    table.add_row("nodes", str(sum(result.op_counts_before.values())),
                  str(sum(result.op_counts_after.values())))
    table.add_row("model size", format_bytes(result.size_before), format_bytes(result.size_after))
    if result.latency_before:
        where = f" ({result.device}, {result.provider})"
        table.add_row("latency" + where, _lat(result.latency_before),
                      _lat(result.latency_after))
    table.add_row("time taken", "", f"{sum(result.phase_s.values()):.1f} s")
    table.add_row("rewrites applied", "", str(len(result.steps)))
    console.print(table)
    console.print(("[green]" if result.kept else "[yellow]") + result.kept_reason)
    if result.check is not None:
        style = "[yellow]" if result.check.skipped else ""
        console.print(f"{style}check: {result.check.summary()}")
    for d in result.dropped_candidates:
        console.print(f"[yellow]{d}")
    if result.written:
        console.print(f"wrote {result.output_path}")
    if verbose:
        for s in result.steps:
            console.print(f"  {s.rule_name or s.rule_id}: {', '.join(s.matched_nodes)} -> "
                          f"{', '.join(s.created_nodes)} (gain {s.gain * 1e6:.1f} µs)")
        if result.ab_summary:
            console.print(result.ab_summary)


def _lat(t: dict | None) -> str:
    return "-" if not t else f"{t['median_s'] * 1e3:.3f} ms ±{t['spread']:.0%}"
