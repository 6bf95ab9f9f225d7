"""Names export creates never collide with names the model already uses.

Export makes names of its own: Reshape targets (`<node>_shape`), Split sizes (`<node>_split`),
Identity nodes for graph outputs that share a value (`<output>_output`), and so on. A model that
already uses such a name must still export to a valid model with the same outputs: the created
name is renamed (`r_shape` -> `r_shape_1`), never the model's own. Each case loads a model built
with onnx.helper, exports it, and checks: `onnx.checker` (full check) passes, no value name or
node name is defined twice, every original initializer is still there with its values, and ONNX
Runtime gives outputs bit-identical to the original model's.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import assert_identical, run_ort
from onnx import TensorProto, helper, numpy_helper

import superopt

SEED = 0


def vi(name: str, shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def i64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def model_of(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def all_names(g: onnx.GraphProto) -> tuple[list[str], list[str]]:
    """Value names defined (inputs, initializers, node outputs) and node names, subgraphs
    included: ONNX requires both to be unique across nested scopes."""
    values = [v.name for v in g.input] + [t.name for t in g.initializer]
    nodes = []
    for n in g.node:
        values += [o for o in n.output if o]
        if n.name:
            nodes.append(n.name)
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                sv, sn = all_names(sg)
                values += sv
                nodes += sn
    return values, nodes


def assert_no_duplicates(model: onnx.ModelProto) -> None:
    values, nodes = all_names(model.graph)
    # A graph input may also be an initializer (a default value): one definition.
    inputs = {v.name for v in model.graph.input}
    values = [v for v in values if v not in inputs] + sorted(inputs)
    dup_values = [n for n, c in Counter(values).items() if c > 1]
    dup_nodes = [n for n, c in Counter(nodes).items() if c > 1]
    assert not dup_values, f"value names defined twice: {dup_values}"
    assert not dup_nodes, f"node names used twice: {dup_nodes}"


def feeds_for(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def check_export(model: onnx.ModelProto, exported: onnx.ModelProto | None = None,
                 outputs: list[str] | None = None) -> onnx.ModelProto:
    """Export (unless given), then every check of the module docstring."""
    if exported is None:
        exported = superopt.to_onnx(superopt.load(model))
    onnx.checker.check_model(exported, full_check=True)
    assert_no_duplicates(exported)
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in exported.graph.initializer}
    for name, array in before.items():
        if name in after:  # an initializer import folded away need not come back
            assert after[name].dtype == array.dtype and np.array_equal(after[name], array), name
    feeds = feeds_for(model)
    expected = run_ort(model, feeds)
    actual = run_ort(exported, feeds)
    if outputs is not None:
        names = [o.name for o in model.graph.output]
        expected = [expected[names.index(n)] for n in outputs]
    assert_identical(actual, expected)
    return exported


def test_tile_reads_an_initializer_named_like_a_reshape_target():
    """The issue's case: Reshape `r` exports its target as `r_shape`, and the model's own
    `r_shape` is the repeats of a Tile. With a duplicate, ORT uses one of the two for both."""
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["xr"], name="r"),
        helper.make_node("Tile", ["xr", "r_shape"], ["y"], name="tile"),
    ]
    model = model_of(nodes, [vi("x", (2, 6))], [vi("y", (9, 8))],
                     [i64("target", [3, 4]), i64("r_shape", [3, 2])])
    exported = check_export(model)
    reshape = next(n for n in exported.graph.node if n.op_type == "Reshape")
    tile = next(n for n in exported.graph.node if n.op_type == "Tile")
    assert tile.input[1] == "r_shape", "the model's own name is kept"
    assert reshape.input[1] != "r_shape"
    assert reshape.input[1] == "r_shape_1"


def test_split_sizes_name_in_use():
    """Split `s` exports its sizes as `s_split`; the model already has `s_split` (Tile repeats
    of another shape) and a node output called `s_split_1`."""
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="s", axis=1),
        helper.make_node("Tile", ["a", "s_split"], ["s_split_1"], name="tile"),
        helper.make_node("Relu", ["s_split_1"], ["y"], name="relu"),
        helper.make_node("Relu", ["b"], ["z"], name="relu2"),
    ]
    model = model_of(nodes, [vi("x", (2, 6))], [vi("y", (4, 6)), vi("z", (2, 4))],
                     [i64("sizes", [2, 4]), i64("s_split", [2, 3])])
    exported = check_export(model)
    split = next(n for n in exported.graph.node if n.op_type == "Split")
    assert split.input[1] not in ("s_split", "s_split_1")


def test_created_name_equal_to_an_input_and_an_output_name():
    """Reshape `r` whose own data input is called `r_shape`, and Split `s` whose output is
    `s_split`: the created names must not capture the node's own wiring."""
    nodes = [
        helper.make_node("Reshape", ["r_shape", "target"], ["xr"], name="r"),
        helper.make_node("Split", ["xr", "sizes"], ["s_split", "b"], name="s", axis=1),
        helper.make_node("Concat", ["b", "s_split"], ["y"], name="cat", axis=1),
    ]
    model = model_of(nodes, [vi("r_shape", (2, 6))], [vi("y", (3, 4))],
                     [i64("target", [3, 4]), i64("sizes", [1, 3])])
    exported = check_export(model)
    assert [i.name for i in exported.graph.input] == ["r_shape"]


