"""`superopt optimize IN.onnx [OUT.onnx]`: search, gate, check and write an optimized model."""

from __future__ import annotations

import argparse
import importlib
import os
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
from superopt.face.console import PhaseProgress, escape, format_bytes

EPILOG = """\
custom ops:
  Ops ONNX does not know (ONNX Runtime's contrib ops in com.microsoft, ops of a custom domain)
  pass through unchanged; their output shapes come from ONNX Runtime when ONNX cannot infer
  them. An op ONNX Runtime has no kernel for needs its library: --custom-lib LIB.so registers
  it in every session superopt creates (timing, the gate, the check).

numerical check:
  Original and result run on valid random inputs (indices within the table they index,
  positive values where the model takes a log, a root or a quotient); NaN/Inf must sit at the
  same positions in both and finite values agree within rtol/atol, which follow each output's
  type unless set (float32 1e-4/1e-5, float16 and bfloat16 1e-2/1e-3, float64 1e-7/1e-9,
  integers exactly). When it cannot compare (an input whose valid values are unknown, outputs
  NaN/Inf everywhere), nothing is written.

exit status:
  0    done: the optimized model, or the original when no candidate was faster, was written
  2    bad input: unreadable model or rules file, bad option, input of unknown rank, CUDA
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
                        "may be left out when the model has one input). The written model then "
                        "takes only that shape; without it symbolic dims are kept")
    p.add_argument("--shape-hint", action="append", default=[], metavar="NAME:DIMS",
                   help="the sizes of an input's symbolic dims to optimize for, e.g. "
                        "input_ids:8,256 or input_ids:8,? (? keeps the default), or a symbol "
                        "by name, seq=256 (repeatable). Symbolic dims stay symbolic in the "
                        "written model; default sizes: batch-like dims 1, others 128")
    p.add_argument("--gate-budget", type=float, default=None, metavar="SEC",
                   help="seconds for the end-to-end gate, which times the original twice "
                        "(A/A′, the noise now) against the candidates and stops once the "
                        "answer is clear; a longer budget detects smaller gains (default "
                        "6; docs/gate.md)")
    p.add_argument("--skip-rules", nargs="+", default=[], metavar="ID",
                   help="rules not to use (ids, id prefixes or names)")
    p.add_argument("--no-roofline-candidate", action="store_true",
                   help="with measured costs, do not also search with the device's analytic "
                        "roofline (a third of --time-limit more) for a second candidate the "
                        "gate times")
    p.add_argument("--no-check", action="store_true",
                   help="skip the numerical check of the result against the original")
    p.add_argument("--check-n", type=int, default=3, metavar="N",
                   help="random inputs for the numerical check (default 3)")
    p.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance of the numerical check, for every output (default: "
                        "by output type, 1e-4 for float32, where a value beyond it may still "
                        "pass within twice the original's own rounding noise; a tolerance "
                        "given here is held exactly)")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance of the numerical check, for every output (default: "
                        "by output type, 1e-5 for float32)")
    p.add_argument("--save-as-external-data", action="store_true", default=None,
                   help="store weights in OUT.onnx.data beside the model (automatic past 2 GB)")
    p.add_argument("--custom-lib", action="append", default=[], metavar="LIB.so",
                   help="a custom op library for ONNX Runtime (SessionOptions."
                        "register_custom_ops_library), used by every session (repeatable)")
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


def parse_shape_hints(specs: list[str]) -> dict[str | None, object] | None:
    """["input_ids:8,?", "seq=256", "1,128"] -> {"input_ids": (8, "?"), "seq": 256,
    None: (1, 128)} (`superopt.pipeline.shapes.choose_sizes` checks them against the model)."""
    if not specs:
        return None
    out: dict[str | None, object] = {}
    for spec in specs:
        symbol, eq, size = spec.partition("=")
        if eq and ":" not in spec:
            try:
                out[symbol] = int(size)
            except ValueError:
                raise UsageError(f"--shape-hint {spec!r}: expected SYMBOL=SIZE, e.g. seq=256") \
                    from None
            continue
        name, _, dims = spec.rpartition(":")
        parts = [d.strip() for d in dims.split(",")]
        if not dims or any(not (d.lstrip("-").isdigit() or d in ("?", "_")) for d in parts):
            raise UsageError(f"--shape-hint {spec!r}: expected NAME:DIMS, e.g. input_ids:8,256 "
                             "(? for a dim left at its default)")
        out[name or None] = tuple(int(d) if d.lstrip("-").isdigit() else d for d in parts)
    if None in out and len(out) > 1:
        raise UsageError("--shape-hint: give names when hinting several inputs")
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

    console = Console(stderr=True, quiet=args.quiet, width=_columns())
    if args.gate_budget is not None and not args.gate_budget > 0:
        raise UsageError(f"--gate-budget {args.gate_budget:g}: give a positive number of "
                         "seconds")
    if args.custom_lib:
        from superopt.runtime import register_custom_op_library

        for library in args.custom_lib:
            register_custom_op_library(library)  # UsageError: one line, exit 2
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
                shape_hints=parse_shape_hints(args.shape_hint),
                skip_rules=args.skip_rules, check=not args.no_check, check_n=args.check_n,
                rtol=args.rtol, atol=args.atol,
                save_as_external_data=args.save_as_external_data,
                **({} if args.gate_budget is None else {"gate_budget_s": args.gate_budget}),
                roofline_candidate=not args.no_roofline_candidate,
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
    """The run in a table of 80 columns or less: op counts and sizes of the input file as
    written and of the output, latency, then one line each for import-time cleanup, the
    verdict, the check, dropped candidates and the file written."""
    from superopt.face.console import Table

    width = _columns()
    _line(console, _shorten_middle(f"superopt optimize: {result.input_path or 'model'}", width))
    table = Table()
    table.add_column("op type")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    ops = sorted(set(result.op_counts_before) | set(result.op_counts_after))
    for op in ops:
        b, a = result.op_counts_before.get(op, 0), result.op_counts_after.get(op, 0)
        style = "green" if a < b else ("yellow" if a > b else "")
        label = _shorten_middle(op, 40)
        table.add_row(label, str(b), f"[{style}]{a}[/{style}]" if style else str(a))
    table.add_section()
    table.add_row("nodes", str(sum(result.op_counts_before.values())),
                  str(sum(result.op_counts_after.values())))
    table.add_row("model size", format_bytes(result.size_before), format_bytes(result.size_after))
    if result.latency_before:
        table.add_row(f"latency ({result.device}, {result.provider})",
                      _lat(result.latency_before),
                      _lat(result.latency_after))
    table.add_row("time taken", "", f"{sum(result.phase_s.values()):.1f} s")
    table.add_row("rewrites applied", "", str(len(result.steps)))
    console.print(table)
    imported = import_line(result)
    if imported:
        _line(console, imported)
    _line(console, verdict_line(result), "green" if result.kept else "yellow")
    if result.check is not None:
        _line(console, check_line(result.check), "yellow" if result.check.skipped else None)
    for d in result.dropped_candidates:
        _line(console, d, "yellow")
    if result.written:
        _line(console, f"wrote {result.output_path}")
    if verbose:
        for s in result.steps:
            _line(console, f"  {s.rule_name or s.rule_id}: {', '.join(s.matched_nodes)} -> "
                           f"{', '.join(s.created_nodes)} (gain {s.gain * 1e6:.1f} µs)")
        if result.ab_summary:
            console.print(result.ab_summary, markup=False)


def import_line(result) -> str:
    """What import-time cleanup did to the node count, or "" when it changed nothing.

    Example: "import folded 132 Constant and static shape nodes (213 in the file, 81
    searched)".
    """
    imported = getattr(result, "op_counts_imported", None)
    if not imported:
        return ""
    in_file, searched = sum(result.op_counts_before.values()), sum(imported.values())
    if in_file == searched:
        return ""
    if in_file > searched:
        return (f"import folded {in_file - searched} Constant and static shape nodes "
                f"({in_file} in the file, {searched} searched)")
    return f"import rewrote the file's {in_file} nodes as {searched} (opset conversion)"


def verdict_line(result) -> str:
    """What was written and why, in one line: "written: ..." or "original kept: ..."."""
    verdict = getattr(result, "verdict", "") or (
        "written: faster" if result.kept else "original kept: not faster")
    head = verdict.split(":", 1)[0]
    why = result.kept_reason.removeprefix("kept the original: ").removeprefix("written ")
    return f"{head}: {why}"


def check_line(check) -> str:
    """The numerical check in one line that reads as what it is: the tolerance is a bound on
    each value's difference, |result - original| <= atol + rtol * |original|, so a relative
    error above rtol on a value near zero is still within it."""
    if check.skipped:
        return f"check: skipped ({check.note})"
    verdict = "passed" if check.passed else "FAILED"
    sets = f"{check.n} random input set{'s' if check.n != 1 else ''}"
    tolerances = check.tolerances or {"float32": {"rtol": check.rtol, "atol": check.atol}}
    bounds = ", ".join(f"{dtype} atol {t['atol']:.0e}, rtol {t['rtol']:.0e}"
                       if t["rtol"] or t["atol"] else f"{dtype} exact"
                       for dtype, t in sorted(tolerances.items()))
    if check.max_abs_error is None:
        return f"check: {verdict} on {sets}: no finite value compared"
    nonfinite = (f", {check.nonfinite} NaN/Inf at the same positions" if check.nonfinite
                 else "")
    within = "each within" if check.passed else "allowed:"
    return (f"check: {verdict} on {sets} ({check.compared} values{nonfinite}): max abs error "
            f"{check.max_abs_error:.1e}, max rel error {check.max_rel_error:.1e}; {within} "
            f"atol + rtol·|original| ({bounds}){check.noise_note()}")


def _line(console, text: str, style: str | None = None) -> None:
    """One line of plain `text` (names from the model are never read as markup): in `style`
    on a terminal; in a log or pipe one unbroken line."""
    if console.is_terminal:
        body = escape(text)
        console.print(f"[{style}]{body}[/{style}]" if style else body)
    else:
        console.print(text, markup=False)


def _columns() -> int:
    """The width to fit: $COLUMNS when set, else 80 (files and pipes) or the terminal's."""
    value = os.environ.get("COLUMNS", "")
    if value.isdigit() and int(value) >= 40:
        return int(value)
    import shutil

    return max(40, min(shutil.get_terminal_size((80, 24)).columns, 200))


def _shorten_middle(text: str, width: int) -> str:
    """`text` cut in the middle with "…" to at most `width` characters.

    Example:
        >>> _shorten_middle("/a/very/long/path/to/model.onnx", 20)
        '/a/very/l…model.onnx'
    """
    if len(text) <= width:
        return text
    keep = max(width - 1, 2)
    tail = keep // 2 + keep % 2
    return text[:keep - tail] + "…" + text[-tail:]


def _lat(t: dict | None) -> str:
    return "-" if not t else f"{t['median_s'] * 1e3:.3f} ms ±{t['spread']:.0%}"
