"""The ORT fusion knowledge of the measured cost model (`cost_model/ort_fusions.py`), checked
against ONNX Runtime itself: for each small model, the nodes `ort_fusions` says ORT absorbs are
really gone from the graph ORT saves after its ENABLE_EXTENDED optimizations (the fusions; the
NCHWc layout pass of ENABLE_ALL is not modelled), and nodes it says stay are still there."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt.core.onnx_io import load
from superopt.cost_model.ort_fusions import common_subexpressions, ort_fusions

RNG = np.random.default_rng(0)


def init(name, shape, value=None):
    arr = RNG.standard_normal(shape).astype(np.float32) if value is None else \
        np.full(shape, value, np.float32)
    return numpy_helper.from_array(arr, name)


def model(nodes, inputs, inits, output="y"):
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return onnx.shape_inference.infer_shapes(m)


def ort_ops(m: onnx.ModelProto, tmp_path) -> Counter:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    path = tmp_path / "opt.onnx"
    opts.optimized_model_filepath = str(path)
    ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def conv_bn():
    return model([helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])],
                 [("x", [1, 4, 8, 8])],
                 [init("W", [8, 4, 3, 3]), init("s", [8]), init("b", [8]), init("m", [8]),
                  init("v", [8], 1.5)])


def conv_mul_add():
    return model([helper.make_node("Conv", ["x", "W", "B"], ["c"]),
                  helper.make_node("Mul", ["c", "s"], ["cm"]),
                  helper.make_node("Add", ["cm", "t"], ["y"])],
                 [("x", [1, 4, 8, 8])],
                 [init("W", [8, 4, 1, 1]), init("B", [8]), init("s", [8, 1, 1]),
                  init("t", [1, 8, 1, 1])])


def transpose_pair():
    return model([helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1]),
                  helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", ["t2", "W"], ["y"])],
                 [("x", [2, 4, 8])], [init("W", [8, 8])])


def noops():
    return model([helper.make_node("Relu", ["x"], ["r"]),
                  helper.make_node("Mul", ["r", "one"], ["a"]),
                  helper.make_node("Add", ["a", "zero"], ["b"]),
                  helper.make_node("Identity", ["b"], ["i"]),
                  helper.make_node("MatMul", ["i", "W"], ["y"])],
                 [("x", [2, 8])], [init("one", [], 1.0), init("zero", [1], 0.0),
                                   init("W", [8, 8])])


def matmul_scale_and_transpose():
    return model([helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", ["q", "kt"], ["s"]),
                  helper.make_node("Div", ["s", "d"], ["y"])],
                 [("q", [2, 4, 8]), ("k", [2, 4, 8])], [init("d", [], 8.0)])


def gelu():
    return model([helper.make_node("MatMul", ["x", "W"], ["h"]),
                  helper.make_node("Add", ["h", "bias"], ["hb"]),
                  helper.make_node("Div", ["hb", "sqrt2"], ["d"]),
                  helper.make_node("Erf", ["d"], ["e"]),
                  helper.make_node("Add", ["e", "one"], ["e1"]),
                  helper.make_node("Mul", ["hb", "e1"], ["m"]),
                  helper.make_node("Mul", ["m", "half"], ["y"])],
                 [("x", [1, 4, 8])],
                 [init("W", [8, 16]), init("bias", [16]), init("sqrt2", [], 1.4142135),
                  init("one", [], 1.0), init("half", [], 0.5)])


def layer_norm():
    return model([helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
                  helper.make_node("Sub", ["x", "mu"], ["xc"]),
                  helper.make_node("Pow", ["xc", "two"], ["sq"]),
                  helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
                  helper.make_node("Add", ["var", "eps"], ["ve"]),
                  helper.make_node("Sqrt", ["ve"], ["sd"]),
                  helper.make_node("Div", ["xc", "sd"], ["n"]),
                  helper.make_node("Mul", ["n", "g"], ["ng"]),
                  helper.make_node("Add", ["ng", "b"], ["y"])],
                 [("x", [1, 4, 16])],
                 [init("two", [], 2.0), init("eps", [], 1e-5), init("g", [16]), init("b", [16])])


def rms_norm(div=True):
    tail = [helper.make_node("Div", ["x", "sd"], ["n"])] if div else [
        helper.make_node("Reciprocal", ["sd"], ["rs"]), helper.make_node("Mul", ["x", "rs"], ["n"])]
    return model([helper.make_node("Relu", ["x0"], ["x"]),
                  helper.make_node("Pow", ["x", "two"], ["sq"]),
                  helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
                  helper.make_node("Add", ["var", "eps"], ["ve"]),
                  helper.make_node("Sqrt", ["ve"], ["sd"]), *tail,
                  helper.make_node("Mul", ["g", "n"], ["y"])],
                 [("x0", [1, 4, 16])],
                 [init("two", [], 2.0), init("eps", [], 1e-5), init("g", [16])])


def silu():
    return model([helper.make_node("MatMul", ["x", "W"], ["h"]),
                  helper.make_node("Sigmoid", ["h"], ["s"]),
                  helper.make_node("Mul", ["h", "s"], ["y"])],
                 [("x", [1, 4, 8])], [init("W", [8, 16])])


def skip_layer_norm():
    return model([helper.make_node("Add", ["x", "r"], ["s"]),
                  helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1)],
                 [("x", [1, 4, 16]), ("r", [1, 4, 16])], [init("g", [16]), init("b", [16])])


CASES = {
    # name: (model, {op: count ORT must have absorbed}, {op: count that must stay})
    "conv-bn": (conv_bn, {"BatchNormalization": 1}, {}),
    "conv-mul-add": (conv_mul_add, {"Mul": 1, "Add": 1}, {}),
    "transpose-pair": (transpose_pair, {"Transpose": 2}, {}),
    "noops": (noops, {"Mul": 1, "Add": 1, "Identity": 1}, {}),
    "matmul-scale-transpose": (matmul_scale_and_transpose, {"Transpose": 1, "Div": 1}, {}),
    "gelu": (gelu, {"Div": 1, "Erf": 0, "Mul": 2, "Add": 2}, {"Erf": 1}),
    "layer-norm": (layer_norm, {"ReduceMean": 2, "Sub": 1, "Pow": 1, "Sqrt": 1, "Mul": 1,
                                "Div": 1, "Add": 1}, {"Add": 1}),  # the last Add stands in
    "skip-layer-norm": (skip_layer_norm, {"Add": 1}, {"LayerNormalization": 1}),
    "silu": (silu, {"Mul": 1}, {"Sigmoid": 1}),
    "rms-norm": (rms_norm, {"Pow": 1, "ReduceMean": 1, "Add": 1, "Sqrt": 1, "Div": 1},
                 {"Mul": 1}),  # the weight Mul stands in for the group
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_absorbed_nodes_are_what_ort_removes(case, tmp_path):
    build, absorbed_ops, kept_ops = CASES[case]
    m = build()
    graph = load(m)
    fusions = ort_fusions(graph, "cpu")
    absorbed = Counter(n.op for n in fusions.absorbed)
    for op, count in absorbed_ops.items():
        assert absorbed[op] == count, (case, op, dict(absorbed))
    remaining = Counter(n.op for n in graph.nodes if n not in fusions.absorbed)
    for op, count in kept_ops.items():
        assert remaining[op] == count, (case, op, dict(remaining))
    # ORT really removes or fuses them: none of the absorbed ops' nodes survive as such
    # beyond what the model says stays.
    ops = ort_ops(m, tmp_path)
    original = Counter(n.op_type for n in m.graph.node)
    for op, count in absorbed_ops.items():
        if count:
            assert ops[op] <= original[op] - count, (case, op, dict(ops))


def test_a_layer_norm_chain_costs_one_layer_normalization():
    graph = load(layer_norm())
    fusions = ort_fusions(graph, "cpu")
    last = graph.output_values[0].node
    stand_in = fusions.charged(last)
    assert stand_in.op == "LayerNormalization" and stand_in.inputs[0] is graph.inputs[0]


def test_noops_ort_keeps_stay(tmp_path):
    on_input = model([helper.make_node("Add", ["x", "zero"], ["a"]),
                      helper.make_node("MatMul", ["a", "W"], ["y"])],
                     [("x", [2, 8])], [init("zero", [1], 0.0), init("W", [8, 8])])
    vector = model([helper.make_node("Relu", ["x"], ["r"]),
                    helper.make_node("Add", ["r", "zero"], ["a"]),
                    helper.make_node("MatMul", ["a", "W"], ["y"])],
                   [("x", [2, 8])], [init("zero", [8], 0.0), init("W", [8, 8])])
    for m in (on_input, vector):
        assert ort_fusions(load(m), "cpu").absorbed == {}
        assert ort_ops(m, tmp_path)["Add"] == 1


def test_the_reciprocal_form_of_rms_norm_stays_unfused(tmp_path):
    m = rms_norm(div=False)
    assert ort_fusions(load(m), "cpu").absorbed == {}
    assert ort_ops(m, tmp_path)["Reciprocal"] == 1  # ORT leaves it op by op too


def test_nothing_fuses_across_a_second_user():
    m = conv_bn()
    m.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    assert ort_fusions(load(m), "cpu").absorbed == {}


def test_bn_fold_stand_in_is_the_conv_with_a_bias():
    graph = load(conv_bn())
    fusions = ort_fusions(graph, "cpu")
    conv = next(n for n in graph.nodes if n.op == "Conv")
    stand_in = fusions.charged(conv)
    assert stand_in.op == "Conv" and len(stand_in.inputs) == 3
    assert stand_in.inputs[2].is_const and stand_in.inputs[2].type.shape == (8,)
    assert stand_in.attrs == conv.attrs
    assert ort_fusions(graph, "cuda").absorbed == {}  # level-1 folds: modelled on the CPU only


def test_duplicate_computations_run_once(tmp_path):
    m = model([helper.make_node("Conv", ["x", "W"], ["c"]),
               helper.make_node("Relu", ["c"], ["r1"]), helper.make_node("Relu", ["c"], ["r2"]),
               helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
               helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
               helper.make_node("Add", ["p1", "p2"], ["y"])],
              [("x", [1, 4, 8, 8])], [init("W", [4, 4, 1, 1])])
    merged = common_subexpressions(load(m))
    assert Counter(n.op for n in merged.nodes) == {"Conv": 1, "Relu": 1, "MaxPool": 1, "Add": 1}
    # then the Relu has the Conv to itself and fuses into it, as in ORT
    assert Counter(n.op for n in ort_fusions(merged, "cpu").absorbed) == {"Relu": 1}
    assert ort_ops(m, tmp_path) == {"FusedConv": 1, "MaxPool": 1, "Add": 1}
    plain = load(conv_bn())
    assert common_subexpressions(plain) is plain


def test_merging_duplicates_never_grows_the_graph():
    """A duplicate's users may come first in topological order (the kept node is then
    rebuilt): the merged graph still has each computation once. NASNet has such branches."""
    from superopt import zoo

    m = model([helper.make_node("Relu", ["x"], ["r1"]), helper.make_node("Relu", ["x"], ["r2"]),
               helper.make_node("Sigmoid", ["r2"], ["p1"]),
               helper.make_node("Sigmoid", ["r1"], ["p2"]),
               helper.make_node("Add", ["p1", "p2"], ["y"])], [("x", [2, 8])], [])
    merged = common_subexpressions(load(m))
    assert Counter(n.op for n in merged.nodes) == {"Relu": 1, "Sigmoid": 1, "Add": 1}
    nasnet = load(zoo.build("nasnet_a"))
    assert len(common_subexpressions(nasnet).nodes) < len(nasnet.nodes)
