"""Element-wise ops: Add, Sub, Mul, Div (broadcasting) and Relu, Sigmoid, Tanh, Erf, Identity,
with their Z3 semantics, generator instances and axioms (commutativity, associativity,
distributivity, commuting with data movement, and their shape axioms)."""

from __future__ import annotations

import math

import numpy as np

from superopt.core.axiom_spec import AxiomBook, I, in_range
from superopt.core.generator_spec import Arg, OpInstance, nonscalar
from superopt.core.ops.common import (
    broadcast_shapes,
    ew_cost,
    on_terms,
    plain_from_onnx,
    plain_to_onnx,
)
from superopt.core.registry import (
    ASSOCIATIVE,
    COMMUTATIVE,
    ELEMENTWISE,
    IDEMPOTENT,
    OpDef,
    Z3Semantics,
)
from superopt.core.types import TensorType

UNARY = ("Relu", "Sigmoid", "Tanh", "Erf")
POINTWISE_BINARY = ("Add", "Sub", "Mul")

# ---------------------------------------------------------------------------------------------
# Z3 semantics


def _relu_z3(ctx, attrs, x):
    return [ctx.each(lambda e: ctx.ite(ctx.real(e) > 0, ctx.real(e), 0), x[0])]


def _uninterpreted(name: str):
    """A transcendental op as an uninterpreted real function, element by element."""
    def bounded(ctx, attrs, x):
        f = ctx.fn(name)
        return [ctx.each(lambda e: f(ctx.real(e)), x[0])]
    return bounded


def _div_z3(ctx, attrs, x):
    a, b = np.broadcast_arrays(ctx.to_real(x[0]), ctx.to_real(x[1]))
    return [ctx.each(lambda p: p[0] / p[1], np.frompyfunc(lambda u, w: (u, w), 2, 1)(a, b))]


def _lower_unary(A, attrs, args, ranks, op):
    return [A.unary(op, args[0])]


def _lower_binary(A, attrs, args, ranks, op):
    return [A.binary(op, args[0], args[1])]


# ---------------------------------------------------------------------------------------------
# generator instances


def _same_shape(args: list[Arg]) -> dict | None:
    return {} if args[0].shape == args[1].shape and args[0].shape != () else None


def _scalar_mul(args: list[Arg]) -> dict | None:
    return {} if args[1].shape == () and args[0].shape != () else None


_GENERATOR = {
    "Add": (OpInstance("Add", "Add", 2, _same_shape, on_weights=True, commutative=True,
                       same_shape=True, presets=("default", "matmul3d")),),
    "Sub": (OpInstance("Sub", "Sub", 2, _same_shape, on_weights=True, same_shape=True),),
    "Mul": (OpInstance("Mul", "Mul", 2, _same_shape, on_weights=True, commutative=True,
                       same_shape=True),
            OpInstance("Mul.scalar", "Mul", 2, _scalar_mul, on_weights=True,
                       ranks=((2, 4), (0,)))),
    "Relu": (OpInstance("Relu", "Relu", 1, nonscalar, ranks=((2, 4),)),
             OpInstance("Relu", "Relu", 1, nonscalar, ranks=((2, 3),), presets=("matmul3d",))),
}

# ---------------------------------------------------------------------------------------------
# axioms: commutativity, associativity, distributivity

AXIOMS = AxiomBook()
axiom = AXIOMS.axiom

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

# A per-channel (C, 1, 1) operand after the NHWC -> NCHW Transpose (ConvNeXt's layer scale
# after its channels-last MLP) acts on the last axis before it, as the (1, 1, C) transpose.
for _op in POINTWISE_BINARY:
    axiom(f"{_op}-Transpose-NCHW-channel", [_op, "Transpose"], "y c", "",
          [I({"y": (1, 2, 3, 4), "c": (4, 1, 1)}), I({"y": (2, 1, 2, 3), "c": (3, 1, 1)})])(
        lambda A, t, i, s, op=_op: (
            A.binary(op, A.transpose(t["y"], (0, 3, 1, 2)), t["c"]),
            A.transpose(A.binary(op, t["y"], A.transpose(t["c"], (1, 2, 0))), (0, 3, 1, 2)),
            A.all(A.rank(t["y"]) == 4, A.rank(t["c"]) == 3, A.dim(t["c"], 0) == A.dim(t["y"], 3),
                  A.dim(t["c"], 1) == 1, A.dim(t["c"], 2) == 1)))

