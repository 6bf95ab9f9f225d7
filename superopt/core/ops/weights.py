"""Weight-only helpers: ops that only ever compute on constants and are folded away at export
(EnlargeKernel, ScaleAxis0, ChannelVector, IdentityKernelLike, IdentityMatrixLike, OnesLike; the
BatchNormalization fold helpers are with BatchNormalization in `norm`). The generator uses them
to state TASO's rules on weights; the axioms say what they mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from superopt.core.axiom_spec import AxiomBook, I
from superopt.core.generator_spec import Arg, OpInstance, SymShape, nonscalar
from superopt.core.ops.common import on_terms
from superopt.core.registry import LINEAR, WEIGHT_ONLY, Attrs, OpDef, Z3Semantics
from superopt.core.types import TensorType

LIKE = ("IdentityKernelLike", "IdentityMatrixLike", "OnesLike")

def _enlarge(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    w, ref = x
    dh, dw = ref.shape[2] - w.shape[2], ref.shape[3] - w.shape[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError("EnlargeKernel: the reference kernel must be larger by even amounts")
    return [np.pad(w, ((0, 0), (0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2)))]


def _enlarge_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    w, ref = t[0].shape, t[1].shape
    return [TensorType(t[0].elem_type, (w[0], w[1], ref[2], ref[3]))]


def _identity_kernel(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    w = x[0]
    o, cg, kh, kw = w.shape
    out = np.zeros(w.shape, dtype=w.dtype)
    for i in range(o):
        out[i, i % cg, kh // 2, kw // 2] = 1
    return [out]


def _identity_matrix(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [np.eye(x[0].shape[-2], x[0].shape[-1], dtype=x[0].dtype)]


def _ones(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ones(x[0].shape, dtype=x[0].dtype)]


def _scale_axis0(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    w, s = x
    if w.ndim < 1 or s.ndim < 1 or s.shape[0] != w.shape[0] or any(d != 1 for d in s.shape[1:]):
        raise ValueError(f"ScaleAxis0: factors of shape {s.shape} do not fit {w.shape} "
                         "(one per slice along axis 0, the other dims 1)")
    return [w * s.reshape((-1,) + (1,) * (w.ndim - 1))]


def _channel_vector(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    c = x[0]
    if not _is_per_channel(c.shape):
        raise ValueError(f"ChannelVector: {c.shape} is not one value per channel of an NCHW "
                         "tensor ((C, 1, 1) or (1, C, 1, 1))")
    return [c.reshape(-1)]


def _is_per_channel(shape: tuple) -> bool:
    return ((len(shape) == 3 and shape[1:] == (1, 1))
            or (len(shape) == 4 and shape[0] == 1 and shape[2:] == (1, 1)))


def _channel_vector_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    shape = t[0].shape
    if len(shape) not in (3, 4):
        raise ValueError(f"ChannelVector of a rank-{len(shape)} tensor")
    return [TensorType(t[0].elem_type, (shape[len(shape) - 3],))]


def _lower_like(A, attrs, args, ranks, op):
    return [A.like(op, args[0])]


# ---------------------------------------------------------------------------------------------
# generator instances


def _enlarge_applies(args: Sequence[Arg]) -> dict | None:
    w, ref = args[0].shape, args[1].shape
    if len(w) != 4 or len(ref) != 4:
        return None
    dh, dw = ref[2] - w[2], ref[3] - w[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2 or dh + dw == 0:
        return None
    return {}


def _enlarge_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    w, ref = args[0].sym, args[1].sym
    return [(w[0], w[1], ref[2], ref[3])]


def _identity_kernel_applies(args: Sequence[Arg]) -> dict | None:
    w = args[0].shape
    return {} if len(w) == 4 and w[2] % 2 and w[3] % 2 else None


def _identity_matrix_applies(args: Sequence[Arg]) -> dict | None:
    w = args[0].shape
    return {} if len(w) == 2 and w[0] == w[1] else None


# ---------------------------------------------------------------------------------------------
# axioms

AXIOMS = AxiomBook()
axiom, shape_axiom, _rank_axiom = AXIOMS.axiom, AXIOMS.shape, AXIOMS.rank


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


shape_axiom("dim-EnlargeKernel", ["EnlargeKernel"], "w r", "",
            [I({"w": (2, 1, 1, 3), "r": (1, 1, 3, 3)})],
            lambda A, t, i: A.enlarge(t["w"], t["r"]),
            lambda A, t, i, k: A.ite(k <= 1, A.dim(t["w"], k), A.dim(t["r"], k)),
            out_rank=lambda A, t, i: 4)
for _op in LIKE:
    shape_axiom(f"dim-{_op}", [_op], "x", "",
                [I({"x": (2, 3) if _op != "IdentityKernelLike" else (2, 2, 3, 1)})],
                lambda A, t, i, op=_op: A.like(op, t["x"]),
                lambda A, t, i, k: A.dim(t["x"], k),
                ranks=lambda x: len(x.shapes["x"]), out_rank=lambda A, t, i: A.rank(t["x"]))
_rank_axiom("rank-EnlargeKernel", ["EnlargeKernel"], "w r", "",
            [I({"w": (2, 1, 1, 3), "r": (1, 1, 3, 3)})],
            lambda A, t, i: A.enlarge(t["w"], t["r"]), lambda A, t, i: 4)
shape_axiom("dim-ScaleAxis0", ["ScaleAxis0"], "w s", "",
            [I({"w": (2, 3), "s": (2,)}), I({"w": (3, 2, 1, 1), "s": (3, 1, 1)})],
            lambda A, t, i: A.scale_axis0(t["w"], t["s"]),
            lambda A, t, i, k: A.dim(t["w"], k),
            ranks=lambda x: len(x.shapes["w"]), out_rank=lambda A, t, i: A.rank(t["w"]))
_rank_axiom("rank-ScaleAxis0", ["ScaleAxis0"], "w s", "",
            [I({"w": (2, 3), "s": (2,)}), I({"w": (3, 2, 1, 1), "s": (3, 1, 1)})],
            lambda A, t, i: A.scale_axis0(t["w"], t["s"]), lambda A, t, i: A.rank(t["w"]))
for _op in LIKE:
    _rank_axiom(f"rank-{_op}", [_op], "x", "",
                [I({"x": (2, 3) if _op == "IdentityMatrixLike" else (2, 3, 1, 1)})],
                lambda A, t, i, op=_op: A.like(op, t["x"]), lambda A, t, i: A.rank(t["x"]))



def per_channel_nchw(A, c, n: Any = None) -> Any:
    """c holds one value per channel of an NCHW tensor (of n channels, when given): (n, 1, 1)
    or (1, n, 1, 1). In any algebra: the axioms below state it, the verifier's typing of
    ChannelVector requires it."""
    def channels(k: int) -> list:
        return [] if n is None else [A.dim(c, k) == n]
    return A.any(A.all(A.rank(c) == 3, *channels(0), A.dim(c, 1) == 1, A.dim(c, 2) == 1),
                 A.all(A.rank(c) == 4, A.dim(c, 0) == 1, *channels(1), A.dim(c, 2) == 1,
                       A.dim(c, 3) == 1))


for _op in ("Add", "Mul"):
    # A per-channel constant, as (C, 1, 1) or (1, C, 1, 1), acts on an NCHW tensor as the
    # (C,) vector of its values broadcast the way a Conv adds its bias: what folding it into a
    # Conv's bias or kernel needs. Stated from the ChannelVector side, which is the trigger:
    # a trigger on any Add (Mul) would instantiate on its own right side without end.
    axiom(f"{_op}-ChannelVector", [_op, "ChannelVector"], "t c", "",
          [I({"t": (1, 3, 2, 2), "c": (3, 1, 1)}), I({"t": (2, 3, 2, 1), "c": (1, 3, 1, 1)}),
           I({"t": (1, 1, 2, 2), "c": (1, 1, 1)})], about="ChannelVector")(
        lambda A, t, i, s, op=_op: (
            A.binary(op, t["t"], A.channel(A.channel_vector(t["c"]))),
            A.binary(op, t["t"], t["c"]),
            A.all(A.rank(t["t"]) == 4, per_channel_nchw(A, t["c"], A.dim(t["t"], 1)))))
shape_axiom("dim-ChannelVector", ["ChannelVector"], "c", "",
            [I({"c": (3, 1, 1)}), I({"c": (1, 2, 1, 1)})],
            lambda A, t, i: A.channel_vector(t["c"]),
            lambda A, t, i, k: A.dim(t["c"], A.rank(t["c"]) - 3),
            ranks=lambda x: 1, out_rank=lambda A, t, i: 1)
_rank_axiom("rank-ChannelVector", ["ChannelVector"], "c", "",
            [I({"c": (3, 1, 1)}), I({"c": (1, 2, 1, 1)})],
            lambda A, t, i: A.channel_vector(t["c"]), lambda A, t, i: 1)

# ---------------------------------------------------------------------------------------------
# the ops


def _like(name: str, compute, applies, ranks, doc: str) -> OpDef:
    return OpDef(
        name=name, arity=(1, 1), infer=lambda a, t: [t[0]], compute=compute,
        props=frozenset({WEIGHT_ONLY}), doc=doc,
        z3=Z3Semantics(on_terms(compute), _lower_like), axioms=AXIOMS.of(name),
        generator=(OpInstance(name, name, 1, applies, weight_args=True, on_weights=True,
                              ranks=ranks),))


OPS = (
    OpDef(
        name="EnlargeKernel", arity=(2, 2), infer=_enlarge_infer, compute=_enlarge,
        props=frozenset({WEIGHT_ONLY, LINEAR}),
        doc="zero-pad a kernel (centered) to the spatial size of a reference kernel "
            "(TASO's enlarge)",
        z3=Z3Semantics(on_terms(_enlarge), lambda A, at, a, r, op: [A.enlarge(*a)]),
        axioms=AXIOMS.of("EnlargeKernel"),
        generator=(OpInstance("EnlargeKernel", "EnlargeKernel", 2, _enlarge_applies,
                              _enlarge_sym, weight_args=True, on_weights=True,
                              ranks=((4,), (4,))),)),
    OpDef(
        name="ScaleAxis0", arity=(2, 2), infer=lambda a, t: [t[0]], compute=_scale_axis0,
        props=frozenset({WEIGHT_ONLY}),
        doc="a weight with each slice along axis 0 multiplied by its factor: inputs (weight, "
            "factors of shape (dim 0, 1, ..., 1)); folds a per-channel Mul after a Conv into "
            "its kernel and bias, and a norm's scale into the next MatMul's weight rows",
        z3=Z3Semantics(on_terms(_scale_axis0), lambda A, at, a, r, op: [A.scale_axis0(*a)]),
        axioms=AXIOMS.of("ScaleAxis0")),
    OpDef(
        name="ChannelVector", arity=(1, 1), infer=_channel_vector_infer,
        compute=_channel_vector, props=frozenset({WEIGHT_ONLY}),
        doc="the values of a per-channel NCHW constant ((C, 1, 1) or (1, C, 1, 1)) as a (C,) "
            "vector: a per-channel Add or Mul after a Conv folds into its bias or kernel",
        z3=Z3Semantics(on_terms(_channel_vector),
                       lambda A, at, a, r, op: [A.channel_vector(*a)]),
        axioms=AXIOMS.of("ChannelVector")),
    _like("IdentityKernelLike", _identity_kernel, _identity_kernel_applies, ((4,),),
          "a kernel shaped like its input whose convolution is the identity (odd kernel sizes)"),
    _like("IdentityMatrixLike", _identity_matrix, _identity_matrix_applies, ((2,),),
          "an identity matrix shaped like its (square) input"),
    _like("OnesLike", _ones, nonscalar, ((2, 4),), "ones shaped like its input"),
)
AXIOMS.done()
