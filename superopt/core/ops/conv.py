"""2-D convolution and pools (NCHW): Conv, MaxPool, AveragePool, GlobalAveragePool, with their
Z3 semantics, generator instances, fusion hints and axioms (linearity, Concat and Split of inputs
and kernels, grouped convolutions, identity and enlarged kernels, and their shape axioms). Other
ranks stay opaque. The window geometry is in `superopt.core.ops.geometry`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from superopt.core.axiom_spec import (
    CP,
    PP,
    AxiomBook,
    I,
    conv_ints,
    conv_p,
    in_range,
    pool_p,
)
from superopt.core.generator_spec import Arg, OpInstance, SymShape
from superopt.core.ops.common import (
    lower_generic,
    nbytes,
    on_terms,
    onnx_attrs,
    plain_from_onnx,
    plain_to_onnx,
)
from superopt.core.ops.geometry import explicit_pads, k_eff, out_dim
from superopt.core.registry import LINEAR, Attrs, OpDef, Z3Semantics
from superopt.core.types import TensorType


def _windows(x: np.ndarray, k: Sequence[int], strides: Sequence[int], dil: Sequence[int],
             out_hw: Sequence[int]) -> np.ndarray:
    """N, C, Ho, Wo, kh, kw view of the (already padded) input."""
    ke = k_eff(k, dil)
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
    ke = k_eff((kh, kw), d)
    oh, ow = out_dim(h, ke[0], s[0], pt, pb), out_dim(w, ke[1], s[1], pl, pr)
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
    ke = k_eff((kh, kw), a["dilations"])
    pt, pl, pb, pr = a["pads"]
    s = a["strides"]
    return [TensorType(t[0].elem_type, (n, o, out_dim(h, ke[0], s[0], pt, pb),
                                        out_dim(w, ke[1], s[1], pl, pr)))]


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
    pads = tuple(a["pads"]) if "pads" in a else explicit_pads(
        ap, types[0].shape[2:], k_eff(k, dil), strides)
    if pads is None or not all(isinstance(d, int) for d in k):
        return None
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "group": int(a.get("group", 1))}
    return attrs, [i for i, n in enumerate(node.input) if n]


def _conv_cost(a, i, o):
    w = i[1].shape
    per_out = 2.0 * w[1] * w[2] * w[3] if all(isinstance(d, int) for d in w[1:]) else 2.0
    return per_out * o[0].numel(), nbytes(i) + nbytes(o)


def _pool_params(a: Attrs) -> tuple:
    return a["kernel_shape"], a["strides"], a["pads"], a.get("dilations", (1, 1)), a["ceil_mode"]


def _pool_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    k, s, p, d, ceil = _pool_params(a)
    n, c, h, w = t[0].shape
    ke = k_eff(k, d)
    return [TensorType(t[0].elem_type, (n, c, out_dim(h, ke[0], s[0], p[0], p[2], ceil),
                                        out_dim(w, ke[1], s[1], p[1], p[3], ceil)))]


def _pool_compute(kind: str):
    def compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
        X = x[0]
        k, s, p, d, ceil = _pool_params(a)
        ke = k_eff(k, d)
        oh = out_dim(X.shape[2], ke[0], s[0], p[0], p[2], ceil)
        ow = out_dim(X.shape[3], ke[1], s[1], p[1], p[3], ceil)
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
        pads = tuple(a["pads"]) if "pads" in a else explicit_pads(
            ap, types[0].shape[2:], k_eff(k, dil), strides)
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


def _gap_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [x[0].mean(axis=tuple(range(2, x[0].ndim)), keepdims=True)]


_maxpool_compute = _pool_compute("max")
_avgpool_compute = _pool_compute("avg")

# ---------------------------------------------------------------------------------------------
# Z3 semantics


def _max(ctx, items: list) -> Any:
    best = ctx.real(items[0])
    for e in items[1:]:
        e = ctx.real(e)
        best = ctx.ite(e > best, e, best)
    return best


def _maxpool_z3(ctx, attrs, x):
    X = x[0]
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["pads"]
    dh, dw = attrs.get("dilations", (1, 1))
    n, c, h, w = X.shape
    ke = k_eff((kh, kw), (dh, dw))
    oh = out_dim(h, ke[0], sh, pt, pb, attrs["ceil_mode"])
    ow = out_dim(w, ke[1], sw, pl, pr, attrs["ceil_mode"])
    y = np.empty((n, c, oh, ow), dtype=object)
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        cells = [X[b, ch, r, q]
                 for r in (i * sh - pt + a * dh for a in range(kh))
                 for q in (j * sw - pl + d * dw for d in range(kw))
                 if 0 <= r < h and 0 <= q < w]
        y[b, ch, i, j] = _max(ctx, cells)
    return [y]


def _lower_conv(A, attrs, args, ranks, op):
    p = (tuple(attrs["strides"]) + tuple(attrs["pads"]) + (attrs["group"],)
         + tuple(attrs["dilations"]))
    y = A.conv(args[0], args[1], p)
    if len(args) > 2:
        # ONNX Conv: the bias is 1-D, one value per output channel
        A.typed(A.rank(args[2]) == 1, A.dim(args[2], 0) == A.dim(args[1], 0))
        y = A.binary("Add", y, A.channel(args[2]))
    return [y]


def _lower_pool(A, attrs, args, ranks, op):
    if attrs["ceil_mode"] or tuple(attrs.get("dilations", (1, 1))) != (1, 1):
        return lower_generic(A, attrs, args, ranks, op)
    p = (tuple(attrs["kernel_shape"]) + tuple(attrs["strides"]) + tuple(attrs["pads"])
         + (attrs.get("count_include_pad", 0),))
    return [A.pool(op, args[0], p)]


# ---------------------------------------------------------------------------------------------
# generator instances


def _same_pads(kh: int, kw: int) -> tuple[int, int, int, int]:
    # "same" padding for odd kernels: (top, left, bottom, right).
    return (kh // 2, kw // 2, kh // 2, kw // 2)


def _conv(args: Sequence[Arg]) -> dict | None:
    x, w = args[0].shape, args[1].shape
    if not args[1].weight or args[0].weight:
        return None  # a kernel is a weight, and convolving weights is not runtime work
    if len(x) != 4 or len(w) != 4 or w[1] == 0 or x[1] % w[1]:
        return None
    group = x[1] // w[1]
    if w[0] % group or w[2] % 2 == 0 or w[3] % 2 == 0:
        return None
    if len(args) > 2 and args[2].shape != (w[0],):
        return None
    attrs: dict = {}
    pads = _same_pads(w[2], w[3])
    if pads != (0, 0, 0, 0):
        attrs["pads"] = pads
    if group != 1:
        attrs["group"] = group
    return attrs


def _conv_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    x, w = args[0].sym, args[1].sym
    return [(x[0], w[0], x[2], x[3])]


def _pool(avg: bool):
    def attrs(args: Sequence[Arg]) -> dict | None:
        if len(args[0].shape) != 4:
            return None
        out = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}
        if avg:
            out["count_include_pad"] = 1  # so that AveragePool is linear
        return out
    return attrs


# ---------------------------------------------------------------------------------------------
# axioms (stride, pads, group and dilation as quantified integers; the ones that depend on
# where a kernel's taps fall, the identity and enlarged kernels, are stated at dilation 1)

AXIOMS = AxiomBook()
axiom, shape_axiom, _rank_axiom = AXIOMS.axiom, AXIOMS.shape, AXIOMS.rank


def same_shape(A, a, b, rank: int) -> Any:
    return A.all(A.rank(a) == rank, A.rank(b) == rank,
                 *[A.dim(a, k) == A.dim(b, k) for k in range(rank)])


_X, _W = (1, 2, 4, 4), (2, 2, 3, 3)


@axiom("Conv-linear-x", ["Conv", "Add"], "x y w", CP,
       [I({"x": _X, "y": _X, "w": _W}, conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 5, 4), "y": (1, 2, 5, 4), "w": (4, 1, 1, 3)}, conv_ints(sh=2, g=2)),
        I({"x": (1, 2, 5, 5), "y": (1, 2, 5, 5), "w": (2, 2, 2, 2)}, conv_ints(dh=2, dw=3))],
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
        I({"x": (1, 2, 4, 3), "w": (2, 2, 1, 3), "v": (1, 2, 1, 3)}, conv_ints(sh=2)),
        I({"x": (1, 2, 5, 5), "w": (1, 2, 2, 2), "v": (2, 2, 2, 2)}, conv_ints(pl=1, dh=3))],
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
            A.conv(A.cat(1, x, y), A.cat(0, w, v), p[:6] + (2 * g,) + p[7:]),
            _grouped_guard(A, x, y, w, v, g))


@axiom("Conv-grouped-Concat", ["Conv", "Concat"], "x y w v", CP,
       [I(x.shapes, {**x.ints, "g": 2 * x.ints["g"]}) for x in _GROUPED])
def _(A, t, i, s):
    x, y, w, v = t["x"], t["y"], t["w"], t["v"]
    p, g = conv_p(i), i["g"]
    return (A.conv(A.cat(1, x, y), A.cat(0, w, v), p),
            A.cat(1, A.conv(x, w, p[:6] + (A.div(g, 2),) + p[7:]),
                  A.conv(y, v, p[:6] + (A.div(g, 2),) + p[7:])),
            A.all(g % 2 == 0, _grouped_guard(A, x, y, w, v, A.div(g, 2))))


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
            A.all(i["sh"] == 1, i["sw"] == 1, i["dh"] == 1, i["dw"] == 1,
                  2 * i["pt"] + 1 == A.dim(w, 2), i["pb"] == i["pt"],
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
    dh, dw = A.div(dh2, 2), A.div(dw2, 2)
    p = conv_p(i)
    q = (p[0], p[1], p[2] - dh, p[3] - dw, p[4] - dh, p[5] - dw, p[6], p[7], p[8])
    # stated at dilation 1: a dilated enlarged kernel moves its taps by the dilation too
    return (A.conv(x, A.enlarge(w, r), p), A.conv(x, w, q),
            A.all(dh2 >= 0, dw2 >= 0, dh2 % 2 == 0, dw2 % 2 == 0, p[2] >= dh, p[4] >= dh,
                  p[3] >= dw, p[5] >= dw, p[7] == 1, p[8] == 1))


@axiom("Conv-Split-weights", ["Conv", "Split"], "x w", CP + " s l",
       [I({"x": _X, "w": (3, 2, 3, 3)}, {**conv_ints(pt=1), "s": 1, "l": 2}),
        I({"x": (1, 2, 3, 3), "w": (3, 2, 1, 1)}, {**conv_ints(sh=2), "s": 0, "l": 1})],
       triggers="both")
def _(A, t, i, s):
    x, w, p = t["x"], t["w"], conv_p(i)
    return (A.conv(x, A.slice(w, 0, i["s"], i["l"]), p),
            A.slice(A.conv(x, w, p), 1, i["s"], i["l"]),
            A.all(i["g"] == 1, in_range(A, w, 0, i["s"], i["l"])))


@axiom("BiasNCHW-Concat", ["Conv", "Concat"], "b c", "",
       [I({"b": (1,), "c": (2,)}), I({"b": (3,), "c": (1,)})], triggers="both")
def _(A, t, i, s):
    """A Conv bias of concatenated channels is the concatenation of the two biases: what
    merging two biased Convs along output channels needs."""
    b, c = t["b"], t["c"]
    return (A.channel(A.cat(0, b, c)), A.cat(1, A.channel(b), A.channel(c)),
            A.all(A.rank(b) == 1, A.rank(c) == 1))


@axiom("BiasNCHW-Add", ["Conv", "Add"], "b c", "",
       [I({"b": (3,), "c": (3,)}), I({"b": (1,), "c": (1,)})], triggers="both")
def _(A, t, i, s):
    """A Conv bias that is the sum of two biases is the sum of the two broadcast biases: what
    merging two biased Convs along input channels (their outputs added) needs."""
    b, c = t["b"], t["c"]
    return (A.channel(A.binary("Add", b, c)), A.binary("Add", A.channel(b), A.channel(c)),
            A.all(A.rank(b) == 1, A.rank(c) == 1, A.dim(b, 0) == A.dim(c, 0)))


def _per_channel(A, c, n):
    """c holds one factor per output channel of n channels, as (C, 1, 1)."""
    return A.all(A.rank(c) == 3, A.dim(c, 0) == n, A.dim(c, 1) == 1, A.dim(c, 2) == 1)


@axiom("Conv-ScaleAxis0", ["Conv", "Mul", "ScaleAxis0"], "x w c", CP,
       [I({"x": _X, "w": _W, "c": (2, 1, 1)}, conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 4, 3), "w": (4, 1, 1, 3), "c": (4, 1, 1)}, conv_ints(sh=2, g=2)),
        I({"x": (1, 2, 5, 5), "w": (2, 2, 2, 2), "c": (2, 1, 1)}, conv_ints(dh=2, dw=2))])
def _(A, t, i, s):
    """A per-output-channel scale after a Conv (any stride, pads, group) scales its kernel."""
    x, w, c, p = t["x"], t["w"], t["c"], conv_p(i)
    return (A.binary("Mul", A.conv(x, w, p), c), A.conv(x, A.scale_axis0(w, c), p),
            _per_channel(A, c, A.dim(w, 0)))


@axiom("BiasNCHW-ScaleAxis0", ["Conv", "Mul", "ScaleAxis0"], "b c", "",
       [I({"b": (3,), "c": (3, 1, 1)}), I({"b": (1,), "c": (1, 1, 1)})])
def _(A, t, i, s):
    """... and its bias."""
    b, c = t["b"], t["c"]
    return (A.binary("Mul", A.channel(b), c), A.channel(A.scale_axis0(b, c)),
            _per_channel(A, c, A.dim(b, 0)))


@axiom("Conv-ScaleAxis0-vector", ["Conv", "Mul", "ScaleAxis0"], "x w s", CP,
       [I({"x": _X, "w": _W, "s": (2,)}, conv_ints(pt=1, pl=1, pb=1, pr=1)),
        I({"x": (1, 2, 4, 3), "w": (4, 1, 1, 3), "s": (4,)}, conv_ints(sh=2, g=2))],
       triggers="both")
def _(A, t, i, s):
    """The same with the factors as a (C,) vector broadcast as a bias (a per-channel constant
    written (1, C, 1, 1), through ChannelVector). Triggered by the scaled kernel too: the
    product it equals is then a term the ChannelVector axioms can rewrite."""
    x, w, v, p = t["x"], t["w"], t["s"], conv_p(i)
    return (A.binary("Mul", A.conv(x, w, p), A.channel(v)), A.conv(x, A.scale_axis0(w, v), p),
            A.all(A.rank(v) == 1, A.dim(v, 0) == A.dim(w, 0)))


@axiom("BiasNCHW-ScaleAxis0-vector", ["Conv", "Mul", "ScaleAxis0"], "b s", "",
       [I({"b": (3,), "s": (3,)}), I({"b": (1,), "s": (1,)})], triggers="both")
def _(A, t, i, s):
    """... and its bias."""
    b, v = t["b"], t["s"]
    return (A.binary("Mul", A.channel(b), A.channel(v)), A.channel(A.scale_axis0(b, v)),
            A.all(A.rank(b) == 1, A.rank(v) == 1, A.dim(b, 0) == A.dim(v, 0)))


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


# shape axioms

_CONV_SHAPE = [I({"x": (1, 2, 5, 4), "w": (3, 2, 3, 1)}, conv_ints(sh=2, pt=1, pb=0, pl=0)),
               I({"x": (2, 4, 3, 3), "w": (2, 2, 1, 3)}, conv_ints(pl=1, pr=1, g=2)),
               I({"x": (1, 2, 6, 5), "w": (2, 2, 3, 2)}, conv_ints(pt=1, dh=2, dw=3, sw=2))]


def _conv_dims(A, x, w, p):
    sh, sw, pt, pl, pb, pr, g, dh, dw = p
    # the dilated kernel spans (k - 1) * d + 1
    return [A.dim(x, 0), A.dim(w, 0),
            A.div(A.dim(x, 2) + pt + pb - ((A.dim(w, 2) - 1) * dh + 1), sh) + 1,
            A.div(A.dim(x, 3) + pl + pr - ((A.dim(w, 3) - 1) * dw + 1), sw) + 1]


def _pick(A, k, values):
    out = values[-1]
    for j in range(len(values) - 2, -1, -1):
        out = A.ite(k == j, values[j], out)
    return out


shape_axiom("dim-Conv", ["Conv"], "x w", CP, _CONV_SHAPE,
            lambda A, t, i: A.conv(t["x"], t["w"], conv_p(i)),
            lambda A, t, i, k: _pick(A, k, _conv_dims(A, t["x"], t["w"], conv_p(i))),
            out_rank=lambda A, t, i: 4)
for _op in ("MaxPool", "AveragePool"):
    shape_axiom(f"dim-{_op}", [_op], "x", PP,
                [I({"x": (1, 2, 5, 4)}, dict(kh=3, kw=2, sh=2, sw=1, pt=1, pl=0, pb=1, pr=0,
                                             cip=0))],
                lambda A, t, i, op=_op: A.pool(op, t["x"], pool_p(i)),
                lambda A, t, i, k: _pick(A, k, [A.dim(t["x"], 0), A.dim(t["x"], 1)] + [
                    A.div(A.dim(t["x"], 2 + j) + i["pt" if j == 0 else "pl"]
                          + i["pb" if j == 0 else "pr"] - i["kh" if j == 0 else "kw"],
                          i["sh" if j == 0 else "sw"]) + 1 for j in (0, 1)]),
                out_rank=lambda A, t, i: 4)
shape_axiom("dim-BiasNCHW", ["Conv"], "c", "",
            [I({"c": (3,)})], lambda A, t, i: A.channel(t["c"]),
            lambda A, t, i, k: A.ite(k == 1, A.dim(t["c"], 0), 1),
            lambda A, t, i, k: A.rank(t["c"]) == 1, out_rank=lambda A, t, i: 4)
_rank_axiom("rank-Conv", ["Conv"], "x w", CP, _CONV_SHAPE,
            lambda A, t, i: A.conv(t["x"], t["w"], conv_p(i)), lambda A, t, i: 4)
for _op in ("MaxPool", "AveragePool"):
    _rank_axiom(f"rank-{_op}", [_op], "x", PP,
                [I({"x": (1, 2, 5, 4)}, dict(kh=3, kw=2, sh=2, sw=1, pt=1, pl=0, pb=1, pr=0,
                                             cip=0))],
                lambda A, t, i, op=_op: A.pool(op, t["x"], pool_p(i)), lambda A, t, i: 4)
_rank_axiom("rank-BiasNCHW", ["Conv"], "c", "", [I({"c": (3,)})],
            lambda A, t, i: A.channel(t["c"]), lambda A, t, i: 4,
            lambda A, t, i: A.rank(t["c"]) == 1)

# ---------------------------------------------------------------------------------------------
# the ops

def _pool_cost(a, i, o):
    return o[0].numel() * a["kernel_shape"][0] * a["kernel_shape"][1], nbytes(i) + nbytes(o)


OPS = (
    OpDef(
        name="Conv", onnx_type="Conv", arity=(2, 3), infer=_conv_infer, compute=_conv_compute,
        defaults={"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1},
        props=frozenset({LINEAR}), from_onnx=_conv_from_onnx,
        to_onnx=plain_to_onnx("Conv", ("strides", "pads", "dilations", "group")),
        cost=_conv_cost, doc="2-D convolution, NCHW, with groups, strides, pads and dilations",
        fuses_into=frozenset({"Relu", "Sigmoid", "Tanh", "Add", "Clip", "HardSigmoid"}),
        fuses_after={"Add": frozenset({"Relu"})},
        z3=Z3Semantics(on_terms(_conv_compute), _lower_conv),
        axioms=AXIOMS.of("Conv"),
        generator=(
            OpInstance("Conv", "Conv", 2, _conv, _conv_sym, ranks=((4,), (4,))),
            OpInstance("Conv.bias", "Conv", 3, _conv, _conv_sym, ranks=((4,), (4,), (1,))),
        )),
    OpDef(
        name="MaxPool", onnx_type="MaxPool", arity=(1, 1), infer=_pool_infer,
        compute=_maxpool_compute,
        defaults={"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "ceil_mode": 0},
        from_onnx=_pool_from_onnx("max"),
        to_onnx=plain_to_onnx("MaxPool", ("kernel_shape", "strides", "pads", "dilations",
                                          "ceil_mode")),
        cost=_pool_cost, doc="2-D max pooling",
        z3=Z3Semantics(_maxpool_z3, _lower_pool),
        axioms=AXIOMS.of("MaxPool"),
        generator=(OpInstance("MaxPool", "MaxPool", 1, _pool(False), ranks=((4,),)),)),
    OpDef(
        name="AveragePool", onnx_type="AveragePool", arity=(1, 1), infer=_pool_infer,
        compute=_avgpool_compute,
        defaults={"strides": (1, 1), "pads": (0, 0, 0, 0), "ceil_mode": 0,
                  "count_include_pad": 0},
        props=frozenset({LINEAR}), from_onnx=_pool_from_onnx("avg"),
        to_onnx=plain_to_onnx("AveragePool", ("kernel_shape", "strides", "pads", "ceil_mode",
                                              "count_include_pad")),
        cost=_pool_cost, doc="2-D average pooling",
        z3=Z3Semantics(on_terms(_avgpool_compute), _lower_pool),
        axioms=AXIOMS.of("AveragePool"),
        generator=(OpInstance("AveragePool", "AveragePool", 1, _pool(True), ranks=((4,),)),)),
    OpDef(
        name="GlobalAveragePool", onnx_type="GlobalAveragePool", arity=(1, 1),
        infer=lambda a, t: [TensorType(t[0].elem_type, tuple(t[0].shape[:2]) +
                                       (1,) * (len(t[0].shape) - 2))],
        compute=_gap_compute,
        props=frozenset({LINEAR}), from_onnx=plain_from_onnx(),
        to_onnx=plain_to_onnx("GlobalAveragePool"),
        cost=lambda a, i, o: (float(i[0].numel()), nbytes(i) + nbytes(o)),
        doc="mean over all spatial dims",
        z3=Z3Semantics(on_terms(_gap_compute), lower_generic)),
)
AXIOMS.done()
