"""Applying the ops' Z3 semantics, which each op declares in the registry (`OpDef.z3`).

An entry has two parts (see `superopt.core.registry.Z3Semantics`):
- `bounded(ctx, attrs, inputs) -> outputs`: the exact element-wise encoding over numpy object
  arrays of Z3 reals, for bounded checks; `ctx` is a `BoundedContext` (below), which brings the
  Z3 building blocks the encodings need, so the op definitions never import z3.
- `lower(A, attrs, args, ranks, op) -> outputs`: the op written in the axiom language of
  `superopt.verifier.algebra` (uninterpreted functions), for axiomatic proofs.

An op without Z3 semantics (or not in the registry) is a loud error:
`MissingSemantics("op X has no Z3 semantics")`, which makes the rule "unknown".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import z3

from superopt.core.ops import get_op
from superopt.core.registry import Z3Semantics


class MissingSemantics(Exception):
    """An op used by a rule or axiom has no Z3 semantics."""


class CannotLower(Exception):
    """An op of a rule cannot be written in the axiom language as given (its lowering said
    why, e.g. a Concat whose input rank is not known); the rule is "unknown"."""


def real(e: Any) -> z3.ArithRef:
    if isinstance(e, z3.ExprRef):
        return z3.ToReal(e) if e.is_int() else e
    if isinstance(e, (bool, np.bool_)):
        e = int(e)
    if isinstance(e, (float, np.floating)):
        return z3.RealVal(float(e))
    return z3.RealVal(int(e))


_to_real = np.vectorize(real, otypes=[object])


class BoundedContext:
    """Fresh Z3 reals for tensors, the side constraints exact encodings need (positivity of
    inverse square roots), the uninterpreted real functions of transcendental ops, and the Z3
    building blocks the ops' bounded encodings are written with."""

    def __init__(self) -> None:
        self.constraints: list[z3.BoolRef] = []
        self.variables: dict[str, np.ndarray] = {}
        self._fns: dict[str, z3.FuncDeclRef] = {}
        self._inv_sqrt: dict[int, z3.ArithRef] = {}

    def tensor(self, name: str, shape: Sequence[int]) -> np.ndarray:
        arr = np.empty(tuple(shape), dtype=object)
        for idx in np.ndindex(*arr.shape):
            arr[idx] = z3.Real(f"{name}[{','.join(map(str, idx))}]")
        self.variables[name] = arr
        return arr

    def fn(self, name: str) -> z3.FuncDeclRef:
        """The uninterpreted real function `name` (Sigmoid, Exp, ...)."""
        if name not in self._fns:
            self._fns[name] = z3.Function(name, z3.RealSort(), z3.RealSort())
        return self._fns[name]

    @property
    def uninterpreted(self) -> list[str]:
        """The ops encoded so far as uninterpreted functions (their values are free here)."""
        return sorted(self._fns)

    def inv_sqrt(self, e: Any) -> z3.ArithRef:
        """r with r*r*e == 1 and r > 0, i.e. 1/sqrt(e); the same term for the same e."""
        e = real(e)
        key = e.get_id()
        if key not in self._inv_sqrt:
            r = z3.Real(f"invsqrt!{len(self._inv_sqrt)}")
            self.constraints += [r > 0, r * r * e == 1]
            self._inv_sqrt[key] = r
        return self._inv_sqrt[key]

    def constrain(self, *facts: Any) -> None:
        """Side conditions the encoding relies on (exp(x) > 0, ...)."""
        self.constraints.extend(facts)

    @staticmethod
    def real(e: Any) -> z3.ArithRef:
        """A number or term as a Z3 real."""
        return real(e)

    @staticmethod
    def to_real(x: np.ndarray) -> np.ndarray:
        """Every element as a Z3 real."""
        return _to_real(x)

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        return z3.If(c, a, b)

    @staticmethod
    def each(fn: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
        """`fn` applied to every element (an object array)."""
        if x.size == 0:
            return x.copy()
        return np.vectorize(fn, otypes=[object])(x)


def semantics(op: str) -> Z3Semantics:
    """The op's Z3 semantics; MissingSemantics("op X has no Z3 semantics") if it has none."""
    try:
        entry = get_op(op).z3
    except KeyError:
        entry = None
    if entry is None:
        raise MissingSemantics(f"op {op} has no Z3 semantics")
    return entry


def bounded_apply(ctx: BoundedContext, op: str, attrs: dict, inputs: list) -> list:
    """Apply an op's exact encoding; outputs are object arrays of Z3 reals."""
    outs = semantics(op).bounded(ctx, get_op(op).canonical_attrs(attrs), list(inputs))
    return [_to_real(np.asarray(o, dtype=object)) if np.asarray(o).size else
            np.asarray(o, dtype=object) for o in outs]


def lower(A: Any, op: str, attrs: dict, args: list, ranks: list[int]) -> list:
    """The op in the axiom language. A lowering that cannot apply raises ValueError with the
    reason, which becomes `CannotLower`."""
    try:
        return semantics(op).lower(A, get_op(op).canonical_attrs(attrs), list(args), ranks, op)
    except ValueError as e:
        raise CannotLower(str(e)) from None


def check_rule_ops(ops: set[str]) -> None:
    for op in sorted(ops):
        semantics(op)
