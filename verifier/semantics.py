"""Each op's Z3 semantics, one table entry per registry op (tinygrad style).

An entry has two parts:
- `bounded(ctx, attrs, inputs) -> outputs`: the exact element-wise encoding over numpy object
  arrays of Z3 reals, for bounded checks (Relu as `If(x > 0, x, 0)`, Conv as sums of
  products, ...). Many ops reuse the registry's numpy `compute`, which works on object arrays.
- `lower(A, attrs, args, ranks) -> outputs`: the op written in the axiom language of
  `superopt.verifier.algebra` (uninterpreted functions), for axiomatic proofs.

`install()` fills the registry slots `OpDef.z3_elementwise` and `OpDef.z3_axioms`. An op with
no entry is a loud error: `MissingSemantics("op X has no Z3 semantics")`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import z3

from superopt.core.ops import _k_eff, _out_dim
from superopt.core.registry import all_ops, get_op


class MissingSemantics(Exception):
    """An op used by a rule or axiom has no entry in the Z3 table."""


class BoundedContext:
    """Fresh Z3 reals for tensors, the side constraints exact encodings need (positivity of
    inverse square roots), and the uninterpreted real functions of transcendental ops."""

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
        if name not in self._fns:
            self._fns[name] = z3.Function(name, z3.RealSort(), z3.RealSort())
        return self._fns[name]

    def inv_sqrt(self, e: Any) -> z3.ArithRef:
        """r with r*r*e == 1 and r > 0, i.e. 1/sqrt(e); the same term for the same e."""
        e = real(e)
        key = e.get_id()
        if key not in self._inv_sqrt:
            r = z3.Real(f"invsqrt!{len(self._inv_sqrt)}")
            self.constraints += [r > 0, r * r * e == 1]
            self._inv_sqrt[key] = r
        return self._inv_sqrt[key]


def real(e: Any) -> z3.ArithRef:
    if isinstance(e, z3.ExprRef):
        return z3.ToReal(e) if e.is_int() else e
    if isinstance(e, (bool, np.bool_)):
        e = int(e)
    if isinstance(e, (float, np.floating)):
        return z3.RealVal(float(e))
    return z3.RealVal(int(e))


_to_real = np.vectorize(real, otypes=[object])


def _each(fn: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x.copy()
    return np.vectorize(fn, otypes=[object])(x)


# ---------------------------------------------------------------------------------------------
# bounded encodings


def _reuse_compute(op: str) -> Callable:
    """The registry's numpy semantics, which also run on object arrays of Z3 terms."""
    def bounded(ctx: BoundedContext, attrs: dict, inputs: list) -> list:
        return get_op(op).compute(dict(attrs), list(inputs))
    return bounded


def _relu(ctx, attrs, x):
    return [_each(lambda e: z3.If(real(e) > 0, real(e), 0), x[0])]


def _uninterpreted(name: str) -> Callable:
    def bounded(ctx, attrs, x):
        f = ctx.fn(name)
        return [_each(lambda e: f(real(e)), x[0])]
    return bounded


def _max(items: list) -> Any:
    best = real(items[0])
    for e in items[1:]:
        e = real(e)
        best = z3.If(e > best, e, best)
    return best


def _maxpool(ctx, attrs, x):
    X = x[0]
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs["strides"]
    pt, pl, pb, pr = attrs["pads"]
    dh, dw = attrs.get("dilations", (1, 1))
    n, c, h, w = X.shape
    ke = _k_eff((kh, kw), (dh, dw))
    oh = _out_dim(h, ke[0], sh, pt, pb, attrs["ceil_mode"])
    ow = _out_dim(w, ke[1], sw, pl, pr, attrs["ceil_mode"])
    y = np.empty((n, c, oh, ow), dtype=object)
    for b, ch, i, j in np.ndindex(n, c, oh, ow):
        cells = [X[b, ch, r, q]
                 for r in (i * sh - pt + a * dh for a in range(kh))
                 for q in (j * sw - pl + d * dw for d in range(kw))
                 if 0 <= r < h and 0 <= q < w]
        y[b, ch, i, j] = _max(cells)
    return [y]


def _bn(ctx, attrs, x):
    X, s, b, m, v = x
    shape = (1, -1) + (1,) * (X.ndim - 2)
    eps = attrs.get("epsilon", 1e-5)
    inv = np.array([real(sc) * ctx.inv_sqrt(real(vc) + z3.RealVal(eps))
                    for sc, vc in zip(s.reshape(-1), v.reshape(-1))], dtype=object)
    return [(X - m.reshape(shape)) * inv.reshape(shape) + b.reshape(shape)]


