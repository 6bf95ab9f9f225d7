"""The verifier: Z3 proofs of rules from operator axioms, bounded element-wise checks with
counterexamples, and TASO rule import. Z3 is imported only when a rule is verified.

    >>> from superopt.verifier import verify_rules          # doctest: +SKIP
    >>> [r.proof["result"] for r in verify_rules(rules)]    # doctest: +SKIP
"""

from superopt.verifier.driver import verify_rule, verify_rules

VERIFIER_VERSION = "3"  # bump when a verifier change can change a result (keys proof caches)
# 2: rules proved at the ranks of their classes (`Rule.ranks`), not of their example shapes

__all__ = ["verify_rule", "verify_rules"]
