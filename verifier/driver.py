"""`verify_rules`: give every rule a proof record, in parallel worker processes.

Strategy per rule: (1) the axiomatic proof, valid for all shapes; (2) if that does not prove
it, the bounded check at the rule's example shapes: a counterexample refutes the rule, and an
equality that holds there alone is recorded as "unknown" ("holds at the example shapes only"),
never as proved. Every Z3 query has a timeout, so a rule costs at most about 2 × timeout_s.

Example:
    >>> from superopt.core.rules import Rule
    >>> r = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"}, example={"x": (2, 2)})
    >>> verify_rules([r])[0].proof["result"]                                # doctest: +SKIP
    'unknown'
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from superopt.core.rules import Rule

Progress = Callable[[int, int, Rule], None]


def verify_rule(rule: Rule, timeout_s: float = 5.0) -> Rule:
    """One rule with its proof record (see `verify_rules`)."""
    import z3

    from superopt.verifier.bounded import check_rule
    from superopt.verifier.prove import prove_rule
    from superopt.verifier.semantics import MissingSemantics, check_rule_ops

    start = time.perf_counter()
    record: dict[str, Any] = {"z3": z3.get_version_string()}
    try:
        check_rule_ops(rule.ops())
        axiomatic = prove_rule(rule, timeout_s)
        if axiomatic["result"] == "proved":
            record.update(method="axioms", result="proved")
        else:
            bounded = check_rule(rule, timeout_s=timeout_s)
            record["method"] = "bounded"
            if bounded["result"] == "refuted":
                record.update(result="refuted", counterexample=bounded["counterexample"])
            elif bounded["result"] == "holds":
                record.update(result="unknown", reason="holds at the example shapes only; "
                              f"axioms: {axiomatic['reason']}")
            else:
                record.update(result="unknown",
                              reason=f"axioms: {axiomatic['reason']}; {bounded['reason']}")
    except MissingSemantics as e:
        record.update(method="axioms", result="unknown", reason=str(e))
    except z3.Z3Exception as e:
        record.update(method="axioms", result="unknown", reason=f"Z3 error: {e}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    return rule.with_proof(record)


def _work(item: tuple[int, dict, float]) -> tuple[int, dict]:
    index, data, timeout_s = item
    return index, verify_rule(Rule.from_json(data), timeout_s).to_json()


def verify_rules(rules: Sequence[Rule], *, timeout_s: float = 5.0, workers: int | None = None,
                 progress: Progress | None = None) -> list[Rule]:
    """Every rule, in input order, with a proof record:

    {"method": "axioms" | "bounded", "result": "proved" | "refuted" | "unknown",
     "counterexample": {...} (refuted), "reason": "..." (unknown), "z3": version,
     "seconds": float}

    `workers` processes (default: the CPU count; 1 runs in this process); `progress(done,
    total, rule)` is called after each rule. Ctrl-C stops the workers and raises
    KeyboardInterrupt.
    """
    rules = list(rules)
    total = len(rules)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    out: list[Rule | None] = [None] * total
    if workers == 1 or total <= 1:
        for i, r in enumerate(rules):
            out[i] = verify_rule(r, timeout_s)
            if progress:
                progress(i + 1, total, out[i])
        return out  # type: ignore[return-value]
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(min(workers, total))
    try:
        items = [(i, r.to_json(), timeout_s) for i, r in enumerate(rules)]
        for done, (i, data) in enumerate(pool.imap_unordered(_work, items), start=1):
            proved = Rule.from_json(data)
            out[i] = rules[i].with_proof(proved.proof)
            if progress:
                progress(done, total, out[i])
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return out  # type: ignore[return-value]
