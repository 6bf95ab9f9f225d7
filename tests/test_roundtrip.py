"""Import then export changes nothing a user can observe.

`to_onnx(load(model))` runs in ONNX Runtime (CPU, no graph optimization) with outputs identical
to the original's, keeps input/output names, opset imports, metadata and doc strings, and passes
`onnx.checker`. Unknown custom ops and control flow reading outer-scope values pass through as
opaque nodes. External data and atomic writes are checked on small models.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import assert_identical, run_ort
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt import zoo
from superopt.core.errors import OutputError
from superopt.core.onnx_io import fold_constants

ZOO = zoo.list_models()
SEED = 0
# (file, input shapes to feed): RoBERTa has dynamic batch/seq dims, so it is fed two shapes.
SHARED = [
    ("mnasnet0_5.onnx", {"input": (1, 3, 224, 224)}),
    ("shufflenet_v2_x0_5_bn.onnx", {"input": (1, 3, 224, 224)}),
    ("roberta_tiny.onnx", {"input_ids": (1, 64)}),
    ("roberta_tiny.onnx", {"input_ids": (2, 7)}),
    ("roberta_tiny_dynamo.onnx", {"input_ids": (1, 64)}),
]


def random_feeds(shapes: dict[str, tuple[int, ...]], model: onnx.ModelProto) -> dict:
    """N(0, 1) float32 for float inputs, token ids in [3, 2000) for int64 ones (seed 0)."""
    rng = np.random.default_rng(SEED)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return {
        name: (
            rng.integers(3, 2000, shape, dtype=np.int64)
            if types[name] == TensorProto.INT64
            else rng.standard_normal(shape, dtype=np.float32)
        )
        for name, shape in shapes.items()
    }


def assert_model_level_preserved(original: onnx.ModelProto, exported: onnx.ModelProto):
    assert [i.name for i in exported.graph.input] == [
        i.name
        for i in original.graph.input
        if i.name not in {t.name for t in original.graph.initializer}
    ]
    assert list(exported.graph.output) == list(original.graph.output)
    assert [(o.domain, o.version) for o in exported.opset_import] == [
        (o.domain, o.version) for o in original.opset_import
    ]
    assert [(p.key, p.value) for p in exported.metadata_props] == [
        (p.key, p.value) for p in original.metadata_props
    ]
    for field in (
        "ir_version",
        "producer_name",
        "producer_version",
        "domain",
        "model_version",
        "doc_string",
    ):
        assert getattr(exported, field) == getattr(original, field), field
    assert exported.graph.name == original.graph.name
    assert exported.graph.doc_string == original.graph.doc_string


def check_round_trip(path, original: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    graph = superopt.load(path)
    exported = superopt.to_onnx(graph)
    onnx.checker.check_model(exported)
    assert_model_level_preserved(original, exported)
    assert_identical(run_ort(exported, feeds), run_ort(original, feeds))
    return exported


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_round_trips(name, zoo_model_path):
    path = zoo_model_path(name)
    original = onnx.load(str(path))
    check_round_trip(path, original, zoo.input_feeds(original, seed=SEED))


def test_export_keeps_the_models_own_constant_nodes(zoo_model_path):
    """NasRNN's first step multiplies the constant h0 by constant weights (8 MatMuls). Those are
    the user's nodes: export keeps them (ORT folds them with its own kernels, bit for bit), so
    the round trip is exact; only constant work created by rewrites is folded with numpy."""
    graph = superopt.load(zoo_model_path("nasrnn"))
    const_only = [n for n in graph.nodes
                  if not n.is_opaque and all(v is None or v.is_const for v in n.inputs)]
    assert len(const_only) == 8
    assert len(fold_constants(graph).nodes) == len(graph.nodes)


def test_a_rewrite_on_the_models_own_computed_weight_exports_folded():
    """The model computes its kernel from constants (Mul(W/2, 2): a user's node, kept by
    export). The BN fold binds that computed kernel as its ?w, and its weight-only helpers have
    no ONNX form: export computes the kept node's value for them (the node itself stays for
    its other reader) instead of failing with "computes on runtime tensors"."""
    from superopt.core.rules import load_rules
    from superopt.search.match import apply_match, find_matches

    rng = np.random.default_rng(SEED)
    half = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) / 2,
                                   "half")
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    bn = [numpy_helper.from_array((rng.uniform(0.5, 1.5, 4)).astype(np.float32), n)
          for n in ("scale", "bias", "mean", "var")]
    nodes = [helper.make_node("Mul", ["half", "two"], ["w"], name="scale_w"),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"],
                              ["y"], name="bn"),
             helper.make_node("ReduceSum", ["w"], ["wsum"], keepdims=0, name="wsum")]
    graph = helper.make_graph(
        nodes, "computed_kernel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6]),
         helper.make_tensor_value_info("wsum", TensorProto.FLOAT, [])],
        [half, two, *bn])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    g = superopt.load(model)
    fold = next(r for r in load_rules().proved()
                if r.name == "conv-bn-fold" and find_matches(g, r))
    rewritten = apply_match(g, find_matches(g, fold)[0]).graph
    exported = superopt.to_onnx(rewritten)
    ops = [n.op_type for n in exported.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Mul") == 1  # the user's Mul stays
    feeds = {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)}
    for got, want in zip(run_ort(exported, feeds), run_ort(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "filename,shapes",
    SHARED,
    ids=[f"{f}-{'x'.join(map(str, next(iter(s.values()))))}" for f, s in SHARED],
)
def test_shared_model_round_trips(filename, shapes, shared_models):
    path = shared_models / filename
    original = onnx.load(str(path))
    check_round_trip(path, original, random_feeds(shapes, original))


def test_metadata_and_doc_strings_survive(tmp_path):
    model = _relu_chain_model()
    model.doc_string = "model doc"
    model.graph.doc_string = "graph doc"
    model.producer_name, model.producer_version = "maker", "9.9"
    model.domain, model.model_version = "com.example.models", 7
    onnx.helper.set_model_props(model, {"author": "superopt tests", "license": "Apache-2.0"})
    model.graph.node[0].doc_string = "first relu"
    path = tmp_path / "meta.onnx"
    onnx.save(model, str(path))
    exported = check_round_trip(path, model, {"x": np.ones((2, 3), np.float32)})
    assert exported.metadata_props[0].key == "author"


def _relu_chain_model(
    middle: onnx.NodeProto | None = None, opsets: tuple = (("", 17),)
) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu_in")]
    if middle is not None:
        nodes.append(middle)
    nodes.append(
        helper.make_node("Relu", [middle.output[0] if middle else "a"], ["y"], name="relu_out")
    )
    graph = helper.make_graph(
        nodes, "chain", [vi("x", TensorProto.FLOAT, [2, 3])], [vi("y", TensorProto.FLOAT, [2, 3])]
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8
    )


def test_unknown_custom_op_round_trips_byte_identical():
    custom = helper.make_node(
        "MyOp", ["a"], ["b"], name="mine", domain="com.example", alpha=0.5, mode="fast"
    )
    model = _relu_chain_model(custom, (("", 17), ("com.example", 1)))
    graph = superopt.load(model)
    ops = [n.op for n in graph.nodes]
    assert ops == ["Relu", "Opaque", "Relu"], "the Relus around the custom op stay modeled"
    assert graph.op_counts() == {"Relu": 2, "com.example::MyOp": 1}
    exported = superopt.to_onnx(graph)
    assert exported.graph.node[1].SerializeToString() == custom.SerializeToString()
    assert [n.name for n in exported.graph.node] == ["relu_in", "mine", "relu_out"]
    assert [(o.domain, o.version) for o in exported.opset_import] == [("", 17), ("com.example", 1)]
    onnx.checker.check_model(exported)


def _if_model() -> onnx.ModelProto:
    """y = If(sum(x) > 0, x * w, x - w) with both branches reading outer-scope x and w."""
    vi = helper.make_tensor_value_info
    out = vi("r", TensorProto.FLOAT, [2, 3])
    then = helper.make_graph(
        [helper.make_node("Mul", ["xr", "w"], ["r"], name="then_mul")], "then", [], [out]
    )
    other = helper.make_graph(
        [helper.make_node("Sub", ["xr", "w"], ["r"], name="else_sub")], "else", [], [out]
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["xr"], name="relu"),
        helper.make_node("ReduceSum", ["xr"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
        helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other),
    ]
    w = numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), "w")
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    graph = helper.make_graph(
        nodes,
        "with_if",
        [vi("x", TensorProto.FLOAT, [2, 3])],
        [vi("y", TensorProto.FLOAT, [2, 3])],
        [w, zero],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_reading_outer_scope_values_round_trips(sign):
    model = _if_model()
    graph = superopt.load(model)
    opaque = [n for n in graph.nodes if n.is_opaque]
    assert [n.attr("op_type") for n in opaque] == ["ReduceSum", "Greater", "If"]
    if_node = opaque[-1]
    assert if_node.attr("implicit") == ("w", "xr"), "outer-scope reads are explicit IR edges"
    exported = superopt.to_onnx(graph)
    onnx.checker.check_model(exported)
    x = sign * np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    assert_identical(run_ort(exported, {"x": x}), run_ort(model, {"x": x}))
    assert exported.graph.node[-1].SerializeToString() == model.graph.node[-1].SerializeToString()


def test_external_data_round_trips(tmp_path, zoo_model_path):
    graph = superopt.load(zoo_model_path("squeezenet"))
    path = tmp_path / "ext.onnx"
    superopt.save(graph, path, external_data=True)
    data = tmp_path / "ext.onnx.data"
    assert data.is_file() and data.stat().st_size > 4_000_000
    assert path.stat().st_size < 100_000, "weights live in the data file"
    assert sorted(os.listdir(tmp_path)) == ["ext.onnx", "ext.onnx.data"], "no temp files left"
    again = superopt.load(path)
    assert again == graph, "same structure and same constant digests"
    original = onnx.load(str(zoo_model_path("squeezenet")))
    feeds = zoo.input_feeds(original, seed=SEED)
    assert_identical(run_ort(superopt.to_onnx(again), feeds), run_ort(original, feeds))


def test_save_into_missing_folder_raises_and_leaves_nothing(tmp_path):
    graph = superopt.load(_relu_chain_model())
    target = tmp_path / "missing" / "out.onnx"
    with pytest.raises(OutputError, match="does not exist"):
        superopt.save(graph, target)
    assert not (tmp_path / "missing").exists()
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "out.onnx"
    path.write_bytes(b"old")
    superopt.save(superopt.load(_relu_chain_model()), path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]
    assert onnx.load(str(path)).graph.node[0].name == "relu_in"