def _bn_factor(ctx, s, v, eps) -> np.ndarray:
    """s / sqrt(v + eps) per element of 1-D s and v (broadcast as numpy would)."""
    s, v = np.broadcast_arrays(np.asarray(s, dtype=object), np.asarray(v, dtype=object))
    out = np.empty(s.shape, dtype=object)
    for idx in np.ndindex(*s.shape):
        out[idx] = real(s[idx]) * ctx.inv_sqrt(real(v[idx]) + z3.RealVal(eps))
    return out


def _bn_fold_kernel(ctx, attrs, x):
    w, s, v = x
    f = _bn_factor(ctx, s, v, attrs.get("epsilon", 1e-5))
    return [w * f.reshape((-1,) + (1,) * (w.ndim - 1))]


def _bn_fold_bias(ctx, attrs, x):
    s, b, m, v = x
    return [b - m * _bn_factor(ctx, s, v, attrs.get("epsilon", 1e-5))]


def _layernorm(ctx, attrs, x):
    X = x[0]
    axis = attrs["axis"] % X.ndim
    axes = tuple(range(axis, X.ndim))
    count = int(np.prod([X.shape[a] for a in axes]))
    mean = X.sum(axis=axes, keepdims=True) / count
    var = ((X - mean) * (X - mean)).sum(axis=axes, keepdims=True) / count
    eps = z3.RealVal(attrs.get("epsilon", 1e-5))
    r = _each(lambda e: ctx.inv_sqrt(real(e) + eps), var)
    y = (X - mean) * r * x[1]
    if len(x) > 2:
        y = y + x[2]
    return [y]


def _softmax(ctx, attrs, x):
    exp = ctx.fn("Exp")
    e = _each(lambda t: exp(real(t)), x[0])
    ctx.constraints += [t > 0 for t in e.reshape(-1)]
    return [e / e.sum(axis=attrs["axis"], keepdims=True)]


def _div(ctx, attrs, x):
    a, b = np.broadcast_arrays(_to_real(x[0]), _to_real(x[1]))
    return [_each(lambda p: p[0] / p[1], np.frompyfunc(lambda u, w: (u, w), 2, 1)(a, b))]


# ---------------------------------------------------------------------------------------------
# lowering into the axiom language


def _lower_unary(A, attrs, args, ranks, op):
    return [A.unary(op, args[0])]


def _lower_binary(A, attrs, args, ranks, op):
    return [A.binary(op, args[0], args[1])]


def _lower_generic(A, attrs, args, ranks, op, n_out=1):
    key = op + repr(sorted((k, v) for k, v in attrs.items()))
    return A.generic(key, args, n_out)


def _lower_conv(A, attrs, args, ranks, op):
    if tuple(attrs["dilations"]) != (1, 1):
        return _lower_generic(A, attrs, args, ranks, op)
    p = tuple(attrs["strides"]) + tuple(attrs["pads"]) + (attrs["group"],)
    y = A.conv(args[0], args[1], p)
    if len(args) > 2:
        if hasattr(A, "_typed"):  # ONNX Conv: the bias is 1-D, one value per output channel
            A._typed(A.rank(args[2]) == 1, A.dim(args[2], 0) == A.dim(args[1], 0))
        y = A.binary("Add", y, A.channel(args[2]))
    return [y]


def _lower_pool(A, attrs, args, ranks, op):
    if attrs["ceil_mode"] or tuple(attrs.get("dilations", (1, 1))) != (1, 1):
        return _lower_generic(A, attrs, args, ranks, op)
    p = (tuple(attrs["kernel_shape"]) + tuple(attrs["strides"]) + tuple(attrs["pads"])
         + (attrs.get("count_include_pad", 0),))
    return [A.pool(op, args[0], p)]


def _lower_concat(A, attrs, args, ranks, op):
    axis = attrs["axis"] % ranks[0] if isinstance(attrs["axis"], int) else attrs["axis"]
    out = args[-1]
    for a in reversed(args[:-1]):
        out = A.cat(axis, a, out)
    return [out]


def _lower_split(A, attrs, args, ranks, op):
    axis = attrs["axis"] % ranks[0] if isinstance(attrs["axis"], int) else attrs["axis"]
    outs, start = [], 0
    if hasattr(A, "_typed"):  # ONNX Split: the sizes add up to the dim
        A._typed(sum(attrs["split"]) == A.dim(args[0], axis))
    for size in attrs["split"]:
        outs.append(A.slice(args[0], axis, start, size))
        start = start + size
    return outs


