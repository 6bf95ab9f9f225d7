"""`superopt verify RULES.json`: prove every rule with Z3 and write the proof records.

    superopt verify rules.json [--timeout S] [--workers N] [-o OUT.json]

Without -o the input file is rewritten in place (atomically). Malformed rules are reported one
line each and left out; the others are still verified.
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
    from superopt.core.rules import load_rules, save_rules
    from superopt.face.console import Console, CountProgress, Table
    from superopt.verifier import verify_rules

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    out_path = Path(args.output or args.rules)
    if args.output and not out_path.parent.is_dir():
        raise RulesError(f"{out_path}: folder {out_path.parent} does not exist")
    ruleset = load_rules(args.rules, strict=False)
    err = Console(stderr=True)
    for line in ruleset.skipped:
        print(f"superopt verify: skipped {line}", file=sys.stderr)
    start = time.perf_counter()
    quiet = args.quiet or not sys.stderr.isatty()
    with CountProgress(err, quiet=quiet) as bar:
        verified = verify_rules(ruleset.rules, timeout_s=args.timeout, workers=args.workers,
                                progress=lambda done, total, r: bar.update("verifying", done,
                                                                           total))
    elapsed = time.perf_counter() - start
    ruleset.rules = verified
    if ruleset.skipped:
        _save_keeping_malformed(Path(args.rules), out_path, verified)
    else:
        save_rules(ruleset, out_path)
    counts = {k: sum(r.proof.get("result") == k for r in verified)
              for k in ("proved", "refuted", "unknown")}
    if not args.quiet:
        table = Table(title=f"superopt verify: {len(verified)} rules -> {out_path}")
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
    return 2 if ruleset.skipped else 0
