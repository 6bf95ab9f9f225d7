"""Issue #14: the Conv+BatchNormalization fold holds for any stride, pad and group (dilation 1).

The hand-written family in rules_db/handwritten.json has attribute parameters (`strides=?s`,
`pads=?p`, `group=?g`, `epsilon=?e`); the verifier proves it with the strides and pads as tuples
of Z3 Ints. Given as the rules (a user file: re-proved before use), it folds every
BatchNormalization of a real export (shufflenet_v2_x0_5_bn: depthwise and strided convs
included) and a depthwise strided Conv+BN built here, both matching ORT; wrong variants of it
are not proved. (Not merged into the shipped rules.json yet: the shipped-rules ORT check,
`write_onnx_pair`, cannot bind attribute parameters; see rules_db/README.md.)

Random data uses a fixed seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.rules import Rule
from superopt.verifier.prove import prove_rule

SEED = 1414
HANDWRITTEN = Path(__file__).resolve().parents[1] / "rules_db" / "handwritten.json"


def _handwritten() -> list[dict]:
    """The BN-fold family of the hand-written rules: without, then with a Conv bias."""
    rules = json.loads(HANDWRITTEN.read_text())["rules"]
    return sorted((d for d in rules if d["name"] in ("conv-bn-fold", "conv-bias-bn-fold")),
                  key=lambda d: d["name"] != "conv-bn-fold")


def _rule(d: dict, **changes) -> Rule:
    d = {k: v for k, v in d.items() if k not in ("id", "proof")}
    d.update(changes)
    return Rule.from_json(d)


def test_handwritten_family_is_proved_with_classes():
    rules = _handwritten()
    assert len(rules) == 2
    for d in rules:
        proof = prove_rule(_rule(d))
        assert proof["result"] == "proved", proof
        assert proof["classes"]["s"] == "ints" and proof["classes"]["p"] == "ints"
        assert proof["classes"]["g"] == "int" and proof["classes"]["x"] == "rank 4"
        assert d["proof"]["result"] == "proved" and d["proof"]["method"] == "axioms"
        assert proof["classes"]["d"] == "ints"  # any dilation too


def test_a_dilation_parameter_is_claimed_only_where_it_holds():
    """The fold holds at any dilation (the axioms quantify over it); the enlarge + merge does
    not: a dilated 3x3 with pads 1 no longer keeps the size of the 1x1 it absorbs."""
    assert "dilations=?d" in _handwritten()[0]["src"][0]
    rules = json.loads(HANDWRITTEN.read_text())["rules"]
    enlarge = next(d for d in rules if d["name"] == "conv-bias-enlarge-merge")
    assert "dilations" not in " ".join(enlarge["src"])
    src = [t.replace("Conv[", "Conv[dilations=?d, ") for t in enlarge["src"]]
    dst = [t.replace("Conv[", "Conv[dilations=?d, ") for t in enlarge["dst"]]
    proof = prove_rule(_rule(enlarge, src=src, dst=dst, params={**enlarge["params"],
                                                                "d": "ints"}))
    assert proof["result"] != "proved", proof


@pytest.mark.parametrize("wrong", ["add_bias", "default_eps", "fixed_strides"])
def test_wrong_variants_are_not_proved(wrong):
    with_bias = _handwritten()[1]
    dst = with_bias["dst"][0]
    if wrong == "add_bias":  # the Conv bias shifts the mean the other way
        dst = dst.replace("(Sub ?mean ?b)", "(Add ?mean ?b)")
    elif wrong == "default_eps":  # the target forgets the source's epsilon
        dst = dst.replace("[epsilon=?e]", "")
    else:  # the target drops the source's strides
        dst = dst.replace(", strides=?s]", "]")
    assert dst != with_bias["dst"][0]
    proof = prove_rule(_rule(with_bias, dst=[dst]))
    assert proof["result"] != "proved", proof


def test_all_batchnorms_of_shufflenet_fold(shared_models, tmp_path):
    src = shared_models / "shufflenet_v2_x0_5_bn.onnx"
    out = tmp_path / "out.onnx"
    result = superopt.optimize(src, out, rules=HANDWRITTEN, device="cpu", cost="analytic",
                               gate=False, time_limit=20)
    before = superopt.load(src).op_counts()
    after = superopt.load(out).op_counts()
    assert before["BatchNormalization"] == 56
    assert after.get("BatchNormalization", 0) == 0
    assert after["Conv"] == before["Conv"]
    assert result.check is not None and result.check.passed and not result.check.skipped


def _depthwise_strided_model(path: Path, bias: bool, dilation: int = 1) -> None:
    rng = np.random.default_rng(SEED)
    c = 8
    inits = [numpy_helper.from_array(rng.standard_normal((c, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "bnb"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "var")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "cb"))
        conv_in.append("cb")
    nodes = [helper.make_node("Conv", conv_in, ["y"], group=c, strides=[2, 2],
                              pads=[1, 0, 1, 2], kernel_shape=[3, 3],
                              dilations=[dilation, dilation]),
             helper.make_node("BatchNormalization", ["y", "scale", "bnb", "mean", "var"], ["z"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["z"], ["out"])]
    graph = helper.make_graph(
        nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 9, 10])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    onnx.save(model, str(path))


@pytest.mark.parametrize("bias,dilation", [(False, 1), (True, 1), (True, 2)])
def test_depthwise_strided_conv_bn_folds_and_matches_ort(tmp_path, bias, dilation):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    _depthwise_strided_model(src, bias, dilation)
    result = superopt.optimize(src, out, rules=HANDWRITTEN, device="cpu", cost="analytic",
                               gate=False, time_limit=10)
    assert result.check is not None and result.check.passed
    after = superopt.load(out).op_counts()
    assert after.get("BatchNormalization", 0) == 0 and after["Conv"] == 1
    x = np.random.default_rng(SEED).standard_normal((1, 8, 9, 10)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for p in (src, out)]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-4, atol=1e-5)