def _lower_transpose(A, attrs, args, ranks, op):
    return [A.transpose(args[0], tuple(attrs["perm"]))]


def _lower_like(A, attrs, args, ranks, op):
    return [A.like(op, args[0])]


@dataclass(frozen=True)
class Semantics:
    bounded: Callable[[BoundedContext, dict, list], list]
    lower: Callable[..., list]


def _entry(bounded, lower) -> Semantics:
    return Semantics(bounded, lower)


TABLE: dict[str, Semantics] = {
    "Relu": _entry(_relu, _lower_unary),
    "Sigmoid": _entry(_uninterpreted("Sigmoid"), _lower_unary),
    "Tanh": _entry(_uninterpreted("Tanh"), _lower_unary),
    "Erf": _entry(_uninterpreted("Erf"), _lower_unary),
    "Identity": _entry(_reuse_compute("Identity"), lambda A, at, a, r, op: [a[0]]),
    "Add": _entry(_reuse_compute("Add"), _lower_binary),
    "Sub": _entry(_reuse_compute("Sub"), _lower_binary),
    "Mul": _entry(_reuse_compute("Mul"), _lower_binary),
    "Div": _entry(_div, _lower_binary),
    "MatMul": _entry(_reuse_compute("MatMul"), lambda A, at, a, r, op: [A.matmul(*a)]),
    "Gemm": _entry(_reuse_compute("Gemm"), _lower_generic),
    "Conv": _entry(_reuse_compute("Conv"), _lower_conv),
    "MaxPool": _entry(_maxpool, _lower_pool),
    "AveragePool": _entry(_reuse_compute("AveragePool"), _lower_pool),
    "GlobalAveragePool": _entry(_reuse_compute("GlobalAveragePool"), _lower_generic),
    "BatchNormalization": _entry(_bn, lambda A, at, a, r, op: [A.bn(*a, at["epsilon"])]),
    "BatchNormFoldKernel": _entry(_bn_fold_kernel,
                                  lambda A, at, a, r, op: [A.fold_kernel(*a, at["epsilon"])]),
    "BatchNormFoldBias": _entry(_bn_fold_bias,
                                lambda A, at, a, r, op: [A.fold_bias(*a, at["epsilon"])]),
    "LayerNormalization": _entry(_layernorm, _lower_generic),
    "Softmax": _entry(_softmax, _lower_generic),
    "Concat": _entry(_reuse_compute("Concat"), _lower_concat),
    "Split": _entry(_reuse_compute("Split"), _lower_split),
    "Transpose": _entry(_reuse_compute("Transpose"), _lower_transpose),
    "Reshape": _entry(_reuse_compute("Reshape"), _lower_generic),
    "Flatten": _entry(_reuse_compute("Flatten"), _lower_generic),
    "EnlargeKernel": _entry(_reuse_compute("EnlargeKernel"),
                            lambda A, at, a, r, op: [A.enlarge(*a)]),
    "IdentityKernelLike": _entry(_reuse_compute("IdentityKernelLike"), _lower_like),
    "IdentityMatrixLike": _entry(_reuse_compute("IdentityMatrixLike"), _lower_like),
    "OnesLike": _entry(_reuse_compute("OnesLike"), _lower_like),
}


def semantics(op: str) -> Semantics:
    """The table entry for `op`; MissingSemantics("op X has no Z3 semantics") if absent."""
    try:
        return TABLE[op]
    except KeyError:
        raise MissingSemantics(f"op {op} has no Z3 semantics") from None


def bounded_apply(ctx: BoundedContext, op: str, attrs: dict, inputs: list) -> list:
    """Apply an op's exact encoding; outputs are object arrays of Z3 reals."""
    outs = semantics(op).bounded(ctx, get_op(op).canonical_attrs(attrs), list(inputs))
    return [_to_real(np.asarray(o, dtype=object)) if np.asarray(o).size else
            np.asarray(o, dtype=object) for o in outs]


def lower(A: Any, op: str, attrs: dict, args: list, ranks: list[int]) -> list:
    """The op in the axiom language."""
    return semantics(op).lower(A, get_op(op).canonical_attrs(attrs), list(args), ranks, op)


def install() -> None:
    """Fill the registry's Z3 slots from this table (and the axioms that mention each op)."""
    from superopt.verifier.axioms import AXIOMS

    for op in all_ops():
        entry = TABLE.get(op.name)
        op.z3_elementwise = None if entry is None else entry.bounded
        op.z3_axioms = tuple(a.name for a in AXIOMS if op.name in a.ops)


def check_rule_ops(ops: set[str]) -> None:
    for op in sorted(ops):
        semantics(op)

