"""`superopt bench [NAME ...]`: time zoo models as built, at ORT all, and after superopt."""

from __future__ import annotations

import argparse
import shlex
import sys

from superopt.face.cli import add_verbosity


def register(subparsers: argparse._SubParsersAction) -> None:
    from superopt.face.bench import DEFAULT_ROUNDS, DEFAULT_TIME_LIMIT_S, DEFAULT_TIMING_BUDGET_S

    p = subparsers.add_parser(
        "bench", help="benchmark the zoo models: ORT disabled, ORT all, superopt",
        description="For each zoo model: optimize it with superopt, then time the model at "
                    "ORT_DISABLE_ALL, at ORT_ENABLE_ALL and superopt's output at ORT_ENABLE_ALL "
                    "(and onnxslim's, if installed) in one interleaved run; print a table and "
                    "write it as Markdown.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="zoo models (default: all; see `superopt zoo list`)")
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
    p.add_argument("--max-total", type=float, metavar="S",
                   help="start no model after this many seconds (the rest are listed as skipped)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                   help="also time onnxslim's output when it is installed (default: on)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="measured-cost cache folder (default: $SUPEROPT_CACHE_DIR or "
                        "~/.cache/superopt)")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from superopt.core.errors import UsageError
    from superopt.face.bench import default_out_path, run_bench
    from superopt.face.console import Console
    from superopt.runtime import device_name, resolve_device

    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    if args.timing_budget <= 0 or args.time_limit <= 0:
        raise UsageError("--timing-budget and --time-limit must be positive")
    console = Console(stderr=True, quiet=args.quiet)
    device = resolve_device(args.device)  # DeviceError in one line for a CUDA that does not work
    out = args.out or default_out_path(device, device_name(device))
    command = _command_line(args)
    report = run_bench(args.names, device=device, rounds=args.rounds,
                       timing_budget_s=args.timing_budget, rules=args.rules,
                       time_limit=args.time_limit, peers=args.peers, cache_dir=args.cache_dir,
                       out=out, json_out=args.json, command=command, max_total_s=args.max_total,
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
                        ("--max-total", args.max_total), ("--cache-dir", args.cache_dir)):
        if value is not None:
            parts += [flag, str(value)]
    parts += [] if args.peers else ["--no-peers"]
    return " ".join(shlex.quote(p) for p in parts)


def _console_table(report):
    """The Markdown table without its widest column: rewrites become a count."""
    from superopt.face.bench import table_rows
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
