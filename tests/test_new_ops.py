"""The ops exports write (issue #14 item 2): Clip, HardSigmoid, HardSwish, Gelu, Neg, Reciprocal,
Sqrt, Pow (families `activation`), ReduceMean (`reduce`), Squeeze, Unsqueeze, Expand, Slice
(`shape`), beyond what ONNX's node tests cover (tests/test_registry_backend.py):

- one-node models at opsets 13-21 (and older ones the loader upgrades), float32 / float16 /
  float64 / integer inputs: import models the node, `to_onnx(load(m))` runs in ORT bit for bit
  like `m`, and the numpy semantics agree with ORT;
- the ONNX form export writes at each opset (attribute -> input changes);
- symbolic dims; parameters only known at run time keep the node opaque;
- the Z3 encodings are exact where they claim to be, and every op lowers into the axiom algebra;
- the catalog only grew at its end and the new ops apply no generator instances;
- the real models that motivated them load with these ops modeled and round-trip exactly.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import z3
from conftest import assert_identical, run_ort
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.ir import Graph, Node, Value, opaque_op_type
from superopt.core.ops import FAMILIES, activation, all_ops, get_op, reduce, shape
from superopt.core.types import TensorType

NEW_OPS = ("Clip", "HardSigmoid", "HardSwish", "Gelu", "Neg", "Reciprocal", "Sqrt", "Pow",
           "ReduceMean", "Squeeze", "Unsqueeze", "Expand", "Slice")
I64_MAX = np.iinfo(np.int64).max
SEED = 0


def one_node(op: str, x_shape, dtype=np.float32, params=(), attrs=None, opset: int = 17,
             runtime: bool = False, x_dims=None) -> onnx.ModelProto:
    """y = op(x, *params): params are arrays (initializers, or graph inputs if `runtime`) or
    None (an omitted optional input). `x_dims` overrides x's declared dims (symbols)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [helper.make_tensor_value_info("x", elem, x_dims or list(x_shape))]
    inits, names = [], ["x"]
    for i, p in enumerate(params):
        if p is None:
            names.append("")
            continue
        name = f"p{i}"
        names.append(name)
        if runtime:
            inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(p.dtype), list(p.shape)))
        else:
            inits.append(numpy_helper.from_array(p, name))
    node = helper.make_node(op, names, ["y"], name="n", **(attrs or {}))
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", elem, None)],
                              inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=max(7, helper.find_min_ir_version_for(opsets)))
    # The output's type as ONNX infers it (the checker wants a shape on graph outputs).
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


def feeds_for(model: onnx.ModelProto, x_shape, params=()) -> dict:
    rng = np.random.default_rng(SEED)
    x_type = model.graph.input[0].type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(x_type)
    if dtype.kind in "iu":
        x = rng.integers(-20, 20, x_shape).astype(dtype)
    else:
        x = (rng.standard_normal(x_shape) * 3).astype(dtype)
    feeds = {"x": x}
    for vi, p in zip(model.graph.input[1:], [p for p in params if p is not None]):
        feeds[vi.name] = p
    return feeds


def tolerance(dtype) -> dict:
    return {"rtol": 2e-3, "atol": 2e-3} if np.dtype(dtype) == np.float16 else \
        {"rtol": 1e-5, "atol": 1e-6}


def round_trip(model: onnx.ModelProto, feeds: dict, op: str | None) -> superopt.Graph:
    """Import (the one node modeled as `op`, or opaque when op is None), export, and compare in
    ORT bit for bit; the numpy semantics and the inferred shape agree with ORT's output."""
    graph = superopt.load(model)
    (node,) = graph.nodes
    exported = superopt.to_onnx(graph)
    if graph.output_values[0].shape is not None:  # the checker wants output shapes
        onnx.checker.check_model(exported)
    want = run_ort(model, feeds)
    assert_identical(run_ort(exported, feeds), want)
    if op is None:
        assert node.is_opaque
        return graph
    assert node.op == op and not node.is_opaque
    arrays = [v.array if v.is_const else feeds[v.name] for v in node.inputs]
    (got,) = get_op(op).compute(node.attr_dict, arrays)
    assert got.dtype == want[0].dtype and got.shape == want[0].shape
    assert node.outputs[0].type.shape == want[0].shape
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got.astype(np.float64), want[0].astype(np.float64),
                                   **tolerance(got.dtype))
    else:
        np.testing.assert_array_equal(got, want[0])
    return graph


