"""The registry's entries: superopt's op set (TASO's, in ONNX terms, plus what real models need).

Each op is one `register(OpDef(...))` call with its shape inference, numpy semantics, ONNX
mapping for opsets 13-21 and analytic cost. Semantics work for any float dtype (the generator
evaluates in float64). 2-D convolutions and pools are modeled; other ranks stay opaque.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from onnx import NodeProto, helper, numpy_helper

from superopt.core.ir import Dim, Shape, TensorType
from superopt.core.registry import (
    ASSOCIATIVE,
    COMMUTATIVE,
    ELEMENTWISE,
    IDEMPOTENT,
    LINEAR,
    MULTI_OUTPUT,
    WEIGHT_ONLY,
    Attrs,
    OpDef,
    register,
)

# ---------------------------------------------------------------------------------------------
# shared helpers


def onnx_attrs(node: NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sym(*parts: Any) -> str:
    """A symbol for a dynamic dim computed from others (kept readable for `inspect`)."""
    return "(" + "".join(str(p) for p in parts) + ")"


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy broadcasting over dims that may be symbols."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        non_one = [d for d in dims if d != 1]
        if not non_one:
            out.append(1)
            continue
        ints = {d for d in non_one if isinstance(d, int)}
        if len(ints) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(ints.pop() if ints else non_one[0])
    return tuple(out)


def _norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def _node(op_type: str, ins: list[str], outs: list[str], name: str, **attrs: Any) -> NodeProto:
    return helper.make_node(op_type, ins, outs, name=name,
                            **{k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in attrs.items() if v is not None})


def _bytes(types: Sequence[TensorType | None]) -> float:
    return float(sum(t.numel() * 4 for t in types if t is not None))


def _plain_to_onnx(op_type: str, keys: Sequence[str] = ()):
    def to_onnx(attrs: Attrs, ins: list[str], outs: list[str], name: str, opset: int):
        return [_node(op_type, ins, outs, name, **{k: attrs[k] for k in keys})], []
    return to_onnx


def _plain_from_onnx(keys: Sequence[str] = (), n_inputs: int | None = None):
    def from_onnx(node, types, const, opset):
        a = onnx_attrs(node)
        if set(a) - set(keys):
            return None  # an attribute we do not model: keep the node opaque
        n = len(node.input) if n_inputs is None else n_inputs
        return {k: a[k] for k in keys if k in a}, list(range(n))
    return from_onnx


def _ew_cost(attrs, ins, outs):
    return float(outs[0].numel()), _bytes(ins) + _bytes(outs)


# ---------------------------------------------------------------------------------------------
# element-wise


def _unary(name: str, fn, props: frozenset[str] = frozenset(), doc: str = "") -> None:
    register(OpDef(
        name=name, onnx_type=name, arity=(1, 1),
        infer=lambda a, t: [t[0]],
        compute=lambda a, x: [np.asarray(fn(x[0])).astype(x[0].dtype, copy=False)],
        props=frozenset({ELEMENTWISE}) | props,
        from_onnx=_plain_from_onnx(), to_onnx=_plain_to_onnx(name), cost=_ew_cost, doc=doc))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


_unary("Relu", lambda x: np.maximum(x, 0), frozenset({IDEMPOTENT}), "max(x, 0)")
_unary("Sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)), doc="1 / (1 + exp(-x))")
_unary("Tanh", np.tanh, doc="tanh(x)")
_unary("Erf", _erf, doc="the error function (GELU's building block)")
_unary("Identity", lambda x: x, doc="x")


def _binary(name: str, fn, props: frozenset[str], doc: str) -> None:
    def infer(a, t):
        return [TensorType(t[0].elem_type, broadcast_shapes(t[0].shape, t[1].shape))]

    register(OpDef(
        name=name, onnx_type=name, arity=(2, 2), infer=infer,
        compute=lambda a, x: [np.asarray(fn(x[0], x[1])).astype(
            np.result_type(x[0], x[1]), copy=False)],
        props=frozenset({ELEMENTWISE}) | props,
        from_onnx=_plain_from_onnx(), to_onnx=_plain_to_onnx(name), cost=_ew_cost, doc=doc))


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(a / b).astype(np.result_type(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


_binary("Add", np.add, frozenset({COMMUTATIVE, ASSOCIATIVE}), "a + b, broadcasting")
_binary("Sub", np.subtract, frozenset(), "a - b, broadcasting")
_binary("Mul", np.multiply, frozenset({COMMUTATIVE, ASSOCIATIVE}), "a * b, broadcasting")
_binary("Div", _safe_div, frozenset(), "a / b, broadcasting")

# ---------------------------------------------------------------------------------------------
# MatMul and Gemm


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
    return 2.0 * outs[0].numel() * k, _bytes(ins) + _bytes(outs)


register(OpDef(
    name="MatMul", onnx_type="MatMul", arity=(2, 2),
    infer=lambda a, t: [TensorType(t[0].elem_type, _matmul_shape(t[0].shape, t[1].shape))],
    compute=lambda a, x: [np.matmul(x[0], x[1])],
    props=frozenset({ASSOCIATIVE, LINEAR}),
    from_onnx=_plain_from_onnx(), to_onnx=_plain_to_onnx("MatMul"), cost=_matmul_cost,
    doc="matrix product with numpy broadcasting"))


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


register(OpDef(
    name="Gemm", onnx_type="Gemm", arity=(2, 3), infer=_gemm_infer, compute=_gemm_compute,
    defaults={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0},
    props=frozenset({LINEAR}), from_onnx=_gemm_from_onnx,
    to_onnx=_plain_to_onnx("Gemm", ("alpha", "beta", "transA", "transB")),
    cost=lambda a, i, o: (2.0 * o[0].numel() * (i[0].shape[0 if a["transA"] else 1]
                                                  if isinstance(i[0].shape[0], int) else 1),
                          _bytes(i) + _bytes(o)),
    doc="alpha * A' B' + beta * C"))

# ---------------------------------------------------------------------------------------------
# Conv and pools (2-D, NCHW)


def _explicit_pads(auto_pad: str, in_hw: Sequence[int], k_eff: Sequence[int],
                   strides: Sequence[int]) -> tuple[int, ...] | None:
    """ONNX auto_pad resolved to explicit (top, left, bottom, right) pads; None if dims unknown."""
    if auto_pad in ("", "NOTSET", "VALID"):
        return (0, 0, 0, 0)
    if not all(isinstance(d, int) for d in in_hw):
        return None
    begin, end = [], []
    for d, k, s in zip(in_hw, k_eff, strides):
        out = -(-d // s)
        total = max((out - 1) * s + k - d, 0)
        small, big = total // 2, total - total // 2
        begin.append(big if auto_pad == "SAME_LOWER" else small)
        end.append(small if auto_pad == "SAME_LOWER" else big)
    return tuple(begin + end)


def _out_dim(d: Dim, k_eff: int, s: int, pb: int, pe: int, ceil: int = 0) -> Dim:
    if not isinstance(d, int):
        return _sym(d, f"->k{k_eff}s{s}")
    span = d + pb + pe - k_eff
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= d + pb:
        out -= 1  # the last window would start in the end padding only
    if out < 1:
        raise ValueError(f"window {k_eff} larger than padded input {d + pb + pe}")
    return out


def _k_eff(k: Sequence[int], dil: Sequence[int]) -> list[int]:
    return [(kk - 1) * dd + 1 for kk, dd in zip(k, dil)]


def _windows(x: np.ndarray, k: Sequence[int], strides: Sequence[int], dil: Sequence[int],
             out_hw: Sequence[int]) -> np.ndarray:
    """N, C, Ho, Wo, kh, kw view of the (already padded) input."""
    ke = _k_eff(k, dil)
    win = sliding_window_view(x, tuple(ke), axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]
    return win[:, :, :out_hw[0], :out_hw[1]]


def _conv_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    X, W = x[0], x[1]
    n, c, h, w = X.shape
    o, cg, kh, kw = W.shape
    g = a["group"]
    pt, pl, pb, pr = a["pads"]
    s, d = a["strides"], a["dilations"]
    ke = _k_eff((kh, kw), d)
    oh, ow = _out_dim(h, ke[0], s[0], pt, pb), _out_dim(w, ke[1], s[1], pl, pr)
    Xp = np.pad(X, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = _windows(Xp, (kh, kw), s, d, (oh, ow)).reshape(n, g, cg, oh, ow, kh, kw)
    Wg = W.reshape(g, o // g, cg, kh, kw)
    if X.dtype == object or W.dtype == object:
        # einsum has no object dtype: Z3 term arrays (bounded checks) go through tensordot.
        y = np.empty((n, g, o // g, oh, ow), dtype=object)
        for gi in range(g):
            y[:, gi] = np.tensordot(win[:, gi], Wg[gi], axes=([1, 4, 5], [1, 2, 3])
                                    ).transpose(0, 3, 1, 2)
    else:
        y = np.einsum("ngchwij,gocij->ngohw", win, Wg, optimize=True)
    y = y.reshape(n, o, oh, ow)
    if len(x) > 2:
        y = y + x[2].reshape(1, o, 1, 1)
    return [y.astype(X.dtype, copy=False) if X.dtype != object else y]


def _conv_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    n, c, h, w = t[0].shape
    o, cg, kh, kw = t[1].shape
    if isinstance(c, int) and c != cg * a["group"]:
        raise ValueError(f"Conv: {c} input channels != {cg} x group {a['group']}")
    ke = _k_eff((kh, kw), a["dilations"])
    pt, pl, pb, pr = a["pads"]
    s = a["strides"]
    return [TensorType(t[0].elem_type, (n, o, _out_dim(h, ke[0], s[0], pt, pb),
                                        _out_dim(w, ke[1], s[1], pl, pr)))]


def _conv_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"}:
        return None
    if types[0] is None or types[0].rank != 4 or types[1] is None or types[1].rank != 4:
        return None
    k = types[1].shape[2:]
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    ap = a.get("auto_pad", b"NOTSET")
    ap = ap.decode() if isinstance(ap, bytes) else ap
    pads = tuple(a["pads"]) if "pads" in a else _explicit_pads(
        ap, types[0].shape[2:], _k_eff(k, dil), strides)
    if pads is None or not all(isinstance(d, int) for d in k):
        return None
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "group": int(a.get("group", 1))}
    return attrs, [i for i, n in enumerate(node.input) if n]


def _conv_cost(a, i, o):
    w = i[1].shape
    per_out = 2.0 * w[1] * w[2] * w[3] if all(isinstance(d, int) for d in w[1:]) else 2.0
    return per_out * o[0].numel(), _bytes(i) + _bytes(o)


register(OpDef(
    name="Conv", onnx_type="Conv", arity=(2, 3), infer=_conv_infer, compute=_conv_compute,
    defaults={"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1},
    props=frozenset({LINEAR}), from_onnx=_conv_from_onnx,
    to_onnx=_plain_to_onnx("Conv", ("strides", "pads", "dilations", "group")),
    cost=_conv_cost, doc="2-D convolution, NCHW, with groups, strides, pads and dilations"))


def _pool_params(a: Attrs) -> tuple:
    return a["kernel_shape"], a["strides"], a["pads"], a.get("dilations", (1, 1)), a["ceil_mode"]


def _pool_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    k, s, p, d, ceil = _pool_params(a)
    n, c, h, w = t[0].shape
    ke = _k_eff(k, d)
    return [TensorType(t[0].elem_type, (n, c, _out_dim(h, ke[0], s[0], p[0], p[2], ceil),
                                        _out_dim(w, ke[1], s[1], p[1], p[3], ceil)))]


def _pool_compute(kind: str):
    def compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
        X = x[0]
        k, s, p, d, ceil = _pool_params(a)
        ke = _k_eff(k, d)
        oh = _out_dim(X.shape[2], ke[0], s[0], p[0], p[2], ceil)
        ow = _out_dim(X.shape[3], ke[1], s[1], p[1], p[3], ceil)
        # Extra end padding so ceil-mode windows exist; they are masked like pads.
        eh = max((oh - 1) * s[0] + ke[0] - (X.shape[2] + p[0] + p[2]), 0)
        ew = max((ow - 1) * s[1] + ke[1] - (X.shape[3] + p[1] + p[3]), 0)
        pad = ((0, 0), (0, 0), (p[0], p[2] + eh), (p[1], p[3] + ew))
        if kind == "max":
            # Pads never win the max: -inf for floats, the smallest value for integer types.
            low = np.iinfo(X.dtype).min if X.dtype.kind in "iu" else -np.inf
            Xp = np.pad(X, pad, constant_values=low)
            y = _windows(Xp, k, s, d, (oh, ow)).max(axis=(4, 5))
        else:
            Xp = np.pad(X, pad)
            total = _windows(Xp, k, s, d, (oh, ow)).sum(axis=(4, 5))
            # The divisor counts input cells, plus the explicit pads if count_include_pad,
            # but never the ceil-mode overhang.
            h, w = X.shape[2], X.shape[3]
            if a["count_include_pad"]:
                inside = np.pad(np.ones((h + p[0] + p[2], w + p[1] + p[3]), X.dtype),
                                ((0, eh), (0, ew)))
            else:
                inside = np.pad(np.ones((h, w), X.dtype), ((p[0], p[2] + eh), (p[1], p[3] + ew)))
            cnt = _windows(inside[None, None], k, s, d, (oh, ow)).sum(axis=(4, 5))
            y = total / cnt
        return [y.astype(X.dtype, copy=False)]
    return compute


def _pool_from_onnx(kind: str):
    allowed = {"kernel_shape", "strides", "pads", "ceil_mode", "auto_pad"}
    allowed |= {"dilations", "storage_order"} if kind == "max" else {"count_include_pad"}

    def from_onnx(node, types, const, opset):
        a = onnx_attrs(node)
        if set(a) - allowed or len(node.output) > 1 or a.get("storage_order", 0):
            return None
        if types[0] is None or types[0].rank != 4:
            return None
        k = tuple(a["kernel_shape"])
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        ap = a.get("auto_pad", b"NOTSET")
        ap = ap.decode() if isinstance(ap, bytes) else ap
        pads = tuple(a["pads"]) if "pads" in a else _explicit_pads(
            ap, types[0].shape[2:], _k_eff(k, dil), strides)
        if pads is None:
            return None
        out = {"kernel_shape": k, "strides": strides, "pads": pads,
               "ceil_mode": int(a.get("ceil_mode", 0))}
        if kind == "max":
            out["dilations"] = dil
        else:
            out["count_include_pad"] = int(a.get("count_include_pad", 0))
        return out, [0]
    return from_onnx


register(OpDef(
    name="MaxPool", onnx_type="MaxPool", arity=(1, 1), infer=_pool_infer,
    compute=_pool_compute("max"),
    defaults={"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "ceil_mode": 0},
    from_onnx=_pool_from_onnx("max"),
    to_onnx=_plain_to_onnx("MaxPool", ("kernel_shape", "strides", "pads", "dilations",
                                       "ceil_mode")),
    cost=lambda a, i, o: (o[0].numel() * a["kernel_shape"][0] * a["kernel_shape"][1],
                          _bytes(i) + _bytes(o)),
    doc="2-D max pooling"))

register(OpDef(
    name="AveragePool", onnx_type="AveragePool", arity=(1, 1), infer=_pool_infer,
    compute=_pool_compute("avg"),
    defaults={"strides": (1, 1), "pads": (0, 0, 0, 0), "ceil_mode": 0, "count_include_pad": 0},
    props=frozenset({LINEAR}), from_onnx=_pool_from_onnx("avg"),
    to_onnx=_plain_to_onnx("AveragePool", ("kernel_shape", "strides", "pads", "ceil_mode",
                                           "count_include_pad")),
    cost=lambda a, i, o: (o[0].numel() * a["kernel_shape"][0] * a["kernel_shape"][1],
                          _bytes(i) + _bytes(o)),
    doc="2-D average pooling"))

register(OpDef(
    name="GlobalAveragePool", onnx_type="GlobalAveragePool", arity=(1, 1),
    infer=lambda a, t: [TensorType(t[0].elem_type, tuple(t[0].shape[:2]) +
                                   (1,) * (len(t[0].shape) - 2))],
    compute=lambda a, x: [x[0].mean(axis=tuple(range(2, x[0].ndim)), keepdims=True)],
    props=frozenset({LINEAR}), from_onnx=_plain_from_onnx(),
    to_onnx=_plain_to_onnx("GlobalAveragePool"),
    cost=lambda a, i, o: (float(i[0].numel()), _bytes(i) + _bytes(o)),
    doc="mean over all spatial dims"))

# ---------------------------------------------------------------------------------------------
# normalization


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


register(OpDef(
    name="BatchNormalization", onnx_type="BatchNormalization", arity=(5, 5),
    infer=lambda a, t: [t[0]], compute=_bn_compute, defaults={"epsilon": 1e-5},
    from_onnx=_bn_from_onnx,
    to_onnx=_plain_to_onnx("BatchNormalization", ("epsilon",)),
    cost=lambda a, i, o: (2.0 * o[0].numel(), _bytes(i[:1]) + _bytes(o)),
    doc="inference BatchNormalization: a per-channel affine map"))


def _ln_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    X = x[0]
    axes = tuple(range(_norm_axis(a["axis"], X.ndim), X.ndim))
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


register(OpDef(
    name="LayerNormalization", onnx_type="LayerNormalization", arity=(2, 3),
    infer=lambda a, t: [t[0]], compute=_ln_compute, defaults={"axis": -1, "epsilon": 1e-5},
    from_onnx=_ln_from_onnx, to_onnx=_plain_to_onnx("LayerNormalization", ("axis", "epsilon")),
    cost=lambda a, i, o: (8.0 * o[0].numel(), _bytes(i[:1]) + _bytes(o)),
    doc="normalize over the trailing dims from `axis`, then scale and shift"))


def _softmax_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    X = x[0]
    e = np.exp(X - X.max(axis=a["axis"], keepdims=True))
    return [(e / e.sum(axis=a["axis"], keepdims=True)).astype(X.dtype, copy=False)]


def _softmax_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"axis"}:
        return None
    return {"axis": int(a.get("axis", -1))}, [0]


register(OpDef(
    name="Softmax", onnx_type="Softmax", arity=(1, 1), infer=lambda a, t: [t[0]],
    compute=_softmax_compute, defaults={"axis": -1}, from_onnx=_softmax_from_onnx,
    to_onnx=_plain_to_onnx("Softmax", ("axis",)),
    cost=lambda a, i, o: (5.0 * o[0].numel(), _bytes(i) + _bytes(o)),
    doc="softmax along one axis (opset 13 semantics)"))

# ---------------------------------------------------------------------------------------------
# data movement


def _concat_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    rank = len(t[0].shape)
    ax = _norm_axis(a["axis"], rank)
    for x in t[1:]:
        if len(x.shape) != rank or any(
                isinstance(p, int) and isinstance(q, int) and p != q
                for i, (p, q) in enumerate(zip(t[0].shape, x.shape)) if i != ax):
            raise ValueError(f"Concat: shapes {t[0].shape} and {x.shape} differ off axis {ax}")
    dims = [x.shape[ax] for x in t]
    total: Dim = sum(dims) if all(isinstance(d, int) for d in dims) else _sym(
        "+".join(str(d) for d in dims))
    shape = list(t[0].shape)
    shape[ax] = total
    return [TensorType(t[0].elem_type, tuple(shape))]


def _concat_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if types[0] is None or types[0].shape is None:
        return None
    return {"axis": _norm_axis(int(a["axis"]), types[0].rank)}, list(range(len(node.input)))


register(OpDef(
    name="Concat", onnx_type="Concat", arity=(1, -1), infer=_concat_infer,
    compute=lambda a, x: [np.concatenate(x, axis=a["axis"])], from_onnx=_concat_from_onnx,
    to_onnx=_plain_to_onnx("Concat", ("axis",)),
    cost=lambda a, i, o: (0.0, _bytes(i) + _bytes(o)),
    doc="join along an axis"))


def _split_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    ax = a["axis"]
    d = t[0].shape[ax]
    if isinstance(d, int) and sum(a["split"]) != d:
        raise ValueError(f"Split sizes {a['split']} do not sum to dim {d}")
    out = []
    for s in a["split"]:
        shape = list(t[0].shape)
        shape[ax] = s
        out.append(TensorType(t[0].elem_type, tuple(shape)))
    return out


def _split_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    bounds = np.cumsum(a["split"])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x[0], bounds, axis=a["axis"])]


def _split_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    t = types[0]
    if t is None or t.shape is None:
        return None
    ax = _norm_axis(int(a.get("axis", 0)), t.rank)
    n_out = len(node.output)
    if len(node.input) > 1 and node.input[1]:
        sizes = const(1)
        if sizes is None:
            return None
        split = tuple(int(s) for s in sizes)
    elif "split" in a:
        split = tuple(int(s) for s in a["split"])
    else:
        d = t.shape[ax]
        if not isinstance(d, int):
            return None
        # Equal parts; opset 18 puts the remainder in the last part.
        size = -(-d // n_out)
        split = tuple([size] * (n_out - 1) + [d - size * (n_out - 1)])
    if set(a) - {"axis", "split", "num_outputs"} or any(not o for o in node.output):
        return None
    return {"axis": ax, "split": split}, [0]


def _split_to_onnx(attrs: Attrs, ins, outs, name, opset):
    sizes = numpy_helper.from_array(np.array(attrs["split"], np.int64), f"{name}_split")
    return [_node("Split", [ins[0], sizes.name], outs, name, axis=attrs["axis"])], [sizes]


register(OpDef(
    name="Split", onnx_type="Split", arity=(1, 1), infer=_split_infer, compute=_split_compute,
    props=frozenset({MULTI_OUTPUT}), from_onnx=_split_from_onnx, to_onnx=_split_to_onnx,
    cost=lambda a, i, o: (0.0, _bytes(i) + _bytes(o)),
    doc="cut into parts of the given sizes along an axis"))


def _transpose_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if types[0] is None or types[0].shape is None or set(a) - {"perm"}:
        return None
    perm = tuple(a.get("perm", range(types[0].rank - 1, -1, -1)))
    return {"perm": tuple(int(p) for p in perm)}, [0]


register(OpDef(
    name="Transpose", onnx_type="Transpose", arity=(1, 1),
    infer=lambda a, t: [TensorType(t[0].elem_type, tuple(t[0].shape[p] for p in a["perm"]))],
    compute=lambda a, x: [np.ascontiguousarray(np.transpose(x[0], a["perm"]))],
    from_onnx=_transpose_from_onnx, to_onnx=_plain_to_onnx("Transpose", ("perm",)),
    cost=lambda a, i, o: (0.0, _bytes(i) + _bytes(o)), doc="permute axes"))


def reshape_target(in_shape: Shape, target: Sequence[int], allowzero: int = 0) -> Shape:
    """ONNX Reshape's output shape (0 copies a dim unless allowzero, -1 is inferred)."""
    out: list[Dim] = [in_shape[i] if (d == 0 and not allowzero) else d
                      for i, d in enumerate(target)]
    if -1 in out:
        i = out.index(-1)
        known = [d for j, d in enumerate(out) if j != i]
        if all(isinstance(d, int) for d in in_shape) and all(isinstance(d, int) for d in known):
            total = int(np.prod(in_shape, dtype=np.int64))
            rest = int(np.prod(known, dtype=np.int64))
            if rest == 0 or total % rest:
                raise ValueError(f"cannot reshape {in_shape} to {tuple(target)}")
            out[i] = total // rest
        else:
            # Cancel symbols that appear on both sides; what is left must be integral.
            ins = list(in_shape)
            num_syms = [d for d in ins if not isinstance(d, int)]
            den_syms = [d for d in known if not isinstance(d, int)]
            for s in list(den_syms):
                if s in num_syms:
                    num_syms.remove(s)
                    den_syms.remove(s)
            num = int(np.prod([d for d in ins if isinstance(d, int)], dtype=np.int64))
            den = int(np.prod([d for d in known if isinstance(d, int)], dtype=np.int64))
            if not den_syms and den and num % den == 0:
                val = num // den
                out[i] = val if not num_syms else _sym("*".join(map(str, num_syms)), f"*{val}")
            else:
                out[i] = _sym("reshape", len(ins), "->", i)
    return tuple(out)


