"""Cost models: constant folding in graph costs, the roofline, measured costs and their cache."""

from __future__ import annotations

import numpy as np
import pytest

from superopt.core.costing import NodeCount, runtime_nodes
from superopt.core.errors import UsageError
from superopt.core.ir import Graph, Node, Value
from superopt.core.types import FLOAT, TensorType
from superopt.cost_model import make_cost_model
from superopt.cost_model.analytic import AnalyticCost, Roofline
from superopt.cost_model.cache import CostCache
from superopt.cost_model.measured import MeasuredCost, fused_nodes

SEED = 0


def const(shape, name):
    return Value.const(np.random.default_rng(SEED).standard_normal(shape).astype(np.float32), name)


def test_constant_only_and_weight_only_nodes_cost_nothing():
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    folded = Node.make("MatMul", {}, [const((4, 4), "A"), const((4, 4), "B")], name="ab")
    helper = Node.make("OnesLike", {}, [folded.outputs[0]], name="ones")
    y = Node.make("MatMul", {}, [x, helper.outputs[0]], name="xy")
    g = Graph([x], [("y", y.outputs[0])])
    assert [n.name for n in runtime_nodes(g)] == ["xy"]
    assert NodeCount().graph_cost(g) == 1.0


def test_analytic_roofline_figures():
    x = Value.input("x", TensorType(FLOAT, (64, 128)))
    mm = Node.make("MatMul", {}, [x, const((128, 256), "W")], name="mm")
    model = AnalyticCost(Roofline(flops_per_s=1e9, bytes_per_s=1e12, overhead_s=1e-6))
    # 2 * 64 * 256 * 128 FLOPs at 1 GFLOP/s, compute bound, plus the overhead.
    assert model.node_cost(mm) == pytest.approx(1e-6 + 2 * 64 * 256 * 128 / 1e9)
    reshape = Node.make("Reshape", {"shape": (128, 64), "allowzero": 0}, [x], name="r")
    assert model.node_cost(reshape) == 0.0
    with pytest.raises(UsageError):
        make_cost_model("guess", "cpu")


def conv_relu_graph(extra_user: bool) -> Graph:
    x = Value.input("x", TensorType(FLOAT, (1, 4, 8, 8)))
    conv = Node.make(
        "Conv",
        {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "group": 1},
        [x, const((4, 4, 1, 1), "W")],
        name="conv",
    )
    relu = Node.make("Relu", {}, [conv.outputs[0]], name="relu")
    outs = [("y", relu.outputs[0])]
    if extra_user:
        outs.append(("c", conv.outputs[0]))
    return Graph([x], outs)


def test_fusion_groups_follow_ort():
    assert {n.name for n in fused_nodes(conv_relu_graph(False))} == {"relu"}
    assert fused_nodes(conv_relu_graph(True)) == set()  # the conv output is needed on its own


def test_measured_costs_are_cached_and_calibrated(tmp_path):
    g = conv_relu_graph(False)
    cache = CostCache(tmp_path)
    events = []
    model = MeasuredCost(
        "cpu",
        cache=cache,
        min_repeats=3,
        max_repeats=5,
        progress=lambda label, done, total: events.append(label),
    )
    cost = model.graph_cost(g)
    assert model.measured == 1 and events == ["Conv 1x4x8x8 4x4x1x1"]  # relu fused: not timed
    assert cost >= model.floor_s and cost < 0.01
    assert len(cache) == 1
    again = MeasuredCost("cpu", cache=CostCache(tmp_path))
    assert again.graph_cost(g) == cost and again.measured == 0 and again.cache_hits == 1
    assert again.describe()["provider"] == "CPUExecutionProvider"


def test_measured_one_node_model_has_weights_as_initializers():
    g = conv_relu_graph(False)
    conv = g.nodes[0]
    model, feeds = MeasuredCost("cpu", cache=CostCache(":memory:")).one_node_model(
        conv, (False, True)
    )
    assert [i.name for i in model.graph.input] == ["in0"] and list(feeds) == ["in0"]
    assert [t.name for t in model.graph.initializer] == ["in1"]
