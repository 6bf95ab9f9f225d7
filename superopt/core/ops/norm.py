"""Normalization: BatchNormalization (inference: a per-channel affine map),
LayerNormalization, Softmax, and the weight-only helpers that fold a BatchNormalization into the
Conv before it (BatchNormFoldKernel, BatchNormFoldBias), with their Z3 semantics, generator
instances and axioms (the fold itself, a Conv bias moving into the BN mean, shape axioms)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from superopt.core.axiom_spec import CP, AxiomBook, I, conv_ints, conv_p
from superopt.core.generator_spec import Arg, OpInstance, SymShape
from superopt.core.ops.common import (
    lower_generic,
    nbytes,
    norm_axis,
    onnx_attrs,
    plain_to_onnx,
)
from superopt.core.registry import WEIGHT_ONLY, Attrs, OpDef, Z3Semantics


def _bn_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    X, scale, bias, mean, var = x
    shape = (1, -1) + (1,) * (X.ndim - 2)
    inv = scale / np.sqrt(var + a["epsilon"])
    y = (X - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)
    return [y.astype(X.dtype, copy=False)]


def _bn_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"epsilon", "momentum", "training_mode", "spatial"} or a.get("training_mode"):
        return None
    if len([o for o in node.output if o]) > 1:
        return None
    return {"epsilon": float(a.get("epsilon", 1e-5))}, list(range(5))


def _ln_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    X = x[0]
    axes = tuple(range(norm_axis(a["axis"], X.ndim), X.ndim))
    mean = X.mean(axis=axes, keepdims=True)
    var = ((X - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (X - mean) / np.sqrt(var + a["epsilon"]) * x[1]
    if len(x) > 2:
        y = y + x[2]
    return [y.astype(X.dtype, copy=False)]


def _ln_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"axis", "epsilon", "stash_type"} or len([o for o in node.output if o]) > 1:
        return None
    return ({"axis": int(a.get("axis", -1)), "epsilon": float(a.get("epsilon", 1e-5))},
            [i for i, n in enumerate(node.input) if n])


def _softmax_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    X = x[0]
    e = np.exp(X - X.max(axis=a["axis"], keepdims=True))
    return [(e / e.sum(axis=a["axis"], keepdims=True)).astype(X.dtype, copy=False)]


def _softmax_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"axis"}:
        return None
    return {"axis": int(a.get("axis", -1))}, [0]


def _bn_factor(scale: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    return scale / np.sqrt(var + eps)


def _fold_kernel_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [x[0] * _bn_factor(x[1], x[2], a["epsilon"]).reshape((-1,) + (1,) * (x[0].ndim - 1))]


def _fold_bias_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [x[1] - x[2] * _bn_factor(x[0], x[3], a["epsilon"])]


# ---------------------------------------------------------------------------------------------
# Z3 semantics: 1/sqrt(v + eps) is a fresh positive real r with r*r*(v + eps) == 1


def _bn_z3(ctx, attrs, x):
    X, s, b, m, v = x
    shape = (1, -1) + (1,) * (X.ndim - 2)
    eps = attrs.get("epsilon", 1e-5)
    inv = np.array([ctx.real(sc) * ctx.inv_sqrt(ctx.real(vc) + ctx.real(eps))
                    for sc, vc in zip(s.reshape(-1), v.reshape(-1))], dtype=object)
    return [(X - m.reshape(shape)) * inv.reshape(shape) + b.reshape(shape)]


def _bn_factor_z3(ctx, s, v, eps) -> np.ndarray:
    """s / sqrt(v + eps) per element of 1-D s and v (broadcast as numpy would)."""
    s, v = np.broadcast_arrays(np.asarray(s, dtype=object), np.asarray(v, dtype=object))
    out = np.empty(s.shape, dtype=object)
    for idx in np.ndindex(*s.shape):
        out[idx] = ctx.real(s[idx]) * ctx.inv_sqrt(ctx.real(v[idx]) + ctx.real(eps))
    return out


def _fold_kernel_z3(ctx, attrs, x):
    w, s, v = x
    f = _bn_factor_z3(ctx, s, v, attrs.get("epsilon", 1e-5))
    return [w * f.reshape((-1,) + (1,) * (w.ndim - 1))]


def _fold_bias_z3(ctx, attrs, x):
    s, b, m, v = x
    return [b - m * _bn_factor_z3(ctx, s, v, attrs.get("epsilon", 1e-5))]


def _layernorm_z3(ctx, attrs, x):
    X = x[0]
    axis = attrs["axis"] % X.ndim
    axes = tuple(range(axis, X.ndim))
    count = int(np.prod([X.shape[a] for a in axes]))
    mean = X.sum(axis=axes, keepdims=True) / count
    var = ((X - mean) * (X - mean)).sum(axis=axes, keepdims=True) / count
    eps = ctx.real(attrs.get("epsilon", 1e-5))
    r = ctx.each(lambda e: ctx.inv_sqrt(ctx.real(e) + eps), var)
    y = (X - mean) * r * x[1]
    if len(x) > 2:
        y = y + x[2]
    return [y]


def _softmax_z3(ctx, attrs, x):
    exp = ctx.fn("Exp")
    e = ctx.each(lambda t: exp(ctx.real(t)), x[0])
    ctx.constrain(*[t > 0 for t in e.reshape(-1)])
    return [e / e.sum(axis=attrs["axis"], keepdims=True)]


# ---------------------------------------------------------------------------------------------
# generator instances: BatchNormalization of the default universe's 4-D tensors, its parameters
# the "param" inputs bn_scale, bn_bias, bn_mean, bn_var (4 channels; generator/opset.py)

BN = ("bn_scale", "bn_bias", "bn_mean", "bn_var")
_CHANNELS = 4


def _bn_applies(args: Sequence[Arg]) -> dict | None:
    s = args[0].shape
    return {} if len(s) == 4 and s[1] == _CHANNELS else None


def _bn_kernel_applies(args: Sequence[Arg]) -> dict | None:
    s = args[0].shape
    return {} if len(s) == 4 and s[0] == _CHANNELS else None


def _bn_bias_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [((("bn_scale", 0),),)]


# ---------------------------------------------------------------------------------------------
# axioms. BiasNCHW(c) is a 1-D per-channel vector as a (1, C, 1, 1) tensor, how a Conv adds its
# bias.

AXIOMS = AxiomBook()
axiom, shape_axiom, _rank_axiom = AXIOMS.axiom, AXIOMS.shape, AXIOMS.rank

_BN_FOLD = [
    I({"x": (1, 2, 3, 3), "w": (2, 2, 3, 3), "s": (2,), "b": (2,), "m": (2,), "v": (2,)},
      {**conv_ints(pt=1, pl=1, pb=1, pr=1), "eps": 1e-5}),
    I({"x": (2, 2, 3, 4), "w": (2, 1, 1, 3), "s": (2,), "b": (2,), "m": (2,), "v": (2,)},
      {**conv_ints(sw=2, pl=1, g=2), "eps": 0.5}),
    I({"x": (1, 2, 2, 2), "w": (3, 2, 1, 1), "s": (3,), "b": (3,), "m": (3,), "v": (3,)},
      {**conv_ints(), "eps": 0.001}),
    I({"x": (1, 2, 5, 5), "w": (2, 2, 3, 3), "s": (2,), "b": (2,), "m": (2,), "v": (2,)},
      {**conv_ints(pt=2, pl=2, pb=2, pr=2, dh=2, dw=2), "eps": 1e-3}),
]


def _bn_params(A, c, *ps):
    return A.all(*[f for p in ps for f in (A.rank(p) == 1, A.dim(p, 0) == c)])


@axiom("Conv-BatchNormalization-fold", ["Conv", "BatchNormalization", "BatchNormFoldKernel",
                                        "BatchNormFoldBias", "Add"],
       "x w s b m v", CP + " eps", _BN_FOLD, about="BatchNormalization")
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


# shape axioms
shape_axiom("dim-BatchNormalization", ["BatchNormalization"], "x s b m v", "eps",
            [I({"x": (2, 3, 2, 1), "s": (3,), "b": (3,), "m": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.bn(t["x"], t["s"], t["b"], t["m"], t["v"], i["eps"]),
            lambda A, t, i, k: A.dim(t["x"], k), out_rank=lambda A, t, i: A.rank(t["x"]))
shape_axiom("dim-BatchNormFoldKernel", ["BatchNormFoldKernel"], "w s v", "eps",
            [I({"w": (3, 2, 1, 2), "s": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.fold_kernel(t["w"], t["s"], t["v"], i["eps"]),
            lambda A, t, i, k: A.dim(t["w"], k),
            lambda A, t, i, k: _bn_params(A, A.dim(t["w"], 0), t["s"], t["v"]),
            out_rank=lambda A, t, i: A.rank(t["w"]))
shape_axiom("dim-BatchNormFoldBias", ["BatchNormFoldBias"], "s b m v", "eps",
            [I({"s": (3,), "b": (3,), "m": (3,), "v": (3,)}, {"eps": 1e-5})],
            lambda A, t, i: A.fold_bias(t["s"], t["b"], t["m"], t["v"], i["eps"]),
            lambda A, t, i, k: A.dim(t["b"], k),
            lambda A, t, i, k: _bn_params(A, A.dim(t["b"], 0), t["s"], t["b"], t["m"], t["v"]),
            ranks=lambda x: 1, out_rank=lambda A, t, i: 1)
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

# ---------------------------------------------------------------------------------------------
# the ops

OPS = (
    OpDef(
        name="BatchNormalization", onnx_type="BatchNormalization", arity=(5, 5),
        infer=lambda a, t: [t[0]], compute=_bn_compute, defaults={"epsilon": 1e-5},
        from_onnx=_bn_from_onnx,
        to_onnx=plain_to_onnx("BatchNormalization", ("epsilon",)),
        cost=lambda a, i, o: (2.0 * o[0].numel(), nbytes(i[:1]) + nbytes(o)),
        doc="inference BatchNormalization: a per-channel affine map",
        z3=Z3Semantics(_bn_z3, lambda A, at, a, r, op: [A.bn(*a, at["epsilon"])]),
        axioms=AXIOMS.of("BatchNormalization"),
        generator=(OpInstance("BatchNormalization", "BatchNormalization", 1, _bn_applies,
                              fixed=BN, ranks=((4,),)),)),
    OpDef(
        name="LayerNormalization", onnx_type="LayerNormalization", arity=(2, 3),
        infer=lambda a, t: [t[0]], compute=_ln_compute, defaults={"axis": -1, "epsilon": 1e-5},
        from_onnx=_ln_from_onnx,
        to_onnx=plain_to_onnx("LayerNormalization", ("axis", "epsilon")),
        cost=lambda a, i, o: (8.0 * o[0].numel(), nbytes(i[:1]) + nbytes(o)),
        doc="normalize over the trailing dims from `axis`, then scale and shift",
        z3=Z3Semantics(_layernorm_z3, lower_generic)),
    OpDef(
        name="Softmax", onnx_type="Softmax", arity=(1, 1), infer=lambda a, t: [t[0]],
        compute=_softmax_compute, defaults={"axis": -1}, from_onnx=_softmax_from_onnx,
        to_onnx=plain_to_onnx("Softmax", ("axis",)),
        cost=lambda a, i, o: (5.0 * o[0].numel(), nbytes(i) + nbytes(o)),
        doc="softmax along one axis (opset 13 semantics)",
        z3=Z3Semantics(_softmax_z3, lower_generic)),
    OpDef(
        name="BatchNormFoldKernel", arity=(3, 3), infer=lambda a, t: [t[0]],
        compute=_fold_kernel_compute,
        defaults={"epsilon": 1e-5}, props=frozenset({WEIGHT_ONLY}),
        doc="kernel (O, ...) scaled per output channel by scale / sqrt(var + epsilon), the "
            "BatchNormalization that follows the Conv folded in: inputs (kernel, scale, var)",
        z3=Z3Semantics(_fold_kernel_z3, lambda A, at, a, r, op: [A.fold_kernel(*a, at["epsilon"])]),
        axioms=AXIOMS.of("BatchNormFoldKernel"),
        generator=(OpInstance("BatchNormFoldKernel", "BatchNormFoldKernel", 1,
                              _bn_kernel_applies, fixed=("bn_scale", "bn_var"),
                              weight_args=True, on_weights=True, ranks=((4,),)),)),
    OpDef(
        name="BatchNormFoldBias", arity=(4, 4), infer=lambda a, t: [t[1]],
        compute=_fold_bias_compute,
        defaults={"epsilon": 1e-5}, props=frozenset({WEIGHT_ONLY}),
        doc="bias - mean * scale / sqrt(var + epsilon): the Conv bias of a folded "
            "BatchNormalization; inputs (scale, bias, mean, var) in BatchNormalization's order",
        z3=Z3Semantics(_fold_bias_z3, lambda A, at, a, r, op: [A.fold_bias(*a, at["epsilon"])]),
        axioms=AXIOMS.of("BatchNormFoldBias"),
        generator=(OpInstance("BatchNormFoldBias", "BatchNormFoldBias", 0, lambda args: {},
                              _bn_bias_sym, fixed=BN, weight_args=True, on_weights=True),)),
)
AXIOMS.done()