f32, f16, f64 = np.float32, np.float16, np.float64


def s(v, dtype=f32):
    return np.array(v, dtype)


def ints(*v):
    return np.array(v, np.int64)


# (id, op, x shape, x dtype, params, attrs, opset)
MODELED = [
    ("clip-both", "Clip", (3, 4), f32, (s(-1), s(2)), {}, 13),
    ("clip-min", "Clip", (3, 4), f32, (s(0),), {}, 13),
    ("clip-max", "Clip", (3, 4), f32, (None, s(6)), {}, 21),
    ("clip-none", "Clip", (3, 4), f32, (), {}, 13),
    ("clip-min-gt-max", "Clip", (5,), f32, (s(2), s(1)), {}, 13),
    ("clip-f16", "Clip", (2, 3), f16, (s(0, f16), s(6, f16)), {}, 17),
    ("clip-f64", "Clip", (2, 3), f64, (s(-0.5, f64), s(0.25, f64)), {}, 13),
    ("clip-int8", "Clip", (4, 3), np.int8, (s(-3, np.int8), s(5, np.int8)), {}, 13),
    ("clip-opset11", "Clip", (3, 4), f32, (s(0), s(6)), {}, 11),
    ("clip-opset6-attrs", "Clip", (3, 4), f32, (), {"min": 0.0, "max": 6.0}, 6),
    ("hardsigmoid", "HardSigmoid", (3, 4), f32, (), {"alpha": 0.3, "beta": 0.4}, 13),
    ("hardsigmoid-default-22", "HardSigmoid", (3, 4), f32, (), {}, 21),
    ("hardsigmoid-f16", "HardSigmoid", (3, 4), f16, (), {}, 17),
    ("hardswish", "HardSwish", (3, 4), f32, (), {}, 14),
    ("hardswish-f16", "HardSwish", (3, 4), f16, (), {}, 21),
    ("gelu", "Gelu", (3, 4), f32, (), {}, 20),
    ("gelu-tanh", "Gelu", (3, 4), f32, (), {"approximate": "tanh"}, 20),
    ("gelu-f16", "Gelu", (3, 4), f16, (), {}, 21),
    ("neg", "Neg", (3, 4), f32, (), {}, 13),
    ("neg-int32", "Neg", (3, 4), np.int32, (), {}, 17),
    ("neg-f16", "Neg", (3, 4), f16, (), {}, 21),
    ("reciprocal", "Reciprocal", (3, 4), f32, (), {}, 13),
    ("reciprocal-f64", "Reciprocal", (3, 4), f64, (), {}, 17),
    ("reciprocal-f16", "Reciprocal", (3, 4), f16, (), {}, 21),
    ("sqrt", "Sqrt", (3, 4), f32, (), {}, 13),
    ("sqrt-f16", "Sqrt", (3, 4), f16, (), {}, 21),
    ("pow-2", "Pow", (3, 4), f32, (s(2.0),), {}, 20),
    ("pow-half", "Pow", (3, 4), f32, (s(0.5),), {}, 13),
    ("pow-3", "Pow", (3, 4), f32, (s(3.0),), {}, 15),
    ("pow-minus-1", "Pow", (3, 4), f32, (s(-1.0),), {}, 17),
    ("pow-1.7", "Pow", (3, 4), f32, (s(1.7),), {}, 21),
    ("pow-int-exponent", "Pow", (3, 4), f32, (ints(2),), {}, 17),
    ("pow-rank1-exponent", "Pow", (3, 4), f32, (s([2.0]),), {}, 17),
    ("pow-f16", "Pow", (3, 4), f16, (s(2.0, f16),), {}, 17),
    ("pow-f16-f32-exponent", "Pow", (3, 4), f16, (s(2.0),), {}, 17),
    ("pow-int64", "Pow", (3, 4), np.int64, (ints(3),), {}, 17),
    ("reducemean-13-attr", "ReduceMean", (2, 3, 4), f32, (), {"axes": [1], "keepdims": 0}, 13),
    ("reducemean-17-neg", "ReduceMean", (2, 3, 4), f32, (), {"axes": [-1]}, 17),
    ("reducemean-17-all", "ReduceMean", (2, 3, 4), f32, (), {}, 17),
    ("reducemean-18-input", "ReduceMean", (2, 3, 4), f32, (ints(-1),), {"keepdims": 1}, 18),
    ("reducemean-18-hw", "ReduceMean", (1, 3, 4, 5), f32, (ints(2, 3),), {"keepdims": 0}, 18),
    ("reducemean-18-all", "ReduceMean", (2, 3, 4), f32, (), {}, 18),
    ("reducemean-18-empty", "ReduceMean", (2, 3, 4), f32, (ints(),), {}, 18),
    ("reducemean-18-noop", "ReduceMean", (2, 3, 4), f32, (), {"noop_with_empty_axes": 1}, 18),
    ("reducemean-f16", "ReduceMean", (2, 3, 4), f16, (ints(1),), {}, 21),
    ("squeeze-13", "Squeeze", (1, 3, 1, 4), f32, (ints(0, -2),), {}, 13),
    ("squeeze-all", "Squeeze", (1, 3, 1, 4), f32, (), {}, 21),
    ("squeeze-none-of-size-1", "Squeeze", (2, 3), f32, (), {}, 17),
    ("squeeze-11-attr", "Squeeze", (1, 3, 1, 4), f32, (), {"axes": [2]}, 11),
    ("unsqueeze-13", "Unsqueeze", (3, 4), f32, (ints(0, -1),), {}, 13),
    ("unsqueeze-21", "Unsqueeze", (3, 4), f16, (ints(1),), {}, 21),
    ("unsqueeze-int64", "Unsqueeze", (), np.int64, (ints(0),), {}, 17),
    ("unsqueeze-11-attr", "Unsqueeze", (3, 4), f32, (), {"axes": [1, 3]}, 11),
    ("expand", "Expand", (3, 1), f32, (ints(2, 3, 4),), {}, 13),
    ("expand-both-ways", "Expand", (3, 1), f32, (ints(1, 5),), {}, 17),
    ("expand-f16", "Expand", (1, 2, 1, 4), f16, (ints(2, 2, 3, 4),), {}, 21),
    ("slice", "Slice", (6, 5, 4), f32, (ints(1, 0), ints(4, -1), ints(0, 2), ints(1, 1)), {},
     13),
    ("slice-to-end", "Slice", (6, 5, 4), f32, (ints(2), ints(I64_MAX), ints(-1), ints(1)), {},
     20),
    ("slice-neg-steps", "Slice", (6, 5, 4), f32,
     (ints(-1, 4), ints(-I64_MAX - 1, 0), ints(0, 1), ints(-2, -3)), {}, 17),
    ("slice-default-axes", "Slice", (6, 5), f32, (ints(1, 1), ints(3, 100)), {}, 13),
    ("slice-oob-start", "Slice", (6, 5), f32, (ints(10), ints(20), ints(0)), {}, 21),
    ("slice-f16", "Slice", (6, 5), f16, (ints(0), ints(3), ints(1), ints(2)), {}, 21),
    ("slice-9-attrs", "Slice", (6, 5), f32, (), {"starts": [1], "ends": [4], "axes": [1]}, 9),
]


