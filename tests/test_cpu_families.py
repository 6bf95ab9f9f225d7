"""The measured cost model agrees in sign with the CPU family measurements
(benchmarks/results/cpu-families.md): it predicts no gain for rewrites ONNX Runtime already
performs at ORT_ENABLE_ALL (BN and per-channel folds, transpose cancellation, no-op removal,
the attention scale folded into the query weights, duplicate computations merged) nor for the
QKV and conv merges, which measured no faster, and predicts a gain for the NasRNN MatMul merge,
which measured a win.

The one-node timer is replaced by a deterministic one, so these tests check the cost model's
logic, not this machine: one-node times recorded on the 2-core development VM (ORT 1.31, CPU
provider, after the session's fixed cost) where a test depends on them, else a 5 µs kernel cost
plus a roofline of FLOPs and bytes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt.core.costing import runtime_nodes
from superopt.core.onnx_io import load
from superopt.cost_model.analytic import AnalyticCost, Roofline
from superopt.cost_model.cache import CostCache
from superopt.cost_model.measured import MeasuredCost

RNG = np.random.default_rng(0)
ROOFLINE = AnalyticCost(Roofline(flops_per_s=50e9, bytes_per_s=10e9, overhead_s=5e-6))
#: one-node times (s) by (op, input shapes), as MeasuredCost recorded them on the dev VM
RECORDED = {
    ("MatMul", ((1, 1, 512), (512, 512))): 9.40e-6,
    ("MatMul", ((1, 1, 1024), (1024, 512))): 14.84e-6,
    ("Concat", ((1, 1, 512), (1, 1, 512))): 1.0e-6,  # the CPU kernel floor
    ("Add", ((1, 1, 512), (1, 1, 512))): 1.0e-6,
    ("Tanh", ((1, 1, 512),)): 1.0e-6,
}


@pytest.fixture
def cost():
    """A MeasuredCost whose one-node timings come from a fixed roofline, not from ORT."""
    model = MeasuredCost("cpu", cache=CostCache(":memory:"))
    timed = []

    def fake_time(node, mask):
        timed.append(node.op)
        key = (node.op, tuple(tuple(v.type.shape) for v in node.inputs if v is not None))
        return RECORDED.get(key, ROOFLINE.node_cost(node))

    model._time_one_node = fake_time
    model.timed = timed
    return model


def arr(*shape, value=None):
    return RNG.standard_normal(shape).astype(np.float32) if value is None else \
        np.full(shape, value, np.float32)


def model(nodes, inputs, inits, outputs=("y",)):
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def node(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs if isinstance(outs, list) else [outs], **attrs)


def charged_everything(cost_model, graph) -> float:
    """What a cost model that ignores ORT's fusions would charge: every running node."""
    return sum(cost_model.node_cost(n) for n in runtime_nodes(graph))


def assert_no_gain(cost_model, original, candidate):
    before, after = cost_model.graph_cost(original), cost_model.graph_cost(candidate)
    assert after >= before * (1 - 1e-9), (before, after)
    return before, after


# -- rewrites ORT already performs: no gain -------------------------------------------------