def _reshape_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    target = const(1)
    if target is None or types[0] is None or types[0].shape is None or set(a) - {"allowzero"}:
        return None
    return {"shape": tuple(int(d) for d in target), "allowzero": int(a.get("allowzero", 0))}, [0]


def _reshape_to_onnx(attrs: Attrs, ins, outs, name, opset):
    shape = numpy_helper.from_array(np.array(attrs["shape"], np.int64), f"{name}_shape")
    extra = {"allowzero": attrs["allowzero"]} if attrs["allowzero"] else {}
    return [_node("Reshape", [ins[0], shape.name], outs, name, **extra)], [shape]


register(OpDef(
    name="Reshape", onnx_type="Reshape", arity=(1, 1),
    infer=lambda a, t: [TensorType(t[0].elem_type,
                                   reshape_target(t[0].shape, a["shape"], a["allowzero"]))],
    compute=lambda a, x: [x[0].reshape(reshape_target(x[0].shape, a["shape"], a["allowzero"]))],
    defaults={"allowzero": 0}, from_onnx=_reshape_from_onnx, to_onnx=_reshape_to_onnx,
    cost=lambda a, i, o: (0.0, 0.0), doc="reshape to a constant target shape"))


def _flatten_shape(shape: Shape, axis: int) -> Shape:
    ax = axis % len(shape) if axis < 0 else axis

    def prod(ds: Sequence[Dim]) -> Dim:
        if all(isinstance(d, int) for d in ds):
            return int(np.prod(ds, dtype=np.int64))
        return _sym("*".join(map(str, ds)))
    return (prod(shape[:ax]), prod(shape[ax:]))