@pytest.mark.parametrize("name,op,shape,dtype,params,attrs,opset", MODELED,
                         ids=[c[0] for c in MODELED])
def test_modeled_round_trip_is_bit_identical(name, op, shape, dtype, params, attrs, opset):
    model = one_node(op, shape, dtype, params, attrs, opset)
    round_trip(model, feeds_for(model, shape), op)


# (id, op, x shape, params, runtime params?)
OPAQUE = [
    ("clip-runtime-bound", "Clip", (3, 4), (s(0), s(6)), True),
    ("pow-runtime-exponent", "Pow", (3, 4), (s(2.0),), True),
    ("pow-tensor-exponent", "Pow", (3, 4), (s([1.0, 2.0, 3.0, 0.5]),), False),
    ("pow-exponent-raises-rank", "Pow", (4,), (s([[2.0]]),), False),
    ("reducemean-runtime-axes", "ReduceMean", (2, 3), (ints(1),), True),
    ("unsqueeze-runtime-axes", "Unsqueeze", (2, 3), (ints(1),), True),
    ("squeeze-runtime-axes", "Squeeze", (1, 3), (ints(0),), True),
    ("expand-runtime-shape", "Expand", (3, 1), (ints(2, 3, 4),), True),
    ("slice-runtime-starts", "Slice", (6, 5), (ints(1), ints(3)), True),
]


