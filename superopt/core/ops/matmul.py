"""MatMul (numpy broadcasting) and Gemm, with their Z3 semantics, generator instances, fusion
hints and axioms (associativity, linearity, and how MatMul meets Concat, Split and Transpose,
for 2-D operands and for a rank-r activation times a 2-D weight)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from superopt.core.axiom_spec import AxiomBook, I, in_range
from superopt.core.generator_spec import Arg, OpInstance, SymShape
from superopt.core.ops.common import (
    broadcast_shapes,
    lower_generic,
    nbytes,
    on_terms,
    onnx_attrs,
    plain_from_onnx,
    plain_to_onnx,
)
from superopt.core.registry import ASSOCIATIVE, LINEAR, Attrs, OpDef, Z3Semantics
from superopt.core.types import Shape, TensorType


def _matmul_shape(a: Shape, b: Shape) -> Shape:
    a1, b1 = len(a) == 1, len(b) == 1
    a2 = (1,) + tuple(a) if a1 else tuple(a)
    b2 = tuple(b) + (1,) if b1 else tuple(b)
    ka, kb = a2[-1], b2[-2]
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        raise ValueError(f"MatMul inner dims differ: {a} x {b}")
    batch = broadcast_shapes(a2[:-2], b2[:-2]) if len(a2) > 2 or len(b2) > 2 else ()
    out = tuple(batch) + (a2[-2], b2[-1])
    if a1:
        out = out[:-2] + out[-1:]
    if b1:
        out = out[:-1]
    return out


def _matmul_cost(attrs, ins, outs):
    k = ins[0].shape[-1] if ins[0].shape else 1
    k = k if isinstance(k, int) else 1
    return 2.0 * outs[0].numel() * k, nbytes(ins) + nbytes(outs)


def _matmul_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [np.matmul(x[0], x[1])]


def _gemm_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    A = x[0].T if a["transA"] else x[0]
    B = x[1].T if a["transB"] else x[1]
    y = a["alpha"] * (A @ B)
    if len(x) > 2:
        y = y + a["beta"] * x[2]
    return [np.asarray(y).astype(x[0].dtype, copy=False)]


def _gemm_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    m = t[0].shape[1] if a["transA"] else t[0].shape[0]
    n = t[1].shape[0] if a["transB"] else t[1].shape[1]
    return [TensorType(t[0].elem_type, (m, n))]


def _gemm_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"alpha", "beta", "transA", "transB"}:
        return None
    ins = [i for i, n in enumerate(node.input) if n]
    return {k: (float(v) if k in ("alpha", "beta") else int(v)) for k, v in a.items()}, ins


# ---------------------------------------------------------------------------------------------
# generator instances


def _matmul(args: Sequence[Arg]) -> dict | None:
    a, b = args[0].shape, args[1].shape
    return {} if len(a) == 2 and len(b) == 2 and a[1] == b[0] else None


def _matmul_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [(args[0].sym[0], args[1].sym[1])]


def _matmul_3d(args: Sequence[Arg]) -> dict | None:
    # A rank-3 activation times a 2-D weight (a transformer's or RNN's projection: 1×128×768 by
    # 768×768), and 2-D by 2-D for the algebra on weights.
    a, b = args[0].shape, args[1].shape
    if len(b) != 2 or len(a) not in (2, 3) or a[-1] != b[0]:
        return None
    return {}


def _matmul_3d_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [tuple(args[0].sym[:-1]) + (args[1].sym[1],)]


R22 = ((2,), (2,))

# ---------------------------------------------------------------------------------------------
# axioms

AXIOMS = AxiomBook()
axiom, shape_axiom, _rank_axiom = AXIOMS.axiom, AXIOMS.shape, AXIOMS.rank

_MM3 = [I({"a": (2, 3), "b": (3, 4), "c": (4, 2)}), I({"a": (2, 1, 2), "b": (2, 2, 3),
                                                     "c": (2, 3, 2)}),
        I({"a": (3,), "b": (3, 4), "c": (2, 4, 2)}), I({"a": (2, 2, 3), "b": (3, 4), "c": (4,)}),
        I({"a": (3,), "b": (3, 2), "c": (2,)})]


def _mm_assoc_ranks(A, a, b, c):
    """Where (a b) c == a (b c) under ONNX MatMul (numpy broadcasting, 1-D promotion): the
    middle operand is at least 2-D (a 1-D middle one is contracted on both sides, e.g. (4,4) x
    (4,) x (4,4)), and a 1-D outer operand only next to a 2-D middle one (a 1-D result of a
    batched product would be read as a matrix of its batch rows)."""
    rb = A.rank(b)
    return A.all(rb >= 2, A.any(A.rank(a) >= 2, rb == 2), A.any(A.rank(c) >= 2, rb == 2))


@axiom("MatMul-assoc", ["MatMul"], "a b c", "", _MM3, triggers="both")
def _(A, t, i, s):
    a, b, c = t["a"], t["b"], t["c"]
    return A.matmul(A.matmul(a, b), c), A.matmul(a, A.matmul(b, c)), _mm_assoc_ranks(A, a, b, c)


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


# A per-feature scale of the activation (a norm's weight) is a scale of the weight's rows:
# (a * g) @ w = a @ (g[:, None] * w). Per rank, like the column axioms.
for _r in range(2, 5):
    axiom(f"MatMul-ScaleAxis0-r{_r}", ["MatMul", "Mul", "ScaleAxis0"], "a g w", "",
          [I({"a": (2,) * (_r - 1) + (3,), "g": (3,), "w": (3, 2)}),
           I({"a": (1,) * (_r - 1) + (2,), "g": (2,), "w": (2, 1)})])(
        lambda A, t, i, s, r=_r: (
            A.matmul(A.binary("Mul", t["a"], t["g"]), t["w"]),
            A.matmul(t["a"], A.scale_axis0(t["w"], t["g"])),
            A.all(A.rank(t["a"]) == r, A.rank(t["g"]) == 1, A.rank(t["w"]) == 2,
                  A.dim(t["g"], 0) == A.dim(t["w"], 0),
                  A.dim(t["a"], r - 1) == A.dim(t["w"], 0))))


# A per-feature scale of the output (a LayerScale, a folded norm's weight) is a scale of the
# weight's columns: (a @ w) * g = a @ (w * g), g of shape (N,) broadcasting over w's (K, N).
for _r in range(2, 5):
    axiom(f"MatMul-Mul-cols-r{_r}", ["MatMul", "Mul"], "a w g", "",
          [I({"a": (2,) * (_r - 1) + (3,), "w": (3, 2), "g": (2,)}),
           I({"a": (1,) * (_r - 1) + (2,), "w": (2, 1), "g": (1,)})])(
        lambda A, t, i, s, r=_r: (
            A.binary("Mul", A.matmul(t["a"], t["w"]), t["g"]),
            A.matmul(t["a"], A.binary("Mul", t["w"], t["g"])),
            A.all(A.rank(t["a"]) == r, A.rank(t["w"]) == 2, A.rank(t["g"]) == 1,
                  A.dim(t["g"], 0) == A.dim(t["w"], 1),
                  A.dim(t["a"], r - 1) == A.dim(t["w"], 0))))
# ... and with the scale given per channel as (C, 1, 1), moved to the last axis as its
# (1, 1, C) transpose (ConvNeXt's layer scale, see `Mul-Transpose-NCHW-channel`): the columns
# are scaled with ScaleAxis0 on the transposed weight, so the folded weight stays (K, N) (a
# (1, K, N) weight, w * (1, 1, N), measured 4% slower in ORT's CPU MatMul on ConvNeXt-T).
for _r in (3, 4):
    axiom(f"MatMul-ScaleAxis0-cols-r{_r}", ["MatMul", "Mul", "ScaleAxis0", "Transpose"],
          "a w c", "",
          [I({"a": (2,) * (_r - 1) + (3,), "w": (3, 2), "c": (2, 1, 1)}),
           I({"a": (1,) * (_r - 1) + (2,), "w": (2, 1), "c": (1, 1, 1)})])(
        lambda A, t, i, s, r=_r: (
            A.binary("Mul", A.matmul(t["a"], t["w"]), A.transpose(t["c"], (1, 2, 0))),
            A.matmul(t["a"], A.transpose(A.scale_axis0(A.transpose(t["w"], (1, 0)), t["c"]),
                                         (1, 0))),
            A.all(A.rank(t["a"]) == r, A.rank(t["w"]) == 2, A.rank(t["c"]) == 3,
                  A.dim(t["c"], 0) == A.dim(t["w"], 1), A.dim(t["c"], 1) == 1,
                  A.dim(t["c"], 2) == 1, A.dim(t["a"], r - 1) == A.dim(t["w"], 0))))


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


shape_axiom("dim-MatMul", ["MatMul"], "a b", "",
            [I({"a": (2, 3), "b": (3, 4)}), I({"a": (1, 2, 3), "b": (2, 3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]),
            lambda A, t, i, k: A.ite(
                k == A.rank(t["a"]) - 1, A.dim(t["b"], k),
                A.ite(k == A.rank(t["a"]) - 2, A.dim(t["a"], k),
                      A.ite(A.dim(t["a"], k) == 1, A.dim(t["b"], k), A.dim(t["a"], k)))),
            lambda A, t, i, k: A.all(A.rank(t["a"]) == A.rank(t["b"]), A.rank(t["a"]) >= 2),
            ranks=lambda x: len(x.shapes["a"]), out_rank=lambda A, t, i: A.rank(t["a"]))
shape_axiom("dim-MatMul-w2", ["MatMul"], "a b", "",
            [I({"a": (2, 1, 3), "b": (3, 4)}), I({"a": (1, 2, 2, 3), "b": (3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]),
            lambda A, t, i, k: A.ite(k == A.rank(t["a"]) - 1, A.dim(t["b"], 1), A.dim(t["a"], k)),
            lambda A, t, i, k: _mm_w2(A, t["a"], t["b"]),
            ranks=lambda x: len(x.shapes["a"]), out_rank=lambda A, t, i: A.rank(t["a"]))


def _mm_rank(A, t, i):
    """ONNX MatMul's rank: a 1-D operand is promoted (a 1 prepended to the left one, appended
    to the right one) and that dim removed again: 1-D x 1-D is a scalar, 1-D x r-D and r-D x
    1-D have rank r - 1; otherwise the batch dims broadcast: max(ra, rb)."""
    ra, rb = A.rank(t["a"]), A.rank(t["b"])
    return A.ite(ra == 1, rb - 1, A.ite(rb == 1, ra - 1, A.ite(ra >= rb, ra, rb)))


_rank_axiom("rank-MatMul", ["MatMul"], "a b", "",
            [I({"a": (2, 3), "b": (3, 4)}), I({"a": (3,), "b": (3,)}), I({"a": (3,), "b": (3, 2)}),
             I({"a": (2, 2, 3), "b": (3,)}), I({"a": (2, 3), "b": (2, 3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]), _mm_rank,
            lambda A, t, i: A.all(A.rank(t["a"]) >= 1, A.rank(t["b"]) >= 1))
_rank_axiom("rank-MatMul-w2", ["MatMul"], "a b", "",
            [I({"a": (2, 2, 3), "b": (3, 4)}), I({"a": (1, 2, 2, 3), "b": (3, 1)})],
            lambda A, t, i: A.matmul(t["a"], t["b"]), lambda A, t, i: A.rank(t["a"]),
            lambda A, t, i: _mm_w2(A, t["a"], t["b"]))

# ---------------------------------------------------------------------------------------------
# the ops

OPS = (
    OpDef(
        name="MatMul", onnx_type="MatMul", arity=(2, 2),
        infer=lambda a, t: [TensorType(t[0].elem_type, _matmul_shape(t[0].shape, t[1].shape))],
        compute=_matmul_compute,
        props=frozenset({ASSOCIATIVE, LINEAR}),
        from_onnx=plain_from_onnx(), to_onnx=plain_to_onnx("MatMul"), cost=_matmul_cost,
        doc="matrix product with numpy broadcasting",
        fuses_into=frozenset({"Add"}),
        z3=Z3Semantics(on_terms(_matmul_compute), lambda A, at, a, r, op: [A.matmul(*a)]),
        axioms=AXIOMS.of("MatMul"),
        generator=(
            OpInstance("MatMul", "MatMul", 2, _matmul, _matmul_sym, on_weights=True, ranks=R22),
            OpInstance("MatMul", "MatMul", 2, _matmul_3d, _matmul_3d_sym, on_weights=True,
                       ranks=((2, 3), (2,)), presets=("matmul3d",)),
        )),
    OpDef(
        name="Gemm", onnx_type="Gemm", arity=(2, 3), infer=_gemm_infer, compute=_gemm_compute,
        defaults={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
        props=frozenset({LINEAR}), from_onnx=_gemm_from_onnx,
        to_onnx=plain_to_onnx("Gemm", ("alpha", "beta", "transA", "transB")),
        cost=lambda a, i, o: (2.0 * o[0].numel() * (i[0].shape[0 if a["transA"] else 1]
                                                      if isinstance(i[0].shape[0], int) else 1),
                              nbytes(i) + nbytes(o)),
        doc="alpha * A' B' + beta * C",
        fuses_into=frozenset({"Relu"}),
        z3=Z3Semantics(on_terms(_gemm_compute), lower_generic),
        generator=(OpInstance("Gemm", "Gemm", 2, _matmul, _matmul_sym, ranks=R22),)),
)
AXIOMS.done()