def _flatten_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if types[0] is None or types[0].shape is None or set(a) - {"axis"}:
        return None
    return {"axis": int(a.get("axis", 1))}, [0]


register(OpDef(
    name="Flatten", onnx_type="Flatten", arity=(1, 1),
    infer=lambda a, t: [TensorType(t[0].elem_type, _flatten_shape(t[0].shape, a["axis"]))],
    compute=lambda a, x: [x[0].reshape(_flatten_shape(x[0].shape, a["axis"]))],
    defaults={"axis": 1}, from_onnx=_flatten_from_onnx,
    to_onnx=_plain_to_onnx("Flatten", ("axis",)), cost=lambda a, i, o: (0.0, 0.0),
    doc="collapse to 2-D at an axis"))

# ---------------------------------------------------------------------------------------------
# weight-only helpers: they only ever compute on constants and are folded away at export


def _enlarge(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    w, ref = x
    dh, dw = ref.shape[2] - w.shape[2], ref.shape[3] - w.shape[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError("EnlargeKernel: the reference kernel must be larger by even amounts")
    return [np.pad(w, ((0, 0), (0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2)))]


def _enlarge_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    w, ref = t[0].shape, t[1].shape
    return [TensorType(t[0].elem_type, (w[0], w[1], ref[2], ref[3]))]


register(OpDef(
    name="EnlargeKernel", arity=(2, 2), infer=_enlarge_infer, compute=_enlarge,
    props=frozenset({WEIGHT_ONLY, LINEAR}),
    doc="zero-pad a kernel (centered) to the spatial size of a reference kernel (TASO's enlarge)"))


def _identity_kernel(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    w = x[0]
    o, cg, kh, kw = w.shape
    out = np.zeros(w.shape, dtype=w.dtype)
    for i in range(o):
        out[i, i % cg, kh // 2, kw // 2] = 1
    return [out]


register(OpDef(
    name="IdentityKernelLike", arity=(1, 1), infer=lambda a, t: [t[0]],
    compute=_identity_kernel, props=frozenset({WEIGHT_ONLY}),
    doc="a kernel shaped like its input whose convolution is the identity (odd kernel sizes)"))

register(OpDef(
    name="IdentityMatrixLike", arity=(1, 1), infer=lambda a, t: [t[0]],
    compute=lambda a, x: [np.eye(x[0].shape[-2], x[0].shape[-1], dtype=x[0].dtype)],
    props=frozenset({WEIGHT_ONLY}), doc="an identity matrix shaped like its (square) input"))

register(OpDef(
    name="OnesLike", arity=(1, 1), infer=lambda a, t: [t[0]],
    compute=lambda a, x: [np.ones(x[0].shape, dtype=x[0].dtype)],
    props=frozenset({WEIGHT_ONLY}), doc="ones shaped like its input"))


def _bn_factor(scale: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    return scale / np.sqrt(var + eps)


register(OpDef(
    name="BatchNormFoldKernel", arity=(3, 3), infer=lambda a, t: [t[0]],
    compute=lambda a, x: [x[0] * _bn_factor(x[1], x[2], a["epsilon"]).reshape(
        (-1,) + (1,) * (x[0].ndim - 1))],
    defaults={"epsilon": 1e-5}, props=frozenset({WEIGHT_ONLY}),
    doc="kernel (O, ...) scaled per output channel by scale / sqrt(var + epsilon), the "
        "BatchNormalization that follows the Conv folded in: inputs (kernel, scale, var)"))

register(OpDef(
    name="BatchNormFoldBias", arity=(4, 4), infer=lambda a, t: [t[1]],
    compute=lambda a, x: [x[1] - x[2] * _bn_factor(x[0], x[3], a["epsilon"])],
    defaults={"epsilon": 1e-5}, props=frozenset({WEIGHT_ONLY}),
    doc="bias - mean * scale / sqrt(var + epsilon): the Conv bias of a folded "
        "BatchNormalization; inputs (scale, bias, mean, var) in BatchNormalization's order"))