@pytest.mark.parametrize("name,op,shape,params,runtime", OPAQUE, ids=[c[0] for c in OPAQUE])
def test_runtime_or_unsupported_parameters_stay_opaque(name, op, shape, params, runtime):
    model = one_node(op, shape, f32, params, opset=18, runtime=runtime)
    graph = round_trip(model, feeds_for(model, shape, params), None)
    assert opaque_op_type(graph.nodes[0]) == op


def test_squeeze_without_axes_of_a_symbolic_dim_stays_opaque():
    model = one_node("Squeeze", (1, 3), x_dims=["n", 3], opset=13)
    assert superopt.load(model).nodes[0].is_opaque


def test_gelu_below_opset_20_is_not_the_onnx_op():
    model = one_node("Gelu", (3,), opset=17)
    model.graph.node[0].domain = "com.example"  # any pre-20 Gelu is some custom op
    assert superopt.load(model).nodes[0].is_opaque


# ---------------------------------------------------------------------------------------------
# the form export writes at each opset


def _written(op: str, attrs: dict, opset: int):
    od = get_op(op)
    return od.to_onnx(od.canonical_attrs(attrs), ["x"], ["y"], "n", opset)


@pytest.mark.parametrize("op,attrs,switch", [
    ("Squeeze", {"axes": (0,)}, 13), ("Unsqueeze", {"axes": (0,)}, 13),
    ("ReduceMean", {"axes": (1,)}, 18),
])
def test_axes_are_an_attribute_before_the_opset_that_made_them_an_input(op, attrs, switch):
    (node,), inits = _written(op, attrs, switch - 1)
    assert list(node.input) == ["x"] and [a.name for a in node.attribute][:1] == ["axes"] \
        and not inits
    (node,), (axes,) = _written(op, attrs, switch)
    assert list(node.input) == ["x", axes.name] and "axes" not in {a.name for a in
                                                                     node.attribute}
    assert numpy_helper.to_array(axes).tolist() == list(attrs["axes"])


def test_clip_bounds_are_attributes_before_opset_11_and_typed_inputs_after():
    attrs = {"min": 0.0, "max": 6.0, "dtype": "float16"}
    (node,), inits = _written("Clip", attrs, 10)
    assert not inits and {a.name: a.f for a in node.attribute} == {"min": 0.0, "max": 6.0}
    (node,), inits = _written("Clip", attrs, 13)
    assert [numpy_helper.to_array(t).dtype for t in inits] == [np.float16, np.float16]
    (node,), inits = _written("Clip", {"max": 6.0}, 13)
    assert list(node.input)[:2] == ["x", ""] and len(inits) == 1