# A bias vector along the last axis (MatMul + Add as exporters write a linear layer): the
# concatenation of two outputs along their last axis plus the concatenation of their biases.
# Stated per rank, like the MatMul column axioms: a trigger cannot hold `rank(a) - 1`.
for _op in POINTWISE_BINARY:
    for _r in range(2, 5):
        axiom(f"{_op}-Concat-last-vector-r{_r}", [_op, "Concat"], "a b c d", "",
              [I({"a": (2,) * (_r - 1) + (1,), "b": (2,) * (_r - 1) + (2,), "c": (1,),
                  "d": (2,)}),
               I({"a": (1,) * (_r - 1) + (3,), "b": (1,) * (_r - 1) + (1,), "c": (3,),
                  "d": (1,)})],
              triggers="both")(
            lambda A, t, i, s, op=_op, r=_r: (
                A.binary(op, A.cat(r - 1, t["a"], t["b"]), A.cat(0, t["c"], t["d"])),
                A.cat(r - 1, A.binary(op, t["a"], t["c"]), A.binary(op, t["b"], t["d"])),
                A.all(A.rank(t["a"]) == r, A.rank(t["b"]) == r, A.rank(t["c"]) == 1,
                      A.rank(t["d"]) == 1, A.dim(t["a"], r - 1) == A.dim(t["c"], 0),
                      A.dim(t["b"], r - 1) == A.dim(t["d"], 0))))

# shape axioms
for _op in POINTWISE_BINARY:
    AXIOMS.shape(f"dim-{_op}", [_op], "a b", "",
                 [I({"a": (2, 3), "b": (1, 3)}), I({"a": (2, 1), "b": (2, 3)})],
                 lambda A, t, i, op=_op: A.binary(op, t["a"], t["b"]),
                 lambda A, t, i, k: A.ite(A.dim(t["a"], k) == 1, A.dim(t["b"], k),
                                          A.dim(t["a"], k)),
                 lambda A, t, i, k: A.rank(t["a"]) == A.rank(t["b"]), ranks=lambda x: 2,
                 out_rank=lambda A, t, i: A.rank(t["a"]))
    AXIOMS.shape(f"dim-{_op}-scalar", [_op], "a s", "",
                 [I({"a": (2, 3), "s": ()}), I({"a": (3,), "s": ()})],
                 lambda A, t, i, op=_op: A.binary(op, t["a"], t["s"]),
                 lambda A, t, i, k: A.dim(t["a"], k), lambda A, t, i, k: A.rank(t["s"]) == 0,
                 ranks=lambda x: len(x.shapes["a"]), out_rank=lambda A, t, i: A.rank(t["a"]))
    # a bias vector along the last axis (a linear layer's MatMul + Add)
    AXIOMS.shape(f"dim-{_op}-last-vector", [_op], "a c", "",
                 [I({"a": (2, 3), "c": (3,)}), I({"a": (2, 1, 3), "c": (3,)})],
                 lambda A, t, i, op=_op: A.binary(op, t["a"], t["c"]),
                 lambda A, t, i, k: A.dim(t["a"], k),
                 lambda A, t, i, k: A.all(A.rank(t["c"]) == 1, A.rank(t["a"]) >= 2,
                                          A.dim(t["c"], 0) == A.dim(t["a"], A.rank(t["a"]) - 1)),
                 ranks=lambda x: len(x.shapes["a"]), out_rank=lambda A, t, i: A.rank(t["a"]))
