"""Operator axioms as plain data, declared next to the ops they are about.

An axiom is a first-order fact about the primitives of the verifier's axiom language (element-wise
ops, MatMul, Conv, pools, binary Concat, Slice, Transpose, the weight helpers, ...), written once
as a function of an *algebra* `A`: `body(A, tensors, ints, static) -> (lhs, rhs, guard)`, or
None where a schema value does not apply. The verifier reads it two ways (see
`superopt.verifier.axioms` and `superopt.verifier.bounded`): as a Z3 `ForAll` over uninterpreted
tensors, and exactly at each of its concrete `instances`. This module imports nothing: the
algebra object brings every operation (`A.binary`, `A.conv`, `A.dim`, `A.ite`, `A.div`, ...).

An op family declares its axioms in an `AxiomBook` and hands each op its own (`book.of(op)`);
an axiom is filed under the first op it names unless `about=` says otherwise.

Example:
    >>> book = AxiomBook()
    >>> @book.axiom("Add-comm", ["Add"], "a b", "", [I({"a": (2, 3), "b": (2, 3)})])
    ... def _(A, t, i, s):
    ...     return A.binary("Add", t["a"], t["b"]), A.binary("Add", t["b"], t["a"]), True
    >>> [a.name for a in book.of("Add")]
    ['Add-comm']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Conv parameters in the axiom language: (stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, group,
# dilation_h, dilation_w)
CONV_PARAMS = ("sh", "sw", "pt", "pl", "pb", "pr", "g", "dh", "dw")
# Pool parameters: (kernel_h, kernel_w, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, cip)
POOL_PARAMS = ("kh", "kw", "sh", "sw", "pt", "pl", "pb", "pr", "cip")
CP = " ".join(CONV_PARAMS)
PP = " ".join(POOL_PARAMS)
# Quantified parameters that are reals, not integers (BatchNormalization's epsilon).
REAL_PARAMS = frozenset({"eps"})


@dataclass(frozen=True)
class Instance:
    """Concrete shapes and integers (and a schema value) at which to check an axiom."""

    shapes: dict[str, tuple[int, ...]]
    ints: dict[str, int] = field(default_factory=dict)
    static: Any = None


@dataclass(frozen=True)
class Axiom:
    name: str
    ops: frozenset[str]
    tensors: tuple[str, ...]
    ints: tuple[str, ...]
    body: Callable[..., tuple]  # body(A, t, i, static) -> (lhs, rhs, guard)
    instances: tuple[Instance, ...]
    triggers: str = "lhs"  # "lhs" or "both"
    kind: str = "eq"  # "eq": tensors equal; "int" / "rank": integers equal (shape axioms)
    schema: str | None = None  # None, "perm", "perm2", "perm_axis"
    # Shape axioms: the term whose dim / rank they state, term(A, t, i) (a check asks whether
    # it exists at given shapes).
    term: Callable[..., Any] | None = None


def I(shapes: dict, ints: dict | None = None, static: Any = None) -> Instance:  # noqa: E743
    return Instance({k: tuple(v) for k, v in shapes.items()}, dict(ints or {}), static)


class AxiomBook:
    """The axioms one op family declares, filed under the op each is about."""

    def __init__(self) -> None:
        self._by_op: dict[str, list[Axiom]] = {}

    def axiom(self, name: str, ops: Iterable[str], tensors: str, ints: str,
              instances: Sequence[Instance], triggers: str = "lhs", kind: str = "eq",
              schema: str | None = None, about: str | None = None,
              term: Callable | None = None):
        """Decorator: the function below is the axiom's body."""
        ops = list(ops)

        def deco(body: Callable) -> Callable:
            ax = Axiom(name, frozenset(ops), tuple(tensors.split()), tuple(ints.split()),
                       body, tuple(instances), triggers, kind, schema, term)
            self._by_op.setdefault(about or ops[0], []).append(ax)
            return body
        return deco

    def shape(self, name: str, ops: list[str], tensors: str, ints: str,
              instances: Sequence[Instance], lhs: Callable, rhs: Callable,
              guard: Callable = lambda A, t, i, k: True,
              ranks: Callable = lambda inst: 4, *, out_rank: Callable) -> None:
        """`dim(op(...), k) == rhs(k)` for every k (k is a quantified integer) with
        0 <= k < out_rank(A, t, i), the rank of op(...) in terms of its inputs: a dim past the
        rank is left unconstrained (two shape axioms could otherwise disagree there)."""
        def body(A, t, i, s):
            k = i["k"]
            return A.dim(lhs(A, t, i), k), rhs(A, t, i, k), A.all(
                0 <= k, k < out_rank(A, t, i), guard(A, t, i, k))
        inst = [Instance(x.shapes, {**x.ints, "k": k}, x.static)
                for x in instances for k in range(ranks(x))]
        self.axiom(name, ops, tensors, ints + " k", inst, kind="int", term=lhs)(body)

    def rank(self, name: str, ops: list[str], tensors: str, ints: str,
             instances: Sequence[Instance], term: Callable, value: Callable,
             guard: Callable = lambda A, t, i: True) -> None:
        """`rank(term) == value`."""
        self.axiom(name, ops, tensors, ints, instances, kind="rank", term=term)(
            lambda A, t, i, s: (A.rank(term(A, t, i)), value(A, t, i), guard(A, t, i)))

    def of(self, op: str) -> tuple[Axiom, ...]:
        """The axioms filed under `op`, handed over once (see `done`)."""
        return tuple(self._by_op.pop(op, ()))

    def done(self) -> None:
        """Raise if an axiom was filed under an op that never took it (it would be lost)."""
        if self._by_op:
            left = ", ".join(f"{a.name} (under {op})" for op, axs in self._by_op.items()
                             for a in axs)
            raise ValueError(f"axioms filed under no op of this family: {left}")


# ---------------------------------------------------------------------------------------------
# helpers for axiom bodies and instances


def conv_p(i: dict) -> tuple:
    return tuple(i[n] for n in CONV_PARAMS)


def pool_p(i: dict) -> tuple:
    return tuple(i[n] for n in POOL_PARAMS)


def conv_ints(sh=1, sw=1, pt=0, pl=0, pb=0, pr=0, g=1, dh=1, dw=1) -> dict:
    return dict(sh=sh, sw=sw, pt=pt, pl=pl, pb=pb, pr=pr, g=g, dh=dh, dw=dw)


def in_range(A, x, ax, s, ln) -> Any:
    """Slice [s, s + ln) of axis ax lies inside x."""
    return A.all(0 <= s, 0 <= ln, s + ln <= A.dim(x, ax), 0 <= ax, ax < A.rank(x))


def compose(p: Sequence[int], q: Sequence[int]) -> tuple[int, ...]:
    """The permutation of transpose(transpose(x, p), q) as one transpose: r[i] = p[q[i]]."""
    return tuple(p[i] for i in q)


def inverse(p: Sequence[int]) -> tuple[int, ...]:
    out = [0] * len(p)
    for i, v in enumerate(p):
        out[v] = i
    return tuple(out)