def test_slice_parameters_are_attributes_before_opset_10():
    attrs = {"starts": (1,), "ends": (4,), "axes": (1,), "steps": (1,)}
    (node,), inits = _written("Slice", attrs, 9)
    assert not inits and sorted(a.name for a in node.attribute) == ["axes", "ends", "starts"]
    (node,), inits = _written("Slice", attrs, 10)
    assert len(node.input) == 5 and len(inits) == 4
    with pytest.raises(ValueError, match="steps"):
        _written("Slice", {**attrs, "steps": (2,)}, 9)


def test_pow_writes_its_exponent_with_its_own_type():
    (node,), (e,) = _written("Pow", {"exponent": 2, "exponent_dtype": "int64"}, 17)
    assert numpy_helper.to_array(e).dtype == np.int64 and numpy_helper.to_array(e).shape == ()


def _run_nodes(nodes, inits, opset, x):
    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, x.shape)],
                          [helper.make_tensor_value_info("y", elem, None)], inits)
    opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=opsets,
                          ir_version=max(7, helper.find_min_ir_version_for(opsets)))
    m.graph.output[0].CopyFrom(onnx.shape_inference.infer_shapes(m).graph.output[0])
    onnx.checker.check_model(m)
    return run_ort(m, {"x": x})[0]


@pytest.mark.parametrize("op,attrs,old,new", [
    ("Squeeze", {"axes": (0, 2)}, 12, 13), ("Unsqueeze", {"axes": (1,)}, 12, 21),
    ("ReduceMean", {"axes": (2,), "keepdims": 0}, 17, 18),
    ("Clip", {"min": -1.0, "max": 0.5}, 10, 13),
    ("Slice", {"starts": (1,), "ends": (4,), "axes": (1,), "steps": (1,)}, 9, 21),
    ("HardSwish", {}, 13, 14),
])
def test_old_and_new_forms_compute_the_same(op, attrs, old, new):
    x = (np.random.default_rng(SEED).standard_normal((1, 5, 1)) * 3).astype(np.float32)
    y_old = _run_nodes(*_written(op, attrs, old), old, x)
    y_new = _run_nodes(*_written(op, attrs, new), new, x)
    if op == "HardSwish":  # HardSigmoid then Mul before opset 14: rounding may differ
        np.testing.assert_allclose(y_old, y_new, rtol=1e-6, atol=1e-7)
        assert [n.op_type for n in _written(op, attrs, old)[0]] == ["HardSigmoid", "Mul"]
    else:
        assert_identical([y_old], [y_new])


def test_gelu_is_not_written_below_opset_20():
    with pytest.raises(ValueError, match="opset 20"):
        _written("Gelu", {}, 19)
    (node,), _ = _written("Gelu", {"approximate": "tanh"}, 20)
    assert helper.get_attribute_value(node.attribute[0]) == b"tanh"


# ---------------------------------------------------------------------------------------------
# symbolic dims


def test_symbolic_dims_flow_through_the_new_ops():
    x = Value.input("x", TensorType(TensorProto.FLOAT, ("batch", "seq", 8)))

    def out(op, attrs, v=x):
        return Node.make(op, get_op(op).canonical_attrs(attrs), [v]).outputs[0]

    u = out("Unsqueeze", {"axes": (1,)})
    assert u.shape == ("batch", 1, "seq", 8)
    assert out("Squeeze", {"axes": (1,)}, u).shape == ("batch", "seq", 8)
    assert out("ReduceMean", {"axes": (2,)}).shape == ("batch", "seq", 1)
    assert out("ReduceMean", {"axes": (1, 2), "keepdims": 0}).shape == ("batch",)
    assert out("Expand", {"shape": (1, 1, 1, 8)}, u).shape == ("batch", 1, "seq", 8)
    assert out("Expand", {"shape": (1, 1, 5, 8)}, u).shape == ("batch", 1, 5, 8)
    assert out("Expand", {"shape": (3, 1, 1)}).shape == (3, "seq", 8)
    full = {"starts": (0,), "ends": (I64_MAX,), "axes": (1,), "steps": (1,)}
    assert out("Slice", full).shape == ("batch", "seq", 8)
    part = out("Slice", {**full, "starts": (1,)}).shape
    assert part[0] == "batch" and isinstance(part[1], str) and part[1] != "seq"
    assert out("Slice", {**full, "starts": (2,), "ends": (6,), "axes": (2,)}).shape == \
        ("batch", "seq", 4)
    for op in ("Clip", "HardSigmoid", "HardSwish", "Gelu", "Neg", "Reciprocal", "Sqrt", "Pow"):
        assert out(op, {}).type == x.type


