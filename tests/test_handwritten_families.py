"""The hand-written rule families (tools/handwritten_families.py -> rules_db/handwritten.json):
the file is what the tool writes, every rule proves, the broken variants do not, and the search
finds each family's rewrite end to end on the zoo and the shared exports, numerically equal."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt import load as superopt_load
from superopt.core.rules import Rule, load_rules, rule_key
from superopt.face.commands.rules_reach import ReachModel, reach, zoo_models
from superopt.verifier.prove import prove_rule

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import handwritten_families  # noqa: E402

HANDWRITTEN = ROOT / "rules_db" / "handwritten.json"
SEED = 1414


def _by_name(name: str) -> list[dict]:
    return [d for d in json.loads(HANDWRITTEN.read_text())["rules"] if d["name"] == name]


def _rule(d: dict, **changes) -> Rule:
    d = {k: v for k, v in d.items() if k not in ("id", "proof")}
    d.update(changes)
    return Rule.from_json(d)


def test_the_file_is_what_the_tool_writes_and_is_shipped():
    written = sorted(r.id for r in handwritten_families.families())
    stored = json.loads(HANDWRITTEN.read_text())["rules"]
    assert sorted(d["id"] for d in stored) == written
    assert all(d["proof"]["result"] == "proved" for d in stored)
    shipped = {r.id for r in load_rules().proved()}
    assert set(written) <= shipped
    names = Counter(d["name"] for d in stored)
    # one rule per rank and variant; Add/Mul in one operand order (the matcher tries both)
    assert names["linear-bias-merge"] == 3 and names["linear-bias-merge-3"] == 3
    assert names["conv-bias-merge"] == 3 and names["conv-bias-enlarge-merge"] == 10
    # the same Conv families for bias-free Convs (dynamo exports drop an all-zero bias)
    assert names["conv-merge"] == 3 and names["conv-merge-3"] == 1
    assert names["conv-enlarge-merge"] == 10 and names["conv-add-merge-no-bias"] == 1
    # (C, 1, 1) with and without bias, and (1, C, 1, 1) through ChannelVector
    assert names["conv-channel-scale-fold"] == 4 and names["norm-scale-fold"] == 3
    assert names["conv-channel-shift-fold"] == 4  # (C, 1, 1) / (1, C, 1, 1), with / without bias
    assert names["transpose-cancellation"] == 1 + 5 + 23
    assert names["conv-add-merge"] == 1
    assert names["linear-channel-scale-fold"] == 3 * 2 + 1
    assert len({rule_key(r) for r in handwritten_families.families()}) == len(stored)


@pytest.mark.parametrize("name,old,new", [
    # the bias of the first projection put under the second's columns
    ("linear-bias-merge", "(Concat[axis=0] ?b1 ?b2)", "(Concat[axis=0] ?b2 ?b1)"),
    # the Split's axis is not the one the weights were joined along
    ("linear-bias-merge-3", "Split[axis=2,", "Split[axis=1,"),
    # the merged Conv forgets the strides both sources share
    ("conv-bias-merge", "Conv[dilations=?d, pads=?p, strides=?s] ?x (Concat",
     "Conv[dilations=?d, pads=?p] ?x (Concat"),
    # the 1x1 kernel enlarged but the merged Conv unpadded
    ("conv-bias-enlarge-merge", "(Conv[pads=(1, 1, 1, 1), strides=?s] ?x (Concat",
     "(Conv[strides=?s] ?x (Concat"),
    # the merged Conv keeps one bias instead of their sum
    ("conv-add-merge", "(Add ?b1 ?b2)", "?b1"),
    # the kernels joined along output channels instead of input channels
    ("conv-add-merge", "(Concat[axis=1] ?w1 ?w2)", "(Concat[axis=0] ?w1 ?w2)"),
    # the layer scale applied to the weight's rows (input features) instead of its columns
    ("linear-channel-scale-fold", "(Transpose[perm=(1, 0)] (ScaleAxis0 (Transpose[perm=(1, 0)] "
     "?w) ?g))", "(ScaleAxis0 ?w ?g)"),
    # the weight scaled but the bias left as it was
    ("linear-channel-scale-fold", "(Mul ?b ?g)", "?b"),
    # a per-channel constant added after the Conv subtracted from its bias
    ("conv-channel-shift-fold", "(Add ?b (ChannelVector ?c))", "(Sub ?b (ChannelVector ?c))"),
    # a (1, C, 1, 1) scale applied to the kernel but not to the bias
    ("conv-channel-scale-fold", "(ScaleAxis0 ?b (ChannelVector ?c))", "?b"),
])
def test_broken_variants_are_not_proved(name, old, new):
    for d in _by_name(name):
        if any(old in t for t in d["dst"]) and len(set(d["dst"])) == len(d["dst"]):
            dst = [t.replace(old, new) for t in d["dst"]]
            try:
                proof = prove_rule(_rule(d, dst=dst))
            except Exception as e:  # noqa: BLE001 - a target that no longer parses is refused too
                proof = {"result": f"refused: {e}"}
            assert proof["result"] != "proved", (d["id"], dst)
            return
    pytest.fail(f"no {name} rule has {old!r} in its target")


def test_linear_merge_needs_its_bias_conditions():
    """Without `len(b1) == cols(w1)`, a bias that broadcasts (length 1) would land on the wrong
    columns after the merge: the rule is false there, and the prover does not prove it."""
    d = _by_name("linear-bias-merge")[0]
    assert prove_rule(_rule(d))["result"] == "proved"
    assert prove_rule(_rule(d, conditions=[]))["result"] != "proved"


@pytest.fixture(scope="module")
def zoo_rows():
    return {r.model: r for r in reach(zoo_models(["squeezenet", "bert", "inception_v3",
                                                  "nasnet_a", "resnet50", "resnext50"]),
                                      load_rules().proved(), costs=["analytic"], time_limit=20)}


@pytest.mark.parametrize("model,family,at_least", [
    ("squeezenet", "Conv merge (shared input)", 8),   # every Fire module: 1x1 enlarged, merged
    ("bert", "MatMul merge (shared input)", 12),      # Q/K/V with bias, every layer
    ("inception_v3", "Conv merge (shared input)", 9),  # the 1x1 Convs each block opens with
    ("nasnet_a", "Relu duplicate merge", 10),          # separable branches' duplicated Relus
    # layer1.0's last 1x1 Conv and its downsample Conv (both stride 1) plus their Add: one Conv
    # over the concatenated inputs (the stride-2 shortcuts of layers 2-4 differ in strides)
    ("resnet50", "Conv merge (concatenated)", 1),
    ("resnext50", "Conv merge (concatenated)", 1),
])
def test_zoo_models_are_rewritten_and_equal(zoo_rows, model, family, at_least):
    row = zoo_rows[model]
    assert not row.error
    assert row.families.get(family, 0) >= at_least, row.families
    assert row.passed is True and row.numerics.startswith("ok"), row.numerics


@pytest.mark.parametrize("stem,family,at_least", [
    ("roberta_tiny", "MatMul merge (shared input)", 2),        # Q/K/V + bias, Add(bias, MatMul)
    ("roberta_tiny_dynamo", "MatMul merge (shared input)", 2),  # Add(MatMul, bias)
    ("llama_tiny_dynamo", "Mul folded into MatMul", 4),  # RMSNorm weights into q/k/v, gate/up
    ("whisper_tiny_encoder", "MatMul merge (shared input)", 2),
])
def test_shared_exports_are_rewritten_and_equal(shared_models, stem, family, at_least):
    [row] = reach([ReachModel(stem, "shared", shared_models / f"{stem}.onnx")],
                  load_rules().proved(), costs=["analytic"], time_limit=20)
    assert not row.error
    assert row.families.get(family, 0) >= at_least, row.families
    assert row.passed is True, row.numerics


def _conv_mul_model(group: int, c_first: bool) -> onnx.ModelProto:
    """Conv (with bias, `group` groups, stride 2) -> Mul by a (C, 1, 1) constant -> Relu."""
    rng = np.random.default_rng(SEED)
    cin, cout = 4, 8
    w = rng.standard_normal((cout, cin // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    c = rng.uniform(0.5, 2.0, (cout, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (c, "c"))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Mul", ["c", "y"] if c_first else ["y", "c"], ["z"]),
             helper.make_node("Relu", ["z"], ["out"])]
    graph = helper.make_graph(
        nodes, "conv_mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 9, 9])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, cout, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("group,c_first", [(1, False), (4, True)])
def test_per_channel_mul_after_conv_folds_into_kernel_and_bias(group, c_first):
    print(f"seed {SEED}")
    model = _conv_mul_model(group, c_first)
    [row] = reach([ReachModel("conv_mul", "zoo", model)], load_rules().proved(),
                  costs=["analytic"], time_limit=10)
    assert row.families == {"Mul folded into Conv": 1}, row.families
    assert row.nodes_before == 3 and row.nodes_after == 2
    assert row.passed is True, row.numerics


def test_a_vector_mul_after_conv_is_not_a_channel_scale():
    """A (C,) vector broadcasts along the width, not the channels: the fold must not fire."""
    model = _conv_mul_model(1, False)
    c = next(i for i in model.graph.initializer if i.name == "c")
    c.CopyFrom(numpy_helper.from_array(np.full((5,), 2.0, np.float32), "c"))
    [row] = reach([ReachModel("conv_mul_vec", "zoo", model)], load_rules().proved(),
                  costs=["analytic"], time_limit=10)
    assert "Mul folded into Conv" not in row.families and row.passed is not False


@pytest.mark.parametrize("p,q", [((0, 2, 1, 3), (0, 2, 1, 3)), ((0, 2, 3, 1), (0, 3, 1, 2)),
                                 ((1, 0), (1, 0))])
def test_transpose_pairs_cancel(p, q):
    """Transpose by p, then by its inverse q: the search removes both (attention reshuffles)."""
    shape = (2, 3, 4, 5)[:len(p)]
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=list(p)),
             helper.make_node("Transpose", ["a"], ["b"], perm=list(q)),
             helper.make_node("Relu", ["b"], ["out"])]
    graph = helper.make_graph(
        nodes, "tt", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    [row] = reach([ReachModel("tt", "zoo", model)], load_rules().proved(), costs=["analytic"],
                  time_limit=10)
    assert row.families == {"Transpose cancellation": 1}, row.families
    assert row.nodes_after == 1 and row.passed is True, row.numerics


def _two_conv_add_model(y_size: int, bias: bool = True) -> onnx.ModelProto:
    """Two 1x1 Convs (with bias, or neither) on x (1x3x6x6) and y (1x4xSxS), added, then
    Relu: a projection shortcut when S == 6; with S == 1 the Add broadcasts one map over the
    other."""
    rng = np.random.default_rng(SEED)
    arrays = {"w1": rng.standard_normal((5, 3, 1, 1)), "b1": rng.standard_normal(5),
              "w2": rng.standard_normal((5, 4, 1, 1)), "b2": rng.standard_normal(5)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()
             if bias or n.startswith("w")]
    b = (lambda n: [n]) if bias else (lambda n: [])
    nodes = [helper.make_node("Conv", ["x", "w1", *b("b1")], ["c1"]),
             helper.make_node("Conv", ["y", "w2", *b("b2")], ["c2"]),
             helper.make_node("Add", ["c1", "c2"], ["s"]),
             helper.make_node("Relu", ["s"], ["out"])]
    graph = helper.make_graph(
        nodes, "conv_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, y_size, y_size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bias", [True, False])
def test_conv_add_merge_joins_a_projection_shortcut(bias):
    print(f"seed {SEED}")
    [row] = reach([ReachModel("conv_add", "zoo", _two_conv_add_model(6, bias))],
                  load_rules().proved(), costs=["analytic"], time_limit=10)
    assert row.families == {"Conv merge (concatenated)": 1}, row.families
    assert row.nodes_before == 4 and row.nodes_after == 3  # Concat + Conv + Relu
    assert row.passed is True, row.numerics


def test_conv_add_merge_does_not_fire_on_a_broadcasting_add():
    """The inputs differ in spatial size (the Add broadcasts a 1x1 map): no Concat of them
    exists, and the rule's `shape(?x)[2:] == shape(?y)[2:]` refuses the site."""
    [row] = reach([ReachModel("conv_add_bcast", "zoo", _two_conv_add_model(1))],
                  load_rules().proved(), costs=["analytic"], time_limit=10)
    assert "Conv merge (concatenated)" not in row.families, row.families
    assert row.passed is not False


