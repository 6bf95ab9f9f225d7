"""`superopt generate`: enumerate graphs, propose and prune candidate rules, prove them, write.

    superopt generate [--max-ops 3] [--max-weight-ops 0] [--ops MatMul,Add ...]
                      [--from MODEL.onnx ...]
                      [--workers N] [--seed S]
                      [--timeout SEC] [--no-verify] [--keep-unproved]
                      [--keep-self-concat] [--yes]
                      [--ray [ADDRESS] [--checkpoint-dir DIR] [--partitions P]] -o FILE

`--max-ops` counts runtime operators; `--max-weight-ops W` lets a graph hold W operators that
compute weights only (concatenating, enlarging or scaling kernels, the BatchNorm folds: the
exporter folds them) on top of those, so "two Convs => Split(Conv(t, Concat(k, j)))" fits
`--max-ops 2 --max-weight-ops 1`. Weight-only operators beyond W take runtime places, so
`--max-weight-ops 0` is the plain operator count.

Every run leaves out, before proving, the candidates that only repeat another up to renaming
or the operand order of Add/Mul, and those that concatenate a tensor with itself
(`Concat(?t, ?t)`: no export writes one; `superopt.generator.selection`). With `--from`, the
enumeration runs over the op configurations the given models use (their ops, attributes, ranks:
`superopt.generator.from_model`) instead of TASO's fixed set, and keeps self-concatenations
when one of the models has one. Prints an estimate of the work first; a run estimated at
over an hour needs `--yes`. Ctrl-C stops the enumeration early and still writes what was
found, marked partial in the file's meta.

With `--ray` every stage runs as Ray tasks (`superopt.generator.distributed`, docs/ray.md) on a
local Ray (`--workers` CPUs) or the cluster at ADDRESS, with the same rules; Ctrl-C writes
nothing there, and a rerun with the same `--checkpoint-dir` resumes from the finished shards.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from superopt.core.errors import OutputError, SuperoptError, UsageError
from superopt.face.commands import add_verbosity

HOUR = 3600.0
# Free weight-only operators per graph: 0 keeps the default k=3 run, which builds the shipped
# database, within its budget (rules_db/README.md has the measurements).
DEFAULT_MAX_WEIGHT_OPS = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="generate candidate rules by enumeration and prove them",
        description="Enumerate every operator graph of up to K ops over small inputs, pair "
                    "graphs with equal fingerprints, prune the pairs as TASO does, check them in "
                    "float64 at two shape sets, prove them with Z3, and write a rules file.")
    p.add_argument("-o", "--output", required=True, metavar="FILE.json",
                   help="rules file to write (atomically)")
    p.add_argument("--max-ops", type=int, default=3, metavar="K",
                   help="largest graph, in runtime operators (default 3; 4 takes tens of "
                        "minutes)")
    p.add_argument("--max-weight-ops", type=int, default=DEFAULT_MAX_WEIGHT_OPS, metavar="W",
                   help="weight-only operators (Concat of kernels, EnlargeKernel, BatchNorm "
                        "folds: the exporter folds them) a graph may hold beyond K; more of "
                        "them take runtime places, so 0 counts every operator against K "
                        f"(default {DEFAULT_MAX_WEIGHT_OPS}; 1 writes about 5 times the "
                        "candidates: rules_db/README.md)")
    p.add_argument("--ops", nargs="+", metavar="OP",
                   help="registry op names to enumerate (default: TASO's set plus "
                        "BatchNormalization, Gemm, Sub); commas also separate")
    p.add_argument("--from", dest="from_models", nargs="+", metavar="MODEL.onnx",
                   help="enumerate over the op configurations (ops, attributes, ranks) these "
                        "models use, to grow a database for them; --ops further restricts")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SEC",
                   help="Z3 time limit per rule (default 10)")
    p.add_argument("--keep-self-concat", action="store_true",
                   help="keep rules whose patterns concatenate a tensor with itself "
                        "(Concat(?t, ?t) and towers of it: no export writes them, so they are "
                        "left out unless a --from model does that)")
    p.add_argument("--no-verify", action="store_true",
                   help="write the checked candidates unproved (proof result 'unverified')")
    p.add_argument("--keep-unproved", action="store_true",
                   help="also write rules the verifier did not prove, with their proof record")
    p.add_argument("--yes", action="store_true",
                   help="run even when the estimate says it takes over an hour")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the stages as Ray tasks: on a local Ray with --workers CPUs, or "
                        "on the cluster at ADDRESS (HOST:PORT of `ray start --head`, or auto); "
                        "needs the ray extra (pip install 'superopt[ray]')")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="with --ray: save each finished shard here and resume from what a "
                        "previous run with the same settings left (shared storage on a "
                        "cluster)")
    p.add_argument("--partitions", type=int, default=None, metavar="P",
                   help="with --ray: fingerprint partitions of the shuffle (default 4 per "
                        "CPU)")
    add_verbosity(p)
    p.set_defaults(func=run)


def _estimate(universe, args) -> int:
    from superopt import generator

    return generator.estimate_graphs(universe, args.max_ops, args.max_weight_ops)


def _budget(args) -> str:
    extra = f" + {args.max_weight_ops} weight-only" if args.max_weight_ops else ""
    return f"{args.max_ops}{extra} ops"


def _budget_flags(args) -> str:
    extra = f" --max-weight-ops {args.max_weight_ops}" if args.max_weight_ops else ""
    return f"--max-ops {args.max_ops}{extra}"


def _parse_ops(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [name for v in values for name in v.split(",") if name.strip()]


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * HOUR:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / HOUR:.1f} h"


def run(args: argparse.Namespace) -> int:
    from superopt import generator
    from superopt.face.console import Console
    from superopt.generator.opset import default_universe

    console = Console(stderr=True, quiet=args.quiet)
    generator.check_budgets(args.max_ops, args.max_weight_ops)
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 (all cores) or more, got {args.workers}")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise OutputError(f"{out}: is a directory")
    if args.ray is None and (args.checkpoint_dir is not None or args.partitions is not None):
        raise UsageError("--checkpoint-dir and --partitions need --ray")
    if args.partitions is not None and args.partitions < 1:
        raise UsageError(f"--partitions must be at least 1, got {args.partitions}")
    verify_rules = None if args.no_verify else _verifier()
    ops = _parse_ops(args.ops)
    keep_self_concat = args.keep_self_concat
    if args.from_models:
        if args.ray is not None:
            raise UsageError("--from runs in one process; it does not take --ray yet")
        universe, model_concats_itself = _from_models(args, ops, console)
        keep_self_concat = keep_self_concat or model_concats_itself
    else:
        universe = default_universe(ops)
    if args.ray is not None:
        return _run_on_ray(args, ops, universe, out, console)
    workers = args.workers or os.cpu_count() or 1
    n_graphs = _estimate(universe, args)
    seconds = generator.estimate_seconds(n_graphs, workers)
    console.print(f"estimate: about {n_graphs:,} graphs of up to {_budget(args)} over "
                  f"{len(universe.instances)} op instances, ~{_duration(seconds)} on {workers} "
                  f"worker{'s' if workers > 1 else ''}", markup=False)
    if seconds > HOUR and not args.yes:
        raise UsageError(f"{_budget_flags(args)} would take about {_duration(seconds)}; "
                         "pass --yes to run it anyway")
    result = _run_generator(args, ops, workers, console,
                            universe if args.from_models else None)
    rules, meta = _select(result.rules, dict(result.meta), keep_self_concat)
    if not args.no_verify and rules:
        rules, meta = _verify(verify_rules, args, rules, meta, workers, console)
    elif args.no_verify:
        meta["verification"] = "skipped (--no-verify)"
    _write(console, out, rules, meta)
    return 0


def _select(rules: list, meta: dict, keep_self_concat: bool) -> tuple[list, dict]:
    """Drop duplicates up to renaming and operand order, and self-concatenations, before the
    verifier spends time on them (`superopt.generator.selection`); counts go to the meta."""
    from superopt.generator.selection import select_rules

    kept, dropped = select_rules(rules, keep_self_concat)
    meta["stages"] = {**meta["stages"], **{f"dropped: {k}": v for k, v in dropped.items()},
                      "candidates kept": len(kept)}
    return kept, meta


def _write(console, out: Path, rules: list, meta: dict) -> None:
    from superopt.core.rules import save_rules

    save_rules(rules, out, meta)
    by_result: dict[str, int] = {}
    for r in rules:
        key = r.proof.get("result", "unverified")
        by_result[key] = by_result.get(key, 0) + 1
    _print_stages(console, meta["stages"])
    summary = ", ".join(f"{n} {k}" for k, n in sorted(by_result.items())) or "no rules"
    partial = " (PARTIAL: interrupted)" if meta.get("partial") else ""
    console.print(f"wrote {out}: {len(rules)} rules ({summary}){partial} in "
                  f"{meta['seconds']['total']:.0f} s, peak memory {meta['peak_memory_mb']:.0f} MB")


def _run_on_ray(args, ops, universe, out: Path, console) -> int:
    """The --ray path: one Ray session for the generation and the verification."""
    from superopt import generator
    from superopt.face.console import CountProgress
    from superopt.generator.distributed import generate_ray, ray_session

    with ray_session(args.ray, args.workers or None) as cpus:
        n_graphs = _estimate(universe, args)
        seconds = generator.estimate_seconds(n_graphs, cpus)
        where = "a local Ray" if args.ray == "local" else f"the Ray cluster at {args.ray}"
        console.print(f"estimate: about {n_graphs:,} graphs of up to {_budget(args)} over "
                      f"{len(universe.instances)} op instances, ~{_duration(seconds)} on "
                      f"{where} with {cpus} CPU{'s' if cpus > 1 else ''}", markup=False)
        if seconds > HOUR and not args.yes:
            raise UsageError(f"{_budget_flags(args)} would take about {_duration(seconds)}; "
                             "pass --yes to run it anyway")
        try:
            with CountProgress(console, quiet=args.quiet) as bar:
                result = generate_ray(args.max_ops, ops, args.seed,
                                      max_weight_ops=args.max_weight_ops,
                                      partitions=args.partitions,
                                      checkpoint_dir=args.checkpoint_dir, progress=bar.update)
            rules, meta = _select(result.rules, dict(result.meta), args.keep_self_concat)
            if not args.no_verify and rules:
                rules, meta = _verify_on_ray(args, rules, meta, console)
            elif args.no_verify:
                meta["verification"] = "skipped (--no-verify)"
        except KeyboardInterrupt:
            where = (f"; rerun with --checkpoint-dir {args.checkpoint_dir} to resume"
                     if args.checkpoint_dir else " (pass --checkpoint-dir to make runs resumable)")
            console.print(f"[yellow]interrupted: nothing written{where}[/]")
            raise
    _write(console, out, rules, meta)
    return 0


def _verify_on_ray(args, rules, meta, console):
    from superopt.face.console import CountProgress
    from superopt.verifier.driver import verify_rules_ray

    t0 = time.time()
    checkpoint = (Path(args.checkpoint_dir) / "verify.jsonl") if args.checkpoint_dir else None
    with CountProgress(console, quiet=args.quiet) as bar:
        checked = verify_rules_ray(rules, timeout_s=args.timeout, checkpoint=checkpoint,
                                   progress=lambda done, total, r=None: bar.update(
                                       "verify", done, total))
    return _verified(args, checked, meta, t0)


def _from_models(args, ops, console):
    """The universe of the models' configurations, and whether one of the models concatenates
    a tensor with itself (then the rules that do so are kept)."""
    from superopt.generator.from_model import model_universe

    paths = args.from_models
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"--from {path}: no such file")
    universe, configs, facts = model_universe(paths, ops)
    console.print(f"--from: {len(configs)} op configurations in {len(paths)} model"
                  f"{'s' if len(paths) > 1 else ''}; enumerating {len(universe.instances)} op "
                  f"instances ({', '.join(universe.settings['ops'])}) over "
                  f"{len(universe.inputs)} inputs", markup=False)
    if getattr(args, "verbose", False):
        for c in configs:
            console.print(f"  {c.text()}", markup=False)
    return universe, bool(facts.get("self_concat"))


def _run_generator(args, ops, workers, console, universe=None):
    from superopt import generator
    from superopt.face.console import CountProgress

    with CountProgress(console, quiet=args.quiet) as bar:
        result = generator.generate(args.max_ops, ops, workers, args.seed, progress=bar.update,
                                    universe=universe, max_weight_ops=args.max_weight_ops)
    if not result.complete:
        console.print("[yellow]interrupted: writing the candidates found so far "
                      "(marked partial)[/]")
    return result


def _verifier():
    """`superopt.verifier.verify_rules`, looked up before hours of generation, not after."""
    try:
        from superopt.verifier import verify_rules
    except ImportError as e:
        raise SuperoptError(f"the verifier is not available ({e}); pass --no-verify to write "
                            "unproved candidates") from None
    return verify_rules


def _verify(verify_rules, args, rules, meta, workers, console):
    from superopt.face.console import CountProgress

    t0 = time.time()
    try:
        with CountProgress(console, quiet=args.quiet) as bar:
            def progress(done: int, total: int, rule=None) -> None:
                bar.update("verify", done, total)

            checked = verify_rules(rules, timeout_s=args.timeout, workers=workers,
                                   progress=progress)
    except KeyboardInterrupt:
        console.print("[yellow]verification interrupted: writing the candidates unverified "
                      "(marked partial)[/]")
        meta["partial"] = meta.get("partial", "") + " verification interrupted"
        return rules, meta
    return _verified(args, checked, meta, t0)


def _verified(args, checked, meta, t0: float):
    counts: dict[str, int] = {}
    for r in checked:
        key = r.proof.get("result", "unknown")
        counts[key] = counts.get(key, 0) + 1
    meta["verification"] = {"timeout_s": args.timeout, "results": counts,
                            "seconds": round(time.time() - t0, 1)}
    meta["stages"] = {**meta["stages"], **{f"verifier: {k}": v for k, v in counts.items()}}
    kept = checked if args.keep_unproved else [r for r in checked if r.proved]
    return kept, meta


def _print_stages(console, stages: dict[str, int]) -> None:
    from superopt.face.console import Table

    table = Table(title="generation", title_justify="left")
    table.add_column("stage")
    table.add_column("count", justify="right")
    for k, v in stages.items():
        table.add_row(k, f"{v:,}")
    console.print(table)