def test_a_symbolic_model_imports_modeled_and_runs_like_the_original():
    """llama-style: Unsqueeze -> Expand -> Slice -> ReduceMean with dynamic batch and seq."""
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax1"], ["u"], name="u"),
        helper.make_node("Expand", ["u", "shape"], ["e"], name="e"),
        helper.make_node("Slice", ["e", "st", "en", "ax3", "one"], ["sl"], name="sl"),
        helper.make_node("Pow", ["sl", "two"], ["p"], name="p"),
        helper.make_node("ReduceMean", ["p", "axm1"], ["m"], name="m"),
        helper.make_node("Sqrt", ["m"], ["r"], name="r"),
        helper.make_node("Reciprocal", ["r"], ["y"], name="y"),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in (
        ("ax1", ints(1)), ("shape", ints(1, 2, 1, 1)), ("st", ints(1)), ("en", ints(I64_MAX)),
        ("ax3", ints(3)), ("one", ints(1)), ("two", s(2.0)), ("axm1", ints(-1)))]
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, ["batch", "seq", 8])],
                          [vi("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    graph = superopt.load(model)
    assert not any(n.is_opaque for n in graph.nodes)
    assert graph.output_values[0].shape[0] == "batch"
    exported = superopt.to_onnx(graph)
    for shape_ in ((1, 3, 8), (2, 5, 8)):
        feeds = {"x": np.random.default_rng(SEED).standard_normal(shape_).astype(np.float32)}
        assert_identical(run_ort(exported, feeds), run_ort(model, feeds))


# ---------------------------------------------------------------------------------------------
# numpy semantics keep every float dtype


@pytest.mark.parametrize("op,attrs", [
    ("Clip", {"min": 0.0, "max": 6.0}), ("HardSigmoid", {}), ("HardSwish", {}), ("Gelu", {}),
    ("Gelu", {"approximate": "tanh"}), ("Neg", {}), ("Reciprocal", {}), ("Sqrt", {}),
    ("Pow", {"exponent": 2.0}), ("Pow", {"exponent": 0.5}), ("ReduceMean", {"axes": (1,)}),
    ("Squeeze", {"axes": (0,)}), ("Unsqueeze", {"axes": (0,)}), ("Expand", {"shape": (2, 1, 1)}),
    ("Slice", {"starts": (1,), "ends": (3,), "axes": (1,), "steps": (1,)}),
])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_semantics_keep_the_dtype(op, attrs, dtype):
    x64 = np.abs(np.random.default_rng(SEED).standard_normal((1, 4, 3))) + 0.1
    od = get_op(op)
    a = od.canonical_attrs(attrs)
    (got,) = od.compute(a, [x64.astype(dtype)])
    (ref,) = od.compute(a, [x64])
    assert got.dtype == dtype and got.shape == ref.shape
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=3e-3 if dtype == f16 else 1e-6)


# ---------------------------------------------------------------------------------------------
# Z3


def _terms(values) -> np.ndarray:
    return np.array([z3.RealVal(str(v)) for v in values], dtype=object)


def _value(e) -> float:
    v = z3.simplify(e)
    return float(v.as_fraction()) if z3.is_rational_value(v) else float(v.as_decimal(20)
                                                                           .rstrip("?"))


EXACT = [
    ("Clip", {"min": -1.0, "max": 2.0}), ("Clip", {"max": 0.5}), ("Clip", {"min": 3.0, "max": 1.0}),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.5}), ("HardSwish", {}), ("Neg", {}),
    ("Reciprocal", {}), ("Pow", {"exponent": 2.0}), ("Pow", {"exponent": 3}),
    ("Pow", {"exponent": -2.0}), ("Pow", {"exponent": 0.0}),
    ("ReduceMean", {"axes": (0,), "keepdims": 0}),
    ("Unsqueeze", {"axes": (0,)}), ("Expand", {"shape": (2, 1)}),
    ("Slice", {"starts": (-1,), "ends": (-I64_MAX,), "axes": (0,), "steps": (-2,)}),
]