def _convnext_block(scale_shape: tuple[int, ...]) -> onnx.ModelProto:
    """ConvNeXt's block tail as torchvision exports it: NCHW -> NHWC Transpose, nn.Linear
    (MatMul + bias Add, bias first), Transpose back to NCHW, then Mul by the layer scale
    (`scale_shape`: (C, 1, 1) per channel; (1, 1, 1) a scalar-like one; (C, 1, 5) no scale)."""
    rng = np.random.default_rng(SEED)
    c = 6
    arrays = {"w": rng.standard_normal((8, c)), "b": rng.standard_normal(c),
              "g": rng.standard_normal(scale_shape)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["t", "w"], ["m"]),
             helper.make_node("Add", ["b", "m"], ["a"]),
             helper.make_node("Transpose", ["a"], ["u"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["g", "u"], ["out"])]
    out_w = scale_shape[2] if scale_shape[2] != 1 else 5
    graph = helper.make_graph(
        nodes, "convnext_tail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 4, out_w])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_convnext_layer_scale_folds_into_the_linear_layer():
    """The Mul by a (C, 1, 1) layer scale disappears into the weight's columns and the bias;
    the folded weight keeps its (K, C) shape (a (1, K, C) one runs slower in ORT's MatMul)."""
    from superopt.core.onnx_io import to_onnx
    from superopt.face.commands import rules_reach

    print(f"seed {SEED}")
    kept = {}
    real_compare = rules_reach._compare

    def spy(original, baseline, best, n, sets):
        kept["model"] = to_onnx(best)
        return real_compare(original, baseline, best, n, sets)

    rules_reach._compare = spy
    try:
        [row] = reach([ReachModel("convnext_tail", "zoo", _convnext_block((6, 1, 1)))],
                      load_rules().proved(), costs=["analytic"], time_limit=10)
    finally:
        rules_reach._compare = real_compare
    assert row.families == {"Mul folded into MatMul": 1}, row.families
    assert row.nodes_before == 5 and row.nodes_after == 4
    assert row.passed is True, row.numerics
    model = kept["model"]
    assert "Mul" not in {n.op_type for n in model.graph.node}
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    assert weights[matmul.input[1]] == (8, 6)


def test_a_layer_scale_that_is_not_per_channel_is_left_alone():
    """A (1, 1, 1) scale is per tensor, not per channel: the family's `shape(?g)[0] ==
    shape(?w)[1]` refuses it (another rule may still move it; the result stays equal)."""
    [row] = reach([ReachModel("convnext_scalar", "zoo", _convnext_block((1, 1, 1)))],
                  load_rules().proved(), costs=["analytic"], time_limit=10)
    assert row.passed is not False, row.numerics


def _two_kernel_model(pair: str, joined: bool, bias: bool = True) -> onnx.ModelProto:
    """Two biased Convs of different kernel sizes, both padded "same", reading x at stride 2:
    `pair` "1x1/3x3" (a ResNet-18 stage opener: its 3x3 and its downsample 1x1) or "1x3/3x1"
    (Inception-v3's last blocks); `joined`: each with a Relu, then a channel Concat of the
    two, else the 3x3 (or 3x1) output goes through a Relu and both are outputs."""
    rng = np.random.default_rng(SEED)
    (ka, pa), (kb, pb) = {"1x1/3x3": (((1, 1), 0), ((3, 3), 1)),
                          "1x3/3x1": (((1, 3), (0, 1)), ((3, 1), (1, 0)))}[pair]
    arrays = {"wa": rng.standard_normal((5, 4, *ka)), "ba": rng.standard_normal(5),
              "wb": rng.standard_normal((6, 4, *kb)), "bb": rng.standard_normal(6)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    pads = [list(p) * 2 if isinstance(p, tuple) else [p] * 4 for p in (pa, pb)]
    if not bias:
        inits = [i for i in inits if i.name.startswith("w")]
    b = (lambda n: [n]) if bias else (lambda n: [])
    nodes = [helper.make_node("Conv", ["x", "wa", *b("ba")], ["a"], pads=pads[0], strides=[2, 2]),
             helper.make_node("Conv", ["x", "wb", *b("bb")], ["b"], pads=pads[1], strides=[2, 2])]
    if joined:
        nodes += [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"]),
                  helper.make_node("Concat", ["ra", "rb"], ["out"], axis=1)]
        outs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 11, 5, 5])]
    else:
        nodes.append(helper.make_node("Relu", ["b"], ["rb"]))
        outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, 5, 5])
                for n, c in (("a", 5), ("rb", 6))]
    graph = helper.make_graph(
        nodes, "two_kernels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
        outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("pair", ["1x1/3x3", "1x3/3x1"])
@pytest.mark.parametrize("joined", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_enlarge_merge_of_two_kernel_sizes_is_one_conv(pair, joined, bias):
    """The enlarge + merge family on both kernel pairs, joined by a Concat (the merged Conv
    writes it) or apart (split back, the seed's example): one Conv, equal in ONNX Runtime.
    Applied at the match, as the roofline may not find it cheaper at these sizes."""
    import onnxruntime as ort

    from superopt.core.onnx_io import to_onnx
    from superopt.search.match import apply_match, find_matches

    print(f"seed {SEED}")
    model = _two_kernel_model(pair, joined, bias)
    g = superopt_load(model)
    family = "conv-bias-enlarge-merge" if bias else "conv-enlarge-merge"
    rules = [r for r in load_rules().proved() if r.name == family]
    hits = [(r, m) for r in rules for m in find_matches(g, r)]
    # joined, the Concat form and the split form both match (the search weighs both); apart,
    # only the split form
    assert sorted(len(r.src) for r, _ in hits) == ([1, 2] if joined else [2])
    [(_, m)] = [(r, m) for r, m in hits if len(r.src) == (1 if joined else 2)]
    rewritten = to_onnx(apply_match(g, m).graph)
    ops = Counter(n.op_type for n in rewritten.graph.node)
    assert ops["Conv"] == 1 and ops["Concat"] == 0 and ops["Split"] == (0 if joined else 1)
    x = {"x": np.random.default_rng(SEED).standard_normal((1, 4, 9, 9)).astype(np.float32)}
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, x) for m in (model, rewritten)]
    for want, got in zip(*run):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_enlarge_merge_needs_equal_strides():
    """The 1x1 at stride 1 and the 3x3 at stride 2 produce maps of different sizes: no match
    (and a bias-free rule does not match biased Convs)."""
    model = _two_kernel_model("1x1/3x3", False)
    strides = next(a for a in model.graph.node[0].attribute if a.name == "strides")
    strides.ints[:] = [1, 1]  # the 1x1's
    model.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 9
    model.graph.output[0].type.tensor_type.shape.dim[3].dim_value = 9
    g = superopt_load(model)
    from superopt.search.match import find_matches
    assert not [m for r in load_rules().proved() if r.name.endswith("enlarge-merge")
                for m in find_matches(g, r)]


