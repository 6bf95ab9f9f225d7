"""Tests for the model zoo: structure, validity, ORT execution and determinism."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt import zoo

NAMES = ["resnet50", "resnext50", "inception_v3", "squeezenet", "bert", "nasnet_a", "nasrnn"]

_RESNET_OPS = {
    "Conv": 53,
    "Relu": 49,
    "Add": 16,
    "MaxPool": 1,
    "GlobalAveragePool": 1,
    "Flatten": 1,
    "Gemm": 1,
}

# name -> (op counts implied by the architecture, {input: shape}, {output: shape})
EXPECTED: dict[str, tuple[dict[str, int], dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]]
EXPECTED = {
    # stem conv + 16 blocks x 3 convs + 4 projection shortcuts = 53 Conv
    "resnet50": (_RESNET_OPS, {"input": (1, 3, 224, 224)}, {"logits": (1, 1000)}),
    "resnext50": (_RESNET_OPS, {"input": (1, 3, 224, 224)}, {"logits": (1, 1000)}),
    # stem 5 + A 3x7 + B 4 + C 4x10 + D 6 + E 2x9 = 94 BasicConv2d
    "inception_v3": (
        {
            "Conv": 94,
            "Relu": 94,
            "Concat": 15,
            "AveragePool": 9,
            "MaxPool": 4,
            "GlobalAveragePool": 1,
            "Flatten": 1,
            "Gemm": 1,
        },
        {"input": (1, 3, 299, 299)},
        {"logits": (1, 1000)},
    ),
    # conv1 + 8 fire x 3 + classifier conv = 26
    "squeezenet": (
        {"Conv": 26, "Relu": 26, "Concat": 8, "MaxPool": 3, "GlobalAveragePool": 1, "Flatten": 1},
        {"input": (1, 3, 224, 224)},
        {"logits": (1, 1000)},
    ),
    # 12 layers x (8 MatMul, 9 Add, 4 Reshape, 4 Transpose, 2 Div, Softmax, Erf, 2 Mul, 2 LN)
    "bert": (
        {
            "MatMul": 96,
            "Add": 108,
            "Reshape": 48,
            "Transpose": 48,
            "Div": 24,
            "Softmax": 12,
            "Erf": 12,
            "Mul": 24,
            "LayerNormalization": 24,
        },
        {"hidden": (1, 128, 768)},
        {"last_hidden_state": (1, 128, 768)},
    ),
    # stem + 6 cells x (2 adjust convs + 5 separable ops x 4 convs) = 133 Conv
    "nasnet_a": (
        {
            "Conv": 133,
            "Relu": 73,
            "Add": 30,
            "Concat": 6,
            "AveragePool": 16,
            "MaxPool": 4,
            "GlobalAveragePool": 1,
            "Flatten": 1,
            "Gemm": 1,
        },
        {"input": (1, 3, 224, 224)},
        {"logits": (1, 1000)},
    ),
    # Split + 8 steps x (16 MatMul, 11 Add, 4 Mul, 2 Relu, 5 Sigmoid, 8 Tanh)
    "nasrnn": (
        {"Split": 1, "MatMul": 128, "Add": 88, "Mul": 32, "Relu": 16, "Sigmoid": 40, "Tanh": 64},
        {"x": (8, 1, 512)},
        {"hidden": (1, 1, 512)},
    ),
}


@pytest.fixture(scope="module")
def models() -> dict[str, onnx.ModelProto]:
    """Lazily built zoo models, each built once per test module."""

    class _Cache(dict):
        def __missing__(self, name: str) -> onnx.ModelProto:
            self[name] = zoo.build(name)
            return self[name]

    return _Cache()


def _shape(vi: onnx.ValueInfoProto) -> tuple[int, ...]:
    """Static shape of a value info."""
    return tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Map each tensor name to the nodes that read it."""
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def test_list_models() -> None:
    """Names and descriptions come in the documented order."""
    assert zoo.list_models() == NAMES
    assert list(zoo.MODELS) == NAMES
    for builder, desc in zoo.MODELS.values():
        assert callable(builder) and desc and "\n" not in desc


def test_unknown_name_raises_keyerror() -> None:
    """An unknown name raises KeyError that lists the valid names."""
    with pytest.raises(KeyError, match="resnet50") as info:
        zoo.build("resnet51")
    assert "resnet51" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_checker_full(models: dict[str, onnx.ModelProto], name: str) -> None:
    """Every model passes the full ONNX checker (with strict shape inference)."""
    onnx.checker.check_model(models[name], full_check=True)


