"""Operator axioms: first-order facts about the primitives of `superopt.verifier.algebra`.

Each axiom is written once, as a function of an algebra, and read two ways:
- `formula(axiom, A)`: a Z3 `ForAll` over tensors (uninterpreted) and integers, guarded by its
  shape/attribute conditions, with the left side (and, for `triggers="both"`, the right side)
  as the E-matching trigger, for the axiomatic prover;
- the bounded check (`superopt.verifier.bounded.check_axiom`) evaluates it exactly at each of
  its concrete `instances` and asks Z3 for a counterexample.

Schemas over permutations (`schema="perm"` ...) are instantiated for the permutations a rule
uses. Shape axioms (`kind="int"`) define `dim`/`rank` of each primitive.

Example:
    >>> [a.name for a in AXIOMS][:3]
    ['Add-comm', 'Mul-comm', 'Add-assoc']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import z3

from superopt.verifier.algebra import CONV_PARAMS, POOL_PARAMS, compose, inverse

UNARY = ("Relu", "Sigmoid", "Tanh", "Erf")
POINTWISE_BINARY = ("Add", "Sub", "Mul")
LIKE = ("IdentityKernelLike", "IdentityMatrixLike", "OnesLike")


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
    kind: str = "eq"  # "eq": tensors equal; "int": integers equal (shape axioms)
    schema: str | None = None  # None, "perm", "perm2", "perm_axis"


AXIOMS: list[Axiom] = []


def axiom(name: str, ops: Iterable[str], tensors: str, ints: str, instances: list[Instance],
          triggers: str = "lhs", kind: str = "eq", schema: str | None = None):
    def deco(body: Callable) -> Callable:
        AXIOMS.append(Axiom(name, frozenset(ops), tuple(tensors.split()), tuple(ints.split()),
                            body, tuple(instances), triggers, kind, schema))
        return body
    return deco


def I(shapes: dict, ints: dict | None = None, static: Any = None) -> Instance:  # noqa: E743
    return Instance({k: tuple(v) for k, v in shapes.items()}, dict(ints or {}), static)


def conv_p(i: dict) -> tuple:
    return tuple(i[n] for n in CONV_PARAMS)


def pool_p(i: dict) -> tuple:
    return tuple(i[n] for n in POOL_PARAMS)


def conv_ints(sh=1, sw=1, pt=0, pl=0, pb=0, pr=0, g=1) -> dict:
    return dict(sh=sh, sw=sw, pt=pt, pl=pl, pb=pb, pr=pr, g=g)


CP = " ".join(CONV_PARAMS)
# Quantified parameters that are reals, not integers (BatchNormalization's epsilon).
REAL_PARAMS = frozenset({"eps"})
PP = " ".join(POOL_PARAMS)


def same_shape(A, a, b, rank: int) -> Any:
    return A.all(A.rank(a) == rank, A.rank(b) == rank,
                 *[A.dim(a, k) == A.dim(b, k) for k in range(rank)])


def in_range(A, x, ax, s, ln) -> Any:
    return A.all(0 <= s, 0 <= ln, s + ln <= A.dim(x, ax), 0 <= ax, ax < A.rank(x))


# ---------------------------------------------------------------------------------------------
# element-wise: commutativity, associativity, distributivity

for _op in ("Add", "Mul"):
    axiom(f"{_op}-comm", [_op], "a b", "",
          [I({"a": (2, 3), "b": (2, 3)}), I({"a": (2, 3), "b": (3,)}), I({"a": (2,), "b": ()})]
          )(lambda A, t, i, s, op=_op: (A.binary(op, t["a"], t["b"]),
                                        A.binary(op, t["b"], t["a"]), True))
for _op in ("Add", "Mul"):
    axiom(f"{_op}-assoc", [_op], "a b c", "",
          [I({"a": (2, 3), "b": (2, 3), "c": (2, 3)}), I({"a": (2, 2), "b": (2,), "c": ()})],
          triggers="both"
          )(lambda A, t, i, s, op=_op: (A.binary(op, A.binary(op, t["a"], t["b"]), t["c"]),
                                        A.binary(op, t["a"], A.binary(op, t["b"], t["c"])),
                                        True))


@axiom("Mul-Add-distrib", ["Mul", "Add"], "a b c", "",
       [I({"a": (2, 3), "b": (2, 3), "c": (2, 3)}), I({"a": (2, 2), "b": (2, 2), "c": ()})],
       triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["c"]
    return (A.binary("Mul", A.binary("Add", a, b), c),
            A.binary("Add", A.binary("Mul", a, c), A.binary("Mul", b, c)), True)


# element-wise ops commute with data movement
_CAT_INST = [I({"a": (1, 2), "b": (2, 2)}, {"ax": 0}), I({"a": (2, 1), "b": (2, 3)}, {"ax": 1})]
_SLICE_INST = [I({"x": (3, 2)}, {"ax": 0, "s": 1, "l": 2}),
               I({"x": (2, 4)}, {"ax": 1, "s": 0, "l": 3})]
_PERM_INST = [I({"x": (2, 3)}, static=(1, 0)), I({"x": (2, 1, 3)}, static=(2, 0, 1))]

for _op in UNARY:
    axiom(f"{_op}-Concat", [_op, "Concat"], "a b", "ax", _CAT_INST, triggers="both")(
        lambda A, t, i, s, op=_op: (A.unary(op, A.cat(i["ax"], t["a"], t["b"])),
                                    A.cat(i["ax"], A.unary(op, t["a"]), A.unary(op, t["b"])),
                                    A.rank(t["a"]) == A.rank(t["b"])))
    axiom(f"{_op}-Split", [_op, "Split"], "x", "ax s l", _SLICE_INST, triggers="both")(
        lambda A, t, i, s, op=_op: (A.unary(op, A.slice(t["x"], i["ax"], i["s"], i["l"])),
                                    A.slice(A.unary(op, t["x"]), i["ax"], i["s"], i["l"]),
                                    in_range(A, t["x"], i["ax"], i["s"], i["l"])))
    axiom(f"{_op}-Transpose", [_op, "Transpose"], "x", "", _PERM_INST, schema="perm")(
        lambda A, t, i, p, op=_op: (A.unary(op, A.transpose(t["x"], p)),
                                    A.transpose(A.unary(op, t["x"]), p),
                                    A.rank(t["x"]) == len(p)))

# Relu is idempotent and positively homogeneous (Relu(x + x) = Relu(x) + Relu(x)).
axiom("Relu-Relu", ["Relu"], "x", "", [I({"x": (2, 3)}), I({"x": (2, 1, 2)})])(
    lambda A, t, i, s: (A.unary("Relu", A.unary("Relu", t["x"])), A.unary("Relu", t["x"]), True))
axiom("Relu-Add-self", ["Relu", "Add"], "x", "", [I({"x": (2, 3)}), I({"x": (2, 1, 2)})],
      triggers="both")(
    lambda A, t, i, s: (A.unary("Relu", A.binary("Add", t["x"], t["x"])),
                        A.binary("Add", A.unary("Relu", t["x"]), A.unary("Relu", t["x"])), True))

for _op in POINTWISE_BINARY:
    axiom(f"{_op}-Concat", [_op, "Concat"], "a b c d", "ax",
          [I({"a": (1, 2), "b": (2, 2), "c": (1, 2), "d": (2, 2)}, {"ax": 0}),
           I({"a": (2, 1), "b": (2, 2), "c": (1, 1), "d": (1, 2)}, {"ax": 1})],
          triggers="both")(
        lambda A, t, i, s, op=_op: (
            A.binary(op, A.cat(i["ax"], t["a"], t["b"]), A.cat(i["ax"], t["c"], t["d"])),
            A.cat(i["ax"], A.binary(op, t["a"], t["c"]), A.binary(op, t["b"], t["d"])),
            A.all(A.rank(t["a"]) == A.rank(t["c"]), A.rank(t["b"]) == A.rank(t["d"]),
                  A.rank(t["a"]) == A.rank(t["b"]),
                  A.dim(t["a"], i["ax"]) == A.dim(t["c"], i["ax"]),
                  A.dim(t["b"], i["ax"]) == A.dim(t["d"], i["ax"]))))
    axiom(f"{_op}-Transpose", [_op, "Transpose"], "a b", "",
          [I({"a": (2, 3), "b": (2, 3)}, static=(1, 0)),
           I({"a": (2, 1, 3), "b": (2, 4, 3)}, static=(1, 2, 0))],
          triggers="both", schema="perm")(
        lambda A, t, i, p, op=_op: (
            A.binary(op, A.transpose(t["a"], p), A.transpose(t["b"], p)),
            A.transpose(A.binary(op, t["a"], t["b"]), p),
            A.all(A.rank(t["a"]) == len(p), A.rank(t["b"]) == len(p))))


# ---------------------------------------------------------------------------------------------
# MatMul

_MM3 = [I({"a": (2, 3), "b": (3, 4), "c": (4, 2)}), I({"a": (2, 1, 2), "b": (2, 2, 3),
                                                     "c": (2, 3, 2)})]


@axiom("MatMul-assoc", ["MatMul"], "a b c", "", _MM3, triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["c"]
    return A.matmul(A.matmul(a, b), c), A.matmul(a, A.matmul(b, c)), True


def _mm_same(A, a, b, contracted: int):
    """Same rank and the same contracted dim (the other dims may broadcast)."""
    r = A.rank(a)
    return A.all(r == A.rank(b), r >= 2, A.dim(a, r - contracted) == A.dim(b, r - contracted))


@axiom("MatMul-Add-left", ["MatMul", "Add"], "a b c", "",
       [I({"a": (2, 3), "b": (2, 3), "c": (3, 2)}), I({"a": (1, 3), "b": (2, 3), "c": (3, 2)}),
        I({"a": (2, 2, 3), "b": (1, 2, 3), "c": (2, 3, 1)})], triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["c"]
    return (A.matmul(A.binary("Add", a, b), c),
            A.binary("Add", A.matmul(a, c), A.matmul(b, c)), _mm_same(A, a, b, 1))


@axiom("MatMul-Add-right", ["MatMul", "Add"], "a b c", "",
       [I({"a": (2, 3), "b": (3, 2), "c": (3, 2)}), I({"a": (2, 3), "b": (3, 1), "c": (3, 2)}),
        I({"a": (2, 2, 3), "b": (2, 3, 1), "c": (1, 3, 1)})], triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["c"]
    return (A.matmul(a, A.binary("Add", b, c)),
            A.binary("Add", A.matmul(a, b), A.matmul(a, c)), _mm_same(A, b, c, 2))


@axiom("MatMul-scalar-left", ["MatMul", "Mul"], "a b s", "",
       [I({"a": (2, 3), "b": (3, 2), "s": ()}), I({"a": (2, 1, 3), "b": (2, 3, 2), "s": ()})],
       triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["s"]
    return (A.matmul(A.binary("Mul", a, c), b), A.binary("Mul", A.matmul(a, b), c),
            A.rank(c) == 0)


@axiom("MatMul-scalar-right", ["MatMul", "Mul"], "a b s", "",
       [I({"a": (2, 3), "b": (3, 2), "s": ()}), I({"a": (1, 3), "b": (3, 4), "s": ()})],
       triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["s"]
    return (A.matmul(a, A.binary("Mul", b, c)), A.binary("Mul", A.matmul(a, b), c),
            A.rank(c) == 0)


@axiom("MatMul-Transpose", ["MatMul", "Transpose"], "a b", "",
       [I({"a": (2, 3), "b": (3, 4)}, static=(1, 0)),
        I({"a": (2, 1, 3), "b": (2, 3, 2)}, static=(0, 2, 1))], triggers="both", schema="perm")
def _(A, t, i, p):
    a, b = t["a"], t["b"]
    n = len(p)
    if n < 2 or tuple(p) != tuple(range(n - 2)) + (n - 1, n - 2):
        return None  # only the swap of the last two axes
    return (A.transpose(A.matmul(a, b), p), A.matmul(A.transpose(b, p), A.transpose(a, p)),
            A.all(A.rank(a) == n, A.rank(b) == n))


@axiom("MatMul-identity", ["MatMul", "IdentityMatrixLike"], "a w", "",
       [I({"a": (2, 3), "w": (3, 3)}), I({"a": (2, 2, 2), "w": (2, 2)})])
def _(A, t, i, s):
    a, w = t["a"], t["w"]
    return (A.matmul(a, A.like("IdentityMatrixLike", w)), a,
            A.all(A.rank(w) == 2, A.dim(w, 0) == A.dim(w, 1),
                  A.dim(w, 0) == A.dim(a, A.rank(a) - 1), A.rank(a) >= 2))


@axiom("identity-MatMul", ["MatMul", "IdentityMatrixLike"], "a w", "",
       [I({"a": (3, 2), "w": (3, 3)}), I({"a": (2, 1), "w": (2, 2)})])
def _(A, t, i, s):
    a, w = t["a"], t["w"]
    return (A.matmul(A.like("IdentityMatrixLike", w), a), a,
            A.all(A.rank(w) == 2, A.rank(a) == 2, A.dim(w, 0) == A.dim(w, 1),
                  A.dim(w, 0) == A.dim(a, 0)))


def _ranks_eq(A, *ts):
    return A.all(*[A.rank(ts[0]) == A.rank(x) for x in ts[1:]], A.rank(ts[0]) >= 2)


@axiom("MatMul-Concat-rows", ["MatMul", "Concat"], "a b c", "ax",
       [I({"a": (1, 3), "b": (2, 3), "c": (3, 2)}, {"ax": 0}),
        I({"a": (2, 1, 3), "b": (2, 2, 3), "c": (2, 3, 2)}, {"ax": 1})], triggers="both")
def _(A, t, i, s):
    a, b, c, ax = t["a"], t["b"], t["c"], i["ax"]
    return (A.matmul(A.cat(ax, a, b), c), A.cat(ax, A.matmul(a, c), A.matmul(b, c)),
            A.all(_ranks_eq(A, a, b, c), ax == A.rank(a) - 2))


@axiom("MatMul-Concat-cols", ["MatMul", "Concat"], "a b c", "ax",
       [I({"a": (2, 3), "b": (3, 1), "c": (3, 2)}, {"ax": 1}),
        I({"a": (2, 1, 3), "b": (2, 3, 2), "c": (2, 3, 1)}, {"ax": 2})], triggers="both")
def _(A, t, i, s):
    a, b, c, ax = t["a"], t["b"], t["c"], i["ax"]
    return (A.matmul(a, A.cat(ax, b, c)), A.cat(ax, A.matmul(a, b), A.matmul(a, c)),
            A.all(_ranks_eq(A, a, b, c), ax == A.rank(b) - 1))


@axiom("MatMul-Concat-inner", ["MatMul", "Concat", "Add"], "a b c d", "ax bx",
       [I({"a": (2, 1), "b": (2, 2), "c": (1, 3), "d": (2, 3)}, {"ax": 1, "bx": 0}),
        I({"a": (2, 2, 2), "b": (2, 2, 1), "c": (2, 2, 2), "d": (2, 1, 2)}, {"ax": 2, "bx": 1})])
def _(A, t, i, s):
    a, b, c, d, ax, bx = t["a"], t["b"], t["c"], t["d"], i["ax"], i["bx"]
    return (A.matmul(A.cat(ax, a, b), A.cat(bx, c, d)),
            A.binary("Add", A.matmul(a, c), A.matmul(b, d)),
            A.all(_ranks_eq(A, a, b, c, d), ax == A.rank(a) - 1, bx == A.rank(a) - 2,
                  A.dim(a, ax) == A.dim(c, bx)))


@axiom("MatMul-Split-cols", ["MatMul", "Split"], "a b", "ax s l",
       [I({"a": (2, 3), "b": (3, 4)}, {"ax": 1, "s": 1, "l": 2}),
        I({"a": (2, 2, 3), "b": (2, 3, 3)}, {"ax": 2, "s": 0, "l": 1})], triggers="both")
def _(A, t, i, s):
    a, b, ax, st, ln = t["a"], t["b"], i["ax"], i["s"], i["l"]
    return (A.matmul(a, A.slice(b, ax, st, ln)), A.slice(A.matmul(a, b), ax, st, ln),
            A.all(_ranks_eq(A, a, b), ax == A.rank(b) - 1, in_range(A, b, ax, st, ln)))


@axiom("MatMul-Split-rows", ["MatMul", "Split"], "a b", "ax s l",
       [I({"a": (3, 2), "b": (2, 4)}, {"ax": 0, "s": 1, "l": 2}),
        I({"a": (2, 3, 2), "b": (2, 2, 3)}, {"ax": 1, "s": 0, "l": 1})], triggers="both")
def _(A, t, i, s):
    a, b, ax, st, ln = t["a"], t["b"], i["ax"], i["s"], i["l"]
    return (A.matmul(A.slice(a, ax, st, ln), b), A.slice(A.matmul(a, b), ax, st, ln),
            A.all(_ranks_eq(A, a, b), ax == A.rank(a) - 2, in_range(A, a, ax, st, ln)))


# MatMul of a rank-r activation (r >= 3) by a 2-D weight (numpy broadcast: (..., M, K) @ (K, N)):
# the weight's columns are the output's last axis, its rows the input's last axis, and every
# leading axis of the activation (batch or rows) passes through to the same output axis.


def _mm_w2(A, a, *ws):
    return A.all(A.rank(a) >= 3, *[A.rank(w) == 2 for w in ws])


@axiom("MatMul-w2-Concat-lead", ["MatMul", "Concat"], "a b w", "ax",
       [I({"a": (2, 1, 3), "b": (2, 2, 3), "w": (3, 2)}, {"ax": 1}),
        I({"a": (1, 2, 3), "b": (2, 2, 3), "w": (3, 1)}, {"ax": 0}),
        I({"a": (2, 1, 1, 2), "b": (2, 1, 2, 2), "w": (2, 2)}, {"ax": 2})], triggers="both")
def _(A, t, i, s):
    a, b, w, ax = t["a"], t["b"], t["w"], i["ax"]
    return (A.matmul(A.cat(ax, a, b), w), A.cat(ax, A.matmul(a, w), A.matmul(b, w)),
            A.all(_mm_w2(A, a, w), A.rank(b) == A.rank(a), 0 <= ax, ax <= A.rank(a) - 2))


@axiom("MatMul-w2-Split-lead", ["MatMul", "Split"], "a w", "ax s l",
       [I({"a": (2, 3, 2), "w": (2, 2)}, {"ax": 1, "s": 1, "l": 2}),
        I({"a": (3, 2, 2), "w": (2, 1)}, {"ax": 0, "s": 0, "l": 2})], triggers="both")
def _(A, t, i, s):
    a, w, ax, st, ln = t["a"], t["w"], i["ax"], i["s"], i["l"]
    return (A.matmul(A.slice(a, ax, st, ln), w), A.slice(A.matmul(a, w), ax, st, ln),
            A.all(_mm_w2(A, a, w), ax <= A.rank(a) - 2, in_range(A, a, ax, st, ln)))


@axiom("MatMul-w2-Concat-inner", ["MatMul", "Concat", "Add"], "a b c d", "ax bx",
       [I({"a": (2, 2, 1), "b": (2, 2, 2), "c": (1, 3), "d": (2, 3)}, {"ax": 2, "bx": 0}),
        I({"a": (1, 2, 2), "b": (1, 2, 1), "c": (2, 2), "d": (1, 2)}, {"ax": 2, "bx": 0})])
def _(A, t, i, s):
    a, b, c, d, ax, bx = t["a"], t["b"], t["c"], t["d"], i["ax"], i["bx"]
    return (A.matmul(A.cat(ax, a, b), A.cat(bx, c, d)),
            A.binary("Add", A.matmul(a, c), A.matmul(b, d)),
            A.all(_mm_w2(A, a, c, d), A.rank(b) == A.rank(a), ax == A.rank(a) - 1, bx == 0,
                  A.dim(a, ax) == A.dim(c, 0)))


# Columns of the weight <-> the last axis of the output: the output axis depends on the rank
# of the activation, so these are stated per rank (a trigger cannot hold `rank(a) - 1`).
for _r in range(3, 5):
    axiom(f"MatMul-w2-Concat-cols-r{_r}", ["MatMul", "Concat"], "a b c", "",
          [I({"a": (2,) * (_r - 2) + (1, 3), "b": (3, 1), "c": (3, 2)}),
           I({"a": (1,) * (_r - 2) + (2, 2), "b": (2, 2), "c": (2, 1)})], triggers="both")(
        lambda A, t, i, s, r=_r: (
            A.matmul(t["a"], A.cat(1, t["b"], t["c"])),
            A.cat(r - 1, A.matmul(t["a"], t["b"]), A.matmul(t["a"], t["c"])),
            A.all(A.rank(t["a"]) == r, A.rank(t["b"]) == 2, A.rank(t["c"]) == 2)))
    axiom(f"MatMul-w2-Split-cols-r{_r}", ["MatMul", "Split"], "a b", "s l",
          [I({"a": (2,) * (_r - 2) + (2, 3), "b": (3, 4)}, {"s": 1, "l": 2}),
           I({"a": (1,) * (_r - 2) + (1, 2), "b": (2, 3)}, {"s": 0, "l": 1})],
          triggers="both")(
        lambda A, t, i, s, r=_r: (
            A.matmul(t["a"], A.slice(t["b"], 1, i["s"], i["l"])),
            A.slice(A.matmul(t["a"], t["b"]), r - 1, i["s"], i["l"]),
            A.all(A.rank(t["a"]) == r, A.rank(t["b"]) == 2,
                  in_range(A, t["b"], 1, i["s"], i["l"]))))


# ---------------------------------------------------------------------------------------------
# Conv (stride, pads and group as quantified integers; dilation 1)

_X, _W = (1, 2, 4, 4), (2, 2, 3, 3)


@axiom("Conv-linear-x", ["Conv", "Add"], "x y w", CP,
       [I({"x": _X, "y": _X, "w": _W}, conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 5, 4), "y": (1, 2, 5, 4), "w": (4, 1, 1, 3)}, conv_ints(sh=2, g=2))],
       triggers="both")
def _(A, t, i, s):
    x, y, w, p = t["x"], t["y"], t["w"], conv_p(i)
    return (A.conv(A.binary("Add", x, y), w, p),
            A.binary("Add", A.conv(x, w, p), A.conv(y, w, p)), same_shape(A, x, y, 4))


@axiom("Conv-linear-w", ["Conv", "Add"], "x w v", CP,
       [I({"x": _X, "w": _W, "v": _W}, conv_ints(pt=1, pl=0, pb=1, pr=2)),
        I({"x": (1, 2, 4, 4), "w": (2, 1, 3, 1), "v": (2, 1, 3, 1)}, conv_ints(sw=2, g=2))],
       triggers="both")
def _(A, t, i, s):
    x, w, v, p = t["x"], t["w"], t["v"], conv_p(i)
    return (A.conv(x, A.binary("Add", w, v), p),
            A.binary("Add", A.conv(x, w, p), A.conv(x, v, p)), same_shape(A, w, v, 4))


@axiom("Conv-scalar-x", ["Conv", "Mul"], "x w s", CP,
       [I({"x": _X, "w": _W, "s": ()}, conv_ints(pt=1)),
        I({"x": (1, 2, 3, 3), "w": (2, 1, 1, 1), "s": ()}, conv_ints(g=2))], triggers="both")
def _(A, t, i, s):
    x, w, c, p = t["x"], t["w"], t["s"], conv_p(i)
    return A.conv(A.binary("Mul", x, c), w, p), A.binary("Mul", A.conv(x, w, p), c), \
        A.rank(c) == 0


@axiom("Conv-scalar-w", ["Conv", "Mul"], "x w s", CP,
       [I({"x": _X, "w": _W, "s": ()}, conv_ints(pr=1)),
        I({"x": (1, 2, 3, 3), "w": (2, 1, 1, 1), "s": ()}, conv_ints(g=2))], triggers="both")
def _(A, t, i, s):
    x, w, c, p = t["x"], t["w"], t["s"], conv_p(i)
    return A.conv(x, A.binary("Mul", w, c), p), A.binary("Mul", A.conv(x, w, p), c), \
        A.rank(c) == 0


@axiom("Conv-Concat-weights", ["Conv", "Concat"], "x w v", CP,
       [I({"x": _X, "w": (1, 2, 3, 3), "v": (2, 2, 3, 3)}, conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 4, 3), "w": (2, 2, 1, 3), "v": (1, 2, 1, 3)}, conv_ints(sh=2))],
       triggers="both")
def _(A, t, i, s):
    x, w, v, p = t["x"], t["w"], t["v"], conv_p(i)
    return (A.conv(x, A.cat(0, w, v), p), A.cat(1, A.conv(x, w, p), A.conv(x, v, p)),
            i["g"] == 1)


@axiom("Conv-Concat-batch", ["Conv", "Concat"], "x y w", CP,
       [I({"x": _X, "y": _X, "w": _W}, conv_ints(pt=1)),
        I({"x": (1, 2, 3, 3), "y": (2, 2, 3, 3), "w": (2, 1, 3, 3)}, conv_ints(g=2, pb=1))],
       triggers="both")
def _(A, t, i, s):
    x, y, w, p = t["x"], t["y"], t["w"], conv_p(i)
    return (A.conv(A.cat(0, x, y), w, p), A.cat(0, A.conv(x, w, p), A.conv(y, w, p)),
            A.all(*[A.dim(x, k) == A.dim(y, k) for k in (1, 2, 3)]))


def _grouped_guard(A, x, y, w, v, g):
    return A.all(A.dim(x, 1) == A.dim(y, 1), g >= 1,
                 *[A.dim(x, k) == A.dim(y, k) for k in (2, 3)],
                 *[A.dim(w, k) == A.dim(v, k) for k in range(4)])


_GROUPED = [I({"x": (1, 2, 3, 3), "y": (1, 2, 3, 3), "w": (1, 2, 3, 3), "v": (1, 2, 3, 3)},
              conv_ints(pt=1, pl=1, pb=1, pr=1)),
            I({"x": (1, 2, 3, 3), "y": (1, 2, 3, 3), "w": (4, 1, 1, 1), "v": (4, 1, 1, 1)},
              conv_ints(g=2, sw=2))]


@axiom("Concat-Convs-grouped", ["Conv", "Concat"], "x y w v", CP, _GROUPED)
def _(A, t, i, s):
    x, y, w, v = t["x"], t["y"], t["w"], t["v"]
    p, g = conv_p(i), i["g"]
    return (A.cat(1, A.conv(x, w, p), A.conv(y, v, p)),
            A.conv(A.cat(1, x, y), A.cat(0, w, v), p[:6] + (2 * g,)),
            _grouped_guard(A, x, y, w, v, g))


@axiom("Conv-grouped-Concat", ["Conv", "Concat"], "x y w v", CP,
       [I(x.shapes, {**x.ints, "g": 2 * x.ints["g"]}) for x in _GROUPED])
def _(A, t, i, s):
    x, y, w, v = t["x"], t["y"], t["w"], t["v"]
    p, g = conv_p(i), i["g"]
    return (A.conv(A.cat(1, x, y), A.cat(0, w, v), p),
            A.cat(1, A.conv(x, w, p[:6] + (g / 2 if isinstance(g, z3.ArithRef) else g // 2,)),
                  A.conv(y, v, p[:6] + (g / 2 if isinstance(g, z3.ArithRef) else g // 2,))),
            A.all(g % 2 == 0, _grouped_guard(A, x, y, w, v, g / 2 if isinstance(
                g, z3.ArithRef) else g // 2)))


@axiom("Conv-Concat-in-channels", ["Conv", "Concat", "Add"], "x y w v", CP,
       [I({"x": (1, 1, 3, 3), "y": (1, 2, 3, 3), "w": (2, 1, 3, 3), "v": (2, 2, 3, 3)},
          conv_ints(pt=1, pl=1)),
        I({"x": (1, 2, 3, 4), "y": (1, 1, 3, 4), "w": (1, 2, 1, 3), "v": (1, 1, 1, 3)},
          conv_ints(sw=2))], triggers="both")
def _(A, t, i, s):
    x, y, w, v, p = t["x"], t["y"], t["w"], t["v"], conv_p(i)
    return (A.conv(A.cat(1, x, y), A.cat(1, w, v), p),
            A.binary("Add", A.conv(x, w, p), A.conv(y, v, p)),
            A.all(i["g"] == 1, A.dim(x, 1) == A.dim(w, 1), A.dim(y, 1) == A.dim(v, 1),
                  A.dim(w, 0) == A.dim(v, 0), A.dim(x, 0) == A.dim(y, 0),
                  *[A.dim(x, k) == A.dim(y, k) for k in (2, 3)],
                  *[A.dim(w, k) == A.dim(v, k) for k in (2, 3)]))


@axiom("Conv-identity-kernel", ["Conv", "IdentityKernelLike"], "x w", CP,
       [I({"x": (1, 2, 3, 3), "w": (2, 2, 3, 3)}, conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 3, 3), "w": (2, 1, 1, 3)}, conv_ints(pl=1, pr=1, g=2))])
def _(A, t, i, s):
    x, w, p = t["x"], t["w"], conv_p(i)
    return (A.conv(x, A.like("IdentityKernelLike", w), p), x,
            A.all(i["sh"] == 1, i["sw"] == 1, 2 * i["pt"] + 1 == A.dim(w, 2), i["pb"] == i["pt"],
                  2 * i["pl"] + 1 == A.dim(w, 3), i["pr"] == i["pl"], A.rank(x) == 4,
                  A.dim(w, 0) == A.dim(x, 1), i["g"] * A.dim(w, 1) == A.dim(x, 1)))


@axiom("Conv-EnlargeKernel", ["Conv", "EnlargeKernel"], "x w r", CP,
       [I({"x": (1, 2, 3, 3), "w": (2, 2, 1, 1), "r": (2, 2, 3, 3)},
          conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 4, 4), "w": (2, 1, 1, 3), "r": (2, 1, 3, 3)},
          conv_ints(sh=2, pt=1, pl=0, pb=2, pr=1, g=2))])
def _(A, t, i, s):
    x, w, r = t["x"], t["w"], t["r"]
    dh2, dw2 = A.dim(r, 2) - A.dim(w, 2), A.dim(r, 3) - A.dim(w, 3)
    half = (lambda e: e / 2) if isinstance(dh2, z3.ArithRef) else (lambda e: e // 2)
    dh, dw = half(dh2), half(dw2)
    p = conv_p(i)
    q = (p[0], p[1], p[2] - dh, p[3] - dw, p[4] - dh, p[5] - dw, p[6])
    return (A.conv(x, A.enlarge(w, r), p), A.conv(x, w, q),
            A.all(dh2 >= 0, dw2 >= 0, dh2 % 2 == 0, dw2 % 2 == 0, p[2] >= dh, p[4] >= dh,
                  p[3] >= dw, p[5] >= dw))


@axiom("EnlargeKernel-Concat", ["EnlargeKernel", "Concat"], "w v r", "",
       [I({"w": (1, 2, 1, 1), "v": (2, 2, 1, 1), "r": (1, 1, 3, 3)}),
        I({"w": (1, 1, 1, 3), "v": (1, 1, 1, 3), "r": (3, 3, 3, 3)})], triggers="both")
def _(A, t, i, s):
    w, v, r = t["w"], t["v"], t["r"]
    return (A.enlarge(A.cat(0, w, v), r), A.cat(0, A.enlarge(w, r), A.enlarge(v, r)),
            A.all(A.dim(w, 2) == A.dim(v, 2), A.dim(w, 3) == A.dim(v, 3)))


@axiom("EnlargeKernel-same", ["EnlargeKernel"], "w r", "",
       [I({"w": (1, 2, 3, 3), "r": (1, 1, 3, 3)}), I({"w": (2, 1, 1, 3), "r": (2, 1, 1, 3)})])
def _(A, t, i, s):
    w, r = t["w"], t["r"]
    return A.enlarge(w, r), w, A.all(A.dim(w, 2) == A.dim(r, 2), A.dim(w, 3) == A.dim(r, 3))


@axiom("Conv-Split-weights", ["Conv", "Split"], "x w", CP + " s l",
       [I({"x": _X, "w": (3, 2, 3, 3)}, {**conv_ints(pt=1), "s": 1, "l": 2}),
        I({"x": (1, 2, 3, 3), "w": (3, 2, 1, 1)}, {**conv_ints(sh=2), "s": 0, "l": 1})],
       triggers="both")
def _(A, t, i, s):
    x, w, p = t["x"], t["w"], conv_p(i)
    return (A.conv(x, A.slice(w, 0, i["s"], i["l"]), p),
            A.slice(A.conv(x, w, p), 1, i["s"], i["l"]),
            A.all(i["g"] == 1, in_range(A, w, 0, i["s"], i["l"])))


for _op in ("MaxPool", "AveragePool"):
    axiom(f"{_op}-Concat", [_op, "Concat"], "a b", PP + " ax",
          [I({"a": (1, 1, 4, 4), "b": (1, 2, 4, 4)},
             {"kh": 3, "kw": 3, "sh": 1, "sw": 1, "pt": 1, "pl": 1, "pb": 1, "pr": 1, "cip": 0,
              "ax": 1}),
           I({"a": (1, 1, 4, 3), "b": (2, 1, 4, 3)},
             {"kh": 2, "kw": 2, "sh": 2, "sw": 1, "pt": 0, "pl": 1, "pb": 0, "pr": 0, "cip": 1,
              "ax": 0})], triggers="both")(
        lambda A, t, i, s, op=_op: (
            A.pool(op, A.cat(i["ax"], t["a"], t["b"]), pool_p(i)),
            A.cat(i["ax"], A.pool(op, t["a"], pool_p(i)), A.pool(op, t["b"], pool_p(i))),
            A.all(0 <= i["ax"], i["ax"] <= 1)))



# ---------------------------------------------------------------------------------------------
# BatchNormalization (inference: a per-channel affine map) folded into a Conv.
# BiasNCHW(c) is a 1-D per-channel vector as a (1, C, 1, 1) tensor, how a Conv adds its bias;
# BatchNormFoldKernel / BatchNormFoldBias are the registry's weight-only fold helpers.

_BN_FOLD = [
    I({"x": (1, 2, 3, 3), "w": (2, 2, 3, 3), "s": (2,), "b": (2,), "m": (2,), "v": (2,)},
      {**conv_ints(pt=1, pl=1, pb=1, pr=1), "eps": 1e-5}),
    I({"x": (2, 2, 3, 4), "w": (2, 1, 1, 3), "s": (2,), "b": (2,), "m": (2,), "v": (2,)},
      {**conv_ints(sw=2, pl=1, g=2), "eps": 0.5}),
    I({"x": (1, 2, 2, 2), "w": (3, 2, 1, 1), "s": (3,), "b": (3,), "m": (3,), "v": (3,)},
      {**conv_ints(), "eps": 0.001}),
]


def _bn_params(A, c, *ps):
    return A.all(*[f for p in ps for f in (A.rank(p) == 1, A.dim(p, 0) == c)])


@axiom("Conv-BatchNormalization-fold", ["Conv", "BatchNormalization", "BatchNormFoldKernel",
                                        "BatchNormFoldBias", "Add"],
       "x w s b m v", CP + " eps", _BN_FOLD)
def _(A, t, i, _s):
    """BN(Conv(x, w)) = Conv(x, w * s/sqrt(v+eps) per output channel) + (b - m*s/sqrt(v+eps))."""
    x, w, s, b, m, v, p, e = t["x"], t["w"], t["s"], t["b"], t["m"], t["v"], conv_p(i), i["eps"]
    return (A.bn(A.conv(x, w, p), s, b, m, v, e),
            A.binary("Add", A.conv(x, A.fold_kernel(w, s, v, e), p),
                     A.channel(A.fold_bias(s, b, m, v, e))),
            _bn_params(A, A.dim(w, 0), s, b, m, v))


@axiom("BatchNormalization-channel-shift", ["BatchNormalization", "Add", "Sub"],
       "y c s b m v", "eps",
       [I({"y": (1, 2, 2, 3), "c": (2,), "s": (2,), "b": (2,), "m": (2,), "v": (2,)},
          {"eps": 1e-5}),
        I({"y": (2, 3, 1, 2), "c": (3,), "s": (3,), "b": (3,), "m": (3,), "v": (3,)},
          {"eps": 0.25})])
def _(A, t, i, _s):
    """BN(y + c per channel) = BN(y) with mean m - c (a Conv bias moves into the BN mean)."""
    y, c, s, b, m, v, e = t["y"], t["c"], t["s"], t["b"], t["m"], t["v"], i["eps"]
    return (A.bn(A.binary("Add", y, A.channel(c)), s, b, m, v, e),
            A.bn(y, s, b, A.binary("Sub", m, c), v, e),
            A.all(A.rank(y) == 4, _bn_params(A, A.dim(y, 1), c, s, b, m, v)))


# ---------------------------------------------------------------------------------------------
# Concat and Split (Split output k is a Slice at the offset of the parts before it)


@axiom("Split-all", ["Split"], "x", "ax s l", [I({"x": (2, 3)}, {"ax": 1, "s": 0, "l": 3}),
                                               I({"x": (4,)}, {"ax": 0, "s": 0, "l": 4})])
def _(A, t, i, s):
    x = t["x"]
    return A.slice(x, i["ax"], i["s"], i["l"]), x, A.all(
        i["s"] == 0, i["l"] == A.dim(x, i["ax"]), 0 <= i["ax"], i["ax"] < A.rank(x))


@axiom("Split-Concat-left", ["Split", "Concat"], "a b", "ax s l",
       [I({"a": (3, 2), "b": (1, 2)}, {"ax": 0, "s": 1, "l": 2}),
        I({"a": (2, 2), "b": (2, 3)}, {"ax": 1, "s": 0, "l": 2})])
def _(A, t, i, s):
    a, b, ax, st, ln = t["a"], t["b"], i["ax"], i["s"], i["l"]
    return (A.slice(A.cat(ax, a, b), ax, st, ln), A.slice(a, ax, st, ln),
            A.all(in_range(A, a, ax, st, ln), A.rank(a) == A.rank(b)))


@axiom("Split-Concat-right", ["Split", "Concat"], "a b", "ax s l",
       [I({"a": (3, 2), "b": (2, 2)}, {"ax": 0, "s": 3, "l": 2}),
        I({"a": (2, 2), "b": (2, 3)}, {"ax": 1, "s": 3, "l": 1})])
def _(A, t, i, s):
    a, b, ax, st, ln = t["a"], t["b"], i["ax"], i["s"], i["l"]
    return (A.slice(A.cat(ax, a, b), ax, st, ln), A.slice(b, ax, st - A.dim(a, ax), ln),
            A.all(st >= A.dim(a, ax), in_range(A, b, ax, st - A.dim(a, ax), ln),
                  A.rank(a) == A.rank(b)))


@axiom("Concat-Splits", ["Split", "Concat"], "x", "ax s l m",
       [I({"x": (4, 2)}, {"ax": 0, "s": 0, "l": 1, "m": 2}),
        I({"x": (2, 5)}, {"ax": 1, "s": 1, "l": 2, "m": 2})])
def _(A, t, i, s):
    x, ax, st, ln, m = t["x"], i["ax"], i["s"], i["l"], i["m"]
    return (A.cat(ax, A.slice(x, ax, st, ln), A.slice(x, ax, st + ln, m)),
            A.slice(x, ax, st, ln + m), A.all(in_range(A, x, ax, st, ln + m), m >= 0))


@axiom("Concat-assoc", ["Concat"], "a b c", "ax",
       [I({"a": (1, 2), "b": (2, 2), "c": (1, 2)}, {"ax": 0}),
        I({"a": (2, 1), "b": (2, 1), "c": (2, 2)}, {"ax": 1})], triggers="both")
def _(A, t, i, s):
    a, b, c, ax = t["a"], t["b"], t["c"], i["ax"]
    return A.cat(ax, A.cat(ax, a, b), c), A.cat(ax, a, A.cat(ax, b, c)), True


@axiom("Split-Concat-other-axis", ["Split", "Concat"], "a b", "ax bx s l",
       [I({"a": (1, 3), "b": (2, 3)}, {"ax": 0, "bx": 1, "s": 1, "l": 2}),
        I({"a": (3, 1), "b": (3, 2)}, {"ax": 1, "bx": 0, "s": 0, "l": 2})])
def _(A, t, i, s):
    a, b, ax, bx, st, ln = t["a"], t["b"], i["ax"], i["bx"], i["s"], i["l"]
    return (A.slice(A.cat(ax, a, b), bx, st, ln),
            A.cat(ax, A.slice(a, bx, st, ln), A.slice(b, bx, st, ln)),
            A.all(ax != bx, in_range(A, a, bx, st, ln), A.rank(a) == A.rank(b)))


@axiom("Concat-Concat-swap", ["Concat"], "a b c d", "ax bx",
       [I({"a": (1, 1), "b": (1, 2), "c": (2, 1), "d": (2, 2)}, {"ax": 0, "bx": 1}),
        I({"a": (1, 2), "b": (2, 2), "c": (1, 1), "d": (2, 1)}, {"ax": 1, "bx": 0})],
       triggers="both")
def _(A, t, i, s):
    a, b, c, d, ax, bx = t["a"], t["b"], t["c"], t["d"], i["ax"], i["bx"]
    return (A.cat(ax, A.cat(bx, a, b), A.cat(bx, c, d)),
            A.cat(bx, A.cat(ax, a, c), A.cat(ax, b, d)),
            A.all(ax != bx, A.dim(a, bx) == A.dim(c, bx), A.dim(b, bx) == A.dim(d, bx)))


# ---------------------------------------------------------------------------------------------
# Transpose


@axiom("Transpose-Transpose", ["Transpose"], "x", "",
       [I({"x": (2, 3)}, static=((1, 0), (1, 0))),
        I({"x": (2, 3, 4)}, static=((1, 2, 0), (0, 2, 1)))], schema="perm2")
def _(A, t, i, pq):
    p, q = pq
    x = t["x"]
    r = compose(p, q)
    rhs = x if r == tuple(range(len(r))) else A.transpose(x, r)
    return A.transpose(A.transpose(x, p), q), rhs, A.rank(x) == len(p)


@axiom("Transpose-Concat", ["Transpose", "Concat"], "a b", "",
       [I({"a": (1, 2), "b": (2, 2)}, static=((1, 0), 0)),
        I({"a": (2, 1, 3), "b": (2, 2, 3)}, static=((2, 0, 1), 1))], schema="perm_axis")
def _(A, t, i, pa):
    p, ax = pa
    a, b = t["a"], t["b"]
    return (A.transpose(A.cat(ax, a, b), p),
            A.cat(inverse(p)[ax], A.transpose(a, p), A.transpose(b, p)),
            A.all(A.rank(a) == len(p), A.rank(b) == len(p)))


# ---------------------------------------------------------------------------------------------
# shape axioms: dim and rank of every primitive

_CONV_SHAPE = [I({"x": (1, 2, 5, 4), "w": (3, 2, 3, 1)}, conv_ints(sh=2, pt=1, pb=0, pl=0)),
               I({"x": (2, 4, 3, 3), "w": (2, 2, 1, 3)}, conv_ints(pl=1, pr=1, g=2))]


def _conv_dims(A, x, w, p):
    sh, sw, pt, pl, pb, pr, g = p
    div = (lambda a, b: a / b) if isinstance(sh, z3.ArithRef) else (lambda a, b: a // b)
    return [A.dim(x, 0), A.dim(w, 0), div(A.dim(x, 2) + pt + pb - A.dim(w, 2), sh) + 1,
            div(A.dim(x, 3) + pl + pr - A.dim(w, 3), sw) + 1]


def shape_axiom(name: str, ops: list[str], tensors: str, ints: str, instances: list[Instance],
                lhs: Callable, rhs: Callable, guard: Callable = lambda A, t, i, k: True,
                ranks: Callable = lambda inst: 4):
    """`dim(op(...), k) == rhs(k)` for every k (k is a quantified integer)."""
    def body(A, t, i, s):
        k = i["k"]
        return A.dim(lhs(A, t, i), k), rhs(A, t, i, k), guard(A, t, i, k)
    inst = [Instance(x.shapes, {**x.ints, "k": k}, x.static)
            for x in instances for k in range(ranks(x))]
    axiom(name, ops, tensors, ints + " k", inst, kind="int")(body)


def _pick(A, k, values):
    out = values[-1]
    for j in range(len(values) - 2, -1, -1):
        out = A.ite(k == j, values[j], out)
    return out


shape_axiom("dim-Conv", ["Conv"], "x w", CP, _CONV_SHAPE,
            lambda A, t, i: A.conv(t["x"], t["w"], conv_p(i)),
            lambda A, t, i, k: _pick(A, k, _conv_dims(A, t["x"], t["w"], conv_p(i))),
            lambda A, t, i, k: A.all(0 <= k, k < 4))
for _op in ("MaxPool", "AveragePool"):
    shape_axiom(f"dim-{_op}", [_op], "x", PP,
                [I({"x": (1, 2, 5, 4)}, dict(kh=3, kw=2, sh=2, sw=1, pt=1, pl=0, pb=1, pr=0,
                                             cip=0))],
                lambda A, t, i, op=_op: A.pool(op, t["x"], pool_p(i)),
                lambda A, t, i, k: _pick(A, k, [A.dim(t["x"], 0), A.dim(t["x"], 1)] + [
                    (lambda a, b: a / b if isinstance(b, z3.ArithRef) else a // b)(
                        A.dim(t["x"], 2 + j) + i["pt" if j == 0 else "pl"]
                        + i["pb" if j == 0 else "pr"] - i["kh" if j == 0 else "kw"],
                        i["sh" if j == 0 else "sw"]) + 1 for j in (0, 1)]),
                lambda A, t, i, k: A.all(0 <= k, k < 4))
shape_axiom("dim-Concat", ["Concat"], "a b", "ax",
            [I({"a": (1, 2), "b": (2, 2)}, {"ax": 0}), I({"a": (2, 1), "b": (2, 3)}, {"ax": 1})],
            lambda A, t, i: A.cat(i["ax"], t["a"], t["b"]),
            lambda A, t, i, k: A.ite(k == i["ax"], A.dim(t["a"], k) + A.dim(t["b"], k),
                                     A.dim(t["a"], k)), ranks=lambda x: 2)
shape_axiom("dim-Split", ["Split"], "x", "ax s l",
            [I({"x": (3, 2)}, {"ax": 0, "s": 1, "l": 1}), I({"x": (2, 4)}, {"ax": 1, "s": 1,
                                                                          "l": 3})],
            lambda A, t, i: A.slice(t["x"], i["ax"], i["s"], i["l"]),
            lambda A, t, i, k: A.ite(k == i["ax"], i["l"], A.dim(t["x"], k)),
            ranks=lambda x: 2)
shape_axiom("dim-MatMul", ["MatMul"], "a b", "",
            [I({"a": (2, 3), "b": (3, 4)}), I({"a": (1, 2, 3), "b": (2, 3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]),
            lambda A, t, i, k: A.ite(
                k == A.rank(t["a"]) - 1, A.dim(t["b"], k),
                A.ite(k == A.rank(t["a"]) - 2, A.dim(t["a"], k),
                      A.ite(A.dim(t["a"], k) == 1, A.dim(t["b"], k), A.dim(t["a"], k)))),
            lambda A, t, i, k: A.all(A.rank(t["a"]) == A.rank(t["b"]), A.rank(t["a"]) >= 2,
                                     0 <= k, k < A.rank(t["a"])),
            ranks=lambda x: len(x.shapes["a"]))
shape_axiom("dim-MatMul-w2", ["MatMul"], "a b", "",
            [I({"a": (2, 1, 3), "b": (3, 4)}), I({"a": (1, 2, 2, 3), "b": (3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]),
            lambda A, t, i, k: A.ite(k == A.rank(t["a"]) - 1, A.dim(t["b"], 1), A.dim(t["a"], k)),
            lambda A, t, i, k: A.all(_mm_w2(A, t["a"], t["b"]), 0 <= k, k < A.rank(t["a"])),
            ranks=lambda x: len(x.shapes["a"]))
shape_axiom("dim-EnlargeKernel", ["EnlargeKernel"], "w r", "",
            [I({"w": (2, 1, 1, 3), "r": (1, 1, 3, 3)})],
            lambda A, t, i: A.enlarge(t["w"], t["r"]),
            lambda A, t, i, k: A.ite(k <= 1, A.dim(t["w"], k), A.dim(t["r"], k)),
            lambda A, t, i, k: A.all(0 <= k, k < 4))
for _op in POINTWISE_BINARY:
    shape_axiom(f"dim-{_op}", [_op], "a b", "",
                [I({"a": (2, 3), "b": (1, 3)}), I({"a": (2, 1), "b": (2, 3)})],
                lambda A, t, i, op=_op: A.binary(op, t["a"], t["b"]),
                lambda A, t, i, k: A.ite(A.dim(t["a"], k) == 1, A.dim(t["b"], k),
                                         A.dim(t["a"], k)),
                lambda A, t, i, k: A.rank(t["a"]) == A.rank(t["b"]), ranks=lambda x: 2)
    shape_axiom(f"dim-{_op}-scalar", [_op], "a s", "",
                [I({"a": (2, 3), "s": ()}), I({"a": (3,), "s": ()})],
                lambda A, t, i, op=_op: A.binary(op, t["a"], t["s"]),
                lambda A, t, i, k: A.dim(t["a"], k), lambda A, t, i, k: A.rank(t["s"]) == 0,
                ranks=lambda x: len(x.shapes["a"]))
for _op in UNARY + LIKE:
    shape_axiom(f"dim-{_op}", [_op], "x", "",
                [I({"x": (2, 3) if _op != "IdentityKernelLike" else (2, 2, 3, 1)})],
                (lambda A, t, i, op=_op: A.unary(op, t["x"])) if _op in UNARY else
                (lambda A, t, i, op=_op: A.like(op, t["x"])),
                lambda A, t, i, k: A.dim(t["x"], k),
                ranks=lambda x: len(x.shapes["x"]))


shape_axiom("dim-BatchNormalization", ["BatchNormalization"], "x s b m v", "eps",
            [I({"x": (2, 3, 2, 1), "s": (3,), "b": (3,), "m": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.bn(t["x"], t["s"], t["b"], t["m"], t["v"], i["eps"]),
            lambda A, t, i, k: A.dim(t["x"], k))
shape_axiom("dim-BatchNormFoldKernel", ["BatchNormFoldKernel"], "w s v", "eps",
            [I({"w": (3, 2, 1, 2), "s": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.fold_kernel(t["w"], t["s"], t["v"], i["eps"]),
            lambda A, t, i, k: A.dim(t["w"], k),
            lambda A, t, i, k: _bn_params(A, A.dim(t["w"], 0), t["s"], t["v"]))
shape_axiom("dim-BatchNormFoldBias", ["BatchNormFoldBias"], "s b m v", "eps",
            [I({"s": (3,), "b": (3,), "m": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.fold_bias(t["s"], t["b"], t["m"], t["v"], i["eps"]),
            lambda A, t, i, k: A.dim(t["b"], k),
            lambda A, t, i, k: _bn_params(A, A.dim(t["b"], 0), t["s"], t["b"], t["m"], t["v"]),
            ranks=lambda x: 1)
shape_axiom("dim-BiasNCHW", ["Conv"], "c", "",
            [I({"c": (3,)})], lambda A, t, i: A.channel(t["c"]),
            lambda A, t, i, k: A.ite(k == 1, A.dim(t["c"], 0), 1),
            lambda A, t, i, k: A.all(A.rank(t["c"]) == 1, 0 <= k, k < 4))


def _rank_axiom(name, ops, tensors, ints, inst, term, value, guard=lambda A, t, i: True):
    axiom(name, ops, tensors, ints, inst, kind="rank")(
        lambda A, t, i, s: (A.rank(term(A, t, i)), value(A, t, i), guard(A, t, i)))


_rank_axiom("rank-Concat", ["Concat"], "a b", "ax", [I({"a": (1, 2), "b": (1, 2)}, {"ax": 0})],
            lambda A, t, i: A.cat(i["ax"], t["a"], t["b"]), lambda A, t, i: A.rank(t["a"]))
_rank_axiom("rank-Split", ["Split"], "x", "ax s l", [I({"x": (2, 3)}, {"ax": 1, "s": 0, "l": 2})],
            lambda A, t, i: A.slice(t["x"], i["ax"], i["s"], i["l"]),
            lambda A, t, i: A.rank(t["x"]))
_rank_axiom("rank-Conv", ["Conv"], "x w", CP, _CONV_SHAPE,
            lambda A, t, i: A.conv(t["x"], t["w"], conv_p(i)), lambda A, t, i: 4)
_rank_axiom("rank-MatMul", ["MatMul"], "a b", "", [I({"a": (2, 3), "b": (3, 4)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]), lambda A, t, i: A.rank(t["a"]),
            lambda A, t, i: A.rank(t["a"]) == A.rank(t["b"]))
_rank_axiom("rank-MatMul-w2", ["MatMul"], "a b", "",
            [I({"a": (2, 2, 3), "b": (3, 4)}), I({"a": (1, 2, 2, 3), "b": (3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]), lambda A, t, i: A.rank(t["a"]),
            lambda A, t, i: _mm_w2(A, t["a"], t["b"]))
_rank_axiom("rank-EnlargeKernel", ["EnlargeKernel"], "w r", "",
            [I({"w": (2, 1, 1, 3), "r": (1, 1, 3, 3)})],
            lambda A, t, i: A.enlarge(t["w"], t["r"]), lambda A, t, i: 4)
for _op in ("MaxPool", "AveragePool"):
    _rank_axiom(f"rank-{_op}", [_op], "x", PP,
                [I({"x": (1, 2, 5, 4)}, dict(kh=3, kw=2, sh=2, sw=1, pt=1, pl=0, pb=1, pr=0,
                                             cip=0))],
                lambda A, t, i, op=_op: A.pool(op, t["x"], pool_p(i)), lambda A, t, i: 4)
for _op in POINTWISE_BINARY:
    _rank_axiom(f"rank-{_op}", [_op], "a b", "", [I({"a": (2, 3), "b": (3,)})],
                lambda A, t, i, op=_op: A.binary(op, t["a"], t["b"]),
                lambda A, t, i: A.ite(A.rank(t["a"]) >= A.rank(t["b"]), A.rank(t["a"]),
                                      A.rank(t["b"])))
for _op in UNARY + LIKE:
    _rank_axiom(f"rank-{_op}", [_op], "x", "",
                [I({"x": (2, 3) if _op == "IdentityMatrixLike" else (2, 3, 1, 1)})],
                (lambda A, t, i, op=_op: A.unary(op, t["x"])) if _op in UNARY else
                (lambda A, t, i, op=_op: A.like(op, t["x"])), lambda A, t, i: A.rank(t["x"]))

_rank_axiom("rank-BatchNormalization", ["BatchNormalization"], "x s b m v", "eps",
            [I({"x": (2, 3, 2, 1), "s": (3,), "b": (3,), "m": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.bn(t["x"], t["s"], t["b"], t["m"], t["v"], i["eps"]),
            lambda A, t, i: A.rank(t["x"]))
_rank_axiom("rank-BatchNormFoldKernel", ["BatchNormFoldKernel"], "w s v", "eps",
            [I({"w": (3, 2, 1, 2), "s": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.fold_kernel(t["w"], t["s"], t["v"], i["eps"]),
            lambda A, t, i: A.rank(t["w"]),
            lambda A, t, i: _bn_params(A, A.dim(t["w"], 0), t["s"], t["v"]))
_rank_axiom("rank-BatchNormFoldBias", ["BatchNormFoldBias"], "s b m v", "eps",
            [I({"s": (3,), "b": (3,), "m": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.fold_bias(t["s"], t["b"], t["m"], t["v"], i["eps"]),
            lambda A, t, i: 1,
            lambda A, t, i: _bn_params(A, A.dim(t["b"], 0), t["s"], t["b"], t["m"], t["v"]))
_rank_axiom("rank-BiasNCHW", ["Conv"], "c", "", [I({"c": (3,)})],
            lambda A, t, i: A.channel(t["c"]), lambda A, t, i: 4,
            lambda A, t, i: A.rank(t["c"]) == 1)


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


def _install() -> None:
    from superopt.verifier.semantics import install

    install()


_install()