def _frozen_bn_model(bias: bool, shape: tuple[int, ...]) -> onnx.ModelProto:
    """A Conv (group 2, stride 2; with or without bias), then x * scale + shift with per-channel
    constants of `shape` ((1, C, 1, 1) as torchvision's FrozenBatchNorm2d writes them, or
    (C, 1, 1)), then Relu."""
    rng = np.random.default_rng(SEED)
    c = 8
    arrays = {"w": rng.standard_normal((c, 2, 3, 3)), "b": rng.standard_normal(c),
              "scale": rng.uniform(0.5, 2.0, shape), "shift": rng.standard_normal(shape)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()
             if bias or n != "b"]
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["y"], group=2,
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Mul", ["y", "scale"], ["m"]),
             helper.make_node("Add", ["shift", "m"], ["a"]),
             helper.make_node("Relu", ["a"], ["out"])]
    graph = helper.make_graph(
        nodes, "frozen_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (8, 1, 1)])
def test_a_frozen_batchnorm_folds_into_the_conv(bias, shape):
    """Conv, then Mul and Add by per-channel constants (FrozenBatchNorm2d): both fold, the
    Conv alone is left, and the model computes what it did."""
    print(f"seed {SEED}")
    [row] = reach([ReachModel("frozen_bn", "zoo", _frozen_bn_model(bias, shape))],
                  load_rules().proved(), costs=["analytic"], time_limit=10)
    assert row.families == {"Mul folded into Conv": 1, "Add folded into Conv": 1}, row.families
    assert row.nodes_before == 4 and row.nodes_after == 2  # Conv + Relu
    assert row.passed is True, row.numerics


def test_a_vector_added_after_a_conv_is_not_a_channel_shift():
    """A (C,) vector broadcasts along the width, not the channels: no fold (the (C,) shift of
    an 8x5x5 map needs width 8, so the Add here is by a (5,) vector of the map's width)."""
    model = _frozen_bn_model(True, (1, 8, 1, 1))
    shift = next(i for i in model.graph.initializer if i.name == "shift")
    shift.CopyFrom(numpy_helper.from_array(np.arange(5, dtype=np.float32), "shift"))
    [row] = reach([ReachModel("vector_shift", "zoo", model)], load_rules().proved(),
                  costs=["analytic"], time_limit=10)
    assert "Add folded into Conv" not in row.families and row.passed is not False


def test_channel_vector_reads_only_per_channel_constants():
    from superopt.core.ops import get_op

    op = get_op("ChannelVector")
    c = np.arange(3, dtype=np.float32)
    for shape in ((3, 1, 1), (1, 3, 1, 1)):
        np.testing.assert_array_equal(op.compute({}, [c.reshape(shape)])[0], c)
    for shape in ((3,), (1, 3), (3, 1, 1, 1), (1, 3, 2, 1), (2, 3, 1, 1)):
        with pytest.raises(ValueError, match="not one value per channel"):
            op.compute({}, [np.zeros(shape, np.float32)])