@pytest.mark.parametrize("op,attrs", EXACT, ids=[f"{o}{a}" for o, a in EXACT])
def test_exact_encodings_agree_with_numpy(op, attrs):
    from superopt.verifier.semantics import BoundedContext, bounded_apply

    values = [-3.5, -1.25, -0.5, 0.75, 1.5, 4.0]
    (enc,) = bounded_apply(BoundedContext(), op, attrs, [_terms(values)])
    (ref,) = get_op(op).compute(get_op(op).canonical_attrs(attrs), [np.array(values)])
    assert enc.shape == ref.shape
    np.testing.assert_allclose([_value(e) for e in enc.reshape(-1)], ref.reshape(-1),
                               rtol=1e-12)


def _prove(lhs_ops, rhs_ops, shape=(2, 3), facts=()):
    """Whether rhs == lhs for every real input x (each side a list of (op, attrs) applied in
    order) under the encodings' side constraints: "proved" or "refuted"."""
    from superopt.verifier.semantics import BoundedContext, bounded_apply

    ctx = BoundedContext()
    x = ctx.tensor("x", shape)
    sides = []
    for chain in (lhs_ops, rhs_ops):
        v = x
        for op, attrs in chain:
            (v,) = bounded_apply(ctx, op, attrs, [v])
        sides.append(v)
    solver = z3.Solver()
    solver.add(*ctx.constraints, *[f(e) for f in facts for e in x.reshape(-1)])
    solver.add(z3.Or(*[a != b for a, b in zip(sides[0].reshape(-1), sides[1].reshape(-1))]))
    return "refuted" if solver.check() == z3.sat else "proved"


def test_the_encodings_prove_true_identities_and_refute_false_ones():
    relu6 = ("Clip", {"min": 0.0, "max": 6.0})
    assert _prove([("Relu", {}), relu6], [relu6]) == "proved"
    assert _prove([("Relu", {}), ("Clip", {"min": -1.0, "max": 6.0})],
                  [("Clip", {"min": -1.0, "max": 6.0})]) == "refuted"
    assert _prove([relu6, relu6], [relu6]) == "proved"
    assert _prove([("Neg", {}), ("Neg", {})], []) == "proved"
    assert _prove([("Neg", {})], []) == "refuted"
    assert _prove([("Reciprocal", {}), ("Reciprocal", {})], [],
                  facts=[lambda e: e != 0]) == "proved"
    assert _prove([("Pow", {"exponent": 2.0}), ("Sqrt", {})],
                  [("Relu", {}), ("Pow", {"exponent": 1.0})],
                  facts=[lambda e: e >= 0]) == "proved"
    assert _prove([("Pow", {"exponent": 0.5})], [("Sqrt", {})],
                  facts=[lambda e: e >= 0]) == "proved"
    # HardSwish is x * HardSigmoid(x; 1/6, 1/2): with ONNX's float alpha it is not exactly.
    assert _prove([("HardSwish", {})], [("Relu", {})], shape=(1,),
                  facts=[lambda e: e >= 3]) == "proved"
    assert _prove([("HardSwish", {})], [("Relu", {})], shape=(1,)) == "refuted"
    assert _prove([("ReduceMean", {"axes": (1,)}), ("Squeeze", {"axes": (1,)})],
                  [("ReduceMean", {"axes": (1,), "keepdims": 0})]) == "proved"


