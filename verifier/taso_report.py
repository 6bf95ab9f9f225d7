"""Verify TASO's rules and write the report docs/taso-rules.md.

    python -m superopt.verifier.taso_report graph_subst.pb -o docs/taso-rules.md [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from superopt.core.atomic import atomic_write
from superopt.core.rules import Rule


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _digest(rule: Rule) -> str:
    p = rule.proof
    if p.get("result") == "refuted":
        cex = p.get("counterexample") or {}
        d = cex.get("differs_at")
        if d:
            return f"output {d['output']} at {d['index']}: src {d['src']:g} vs dst {d['dst']:g}"
        return json.dumps(cex)[:80]
    return (p.get("reason") or "").replace("|", "/")


def render(rules: list[Rule], seconds: float, source: str, timeout_s: float) -> str:
    import z3

    counts = {k: sum(r.proof.get("result") == k for r in rules)
              for k in ("proved", "refuted", "unknown")}
    lines = [
        "# TASO's rules, verified by superopt",
        "",
        f"Source: `{source}` (TASO's `graph_subst.pb`, {len(rules)} rules), imported with "
        "`superopt.verifier.taso.import_taso` and verified with `verify_rules` "
        f"(Z3 {z3.get_version_string()}, {timeout_s:g} s per query).",
        "Regenerate: `python -m superopt.verifier.taso_report "
        "/work/shared/external/taso/graph_subst.pb -o docs/taso-rules.md`.",
        "",
        "`proved`: by the operator axioms, for all shapes. `refuted`: a bounded check found a "
        "counterexample at the example shapes. `unknown`: not proved (the reason says why; "
        "\"holds at the example shapes only\" means the bounded check found no counterexample).",
        "",
        "| proved | refuted | unknown | total | time |",
        "|---|---|---|---|---|",
        f"| {counts['proved']} | {counts['refuted']} | {counts['unknown']} | {len(rules)} "
        f"| {seconds:.1f} s |",
        "",
        "| # | rule (src => dst) | result | method | seconds | reason / counterexample |",
        "|---|---|---|---|---|---|",
    ]
    for r in rules:
        text = " ; ".join(str(p) for p in r.src) + " => " + " ; ".join(str(p) for p in r.dst)
        lines.append(f"| {r.provenance.get('index', '')} | `{_short(text, 110)}` | "
                     f"{r.proof.get('result')} | {r.proof.get('method')} | "
                     f"{r.proof.get('seconds', 0):.2f} | {_short(_digest(r), 90)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from superopt.core.errors import SuperoptError
    from superopt.verifier import verify_rules
    from superopt.verifier.taso import import_taso

    ap = argparse.ArgumentParser(prog="python -m superopt.verifier.taso_report")
    ap.add_argument("pb")
    ap.add_argument("-o", "--output", default="docs/taso-rules.md")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        rules = import_taso(args.pb)
    except SuperoptError as e:
        print(f"taso_report: error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    done = verify_rules(rules, timeout_s=args.timeout, workers=args.workers,
                        progress=lambda d, t, r: print(f"\r{d}/{t}", end="", file=sys.stderr))
    print(file=sys.stderr)
    text = render(done, time.perf_counter() - start, args.pb, args.timeout)
    out = Path(args.output)
    atomic_write(out, text)
    print(text.split("\n\n")[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