def test_created_name_used_as_a_node_name():
    """A node already called `r_shape`: the Reshape target gets another name (node and value
    names are different ONNX namespaces, but a created name avoids both)."""
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["xr"], name="r"),
        helper.make_node("Relu", ["xr"], ["y"], name="r_shape"),
    ]
    model = model_of(nodes, [vi("x", (2, 6))], [vi("y", (3, 4))], [i64("target", [3, 4])])
    exported = check_export(model)
    reshape = next(n for n in exported.graph.node if n.op_type == "Reshape")
    assert reshape.input[1] != "r_shape"
    assert [n.name for n in exported.graph.node] == ["r", "r_shape"]


def test_created_name_defined_inside_a_subgraph():
    """An opaque If defines `r_shape` inside its branch; an outer `r_shape` would shadow it
    (ONNX wants names unique across nested scopes)."""
    then_g = helper.make_graph(
        [helper.make_node("Shape", ["xr"], ["r_shape"], name="inner_shape"),
         helper.make_node("Cast", ["r_shape"], ["t"], name="inner_cast", to=TensorProto.FLOAT)],
        "then", [], [vi("t", (2,))])
    else_g = helper.make_graph(
        [helper.make_node("ReduceSum", ["xr"], ["e"], name="inner_sum", keepdims=0,
                          axes=None),
         helper.make_node("Expand", ["e", "two"], ["f"], name="inner_expand")],
        "else", [], [vi("f", (2,))])
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["xr"], name="r"),
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="cond"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    model = model_of(nodes, [vi("x", (2, 6))], [vi("y", (2,))],
                     [i64("target", [3, 4]), i64("two", [2]),
                      numpy_helper.from_array(np.array(0, np.float32), "zero")])
    exported = check_export(model)
    reshape = next(n for n in exported.graph.node if n.op_type == "Reshape")
    assert reshape.input[1] != "r_shape"


def test_output_alias_node_name_in_use():
    """Two graph outputs that share one value (after a rewrite): export adds an Identity named
    `<output>_output`; the model already has nodes of those names."""
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="y_output"),
        helper.make_node("Tanh", ["x"], ["z"], name="z_output"),
    ]
    model = model_of(nodes, [vi("x", (2, 3))], [vi("y", (2, 3)), vi("z", (2, 3))])
    graph = superopt.load(model)
    (_, y), _ = graph.outputs
    shared = graph.with_outputs([("y", y), ("z", y)])
    exported = superopt.to_onnx(shared)
    check_export(model, exported, outputs=["y", "y"])
    assert [o.name for o in exported.graph.output] == ["y", "z"]


def test_output_name_taken_by_a_value_still_live():
    """A rewrite points output `y` at a new value while the old value named `y` is still used:
    the output keeps its name and the old value is renamed, not defined twice."""
    nodes = [
        helper.make_node("Relu", ["x"], ["y"], name="relu"),
        helper.make_node("Tanh", ["y"], ["z"], name="tanh"),
    ]
    model = model_of(nodes, [vi("x", (2, 3))], [vi("y", (2, 3)), vi("z", (2, 3))])
    graph = superopt.load(model)
    _, (_, z) = graph.outputs
    only_z_as_y = graph.with_outputs([("y", z)])
    exported = superopt.to_onnx(only_z_as_y)
    expected_model = model_of(nodes, [vi("x", (2, 3))], [vi("z", (2, 3))])
    onnx.checker.check_model(exported, full_check=True)
    assert_no_duplicates(exported)
    feeds = feeds_for(model)
    assert_identical(run_ort(exported, feeds), run_ort(expected_model, feeds))
    assert [o.name for o in exported.graph.output] == ["y"]


