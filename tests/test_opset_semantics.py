"""Models below opset 13 keep their meaning through load (which converts them to opset 13) and
export.

Each case is a small model at an old opset, built with onnx.helper, for an op whose meaning or
signature changed between opsets: Softmax, LogSoftmax and Hardmax (2-D coercion at `axis`
before 13), Split (sizes attribute -> input at 13), Reduce* (axes attribute -> input at 13 for
ReduceSum, 18 for the others), Clip (min/max attributes -> inputs at 11), Pad (pads attribute
-> input at 11), Resize (no coordinate mode at 10; Upsample 7/9 become Resize), and others the
converter rewrites (Slice, TopK, Squeeze/Unsqueeze, Scatter, ...). `superopt.to_onnx(
superopt.load(model))` must give outputs bit-identical to the original's in ONNX Runtime (CPU,
ORT_DISABLE_ALL), which runs the old opsets itself.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_identical, run_ort
from onnx import TensorProto, helper, numpy_helper

import superopt

SEED = 0
F = TensorProto.FLOAT


def vi(name: str, shape, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def const(name: str, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype), name)


def one_op(op: str, opset: int, shape=(2, 3, 4), inputs=("x",), outputs=("y",), inits=(),
           extra_inputs=(), out_types: dict | None = None, **attrs) -> onnx.ModelProto:
    """A model of one `op` node at `opset` on float input x of `shape`."""
    node = helper.make_node(op, list(inputs), list(outputs), name="n", **attrs)
    ins = [vi("x", shape)] + list(extra_inputs)
    outs = [vi(o, None, (out_types or {}).get(o, F)) for o in outputs]
    graph = helper.make_graph([node], "g", ins, outs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=6)


def feeds_for(model: onnx.ModelProto, override: dict | None = None) -> dict:
    rng = np.random.default_rng(SEED)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits or (override and i.name in override):
            continue
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(shape or (2, 3, 4)).astype(np.float32)
    feeds.update(override or {})
    return feeds


def check_same_meaning(model: onnx.ModelProto, feeds: dict | None = None) -> onnx.ModelProto:
    old = next(o.version for o in model.opset_import if o.domain == "")
    feeds = feeds or feeds_for(model)
    expected = run_ort(model, feeds)  # ORT runs the old opset itself
    graph = superopt.load(model)
    assert graph.meta.opset("") >= 13 or old >= 13
    exported = superopt.to_onnx(graph)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        pass  # outputs declared without a shape: the checker refuses the original already
    else:
        onnx.checker.check_model(exported)
    assert_identical(run_ort(exported, feeds), expected)
    return exported


# --- Softmax, LogSoftmax, Hardmax: before 13 the input is coerced to 2-D at `axis` ---------

AXES = [None, 0, 1, 2, -1, -2]


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset", [7, 11, 12])
@pytest.mark.parametrize("axis", AXES)
def test_softmax_family_rank3(op, opset, axis):
    if opset < 11 and axis is not None and axis < 0:
        pytest.skip("negative axes are an opset 11 addition")
    attrs = {} if axis is None else {"axis": axis}
    check_same_meaning(one_op(op, opset, **attrs))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("case", ["rank4-axis1", "rank4-axis2", "rank2", "rank1-axis0",
                                  "symbolic-batch", "unknown-rank"])
def test_softmax_family_shapes(op, case):
    if case == "unknown-rank":  # a Reshape to a runtime shape of unknown length feeds it
        nodes = [helper.make_node("Reshape", ["x", "s"], ["r"], name="r"),
                 helper.make_node(op, ["r"], ["y"], name="n", axis=1)]
        graph = helper.make_graph(nodes, "g", [vi("x", (24,)),
                                               vi("s", ("k",), TensorProto.INT64)],
                                  [vi("y", None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)],
                                  ir_version=6)
        x = np.random.default_rng(SEED).standard_normal(24).astype(np.float32)
        for s in ([2, 3, 4], [2, 12], [1, 2, 3, 4]):
            check_same_meaning(model, {"x": x, "s": np.array(s, np.int64)})
        return
    shape, axis = {
        "rank4-axis1": ((2, 3, 4, 5), 1),
        "rank4-axis2": ((2, 3, 4, 5), 2),
        "rank2": ((3, 5), None),
        "rank1-axis0": ((5,), 0),
        "symbolic-batch": (("N", 3, 4), 1),
    }[case]
    attrs = {} if axis is None else {"axis": axis}
    model = one_op(op, 11, shape=shape, **attrs)
    size = tuple(2 if isinstance(d, str) else d for d in shape)
    x = np.random.default_rng(SEED).standard_normal(size).astype(np.float32)
    check_same_meaning(model, {"x": x})


def test_hardmax_with_ties_and_in_a_subgraph():
    """Ties pick the first maximum in both meanings; an If branch is converted too."""
    then_g = helper.make_graph([helper.make_node("Hardmax", ["x"], ["t"], name="hm", axis=1)],
                               "then", [], [vi("t", None)])
    else_g = helper.make_graph([helper.make_node("LogSoftmax", ["x"], ["e"], name="ls")],
                               "else", [], [vi("e", None)])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g,
                              else_branch=else_g)]
    graph = helper.make_graph(nodes, "g", [vi("x", (2, 3, 4)), vi("c", (), TensorProto.BOOL)],
                              [vi("y", None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    x = np.round(np.random.default_rng(SEED).standard_normal((2, 3, 4))).astype(np.float32)
    for c in (True, False):
        check_same_meaning(model, {"x": x, "c": np.array(c)})


# --- Split: sizes attribute before 13 ---------------------------------------------------------

@pytest.mark.parametrize("opset,attrs,n_out", [
    (7, {"axis": 1, "split": [1, 2]}, 2),
    (7, {"axis": 2}, 2),
    (11, {"axis": -1, "split": [1, 3]}, 2),
    (11, {"axis": 0}, 2),
    (12, {"axis": 2, "split": [2, 1, 1]}, 3),
])
def test_split(opset, attrs, n_out):
    outs = [f"y{i}" for i in range(n_out)]
    check_same_meaning(one_op("Split", opset, outputs=outs, **attrs))


# --- Reduce*: axes attribute ------------------------------------------------------------------

REDUCES = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


@pytest.mark.parametrize("op", REDUCES)
@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("attrs", [{"axes": [1], "keepdims": 0}, {"axes": [-1, 0]}, {},
                                   {"keepdims": 0}], ids=["one", "two-neg", "all", "all-drop"])
def test_reduce(op, opset, attrs):
    model = one_op(op, opset, **attrs)
    x = np.abs(np.random.default_rng(SEED).standard_normal((2, 3, 4))).astype(np.float32)
    check_same_meaning(model, {"x": x + 0.1})


def test_reduce_at_opset_7_with_axes():
    check_same_meaning(one_op("ReduceSum", 7, axes=[0, 2], keepdims=1))


# --- Clip: min/max attributes before 11 -------------------------------------------------------

@pytest.mark.parametrize("attrs", [{"min": -0.5, "max": 0.7}, {"max": 0.7}, {"min": -0.2}, {}],
                         ids=["both", "max", "min", "none"])
def test_clip_attributes(attrs):
    check_same_meaning(one_op("Clip", 6, **attrs))


@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("inputs", [("x", "lo", "hi"), ("x", "lo"), ("x", "", "hi"), ("x",)])
def test_clip_inputs(opset, inputs):
    inits = [const("lo", -0.5), const("hi", 0.25)]
    check_same_meaning(one_op("Clip", opset, inputs=inputs, inits=inits))


# --- Pad: pads attribute before 11 ------------------------------------------------------------

@pytest.mark.parametrize("opset", [2, 10])
@pytest.mark.parametrize("attrs", [{"pads": [0, 1, 2, 0, 0, 1], "value": 1.5},
                                   {"pads": [0, 1, 2, 0, 1, 1], "mode": "reflect"},
                                   {"pads": [1, 1, 2, 0, 1, 1], "mode": "edge"},
                                   {"pads": [0, 0, 1, 0, 0, 0]}],
                         ids=["constant", "reflect", "edge", "default"])
def test_pad_attributes(opset, attrs):
    check_same_meaning(one_op("Pad", opset, **attrs))


def test_pad_inputs_at_11():
    inits = [const("pads", [0, 1, 2, 0, 0, 1], np.int64), const("v", 2.5)]
    check_same_meaning(one_op("Pad", 11, inputs=("x", "pads", "v"), inits=inits))


# --- Resize and Upsample ----------------------------------------------------------------------

X4 = (1, 2, 5, 7)
SCALES = {"up2": [1, 1, 2, 2], "up-frac": [1, 1, 1.5, 2.5], "down": [1, 1, 0.6, 0.5],
          "down-frac": [1, 1, 0.75, 0.8], "mixed": [1, 1, 3, 0.4], "mixed2": [1, 1, 0.3, 1.7],
          "one": [1, 1, 1, 1]}


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", sorted(SCALES))
def test_resize_10(mode, scales):
    """Resize 10 has no coordinate mode; ONNX Runtime's is asymmetric, and nearest takes the
    floor growing, the ceiling shrinking (so mixed scales need two steps)."""
    model = one_op("Resize", 10, shape=X4, inputs=("x", "s"), mode=mode,
                   inits=[const("s", SCALES[scales])])
    check_same_meaning(model)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", ["up2", "mixed", "down", "one"])
def test_resize_10_scales_known_at_run_time(mode, scales):
    s = vi("s", (4,))
    model = one_op("Resize", 10, shape=X4, inputs=("x", "s"), mode=mode, extra_inputs=[s])
    feeds = feeds_for(model, {"s": np.array(SCALES[scales], np.float32)})
    check_same_meaning(model, feeds)


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", ["up2", "up-frac", "one"])
def test_upsample(opset, mode, scales):
    if opset == 7:
        model = one_op("Upsample", 7, shape=X4, mode=mode,
                       scales=[float(s) for s in SCALES[scales]])
    else:
        model = one_op("Upsample", 9, shape=X4, inputs=("x", "s"), mode=mode,
                       inits=[const("s", SCALES[scales])])
    check_same_meaning(model)


def test_resize_10_in_a_subgraph_and_chained():
    """A growing Resize 10 feeding a mixed one, inside an If branch."""
    then_g = helper.make_graph(
        [helper.make_node("Resize", ["x", "s2"], ["u"], name="up", mode="nearest"),
         helper.make_node("Resize", ["u", "s3"], ["t"], name="rs", mode="nearest")],
        "then", [], [vi("t", None)])
    else_g = helper.make_graph(
        [helper.make_node("Resize", ["x", "s4"], ["e"], name="rs2", mode="linear")],
        "else", [], [vi("e", None)])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g,
                              else_branch=else_g)]
    graph = helper.make_graph(nodes, "g", [vi("x", X4), vi("c", (), TensorProto.BOOL)],
                              [vi("y", None)],
                              [const("s2", [1, 1, 2, 2]), const("s3", [1, 1, 0.5, 1.5]),
                               const("s4", [1, 1, 1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)], ir_version=6)
    x = np.random.default_rng(SEED).standard_normal(X4).astype(np.float32)
    check_same_meaning(model, {"x": x, "c": np.array(True)})  # not only the else branch
    for c in (True, False):
        check_same_meaning(model, {"x": x, "c": np.array(c)})


RESIZE_11 = {
    "half_pixel-linear": {"mode": "linear"},
    "asymmetric-nearest-floor": {"coordinate_transformation_mode": "asymmetric",
                                 "nearest_mode": "floor"},
    "align_corners-linear": {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    "pytorch-linear": {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    "tf_half_pixel_for_nn": {"coordinate_transformation_mode": "tf_half_pixel_for_nn"},
    "cubic": {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
    "nearest-ceil": {"nearest_mode": "round_prefer_ceil"},
}


@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("case", sorted(RESIZE_11))
def test_resize_11(opset, case):
    inits = [const("roi", []), const("s", SCALES["up-frac"])]
    model = one_op("Resize", opset, shape=X4, inputs=("x", "roi", "s"), inits=inits,
                   **RESIZE_11[case])
    check_same_meaning(model)


@pytest.mark.parametrize("opset", [11, 12])
def test_resize_11_sizes_and_crop(opset):
    inits = [const("roi", [0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7]), const("s", []),
             const("sizes", [1, 2, 4, 9], np.int64)]
    model = one_op("Resize", opset, shape=X4, inputs=("x", "roi", "s", "sizes"), inits=inits,
                   mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
                   extrapolation_value=-3.0)
    check_same_meaning(model)


# --- other ops the converter rewrites ---------------------------------------------------------

def _gemm(opset: int) -> onnx.ModelProto:
    node = helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="n", transB=1, alpha=0.5,
                            beta=2.0)
    graph = helper.make_graph([node], "g", [vi("x", (2, 3))], [vi("y", None)],
                              [const("b", np.ones((4, 3))), const("c", [1, 2, 3, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=6)


OTHERS = {
    "Slice-9": lambda: one_op("Slice", 9, starts=[1, -3], ends=[100, -1], axes=[1, 2]),
    "Slice-10": lambda: one_op("Slice", 10, inputs=("x", "st", "en", "ax", "sp"),
                               inits=[const(n, v, np.int64) for n, v in
                                      [("st", [2, -1]), ("en", [-100, 0]), ("ax", [1, 2]),
                                       ("sp", [-1, -2])]]),
    "TopK-9": lambda: one_op("TopK", 9, outputs=("v", "i"), k=2, axis=1,
                             out_types={"i": TensorProto.INT64}),
    "TopK-10": lambda: one_op("TopK", 10, inputs=("x", "k"), outputs=("v", "i"),
                              inits=[const("k", [3], np.int64)],
                              out_types={"i": TensorProto.INT64}),
    "Unsqueeze-11": lambda: one_op("Unsqueeze", 11, axes=[0, -1]),
    "Squeeze-11": lambda: one_op("Squeeze", 11, shape=(1, 3, 1), axes=[0, -1]),
    "Squeeze-11-all": lambda: one_op("Squeeze", 11, shape=(1, 3, 1)),
    "ArgMax-11": lambda: one_op("ArgMax", 11, axis=-1, keepdims=0,
                                out_types={"y": TensorProto.INT64}),
    "Scatter-10": lambda: one_op("Scatter", 10, inputs=("x", "i", "u"), axis=1,
                                 inits=[const("i", [[[0, 1, 2, 0]]] * 2, np.int64),
                                        const("u", np.ones((2, 1, 4)))]),
    "Flatten-9-axis0": lambda: one_op("Flatten", 9, axis=0),
    "BatchNormalization-7": lambda: one_op(
        "BatchNormalization", 7, shape=X4, inputs=("x", "sc", "b", "m", "v"), epsilon=1e-3,
        inits=[const("sc", [1, 2]), const("b", [0.1, 0.2]), const("m", [0.3, 0.4]),
               const("v", [1.5, 2.5])]),
    "AveragePool-7": lambda: one_op("AveragePool", 7, shape=X4, kernel_shape=[2, 2],
                                    pads=[1, 1, 0, 0], count_include_pad=1),
    "MaxPool-10-ceil": lambda: one_op("MaxPool", 10, shape=X4, kernel_shape=[2, 2],
                                      strides=[2, 2], ceil_mode=1),
    "Gather-11-negative": lambda: one_op("Gather", 11, inputs=("x", "i"), axis=1,
                                         inits=[const("i", [-1, 0], np.int64)]),
    "Reshape-5": lambda: one_op("Reshape", 5, inputs=("x", "s"),
                                inits=[const("s", [0, -1], np.int64)]),
    "Gemm-7": lambda: _gemm(7),
    "Gemm-9": lambda: _gemm(9),
    "DepthToSpace-10": lambda: one_op("DepthToSpace", 10, shape=(1, 4, 2, 3), blocksize=2),
    "Dropout-10": lambda: one_op("Dropout", 10, ratio=0.3),
    "Concat-7": lambda: one_op("Concat", 7, inputs=("x", "x"), axis=2),
    "Mod-10": lambda: one_op("Mod", 10, inputs=("x", "d"), fmod=1, inits=[const("d", 0.7)]),
    "Expand-8": lambda: one_op("Expand", 8, inputs=("x", "s"),
                               inits=[const("s", [2, 2, 3, 4], np.int64)]),
    "Cast-9": lambda: one_op("Cast", 9, to=TensorProto.INT32,
                             out_types={"y": TensorProto.INT32}),
}


@pytest.mark.parametrize("case", sorted(OTHERS))
def test_other_changed_ops(case):
    model = OTHERS[case]()
    feeds = None
    if case.startswith("Cast"):
        feeds = {"x": (10 * np.random.default_rng(SEED).standard_normal((2, 3, 4)))
                 .astype(np.float32)}
    check_same_meaning(model, feeds)


def test_converted_model_keeps_names_unique():
    """The nodes added for Hardmax and Resize take names nothing else uses."""
    nodes = [helper.make_node("Hardmax", ["x"], ["y"], name="n", axis=1),
             helper.make_node("Relu", ["y"], ["y_shape"], name="n_shape"),
             helper.make_node("Relu", ["y_shape"], ["y_2d"], name="n_flatten")]
    graph = helper.make_graph(nodes, "g", [vi("x", (2, 3, 4))], [vi("y_2d", None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    exported = check_same_meaning(model)
    outs = [o for n in exported.graph.node for o in n.output]
    names = [n.name for n in exported.graph.node if n.name]
    assert len(outs) == len(set(outs)) and len(names) == len(set(names))