def test_gelu_is_written_with_the_erf_ops_function():
    from superopt.verifier.semantics import BoundedContext, bounded_apply

    ctx = BoundedContext()
    x = ctx.tensor("x", (2,))
    (g,) = bounded_apply(ctx, "Gelu", {}, [x])
    (e,) = bounded_apply(ctx, "Erf", {}, [x])
    assert "Erf" in str(g[0]) and "Erf" in str(e[0])
    (t,) = bounded_apply(ctx, "Gelu", {"approximate": "tanh"}, [x])
    assert z3.is_app(t[0]) and "Erf" not in str(t[0])


@pytest.mark.parametrize("op", NEW_OPS)
def test_every_new_op_lowers_into_the_axiom_algebra(op):
    from superopt.verifier.algebra import Symbolic
    from superopt.verifier.semantics import check_rule_ops, lower

    check_rule_ops({op})
    A = Symbolic()
    (term,) = lower(A, op, {}, [A.tensor("x")], [2])
    assert term.sort() == A.T


# ---------------------------------------------------------------------------------------------
# the registry entries


def test_new_families_are_appended_and_apply_no_generator_instances():
    assert FAMILIES[-3:] == (activation, reduce, shape)
    names = [op.name for op in all_ops()]
    assert names[-len(NEW_OPS):] == [op.name for f in FAMILIES[-3:] for op in f.OPS]
    assert set(names[-len(NEW_OPS):]) == set(NEW_OPS)
    for name in NEW_OPS:
        op = get_op(name)
        assert op.generator == () and op.axioms == ()
        assert op.onnx_type == name and op.from_onnx and op.to_onnx and op.z3 and op.doc
        t = TensorType(TensorProto.FLOAT, (2, 3, 4))
        flops, moved = op.cost(op.canonical_attrs({}), [t], [t])
        assert flops >= 0 and moved >= 0


def test_conv_fuses_clip_and_hardsigmoid_like_ort():
    from superopt.cost_model.measured import fused_nodes

    x = Value.input("x", TensorType(TensorProto.FLOAT, (1, 2, 4, 4)))
    w = Value.const(np.ones((2, 2, 1, 1), np.float32), "w")
    conv = Node.make("Conv", get_op("Conv").canonical_attrs({}), [x, w], name="conv")
    for op, fused in (("Clip", True), ("HardSigmoid", True), ("HardSwish", False)):
        act = Node.make(op, get_op(op).canonical_attrs({}), [conv.outputs[0]], name="act")
        assert bool(fused_nodes(Graph([x], [("y", act.outputs[0])]))) is fused, op


# ---------------------------------------------------------------------------------------------
# the real exports that motivated the ops


def _opaque(graph) -> Counter:
    return Counter(opaque_op_type(n) for n in graph.nodes if n.is_opaque)


def test_real_exports_model_the_new_ops(shared_models):
    llama = superopt.load(shared_models / "llama_tiny_dynamo.onnx")
    assert not set(_opaque(llama)) & set(NEW_OPS), _opaque(llama)
    counts = llama.op_counts()
    for op in ("Slice", "Pow", "ReduceMean", "Sqrt", "Reciprocal", "Neg", "Unsqueeze", "Expand"):
        assert counts[op] >= 4, (op, counts)
    for name in ("mnasnet0_5.onnx", "shufflenet_v2_x0_5_bn.onnx"):
        assert not _opaque(superopt.load(shared_models / name)), name
    assert superopt.load(shared_models / "roberta_tiny_dynamo.onnx").op_counts()["Gelu"] == 2
    assert "Unsqueeze" not in _opaque(superopt.load(shared_models / "roberta_tiny.onnx"))


def test_llama_round_trips_bit_identical(shared_models):
    path = shared_models / "llama_tiny_dynamo.onnx"
    original = onnx.load(str(path))
    exported = superopt.to_onnx(superopt.load(path))
    onnx.checker.check_model(exported)
    feeds = {"input_ids": np.random.default_rng(SEED).integers(3, 100, (1, 32), dtype=np.int64)}
    assert_identical(run_ort(exported, feeds), run_ort(original, feeds))
