"""`superopt verify RULES.json`: prove every rule with Z3 and write the proof records.

    superopt verify rules.json [--timeout S] [--workers N] [-o OUT.json | --check]
                               [--ray [ADDRESS] [--checkpoint-dir DIR]]

Without -o the input file is rewritten in place (atomically); a sealed file (the shipped
database) stays sealed, its digest now over the new proof records. `--check` writes nothing and
exits 1 when a rule does not prove (re-proving the shipped database without touching it).
Malformed rules are reported one line each and left out; the others are still verified. With
`--ray` each rule is one Ray task (local Ray, or the cluster at ADDRESS; docs/ray.md), with the
same proof records.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from superopt.core.atomic import atomic_write
from superopt.core.errors import OutputError, RulesError, UsageError
from superopt.face.commands import add_verbosity


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="prove rules with Z3 (axioms + bounded checks)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("rules", help="a rules file (superopt-rules/2; /1 is migrated)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds per Z3 query (default 5)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: CPU count)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.json",
                   help="write here instead of rewriting the input file")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when a rule does not prove (e.g. superopt "
                        "verify --check rules_db/rules.json)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="one Ray task per rule: on a local Ray with --workers CPUs, or on the "
                        "cluster at ADDRESS (HOST:PORT, or auto); write it after the rules "
                        "file or as --ray=ADDRESS; needs pip install 'superopt[ray]'")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="with --ray: append each proof record to DIR/verify.jsonl as it "
                        "arrives and reuse the records a previous run left there")
    add_verbosity(p)
    p.set_defaults(func=run)


def _save_keeping_malformed(src: Path, out: Path, verified: list) -> None:
    """Write the file with the new proof records, keeping malformed rules verbatim (a verify
    run must never delete a user's rule, even one it cannot read)."""
    import json

    doc = json.loads(src.read_text())
    proofs = {r.id: r.proof for r in verified}
    for d in doc["rules"]:
        if isinstance(d, dict) and d.get("id") in proofs:
            d["proof"] = proofs[d["id"]]
    rest = {k: v for k, v in doc.items() if k != "rules"}
    body = ",\n  ".join(json.dumps(d) for d in doc["rules"])
    text = json.dumps(rest)[:-1] + ',\n "rules": [\n  ' + body + "\n ]}\n"
    try:
        atomic_write(out, text)
    except OutputError as e:
        raise RulesError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    from superopt.core.rules import load_rules, save_rules, seal_state, sealed
    from superopt.face.console import Console, CountProgress, Table
    from superopt.verifier import verify_rules

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.check and args.output:
        raise UsageError("--check writes nothing: it does not take -o")
    out_path = Path(args.output or args.rules)
    if args.output and not out_path.parent.is_dir():
        raise RulesError(f"{out_path}: folder {out_path.parent} does not exist")
    if args.checkpoint_dir is not None and args.ray is None:
        raise UsageError("--checkpoint-dir needs --ray")
    ruleset = load_rules(args.rules, strict=False)
    err = Console(stderr=True)
    for line in ruleset.skipped:
        print(f"superopt verify: skipped {line}", file=sys.stderr)
    start = time.perf_counter()
    quiet = args.quiet or not sys.stderr.isatty()
    with CountProgress(err, quiet=quiet) as bar:
        def progress(done: int, total: int, rule=None) -> None:
            bar.update("verifying", done, total)

        if args.ray is not None:
            verified = _verify_on_ray(args, ruleset.rules, progress)
        else:
            verified = verify_rules(ruleset.rules, timeout_s=args.timeout, workers=args.workers,
                                    progress=progress)
    elapsed = time.perf_counter() - start
    was_sealed = seal_state(ruleset) == "intact"
    ruleset.rules = verified
    if was_sealed:  # every rule was just proved again: the seal covers the new records
        ruleset = sealed(ruleset)
    if not args.check:
        if ruleset.skipped:
            _save_keeping_malformed(Path(args.rules), out_path, verified)
        else:
            save_rules(ruleset, out_path)
    counts = {k: sum(r.proof.get("result") == k for r in verified)
              for k in ("proved", "refuted", "unknown")}
    if not args.quiet:
        where = "not written (--check)" if args.check else str(out_path)
        table = Table(title=f"superopt verify: {len(verified)} rules -> {where}")
        for col in ("proved", "refuted", "unknown", "skipped", "time"):
            table.add_column(col, justify="right")
        table.add_row(*(str(counts[k]) for k in ("proved", "refuted", "unknown")),
                      str(len(ruleset.skipped)), f"{elapsed:.1f} s")
        Console(stderr=False).print(table)
        if args.verbose:
            for r in verified:
                if r.proof.get("result") != "proved":
                    print(f"{r.label}: {r.proof.get('result')}: "
                          f"{r.proof.get('reason') or r.proof.get('counterexample')}")
    if ruleset.skipped:
        return 2
    return 1 if args.check and counts["proved"] < len(verified) else 0


def _verify_on_ray(args: argparse.Namespace, rules: list, progress) -> list:
    from superopt.core.errors import SuperoptError
    from superopt.verifier.driver import verify_rules_ray

    checkpoint = None
    if args.checkpoint_dir is not None:
        folder = Path(args.checkpoint_dir)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--checkpoint-dir {folder}: not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = folder / "verify.jsonl"
    try:
        return verify_rules_ray(rules, timeout_s=args.timeout, address=args.ray,
                                workers=args.workers, progress=progress, checkpoint=checkpoint)
    except ImportError as e:
        raise UsageError(str(e)) from None
    except ConnectionError as e:
        raise SuperoptError(str(e)) from None