def test_bn_fold_is_not_a_gain(cost):
    w, s, b, m, v = arr(16, 8, 3, 3), arr(16), arr(16), arr(16), arr(16, value=1.5)
    original = model([node("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1]),
                      node("BatchNormalization", ["c", "s", "b", "m", "v"], "n"),
                      node("Relu", ["n"], "y")],
                     [("x", [1, 8, 28, 28])], {"W": w, "s": s, "b": b, "m": m, "v": v})
    k = s / np.sqrt(v + 1e-5)
    candidate = model([node("Conv", ["x", "W", "B"], "c", pads=[1, 1, 1, 1]),
                       node("Relu", ["c"], "y")],
                      [("x", [1, 8, 28, 28])],
                      {"W": w * k[:, None, None, None], "B": (b - m * k).astype(np.float32)})
    before, after = assert_no_gain(cost, original, candidate)
    assert before == pytest.approx(after)  # ORT runs both as one Conv (with a bias) + Relu
    assert "BatchNormalization" not in cost.timed
    assert charged_everything(cost, original) > after  # without the ORT knowledge: a "gain"


def test_per_channel_fold_is_not_a_gain(cost):
    w, b = arr(16, 8, 1, 1), arr(16)
    s, t = arr(16, 1, 1), arr(1, 16, 1, 1)
    original = model([node("Conv", ["x", "W", "b"], "c"), node("Mul", ["c", "s"], "m"),
                      node("Add", ["m", "t"], "y")],
                     [("x", [1, 8, 28, 28])], {"W": w, "b": b, "s": s, "t": t})
    candidate = model([node("Conv", ["x", "W", "b"], "y")], [("x", [1, 8, 28, 28])],
                      {"W": w * s.reshape(16, 1, 1, 1), "b": b * s.ravel() + t.ravel()})
    assert_no_gain(cost, original, candidate)
    assert charged_everything(cost, original) > cost.graph_cost(candidate)


def test_transpose_cancellation_is_not_a_gain(cost):
    w = arr(64, 64)
    original = model([node("Relu", ["x"], "r"),
                      node("Transpose", ["r"], "t1", perm=[0, 2, 1]),
                      node("Transpose", ["t1"], "t2", perm=[0, 2, 1]),
                      node("MatMul", ["t2", "W"], "y")], [("x", [1, 32, 64])], {"W": w})
    candidate = model([node("Relu", ["x"], "r"), node("MatMul", ["r", "W"], "y")],
                      [("x", [1, 32, 64])], {"W": w})
    assert_no_gain(cost, original, candidate)
    assert charged_everything(cost, original) > cost.graph_cost(candidate)


def test_noop_removal_is_not_a_gain(cost):
    w = arr(64, 64)
    original = model([node("Relu", ["x"], "r"), node("Mul", ["r", "one"], "a"),
                      node("Add", ["a", "zero"], "z"), node("MatMul", ["z", "W"], "y")],
                     [("x", [32, 64])], {"W": w, "one": arr(value=1.0), "zero": arr(value=0.0)})
    candidate = model([node("Relu", ["x"], "r"), node("MatMul", ["r", "W"], "y")],
                      [("x", [32, 64])], {"W": w})
    assert_no_gain(cost, original, candidate)
    assert charged_everything(cost, original) > cost.graph_cost(candidate)


def test_attention_scale_into_the_query_weights_is_not_a_gain(cost):
    wq, wk = arr(64, 64), arr(64, 64)
    common = [node("MatMul", ["x", "Wk"], "k"), node("Transpose", ["k"], "kt", perm=[0, 2, 1])]
    original = model([node("MatMul", ["x", "Wq"], "q"), *common,
                      node("MatMul", ["q", "kt"], "s"), node("Div", ["s", "d"], "y")],
                     [("x", [1, 32, 64])], {"Wq": wq, "Wk": wk, "d": arr(value=8.0)})
    candidate = model([node("MatMul", ["x", "Wq"], "q"), *common,
                       node("MatMul", ["q", "kt"], "y")],
                      [("x", [1, 32, 64])], {"Wq": wq / 8, "Wk": wk})
    assert_no_gain(cost, original, candidate)
    assert charged_everything(cost, original) > cost.graph_cost(candidate)


def test_qkv_merge_at_bert_sizes_is_not_a_gain(cost):
    """BERT-base's Q/K/V projections (128 x 768 by 768 x 768, with biases): merged into one
    MatMul + Add and a Split, it measured no faster on the CPU."""
    ws = {f"W{i}": arr(768, 768) for i in "qkv"}
    bs = {f"b{i}": arr(768) for i in "qkv"}
    original = model([n for i in "qkv" for n in (node("MatMul", ["x", f"W{i}"], f"m{i}"),
                                                 node("Add", [f"m{i}", f"b{i}"], i))],
                     [("x", [1, 128, 768])], {**ws, **bs}, outputs=("q", "k", "v"))
    candidate = model([node("MatMul", ["x", "W"], "m"), node("Add", ["m", "b"], "a"),
                       node("Split", ["a", "sizes"], ["q", "k", "v"], axis=-1)],
                      [("x", [1, 128, 768])],
                      {"W": np.concatenate(list(ws.values()), axis=1),
                       "b": np.concatenate(list(bs.values())),
                       "sizes": np.array([768] * 3, np.int64)}, outputs=("q", "k", "v"))
    assert_no_gain(cost, original, candidate)


def test_duplicate_merge_is_not_a_gain(cost):
    """Two equal Relus and pools of one tensor computed once: ORT's common-subexpression
    elimination already does it."""
    pool = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    w = arr(16, 16, 1, 1)
    original = model([node("Conv", ["x", "W"], "c"), node("Relu", ["c"], "r1"),
                      node("Relu", ["c"], "r2"), node("MaxPool", ["r1"], "p1", **pool),
                      node("MaxPool", ["r2"], "p2", **pool), node("Add", ["p1", "p2"], "y")],
                     [("x", [1, 16, 28, 28])], {"W": w})
    candidate = model([node("Conv", ["x", "W"], "c"), node("Relu", ["c"], "r1"),
                       node("MaxPool", ["r1"], "p1", **pool), node("Add", ["p1", "p1"], "y")],
                      [("x", [1, 16, 28, 28])], {"W": w})
    assert_no_gain(cost, original, candidate)
    assert charged_everything(cost, original) > cost.graph_cost(candidate)


def test_squeezenet_enlarge_and_merge_is_not_a_gain(cost):
    """A fire module's expand1x1 enlarged to 3x3 and merged with expand3x3 (the concatenation
    becomes the merged Conv's output): 9x the 1x1 branch's work for one kernel less; it
    measured 0.38x on the CPU."""
    w1, b1, w3, b3 = arr(64, 16, 1, 1), arr(64), arr(64, 16, 3, 3), arr(64)
    pad = {"pads": [1, 1, 1, 1]}
    original = model([node("Conv", ["s", "W1", "B1"], "e1"), node("Relu", ["e1"], "r1"),
                      node("Conv", ["s", "W3", "B3"], "e3", **pad), node("Relu", ["e3"], "r3"),
                      node("Concat", ["r1", "r3"], "y", axis=1)],
                     [("s", [1, 16, 55, 55])], {"W1": w1, "B1": b1, "W3": w3, "B3": b3})
    w1e = np.zeros((64, 16, 3, 3), np.float32)
    w1e[:, :, 1, 1] = w1[:, :, 0, 0]
    candidate = model([node("Conv", ["s", "W", "B"], "e", **pad), node("Relu", ["e"], "y")],
                      [("s", [1, 16, 55, 55])],
                      {"W": np.concatenate([w1e, w3]), "B": np.concatenate([b1, b3])})
    assert_no_gain(cost, original, candidate)


# -- a rewrite ORT does not perform and that measured a win: a gain -------------------------


def test_nasrnn_matmul_merge_is_a_gain(cost):
    """NasRNN's x W1 + h W2 -> concat(x, h) [W1; W2] (the search's MatMul merge), at its sizes:
    fewer, larger kernels; it measured 1.1x and more end to end."""
    w1, w2 = arr(512, 512), arr(512, 512)
    original = model([node("MatMul", ["x", "W1"], "a"), node("MatMul", ["h", "W2"], "b"),
                      node("Add", ["a", "b"], "s"), node("Tanh", ["s"], "y")],
                     [("x", [1, 1, 512]), ("h", [1, 1, 512])], {"W1": w1, "W2": w2})
    candidate = model([node("Concat", ["x", "h"], "xh", axis=-1),
                       node("MatMul", ["xh", "W"], "s"), node("Tanh", ["s"], "y")],
                      [("x", [1, 1, 512]), ("h", [1, 1, 512])],
                      {"W": np.concatenate([w1, w2])})
    assert cost.graph_cost(candidate) < cost.graph_cost(original)