@pytest.mark.parametrize("name", NAMES)
def test_structure(models: dict[str, onnx.ModelProto], name: str) -> None:
    """Op counts, opset/IR version, I/O shapes and unique names match the architecture."""
    model = models[name]
    ops, inputs, outputs = EXPECTED[name]
    assert Counter(n.op_type for n in model.graph.node) == Counter(ops)
    assert len(model.graph.node) == sum(ops.values())
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert {vi.name: _shape(vi) for vi in model.graph.input} == inputs
    assert {vi.name: _shape(vi) for vi in model.graph.output} == outputs
    node_names = [n.name for n in model.graph.node]
    assert all(node_names) and len(set(node_names)) == len(node_names)
    init_names = [t.name for t in model.graph.initializer]
    assert all(init_names) and len(set(init_names)) == len(init_names)
    assert all(
        t.data_type in (TensorProto.FLOAT, TensorProto.INT64) for t in model.graph.initializer
    )


@pytest.mark.parametrize("name", NAMES)
def test_ort_cpu_run(models: dict[str, onnx.ModelProto], name: str) -> None:
    """Each model runs on ORT CPU; its output has the right shape, finite, not constant."""
    model = models[name]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = zoo.input_feeds(model)
    (out,) = sess.run(None, feeds)
    _, _, outputs = EXPECTED[name]
    assert out.shape == next(iter(outputs.values()))
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert float(out.std()) > 1e-3
    assert len(np.unique(out)) > out.size // 2


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(models: dict[str, onnx.ModelProto], name: str) -> None:
    """Building twice with the same seed gives identical bytes."""
    assert zoo.build(name, seed=0).SerializeToString() == models[name].SerializeToString()


def test_seed_changes_weights() -> None:
    """A different seed changes the weights but not the graph."""
    a = zoo.build("squeezenet", seed=0)
    b = zoo.build("squeezenet", seed=1)
    wa = numpy_helper.to_array(a.graph.initializer[0])
    wb = numpy_helper.to_array(b.graph.initializer[0])
    assert wa.shape == wb.shape and not np.array_equal(wa, wb)
    assert [n.name for n in a.graph.node] == [n.name for n in b.graph.node]


def test_resnext_grouped_convs(models: dict[str, onnx.ModelProto]) -> None:
    """ResNeXt has one group=32 3x3 conv per block (16)."""
    groups = Counter(
        next(a.i for a in n.attribute if a.name == "group")
        for n in models["resnext50"].graph.node
        if n.op_type == "Conv"
    )
    assert groups == Counter({32: 16, 1: 37})


def test_squeezenet_fire_shares_squeeze(models: dict[str, onnx.ModelProto]) -> None:
    """Both expand convs of every Fire module read the squeeze output."""
    cons = _consumers(models["squeezenet"])
    for i in range(2, 10):
        users = cons[f"fire{i}.squeeze.relu"]
        assert sorted(n.name for n in users) == [f"fire{i}.expand1x1", f"fire{i}.expand3x3"]


def test_bert_qkv_share_input(models: dict[str, onnx.ModelProto]) -> None:
    """Each BERT layer has three 768x768 MatMuls on the same input."""
    model = models["bert"]
    cons = _consumers(model)
    inits = {t.name: t for t in model.graph.initializer}
    for i in range(12):
        q = next(
            n for n in model.graph.node if n.name == f"encoder.layer.{i}.attention.query.matmul"
        )
        mms = [n for n in cons[q.input[0]] if n.op_type == "MatMul"]
        assert len(mms) == 3
        assert all(tuple(inits[n.input[1]].dims) == (768, 768) for n in mms)
    scale = numpy_helper.to_array(inits["const.sqrt_head_dim"])
    assert math.isclose(float(scale), 8.0)


def test_nasrnn_shared_matmul_inputs(models: dict[str, onnx.ModelProto]) -> None:
    """Each NasRNN step has 8 MatMuls on x_t and 8 on h."""
    cons = _consumers(models["nasrnn"])
    states = ["h0"] + [f"step{t}.h" for t in range(7)]
    for t in range(8):
        for shared in (f"x.{t}", states[t]):
            assert [n.op_type for n in cons[shared]].count("MatMul") == 8


def test_input_feeds_int64_ids() -> None:
    """int64 id inputs get ids in [0, vocab) read off the Gather table."""
    table = np.ones((10, 4), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["y"], name="gather")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 50])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 50, 4])],
        initializer=[numpy_helper.from_array(table, "emb")],
    )
    feeds = zoo.input_feeds(helper.make_model(graph), seed=3)
    ids = feeds["ids"]
    assert ids.dtype == np.int64 and ids.shape == (2, 50)
    assert ids.min() >= 0 and ids.max() < 10


def test_input_feeds_deterministic(models: dict[str, onnx.ModelProto]) -> None:
    """input_feeds is deterministic for a given seed."""
    a = zoo.input_feeds(models["nasrnn"], seed=0)
    b = zoo.input_feeds(models["nasrnn"], seed=0)
    assert a.keys() == {"x"} and a["x"].dtype == np.float32
    np.testing.assert_array_equal(a["x"], b["x"])
