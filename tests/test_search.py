"""The search reaches known optima on small graphs with hand-written rules (analytic cost)."""

from __future__ import annotations

import numpy as np
import pytest
from graph_run import run_numpy
from handwritten_rules import ASSOC, MERGE_CONV, PROVED

import superopt
from superopt.core.costing import NodeCount, OpTableCost
from superopt.core.ir import Graph, Node, Value
from superopt.core.ops import get_op
from superopt.core.rules import Rule
from superopt.core.types import FLOAT, TensorType
from superopt.cost_model.analytic import AnalyticCost
from superopt.search import (
    SearchLimits,
    SearchResult,
    StopReason,
    search,
    search_auto,
    search_regions,
)
from superopt.search.regions import windows

SEED = 0
QKV = Rule.make(
    ["(MatMul ?x ?a)", "(MatMul ?x ?b)", "(MatMul ?x ?c)"],
    [
        f"(Split.{i}[axis=-1, split=(dim(?a,1), dim(?b,1), dim(?c,1))] "
        "(MatMul ?x (Concat[axis=1] ?a ?b ?c)))"
        for i in range(3)
    ],
    {"x": "tensor", "a": "weight", "b": "weight", "c": "weight"},
    conditions=("rank(?a) == 2", "rank(?b) == 2", "rank(?c) == 2"),
    name="merge-3-matmuls",
    proof=PROVED,
)
_CONV = "Conv[strides=?s, pads=?p, dilations=?d, group=?g]"
CONV_BN = Rule.make(
    [f"(BatchNormalization[epsilon=?eps] ({_CONV} ?x ?w) ?scale ?bias ?mean ?var)"],
    [
        (f"({_CONV} ?x (BatchNormFoldKernel[epsilon=?eps] ?w ?scale ?var) "
        "(BatchNormFoldBias[epsilon=?eps] ?scale ?bias ?mean ?var))")
    ],
    {k: "weight" for k in ("w", "scale", "bias", "mean", "var")} | {"x": "tensor"},
    name="conv-bn-fold",
    proof=PROVED,
)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def matmul_chain(rng) -> Graph:
    x = Value.input("x", TensorType(FLOAT, (8, 16)))
    a, b = Value.const(rand(rng, 16, 16), "A"), Value.const(rand(rng, 16, 16), "B")
    y = Node.make(
        "MatMul", {}, [Node.make("MatMul", {}, [x, a], name="mm1").outputs[0], b], name="mm2"
    ).outputs[0]
    return Graph([x], [("y", y)])


def qkv_graph(rng) -> Graph:
    x = Value.input("x", TensorType(FLOAT, (1, 4, 8)))
    outs = []
    for k in "qkv":
        w = Value.const(rand(rng, 8, 8), f"W{k}")
        outs.append((k, Node.make("MatMul", {}, [x, w], name=f"mm_{k}").outputs[0]))
    return Graph([x], outs)


def conv_bn_graph(rng) -> Graph:
    x = Value.input("x", TensorType(FLOAT, (1, 3, 8, 8)))
    conv = Node.make(
        "Conv",
        {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "group": 1},
        [x, Value.const(rand(rng, 4, 3, 3, 3), "W")],
        name="conv",
    )
    bn_in = [Value.const(np.abs(rand(rng, 4)) + 0.5, n) for n in ("s", "b", "m", "v")]
    bn = Node.make("BatchNormalization", {"epsilon": 1e-5}, [conv.outputs[0], *bn_in], name="bn")
    return Graph([x], [("y", bn.outputs[0])])


def two_convs(rng, c=4, o1=4, o2=4, hw=8) -> Graph:
    x = Value.input("x", TensorType(FLOAT, (1, c, hw, hw)))
    base = {"strides": (1, 1), "dilations": (1, 1), "group": 1}
    c3 = Node.make(
        "Conv",
        {**base, "pads": (1, 1, 1, 1)},
        [x, Value.const(rand(rng, o1, c, 3, 3), "W3")],
        name="conv3",
    )
    c1 = Node.make(
        "Conv",
        {**base, "pads": (0, 0, 0, 0)},
        [x, Value.const(rand(rng, o2, c, 1, 1), "W1")],
        name="conv1",
    )
    return Graph([x], [("y3", c3.outputs[0]), ("y1", c1.outputs[0])])


