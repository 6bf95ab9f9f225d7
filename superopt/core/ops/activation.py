"""Activations and unary arithmetic as exporters write them: Clip (ReLU6), HardSigmoid,
HardSwish, Gelu, Neg, Reciprocal, Sqrt and Pow with a constant scalar exponent (RMSNorm's
square, a square root).

Parameters exporters pass as constant inputs become attributes: Clip's `min` / `max` and Pow's
exponent. Their element type is kept in an attribute (`dtype`, `exponent_dtype`, ONNX type names
as `TensorType` prints them: "float", "float16", "double", ...) so export writes the same
initializer back; a runtime (non-constant) bound or exponent keeps the node opaque, and so does
a Pow exponent that is not a scalar.

Z3: Neg, Reciprocal, Clip, HardSigmoid and HardSwish are exact (products, quotients and `ite`);
Pow with a small integer exponent is a product; Sqrt (and Pow 0.5) is an uninterpreted real
function pinned to the square root where its argument is >= 0; Gelu (exact form) is
0.5 x (1 + Erf(x / sqrt 2)) over the same uninterpreted `Erf` as the Erf op; tanh-form Gelu and
other exponents are uninterpreted functions. No axioms and no generator instances yet.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from superopt.core.axiom_spec import AxiomBook
from superopt.core.ops.common import (
    ew_cost,
    lower_generic,
    make_node,
    on_terms,
    onnx_attrs,
    plain_from_onnx,
    plain_to_onnx,
)
from superopt.core.registry import ELEMENTWISE, IDEMPOTENT, Attrs, OpDef, Z3Semantics
from superopt.core.types import TensorType

INF = math.inf
# Integer exponents written as products in the exact encoding (|n| up to this).
MAX_PRODUCT_EXPONENT = 8


# ---------------------------------------------------------------------------------------------
# element types of constant parameters (kept so export writes the same initializer)


def type_name(elem_type: int) -> str:
    """ONNX element type as an attribute value: TensorProto.FLOAT16 -> "float16"."""
    return TensorProto.DataType.Name(elem_type).lower()


def type_of_name(name: str) -> int:
    return TensorProto.DataType.Value(name.upper())


def np_dtype_of_name(name: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(type_of_name(name)))


def _scalar_input(node, const, i: int):
    """(present, value, elem type) of optional input i: value None when it is a runtime input
    or not a single element (then the node stays opaque)."""
    if i >= len(node.input) or not node.input[i]:
        return False, None, None
    arr = const(i)
    if arr is None or arr.size != 1:
        return True, None, None
    return True, arr.reshape(()).item(), helper.np_dtype_to_tensor_dtype(arr.dtype)


def _scalar_init(value, dtype_name: str, name: str) -> TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np_dtype_of_name(dtype_name)), name)


def _cast_like(y, x: np.ndarray) -> np.ndarray:
    return np.asarray(y).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Clip: min(max(x, min), max); an absent bound is +-inf (ONNX: min > max gives max everywhere)


def _clip_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    y = x[0]
    if a["min"] != -INF:
        y = np.maximum(y, np.asarray(a["min"]).astype(y.dtype))
    if a["max"] != INF:
        y = np.minimum(y, np.asarray(a["max"]).astype(y.dtype))
    return [_cast_like(y, x[0])]


def _clip_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    t = types[0]
    if t is None or not t.elem_type or set(a) - {"min", "max"}:
        return None
    attrs: Attrs = {"dtype": type_name(t.elem_type)}
    if opset < 11:  # bounds were float attributes
        if len([i for i in node.input if i]) > 1:
            return None
        attrs.update({k: float(a[k]) for k in ("min", "max") if k in a})
        return attrs, [0]
    if a:
        return None  # attributes are not bounds from opset 11 on
    for i, key in ((1, "min"), (2, "max")):
        present, value, _ = _scalar_input(node, const, i)
        if present and value is None:
            return None  # a runtime (or non-scalar) bound
        if present:
            attrs[key] = value
    return attrs, [0]


def _clip_to_onnx(attrs: Attrs, ins, outs, name, opset):
    lo, hi = attrs["min"], attrs["max"]
    if opset < 11:
        extra = {k: float(v) for k, v in (("min", lo), ("max", hi)) if abs(v) != INF}
        return [make_node("Clip", ins[:1], outs, name, **extra)], []
    inits, names = [], [ins[0], "", ""]
    for i, (key, v) in enumerate((("min", lo), ("max", hi)), start=1):
        if abs(v) != INF:
            t = _scalar_init(v, attrs["dtype"], f"{name}_{key}")
            inits.append(t)
            names[i] = t.name
    while names[-1] == "":
        names.pop()
    return [make_node("Clip", names, outs, name)], inits


def _clip_z3(ctx, attrs, x):
    lo, hi = attrs["min"], attrs["max"]

    def clip(e):
        r = ctx.real(e)
        if lo != -INF:
            r = ctx.ite(r < ctx.real(lo), ctx.real(lo), r)
        if hi != INF:
            r = ctx.ite(r > ctx.real(hi), ctx.real(hi), r)
        return r
    return [ctx.each(clip, x[0])]


# ---------------------------------------------------------------------------------------------
# HardSigmoid max(0, min(1, alpha x + beta)); HardSwish x * HardSigmoid(x; 1/6, 1/2)


def _hard_sigmoid(x: np.ndarray, alpha, beta) -> np.ndarray:
    return np.clip(alpha * x + beta, 0, 1)


def _hardsigmoid_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [_cast_like(_hard_sigmoid(x[0], a["alpha"], a["beta"]), x[0])]


def _hardswish_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [_cast_like(x[0] * _hard_sigmoid(x[0], 1.0 / 6.0, 0.5), x[0])]


def _hardsigmoid_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if set(a) - {"alpha", "beta"}:
        return None
    return {k: float(a[k]) for k in ("alpha", "beta") if k in a}, [0]


def _hardswish_to_onnx(attrs: Attrs, ins, outs, name, opset):
    if opset >= 14:
        return [make_node("HardSwish", ins, outs, name)], []
    # Before opset 14: x * HardSigmoid(x; alpha=1/6, beta=0.5), ONNX's own definition.
    mid = f"{name}_hardsigmoid"
    return [make_node("HardSigmoid", ins, [mid], f"{name}_hs", alpha=1.0 / 6.0, beta=0.5),
            make_node("Mul", [ins[0], mid], outs, name)], []


def _clamp01_z3(ctx, v):
    return ctx.ite(v < 0, ctx.real(0), ctx.ite(v > 1, ctx.real(1), v))


def _hardsigmoid_z3(ctx, attrs, x):
    alpha, beta = ctx.real(attrs["alpha"]), ctx.real(attrs["beta"])
    return [ctx.each(lambda e: _clamp01_z3(ctx, alpha * ctx.real(e) + beta), x[0])]


def _hardswish_z3(ctx, attrs, x):
    def f(e):
        r = ctx.real(e)
        return r * _clamp01_z3(ctx, r / 6 + ctx.real(0.5))
    return [ctx.each(f, x[0])]


# ---------------------------------------------------------------------------------------------
# Gelu (opset 20): x * Phi(x), exact (erf) or the tanh approximation


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    v = np.asarray(x[0], dtype=np.float64)
    if a["approximate"] == "tanh":
        y = 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    else:
        y = 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))
    return [_cast_like(y, x[0])]


def _gelu_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if opset < 20 or set(a) - {"approximate"}:
        return None
    approx = a.get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else str(approx)
    if approx not in ("none", "tanh"):
        return None
    return {"approximate": approx}, [0]


def _gelu_to_onnx(attrs: Attrs, ins, outs, name, opset):
    if opset < 20:
        raise ValueError(f"Gelu node {name}: Gelu is an ONNX op from opset 20; the model "
                         f"imports opset {opset}")
    extra = {"approximate": attrs["approximate"]} if attrs["approximate"] != "none" else {}
    return [make_node("Gelu", ins, outs, name, **extra)], []


def _gelu_z3(ctx, attrs, x):
    if attrs["approximate"] == "tanh":
        f = ctx.fn("GeluTanh")
        return [ctx.each(lambda e: f(ctx.real(e)), x[0])]
    erf = ctx.fn("Erf")  # the Erf op's function: Gelu is written with it
    inv_sqrt2 = ctx.inv_sqrt(ctx.real(2))

    def gelu(e):
        r = ctx.real(e)
        return ctx.real(0.5) * r * (1 + erf(r * inv_sqrt2))
    return [ctx.each(gelu, x[0])]


# ---------------------------------------------------------------------------------------------
# Neg, Reciprocal, Sqrt


def _neg_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [_cast_like(np.negative(x[0]), x[0])]


def _reciprocal_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [_cast_like(np.reciprocal(x[0]), x[0])]


def _sqrt_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    with np.errstate(invalid="ignore"):
        return [_cast_like(np.sqrt(x[0]), x[0])]


def _reciprocal_z3(ctx, attrs, x):
    return [ctx.each(lambda e: 1 / ctx.real(e), x[0])]


def _sqrt_term(ctx, r):
    """sqrt(r): the uninterpreted `Sqrt`, equal to the square root wherever r >= 0."""
    s = ctx.fn("Sqrt")(r)
    ctx.constrain(ctx.ite(r >= 0, s >= 0, True), ctx.ite(r >= 0, s * s == r, True))
    return s


def _sqrt_z3(ctx, attrs, x):
    return [ctx.each(lambda e: _sqrt_term(ctx, ctx.real(e)), x[0])]


# ---------------------------------------------------------------------------------------------
# Pow with a constant scalar exponent


def _pow_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    base, e = x[0], a["exponent"]
    if base.dtype.kind in "iu":
        if float(e).is_integer() and e >= 0:
            return [np.power(base, int(e)).astype(base.dtype, copy=False)]
        return [np.power(base.astype(np.float64), float(e)).astype(base.dtype)]
    if base.dtype == object:
        if not _small_int(e):
            raise TypeError(f"Pow {e!r} on terms: only small integer exponents are products")
        return _pow_terms(base, e)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return [_cast_like(np.power(base, np.asarray(e).astype(base.dtype)), base)]


def _pow_terms(base: np.ndarray, e) -> list[np.ndarray]:
    n = int(e)
    out = np.empty(base.shape, dtype=object)
    for idx in np.ndindex(*base.shape):
        p = 1
        for _ in range(abs(n)):
            p = p * base[idx]
        out[idx] = p if n >= 0 else 1 / p
    return [out]


def _small_int(e) -> bool:
    return float(e).is_integer() and abs(e) <= MAX_PRODUCT_EXPONENT


def _pow_from_onnx(node, types, const, opset):
    t = types[0]
    if t is None or onnx_attrs(node) or len(node.input) != 2:
        return None
    present, value, elem = _scalar_input(node, const, 1)
    e = const(1)
    if value is None or e is None:
        return None  # runtime or non-scalar exponent
    # A size-1 exponent of rank r broadcasts the base to rank >= r: only a rank-0 one, or one
    # of no higher rank than the base, leaves the base's shape.
    if e.ndim and (t.shape is None or e.ndim > len(t.shape)):
        return None
    return {"exponent": value, "exponent_dtype": type_name(elem)}, [0]


def _pow_to_onnx(attrs: Attrs, ins, outs, name, opset):
    e = _scalar_init(attrs["exponent"], attrs["exponent_dtype"], f"{name}_exponent")
    return [make_node("Pow", [ins[0], e.name], outs, name)], [e]


def _pow_z3(ctx, attrs, x):
    e = attrs["exponent"]
    if _small_int(e):
        return _pow_terms(ctx.to_real(x[0]), e)
    if e == 0.5:
        return [ctx.each(lambda v: _sqrt_term(ctx, ctx.real(v)), x[0])]
    f = ctx.fn(f"Pow[{float(e)!r}]")
    return [ctx.each(lambda v: f(ctx.real(v)), x[0])]


# ---------------------------------------------------------------------------------------------
# lowerings and axioms (none yet: the family's axiom book is empty)


def _lower_unary(A, attrs, args, ranks, op):
    return [A.unary(op, args[0])]


AXIOMS = AxiomBook()


def _same(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    return [t[0]]


def _unary(name: str, compute, bounded, from_onnx=None, to_onnx=None, defaults=None,
           props=frozenset(), doc: str = "", cost=ew_cost, lower=lower_generic) -> OpDef:
    return OpDef(
        name=name, onnx_type=name, arity=(1, 1), infer=_same, compute=compute,
        defaults=dict(defaults or {}), props=frozenset({ELEMENTWISE}) | props,
        from_onnx=from_onnx or plain_from_onnx(), to_onnx=to_onnx or plain_to_onnx(name),
        cost=cost, doc=doc, z3=Z3Semantics(bounded, lower), axioms=AXIOMS.of(name))


def _cost(flops_per_element: float):
    def cost(a, ins, outs):
        return flops_per_element * outs[0].numel(), ew_cost(a, ins, outs)[1]
    return cost


OPS = (
    _unary("Clip", _clip_compute, _clip_z3, _clip_from_onnx, _clip_to_onnx,
           {"min": -INF, "max": INF, "dtype": "float"}, frozenset({IDEMPOTENT}),
           "min(max(x, min), max); the bounds are constants of element type `dtype` "
           "(+-inf: absent)", cost=_cost(2.0)),
    _unary("HardSigmoid", _hardsigmoid_compute, _hardsigmoid_z3, _hardsigmoid_from_onnx,
           plain_to_onnx("HardSigmoid", ("alpha", "beta")), {"alpha": 0.2, "beta": 0.5},
           doc="max(0, min(1, alpha * x + beta))", cost=_cost(4.0)),
    _unary("HardSwish", _hardswish_compute, _hardswish_z3, to_onnx=_hardswish_to_onnx,
           doc="x * max(0, min(1, x / 6 + 1/2)) (opset 14; earlier: HardSigmoid then Mul)",
           cost=_cost(5.0), lower=_lower_unary),
    _unary("Gelu", _gelu_compute, _gelu_z3, _gelu_from_onnx, _gelu_to_onnx,
           {"approximate": "none"},
           doc="x * Phi(x) (opset 20): exact with erf, or the tanh approximation",
           cost=_cost(8.0)),
    _unary("Neg", _neg_compute, on_terms(_neg_compute), doc="-x", lower=_lower_unary),
    _unary("Reciprocal", _reciprocal_compute, _reciprocal_z3, doc="1 / x",
           lower=_lower_unary),
    _unary("Sqrt", _sqrt_compute, _sqrt_z3, doc="square root", lower=_lower_unary),
    _unary("Pow", _pow_compute, _pow_z3, _pow_from_onnx, _pow_to_onnx,
           {"exponent": 1.0, "exponent_dtype": "float"},
           doc="x ** exponent, the exponent a constant scalar of element type "
               "`exponent_dtype` (a runtime or non-scalar exponent stays opaque)"),
)
AXIOMS.done()
