"""What a generated database leaves out, before anything is proved.

Two kinds of candidate are left out. Rules whose patterns concatenate a tensor with itself,
`Concat(?t, ?t)` and towers of it: no exporter writes such a Concat unless the model itself
repeats a tensor, so those rules match nothing real, and they were 1,110 of the default run's
3,842 candidates (rules_db/README.md). And a rule equal to a kept one up to renaming variables
within a kind and rank and the operand order of Add/Mul (`superopt.core.rules.rule_key`): the
matcher tries both orders of an Add or Mul, so such a twin matches nothing the kept rule does
not. Both are dropped before the verifier runs: proof time is most of a generation run's time.

`superopt generate` applies this to every run; with `--from`, a self-concatenation is kept when
one of the models concatenates a tensor with itself, and `--keep-self-concat` keeps them always.
"""

from __future__ import annotations

from collections.abc import Sequence

from superopt.core.pattern import Pattern, PNode
from superopt.core.rules import Rule, rule_key

__all__ = ["self_concatenates", "select_rules"]

SELF_CONCATENATION = "self-concatenation"
DUPLICATE = "duplicates (renaming, operand order)"


def self_concatenates(p: Pattern) -> bool:
    """Some Concat in `p` joins one argument pattern with itself (all its arguments equal)."""
    if not isinstance(p, PNode):
        return False
    if p.op == "Concat" and len(p.args) > 1 and len({str(a) for a in p.args}) == 1:
        return True
    return any(self_concatenates(a) for a in p.args)


def select_rules(rules: Sequence[Rule], keep_self_concat: bool = False
                 ) -> tuple[list[Rule], dict[str, int]]:
    """The rules a database keeps, in order: the first of each set equal up to renaming and
    Add/Mul operand order, and none with a self-concatenation in either pattern unless
    `keep_self_concat`. Returns (kept, counts dropped by reason)."""
    kept, seen = [], set()
    dropped = {SELF_CONCATENATION: 0, DUPLICATE: 0}
    for r in rules:
        if not keep_self_concat and any(self_concatenates(p) for p in r.src + r.dst):
            dropped[SELF_CONCATENATION] += 1
            continue
        key = rule_key(r)
        if key in seen:
            dropped[DUPLICATE] += 1
            continue
        seen.add(key)
        kept.append(r)
    return kept, dropped
