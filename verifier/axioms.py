"""Operator axioms read as Z3 formulas: the machinery behind the axiomatic prover.

The axioms themselves are plain data declared next to their ops (`superopt.core.ops`, each
`OpDef.axioms` a tuple of `superopt.core.axiom_spec.Axiom`): first-order facts about the
primitives of `superopt.verifier.algebra`, each written once as a function of an algebra. They
are read two ways:
- `formula(axiom, A)`: a Z3 `ForAll` over tensors (uninterpreted) and integers, guarded by its
  shape/attribute conditions, with the left side (and, for `triggers="both"`, the right side)
  as the E-matching trigger, for the axiomatic prover;
- the bounded check (`superopt.verifier.bounded.check_axiom_case`) evaluates it exactly at
  concrete shapes (its `instances`; tests/test_axiom_guards.py enumerates ranks 0-4) and asks
  Z3 for a counterexample wherever the premise admits the case.

The premise of an axiom is its guard and the typing facts of both its sides
(`superopt.verifier.algebra.TYPING`): the ranks and shapes where the identity holds under ONNX
semantics (broadcasting, MatMul's 1-D promotion, axes within the rank), and for shape axioms
0 <= k < the rank of the result.

Schemas over permutations (`schema="perm"` ...) are instantiated for the permutations a rule
uses. Shape axioms (`kind="int"`) define `dim`/`rank` of each primitive.

Example:
    >>> [a.name for a in AXIOMS][:3]
    ['MatMul-assoc', 'MatMul-Add-left', 'MatMul-Add-right']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import z3

from superopt.core.axiom_spec import REAL_PARAMS, Axiom, compose
from superopt.core.ops import all_ops


def all_axioms() -> list[Axiom]:
    """Every op's axioms, in the catalog's order."""
    return [ax for op in all_ops() for ax in op.axioms]


AXIOMS: list[Axiom] = all_axioms()


def transpose_shape_axioms(A, perms: Iterable[tuple[int, ...]]) -> list:
    """dim/rank of Transpose for the permutations in use (ground in the permutation)."""
    out = []
    x = A.tensor("x")
    for p in perms:
        tx = A.transpose(x, p)
        facts = [A.rank(tx) == len(p)] + [A.dim(tx, k) == A.dim(x, p[k]) for k in range(len(p))]
        out.append(z3.ForAll([x], z3.And(*facts), patterns=[tx]))
    return out


# ---------------------------------------------------------------------------------------------
# reading axioms as Z3 formulas


def statics_for(axiom: Axiom, perms: set[tuple[int, ...]]) -> list:
    """The schema values an axiom is instantiated at, given the permutations in use."""
    if axiom.schema is None:
        return [None]
    if axiom.schema == "perm":
        return sorted(perms)
    if axiom.schema == "perm2":
        return [(p, q) for p in sorted(perms) for q in sorted(perms) if len(p) == len(q)]
    if axiom.schema == "perm_axis":
        return [(p, ax) for p in sorted(perms) for ax in range(len(p))]
    raise ValueError(axiom.schema)


def perm_closure(perms: set[tuple[int, ...]]) -> set[tuple[int, ...]]:
    """Every permutation reachable by composing the ones in use (plus the matmul swaps)."""
    out = set(perms)
    for n in {len(p) for p in perms}:
        if n >= 2:
            out.add(tuple(range(n - 2)) + (n - 1, n - 2))
    while True:
        new = {compose(p, q) for p, q in itertools.product(out, out) if len(p) == len(q)} - out
        if not new:
            return out
        out |= new


def formula(ax: Axiom, A: Any, static: Any = None) -> z3.BoolRef | None:
    """The axiom as a guarded, triggered `ForAll` in the symbolic algebra."""
    # Each axiom is guarded by the typing facts of both its sides, so it only speaks about
    # tensors that exist: in the uninterpreted world dims could otherwise be 0 or negative
    # and two true-looking axioms contradict each other.
    saved, A.collect_typing, A.typing = A.typing, True, []
    try:
        t = {n: A.tensor(n) for n in ax.tensors}
        i = {n: z3.Real(n) if n in REAL_PARAMS else z3.Int(n) for n in ax.ints}
        built = ax.body(A, t, i, static)
        typing = A.typing
    finally:
        A.collect_typing, A.typing = False, saved
    if built is None:
        return None
    lhs, rhs, guard = built
    eq = lhs == rhs
    conds = ([] if guard is True else [guard]) + typing
    body = z3.Implies(z3.And(*conds), eq) if conds else eq
    bound = list(t.values()) + list(i.values())
    patterns = [lhs] if ax.triggers == "lhs" or ax.kind != "eq" else [lhs, rhs]
    return z3.ForAll(bound, body, patterns=patterns)


_FORMULAS: dict[tuple, list[z3.BoolRef]] = {}


def all_formulas(A: Any, perms: set[tuple[int, ...]]) -> list[z3.BoolRef]:
    """Every axiom as a Z3 formula, for the permutations in use.

    Building them is most of a proof's time, and they do not depend on the rule: every
    `Symbolic` names the same sort and functions, so they are cached per set of permutations.
    """
    perms = perm_closure(perms) if perms else set()
    key = (frozenset(perms), tuple(a.name for a in AXIOMS))
    if key not in _FORMULAS:
        if len(_FORMULAS) >= 32:
            _FORMULAS.clear()
        _FORMULAS[key] = _build_formulas(A, perms)
    return list(_FORMULAS[key])


def _build_formulas(A: Any, perms: set[tuple[int, ...]]) -> list[z3.BoolRef]:
    out = []
    for ax in AXIOMS:
        for st in statics_for(ax, perms):
            f = formula(ax, A, st)
            if f is not None:
                out.append(f)
    out += transpose_shape_axioms(A, perms)
    return out