def test_two_constants_with_one_name():
    """Two different constants that carry the same name (a rewrite folded a value whose name
    the model also uses for a weight): one initializer each, both with their own values."""
    nodes = [
        helper.make_node("Add", ["x", "w"], ["y"], name="add"),
        helper.make_node("Mul", ["y", "k"], ["z"], name="mul"),
    ]
    model = model_of(nodes, [vi("x", (3,))], [vi("z", (3,))],
                     [numpy_helper.from_array(np.array([1, 2, 3], np.float32), "w"),
                      numpy_helper.from_array(np.array([4, 5, 6], np.float32), "k")])
    graph = superopt.load(model)
    w = next(v for v in graph.constants() if v.name == "w")
    k = next(v for v in graph.constants() if v.name == "k")
    k_named_w = superopt.Value.const(k.array, name="w")
    renamed = graph.replace_values({k: k_named_w})
    exported = superopt.to_onnx(renamed)
    assert w in renamed.constants() and k_named_w in renamed.constants()
    onnx.checker.check_model(exported, full_check=True)
    assert_no_duplicates(exported)
    feeds = feeds_for(model)
    assert_identical(run_ort(exported, feeds), run_ort(model, feeds))


@pytest.mark.parametrize("reads", ["direct", "subgraph"])
def test_names_read_by_a_subgraph_survive(reads):
    """An If branch reads the outer `r_shape` (an initializer); Reshape `r` also wants that
    name for its target. The subgraph must keep reading the model's own values."""
    then_g = helper.make_graph(
        [helper.make_node("Tile", ["xr", "r_shape"], ["t"], name="inner_tile")],
        "then", [], [vi("t", (9, 8))])
    else_g = helper.make_graph(
        [helper.make_node("Tile", ["xr", "r_shape"], ["e0"], name="inner_tile2"),
         helper.make_node("Neg", ["e0"], ["e"], name="inner_neg")],
        "else", [], [vi("e", (9, 8))])
    nodes = [
        helper.make_node("Reshape", ["x", "target"], ["xr"], name="r"),
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="cond"),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    outputs = [vi("y", (9, 8))]
    if reads == "direct":
        nodes.append(helper.make_node("Tile", ["xr", "r_shape"], ["w"], name="outer_tile"))
        outputs.append(vi("w", (9, 8)))
    model = model_of(nodes, [vi("x", (2, 6))], outputs,
                     [i64("target", [3, 4]), i64("r_shape", [3, 2]),
                      numpy_helper.from_array(np.array(0, np.float32), "zero")])
    check_export(model)


def test_value_a_subgraph_reads_gets_a_new_name():
    """A rewrite replaces the value an If branch reads (`xr`) by a value of another name: the
    branch reads the new name (no Identity that could clash with a name in use)."""
    branch = helper.make_graph([helper.make_node("Mul", ["xr", "w"], ["t"], name="inner_mul")],
                               "then", [], [vi("t", (2, 3))])
    other = helper.make_graph([helper.make_node("Sub", ["xr", "w"], ["e"], name="inner_sub")],
                              "else", [], [vi("e", (2, 3))])

    def model(first: str) -> onnx.ModelProto:
        nodes = [
            helper.make_node(first, ["x"], ["xr"], name="act"),
            helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"], name="cond"),
            helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch,
                             else_branch=other),
            helper.make_node("Neg", ["xr"], ["xr_alias"], name="xr_alias"),
        ]
        return model_of(nodes, [vi("x", (2, 3))], [vi("y", (2, 3)), vi("xr_alias", (2, 3))],
                        [numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "w"),
                         numpy_helper.from_array(np.array(0, np.float32), "zero")])

    graph = superopt.load(model("Relu"))
    relu = next(n for n in graph.nodes if n.op == "Relu")
    sigmoid = superopt.Node.make("Sigmoid", {}, list(relu.inputs), name="sig",
                                 output_names=["sig_out"])
    exported = superopt.to_onnx(graph.replace_values({relu.outputs[0]: sigmoid.outputs[0]}))
    onnx.checker.check_model(exported, full_check=True)
    assert_no_duplicates(exported)
    if_node = next(n for n in exported.graph.node if n.op_type == "If")
    assert "sig_out" in if_node.attribute[0].g.node[0].input
    expected = model("Sigmoid")
    for sign in (1.0, -1.0):
        feeds = {"x": sign * np.arange(1, 7, dtype=np.float32).reshape(2, 3)}
        assert_identical(run_ort(exported, feeds), run_ort(expected, feeds))