for _op in UNARY:
    AXIOMS.shape(f"dim-{_op}", [_op], "x", "", [I({"x": (2, 3)})],
                 lambda A, t, i, op=_op: A.unary(op, t["x"]),
                 lambda A, t, i, k: A.dim(t["x"], k),
                 ranks=lambda x: len(x.shapes["x"]), out_rank=lambda A, t, i: A.rank(t["x"]))
for _op in POINTWISE_BINARY:
    AXIOMS.rank(f"rank-{_op}", [_op], "a b", "", [I({"a": (2, 3), "b": (3,)})],
                lambda A, t, i, op=_op: A.binary(op, t["a"], t["b"]),
                lambda A, t, i: A.ite(A.rank(t["a"]) >= A.rank(t["b"]), A.rank(t["a"]),
                                      A.rank(t["b"])))
for _op in UNARY:
    AXIOMS.rank(f"rank-{_op}", [_op], "x", "", [I({"x": (2, 3, 1, 1)})],
                lambda A, t, i, op=_op: A.unary(op, t["x"]), lambda A, t, i: A.rank(t["x"]))

# ---------------------------------------------------------------------------------------------
# the ops


def _unary(name: str, fn, bounded=None, props: frozenset[str] = frozenset(), doc: str = "",
           lower=_lower_unary) -> OpDef:
    def compute(a, x):
        return [np.asarray(fn(x[0])).astype(x[0].dtype, copy=False)]

    return OpDef(
        name=name, onnx_type=name, arity=(1, 1), infer=lambda a, t: [t[0]], compute=compute,
        props=frozenset({ELEMENTWISE}) | props,
        from_onnx=plain_from_onnx(), to_onnx=plain_to_onnx(name), cost=ew_cost, doc=doc,
        z3=Z3Semantics(bounded or on_terms(compute), lower), axioms=AXIOMS.of(name),
        generator=_GENERATOR.get(name, ()))


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _binary(name: str, fn, props: frozenset[str], doc: str, bounded=None) -> OpDef:
    def infer(a, t):
        return [TensorType(t[0].elem_type, broadcast_shapes(t[0].shape, t[1].shape))]

    def compute(a, x):
        return [np.asarray(fn(x[0], x[1])).astype(np.result_type(x[0], x[1]), copy=False)]

    return OpDef(
        name=name, onnx_type=name, arity=(2, 2), infer=infer, compute=compute,
        props=frozenset({ELEMENTWISE}) | props,
        from_onnx=plain_from_onnx(), to_onnx=plain_to_onnx(name), cost=ew_cost, doc=doc,
        z3=Z3Semantics(bounded or on_terms(compute), _lower_binary), axioms=AXIOMS.of(name),
        generator=_GENERATOR.get(name, ()))


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(a / b).astype(np.result_type(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


# Binary ops first: the catalog's order is the generator's instance order.
OPS = (
    _binary("Add", np.add, frozenset({COMMUTATIVE, ASSOCIATIVE}), "a + b, broadcasting"),
    _binary("Sub", np.subtract, frozenset(), "a - b, broadcasting"),
    _binary("Mul", np.multiply, frozenset({COMMUTATIVE, ASSOCIATIVE}), "a * b, broadcasting"),
    _binary("Div", _safe_div, frozenset(), "a / b, broadcasting", bounded=_div_z3),
    _unary("Relu", lambda x: np.maximum(x, 0), _relu_z3, frozenset({IDEMPOTENT}), "max(x, 0)"),
    _unary("Sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)), _uninterpreted("Sigmoid"),
           doc="1 / (1 + exp(-x))"),
    _unary("Tanh", np.tanh, _uninterpreted("Tanh"), doc="tanh(x)"),
    _unary("Erf", _erf, _uninterpreted("Erf"), doc="the error function (GELU's building block)"),
    _unary("Identity", lambda x: x, doc="x", lower=lambda A, attrs, args, ranks, op: [args[0]]),
)
AXIOMS.done()
