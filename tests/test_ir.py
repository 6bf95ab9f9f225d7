"""The IR: hash-consing, structural graph hashes, sharing on rewrite, topological order."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import superopt
from superopt.core.errors import ModelError
from superopt.core.ir import Graph, Node, Value
from superopt.core.types import TensorType

F32 = TensorType(TensorProto.FLOAT, (2, 4))


def _mlp(x: Value, w: Value) -> Value:
    h = Node.make("MatMul", {}, [x, w], name="mm").outputs[0]
    return Node.make("Relu", {}, [h], name="act").outputs[0]


def test_equal_structure_is_the_same_object():
    x = Value.input("x", F32)
    w = Value.const(np.eye(4, dtype=np.float32), name="w")
    assert Value.input("x", F32) is x
    assert Value.const(np.eye(4, dtype=np.float32), name="w") is w, "constants hash by content"
    a, b = _mlp(x, w), _mlp(x, w)
    assert a is b and a.node is b.node
    other = Value.const(2 * np.eye(4, dtype=np.float32), name="w")
    assert _mlp(x, other) is not a, "different weight bytes, different node"


def test_equal_graphs_hash_equal_and_differ_when_structure_differs():
    x = Value.input("x", F32)
    w = Value.const(np.eye(4, dtype=np.float32), name="w")
    g1, g2 = Graph([x], [("y", _mlp(x, w))]), Graph([x], [("y", _mlp(x, w))])
    assert g1 == g2 and hash(g1) == hash(g2)
    sig = Node.make("Sigmoid", {}, [_mlp(x, w)], name="sig").outputs[0]
    g3 = Graph([x], [("y", sig)])
    assert g3 != g1 and hash(g3) != hash(g1)


def test_attributes_are_part_of_identity():
    x = Value.input("x4", TensorType(TensorProto.FLOAT, (2, 3, 4)))
    t1 = Node.make("Transpose", {"perm": (0, 2, 1)}, [x], name="t")
    t2 = Node.make("Transpose", {"perm": [0, 2, 1]}, [x], name="t")
    t3 = Node.make("Transpose", {"perm": (2, 1, 0)}, [x], name="t")
    assert t1 is t2, "lists and tuples freeze alike"
    assert t3 is not t1 and t3.outputs[0].type.shape == (4, 3, 2)


def test_replace_values_rebuilds_only_downstream_nodes():
    x = Value.input("x", F32)
    w = Value.const(np.eye(4, dtype=np.float32), name="w")
    left = Node.make("Tanh", {}, [x], name="left").outputs[0]
    right = _mlp(x, w)
    total = Node.make("Add", {}, [left, right], name="sum").outputs[0]
    graph = Graph([x], [("y", total)])
    w2 = Value.const(np.full((4, 4), 0.5, np.float32), name="w2")
    new = graph.replace_values({w: w2})
    assert new != graph
    new_nodes = {n.name: n for n in new.nodes}
    old_nodes = {n.name: n for n in graph.nodes}
    assert new_nodes["left"] is old_nodes["left"], "untouched branch is shared"
    for name in ("mm", "act", "sum"):
        assert new_nodes[name] is not old_nodes[name], f"{name} reads the replaced value"
    assert new_nodes["mm"].inputs[1] is w2
    assert graph.replace_values({}) is graph
    assert graph.replace_values({w: w2}) == new, "the same rewrite twice gives an equal graph"


def test_nodes_are_topological_and_stable():
    x = Value.input("x", F32)
    a = Node.make("Relu", {}, [x], name="a").outputs[0]
    b = Node.make("Tanh", {}, [a], name="b").outputs[0]
    c = Node.make("Sigmoid", {}, [a], name="c").outputs[0]
    d = Node.make("Add", {}, [b, c], name="d").outputs[0]
    graph = Graph([x], [("d", d), ("b", b)])
    order = [n.name for n in graph.nodes]
    assert order == ["a", "b", "c", "d"]
    position = {n: i for i, n in enumerate(graph.nodes)}
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None and v.node is not None:
                assert position[v.node] < position[n]
    assert graph.users[a] == [(graph.nodes[1], 0), (graph.nodes[2], 0)]


def test_deep_chain_does_not_recurse():
    v = Value.input("x", F32)
    for i in range(5000):
        v = Node.make("Relu", {}, [v], name=f"r{i}").outputs[0]
    assert len(Graph([Value.input("x", F32)], [("y", v)]).nodes) == 5000


def test_cyclic_onnx_model_is_rejected():
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="in"),
        helper.make_node("Add", ["a", "c"], ["b"], name="loop_add"),
        helper.make_node("Relu", ["b"], ["c"], name="loop_relu"),
    ]
    graph = helper.make_graph(
        nodes, "cyclic", [vi("x", TensorProto.FLOAT, [2])], [vi("c", TensorProto.FLOAT, [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match=r"has a cycle \(through node loop_"):
        superopt.load(model)


def test_out_of_order_file_is_imported_in_topological_order():
    vi = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Relu", ["a"], ["y"], name="second"),
        helper.make_node("Tanh", ["x"], ["a"], name="first"),
    ]
    graph = helper.make_graph(
        nodes, "unordered", [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT, [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = superopt.load(model)
    assert [n.name for n in g.nodes] == ["first", "second"]
    assert [n.name for n in superopt.to_onnx(g).graph.node] == ["first", "second"]


def test_values_and_nodes_are_immutable():
    x = Value.input("x", F32)
    n = Node.make("Relu", {}, [x], name="r")
    with pytest.raises(AttributeError):
        x.name = "y"
    with pytest.raises(AttributeError):
        n.op = "Tanh"


def test_replace_values_keeps_mappings_of_values_downstream_of_other_mappings():
    """Folding a chain of constant nodes maps every link; rebuilding a link because its input
    was mapped must not undo that link's own mapping."""
    import numpy as np

    from superopt.core.onnx_io import fold_constants
    from superopt.core.ops import get_op

    def make(op, attrs, ins):
        return Node.make(op, get_op(op).canonical_attrs(attrs), ins).outputs[0]

    k11 = Value.const(np.ones((4, 4, 1, 1), np.float32), name="k11")
    k13 = Value.const(np.ones((4, 4, 1, 3), np.float32), name="k13")
    wide = make("Concat", {"axis": 1}, [k13, k13])
    kernel = make("EnlargeKernel", {}, [k11, wide])
    t = Value.input("t", TensorType(1, (2, 4, 5, 5)))
    graph = Graph([t], [("o", make("Conv", {"pads": (0, 1, 0, 1)}, [t, kernel]))])
    folded = fold_constants(graph)
    assert [n.op for n in folded.nodes] == ["Conv"]
    assert folded.nodes[0].inputs[1].is_const