def assert_same_function(g1: Graph, g2: Graph, rng) -> None:
    feeds = {v.name: rand(rng, *v.type.shape) for v in g1.inputs}
    for a, b in zip(run_numpy(g1, feeds), run_numpy(g2, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def exported_ops(graph: Graph) -> list[str]:
    return [n.op_type for n in superopt.to_onnx(graph).graph.node]


def test_matmul_chain_reassociates_and_folds():
    print("seed", SEED)
    rng = np.random.default_rng(SEED)
    g = matmul_chain(rng)
    r = search(g, [ASSOC], AnalyticCost.for_device("cpu"))
    assert r.stop_reason is StopReason.EXHAUSTED and str(r.stop_reason) == "queue empty"
    assert exported_ops(r.best) == ["MatMul"]
    assert len(r.steps) == 1 and r.steps[0].rule_name == "matmul-assoc"
    assert set(r.steps[0].matched_nodes) == {"mm1", "mm2"}
    assert len(r.steps[0].created_nodes) == 2 and r.steps[0].gain > 0
    assert r.stats.best_cost == pytest.approx(r.stats.initial_cost / 2)
    assert_same_function(g, r.best, rng)


def test_qkv_matmuls_merge_into_one():
    rng = np.random.default_rng(SEED)
    g = qkv_graph(rng)
    r = search(g, [QKV], AnalyticCost.for_device("cpu"))
    ops = exported_ops(r.best)
    assert ops.count("MatMul") == 1 and ops.count("Split") == 1, ops
    assert [n for n, _ in r.best.outputs] == ["q", "k", "v"]
    assert_same_function(g, r.best, rng)


def test_conv_bn_folds_into_conv():
    rng = np.random.default_rng(SEED)
    g = conv_bn_graph(rng)
    r = search(g, [CONV_BN], AnalyticCost.for_device("cpu"))
    assert exported_ops(r.best) == ["Conv"]
    assert_same_function(g, r.best, rng)


def test_seed_conv_merge_only_when_the_cost_model_says_so():
    rng = np.random.default_rng(SEED)
    g = two_convs(rng)
    # Kernel launches dominate (Split cheap): merging 2 convs into 1 conv + Split pays.
    launches = search(g, [MERGE_CONV], OpTableCost({"Split": 0.1}))
    ops = exported_ops(launches.best)
    assert ops.count("Conv") == 1 and "Split" in ops
    assert_same_function(g, launches.best, rng)
    # Split expensive (a CPU copy): the original stays.
    copies = search(g, [MERGE_CONV], OpTableCost({"Split": 5.0}))
    assert copies.best is g and copies.steps == []
    assert copies.stats.pruned_cost == 1


def test_alpha_lets_the_search_pass_through_a_worse_graph():
    rng = np.random.default_rng(SEED)
    g = two_convs(rng)
    # Merged = 1 conv + split = 2.02 > 2: worse; nothing beyond it, so best stays the original.
    r = search(g, [MERGE_CONV], OpTableCost({"Split": 1.02}), SearchLimits(alpha=1.05))
    assert r.best is g and r.stats.enqueued == 1 and r.stats.expansions == 2
    strict = search(g, [MERGE_CONV], OpTableCost({"Split": 1.02}), SearchLimits(alpha=1.0))
    assert strict.stats.enqueued == 0 and strict.stats.pruned_cost == 1


def test_budget_and_growth_limits_stop_the_search():
    rng = np.random.default_rng(SEED)
    g = qkv_graph(rng)
    r = search(g, [QKV], NodeCount(), SearchLimits(budget=1))
    assert r.stop_reason is StopReason.BUDGET and r.stats.expansions == 1
    # A rule that only grows the graph is cut by the growth cap.
    grow = Rule.make(
        ["(MatMul ?x ?a)"],
        ["(MatMul (Relu (Relu ?x)) ?a)"],
        {"x": "tensor", "a": "weight"},
        proof=PROVED,
    )
    r = search(g, [grow], NodeCount(), SearchLimits(max_growth=1.0, growth_slack=0))
    assert r.stats.pruned_growth == 3 and r.best is g


def test_limits_reject_bad_values():
    with pytest.raises(ValueError):
        SearchLimits(alpha=0.9)
    with pytest.raises(ValueError):
        SearchLimits(budget=0)


def test_region_search_finds_the_rewrites_of_a_long_chain():
    rng = np.random.default_rng(SEED)
    x = Value.input("x", TensorType(FLOAT, (4, 8)))
    v = x
    for i in range(40):  # 40 (x·A)·B pairs, each foldable: 80 MatMuls, interleaved with Relu
        a, b = Value.const(rand(rng, 8, 8), f"A{i}"), Value.const(rand(rng, 8, 8), f"B{i}")
        v = Node.make("MatMul", {}, [v, a], name=f"p{i}").outputs[0]
        v = Node.make("MatMul", {}, [v, b], name=f"q{i}").outputs[0]
        v = Node.make("Relu", {}, [v], name=f"r{i}").outputs[0]
    g = Graph([x], [("y", v)])
    assert len(windows(g, 30, 10)) == 6
    r = search_regions(
        g,
        [ASSOC],
        AnalyticCost.for_device("cpu"),
        SearchLimits(time_limit_s=60),
        window=30,
        overlap=10,
    )
    assert exported_ops(r.best).count("MatMul") == 40
    assert len(r.steps) == 40 and r.stats.regions == 6
    assert {s.region for s in r.steps} <= set(range(6))
    assert_same_function(g, r.best, rng)
    auto = search_auto(g, [ASSOC], AnalyticCost.for_device("cpu"), threshold=1000)
    assert exported_ops(auto.best).count("MatMul") == 40
    # The windows' paths join into one path over whole graphs, input to best.
    assert_path_recorded(g, r)
    assert [s.region for s in r.steps] == sorted(s.region for s in r.steps)
    assert r.steps[0].before is g
    assert all(len(s.before.nodes) >= 80 for s in r.steps)  # whole graphs, not 30-node windows
    # Iterations are numbered on across the windows, each with its region.
    assert [it.index for it in r.iterations] == list(range(r.stats.expansions))
    assert {it.region for it in r.iterations} <= set(range(6))
    assert sum(it.generated for it in r.iterations) == r.stats.generated
    assert all(a.elapsed_s <= b.elapsed_s for a, b in zip(r.iterations, r.iterations[1:]))
    # A window's 50 expansions (300 over 6) do not cover every order of its folds, though its
    # best path has them all: the search says it stopped on the budget (it said "queue
    # empty", as the last window emptied its queue); with 3,000 every window's queue empties.
    assert r.stop_reason is StopReason.BUDGET and r.stats.expansions < 300
    ample = search_regions(g, [ASSOC], AnalyticCost.for_device("cpu"),
                           SearchLimits(time_limit_s=60, budget=3000), window=30, overlap=10)
    assert ample.stop_reason is StopReason.EXHAUSTED and len(ample.steps) == 40
    short = search_regions(g, [ASSOC], AnalyticCost.for_device("cpu"),
                           SearchLimits(time_limit_s=60, budget=6), window=30, overlap=10)
    assert short.stop_reason is StopReason.BUDGET and len(short.steps) < 40


# ---------------------------------------------------------------------------------------------
# the search's records: path, candidates, iterations, stop reason


def assert_path_recorded(start: Graph, r: SearchResult) -> None:
    """The path goes from `start` to `r.best`, each step's graph before being the previous
    step's graph after; created nodes are new in the graph after, matched ones in the before."""
    graphs = r.graphs
    assert graphs[0] == start and graphs[-1] is r.best
    for prev, step in zip([None, *r.steps], r.steps):
        if prev is not None:
            assert step.before is prev.after
        before = {n.name for n in step.before.nodes}
        after = {n.name for n in step.after.nodes}
        assert set(step.matched_nodes) <= before
        assert step.created_nodes and set(step.created_nodes) <= after
        assert not set(step.created_nodes) & before
        assert set(step.after_focus) == set(step.created_nodes)


def test_search_records_the_path_to_the_best_graph():
    rng = np.random.default_rng(SEED)
    g = matmul_chain(rng)
    r = search(g, [ASSOC], AnalyticCost.for_device("cpu"))
    assert_path_recorded(g, r)
    [step] = r.steps
    assert step.before is g and step.after is r.best and step.rule is ASSOC
    assert step.rule_id == ASSOC.id and step.src == ("(MatMul (MatMul ?x ?a) ?b)",)
    assert step.cost_before == r.stats.initial_cost and step.cost_after == r.best_cost
    doc = step.to_json()
    assert doc["src"] == list(step.src) and doc["proof"] == dict(ASSOC.proof)
    assert "before" not in doc and doc["region"] is None
    # Every candidate carries its own path, from the input to its graph.
    assert r.candidates[0].graph is r.best and r.candidates[0].steps == r.steps
    for cand in r.candidates:
        assert (cand.steps[-1].after if cand.steps else g) is cand.graph


def test_a_rewrite_creating_no_node_focuses_on_the_new_readers():
    rng = np.random.default_rng(SEED)
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    t1 = Node.make("Transpose", {"perm": (1, 0)}, [x], name="t1")
    t2 = Node.make("Transpose", {"perm": (1, 0)}, [t1.outputs[0]], name="t2")
    th = Node.make("Tanh", {}, [t2.outputs[0]], name="th")
    g = Graph([x], [("y", th.outputs[0])])
    cancel = Rule.make(["(Transpose[perm=(1,0)] (Transpose[perm=(1,0)] ?x))"], ["?x"],
                       {"x": "tensor"}, proof=PROVED)
    r = search(g, [cancel], NodeCount())
    [step] = r.steps
    assert step.created_nodes == () and set(step.matched_nodes) == {"t1", "t2"}
    assert step.after_focus == ("th",)  # the Tanh now reads x
    assert exported_ops(r.best) == ["Tanh"]
    assert_same_function(g, r.best, rng)


def test_iterations_record_each_expansion():
    rng = np.random.default_rng(SEED)
    g = two_convs(rng)
    r = search(g, [MERGE_CONV], OpTableCost({"Split": 1.02}), SearchLimits(alpha=1.05))
    assert len(r.iterations) == r.stats.expansions == 2
    first, second = r.iterations
    assert (first.index, first.generated, first.enqueued, first.queue_size) == (0, 1, 1, 1)
    assert (second.index, second.queue_size) == (1, 0)
    assert first.cost == r.stats.initial_cost and second.cost > first.cost
    assert all(it.best_cost == r.best_cost for it in r.iterations)
    assert 0 <= first.elapsed_s <= second.elapsed_s <= r.stats.elapsed_s
    assert first.to_json()["queue_size"] == 1 and first.region is None


def test_stop_reasons_are_typed():
    assert [str(s) for s in StopReason] == ["queue empty", "budget", "time limit"]
    rng = np.random.default_rng(SEED)
    g = qkv_graph(rng)
    r = search(g, [QKV], NodeCount(), SearchLimits(time_limit_s=1e-9))
    assert r.stop_reason is StopReason.TIME_LIMIT and r.best is g and r.iterations == []


def operands_swapped_graph() -> Graph:
    """A conv and a linear layer whose Mul and Add take the constant first (`Mul(c, conv)`,
    `Add(b, matmul)`), as some exporters write them: rules match them in the other order."""
    rng = np.random.default_rng(SEED)

    def const(*shape):
        return Value.const(rng.standard_normal(shape).astype(np.float32))

    x = Value.input("x", TensorType(FLOAT, (1, 3, 8, 8)))
    conv = Node.make("Conv", get_op("Conv").canonical_attrs({"pads": (1, 1, 1, 1)}),
                     [x, const(4, 3, 3, 3), const(4)]).outputs[0]
    scaled = Node.make("Mul", {}, [const(4, 1, 1), conv]).outputs[0]
    shifted = Node.make("Add", {}, [const(4, 1, 1), scaled]).outputs[0]
    y = Value.input("y", TensorType(FLOAT, (2, 16)))
    mm = Node.make("MatMul", {}, [y, const(16, 16)]).outputs[0]
    lin = Node.make("Add", {}, [const(16), mm]).outputs[0]
    lin2 = Node.make("Add", {}, [const(16), Node.make("MatMul", {}, [lin, const(16, 16)])
                                 .outputs[0]]).outputs[0]
    return Graph([x, y], [("conv", Node.make("Relu", {}, [shifted]).outputs[0]),
                          ("lin", lin2)])


@pytest.mark.parametrize("model", ["squeezenet", "nasnet_a", "bert", "operands_swapped"])
def test_incremental_matches_are_the_full_matches_in_the_same_order(model, zoo_model_path):
    """A child graph's matches found from its parent's (kept where their nodes survived, plus
    those rooted at new nodes), and a graph's own from the nodes whose operands fit each
    rule one level down, are exactly what matching every node from scratch finds, in the
    same order: for every shipped rule that occurs, in the graph, several children and a
    grandchild. One graph writes its Mul/Add constants first, so rules meet them swapped."""
    from superopt.core.rules import load_rules
    from superopt.search.backtrack import _Matches
    from superopt.search.match import Refused, RuleIndex, apply_match, find_matches

    index = RuleIndex(load_rules().proved())

    def children(m: _Matches, at_most: int) -> list[Graph]:
        out = []
        for rule in index.candidates(m.by_op):
            for match in m.of(rule):
                try:
                    out.append(apply_match(m.graph, match).graph)
                except Refused:
                    continue
                if len(out) == at_most:
                    return out
        return out

    def same_as_full(m: _Matches) -> int:
        rules = list(index.candidates(m.by_op))
        for rule in rules:
            got = [(x.roots, x.matched_nodes) for x in m.of(rule)]
            want = [(x.roots, x.matched_nodes) for x in find_matches(m.graph, rule, limit=200)]
            assert got == want, rule.id
        return len(rules)

    graph = (operands_swapped_graph() if model == "operands_swapped"
             else superopt.load(zoo_model_path(model)))
    top = _Matches(graph, None, 200)
    checked = same_as_full(top)
    kids = children(top, 6)
    assert kids
    for kid in kids:
        inc = _Matches(kid, top, 200)
        checked += same_as_full(inc)
    grandkids = children(inc, 2)
    for grandkid in grandkids:
        checked += same_as_full(_Matches(grandkid, inc, 200))
    assert checked > 0


class _SquaredMatMuls(NodeCount):
    """Cost = (running MatMuls)²: not a sum over nodes, so a rewrite's cost change in a child
    differs from the one it made in the parent (8 -> 7 MatMuls: -15; 7 -> 6: -13)."""

    def graph_cost(self, graph: Graph) -> float:
        from superopt.core.costing import runtime_nodes

        return float(sum(n.op == "MatMul" for n in runtime_nodes(graph)) ** 2)


@pytest.mark.parametrize("cost_model", [NodeCount(), _SquaredMatMuls()],
                         ids=["additive", "not-additive"])
def test_rewrites_the_parent_made_are_deferred_and_costed_exactly_when_built(cost_model):
    """Four independent (x·A)·B chains: the first expansion builds the four folds; every later
    expansion meets the other folds again and queues them on the parent's cost change instead
    of building them. The search still folds all four, and every graph it reports was costed
    by the model, estimates never stand in for costs."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    x = Value.input("x", TensorType(FLOAT, (4, 8)))
    outs = []
    for i in range(4):
        a, b = Value.const(rand(rng, 8, 8), f"A{i}"), Value.const(rand(rng, 8, 8), f"B{i}")
        inner = Node.make("MatMul", {}, [x, a], name=f"mm{i}a").outputs[0]
        outs.append((f"y{i}", Node.make("MatMul", {}, [inner, b], name=f"mm{i}b").outputs[0]))
    g = Graph([x], outs)
    r = search(g, [ASSOC], cost_model)
    # the greedy path meets the other folds again at depths 1, 2, 3: 3 + 2 + 1 deferred, each
    # built once popped (4 + 3 + 2 + 1 graphs in all)
    assert r.stats.deferred == 6 and r.stats.generated == 10
    assert exported_ops(r.best).count("MatMul") == 4 and len(r.steps) == 4
    assert r.best_cost == cost_model.graph_cost(r.best)
    for c in r.candidates:
        assert c.cost == cost_model.graph_cost(c.graph)
        assert [s.cost_after for s in c.steps] == [cost_model.graph_cost(s.after)
                                                   for s in c.steps]
    assert sum(it.generated for it in r.iterations) == r.stats.generated
    assert sum(it.enqueued for it in r.iterations) == r.stats.enqueued
    assert_same_function(g, r.best, rng)
