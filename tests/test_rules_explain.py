"""`superopt rules explain MODEL.onnx`: rule families, where they matched, where they were
refused and why, and which nodes no rule reached (with the attribute values seen there)."""

from __future__ import annotations

import json

import pytest

from superopt.core.rules import Rule, load_rules, save_rules
from superopt.face.cli import main
from superopt.face.commands.rules_explain import FORMAT, family_of


def _rule(src, dst, vars, **kw) -> Rule:
    return Rule.make(src, dst, vars, **kw)


@pytest.mark.parametrize("src,dst,vars,family", [
    (["(BatchNormalization (Conv ?t ?k) ?s ?b ?m ?v)"],
     ["(Conv ?t (BatchNormFoldKernel ?k ?s ?v) (BatchNormFoldBias ?s ?b ?m ?v))"],
     {"t": "tensor", "k": "weight", "s": "weight", "b": "weight", "m": "weight", "v": "weight"},
     "Conv+BatchNormalization fold"),
    (["(Transpose[perm=(1, 0)] (Transpose[perm=(1, 0)] ?x))"], ["?x"],
     {"x": "tensor"}, "Transpose cancellation"),
    (["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"],
     {"x": "tensor", "a": "weight", "b": "weight"}, "MatMul reassociation"),
    (["(MatMul ?x ?a)", "(MatMul ?x ?b)"],
     ["(Split[axis=1, split=(dim(?a,1), dim(?b,1))] (MatMul ?x (Concat[axis=1] ?a ?b)))",
      "(Split.1[axis=1, split=(dim(?a,1), dim(?b,1))] (MatMul ?x (Concat[axis=1] ?a ?b)))"],
     {"x": "tensor", "a": "weight", "b": "weight"}, "MatMul merge (shared input)"),
    (["(Add (MatMul ?v ?b) (MatMul ?z ?a))"],
     ["(MatMul (Concat[axis=1] ?v ?z) (Concat[axis=0] ?b ?a))"],
     {"v": "tensor", "z": "tensor", "a": "weight", "b": "weight"}, "MatMul merge (concatenated)"),
    (["(Mul (Conv ?t ?k) ?c)"], ["(Conv ?t (Mul ?k ?c))"],
     {"t": "tensor", "k": "weight", "c": "weight"}, "Mul folded into Conv"),
    (["(Add (Concat[axis=0] ?x ?y) (Concat[axis=0] ?y ?y))"],
     ["(Concat[axis=0] (Add ?x ?y) (Add ?y ?y))"],
     {"x": "tensor", "y": "tensor"}, "Concat/Split movement"),
    (["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"}, "Relu elimination"),
    (["(Relu (Sigmoid ?x))"], ["(Sigmoid (Relu ?x))"], {"x": "tensor"},
     "Relu/Sigmoid reassociation"),
])
def test_family_of(src, dst, vars, family):
    assert family_of(_rule(src, dst, vars)) == family


def test_every_shipped_rule_has_a_family():
    from superopt.core.rules import load_rules

    families = {family_of(r) for r in load_rules().rules}
    assert "Conv+BatchNormalization fold" in families
    assert 5 <= len(families) <= 60  # readable groups, not one per rule


def _explain(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["rules", "explain", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _json(capsys, *argv: str) -> dict:
    rc, out, err = _explain(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out)


def _family(doc: dict, name: str) -> dict:
    return next(f for f in doc["families"] if f["family"] == name)


def test_json_shape_on_the_zoo(capsys, zoo_model_path):
    """The documented shape; every site of a tried family is in exactly one group."""
    doc = _json(capsys, str(zoo_model_path("nasrnn")))
    assert doc["format"] == FORMAT
    assert set(doc) == {"format", "model", "nodes", "rules_file", "rules", "families"}
    assert doc["rules_file"] == "shipped" and doc["rules"] > 100 and doc["nodes"] > 100
    for f in doc["families"]:
        assert set(f) == {"family", "rules", "root_ops", "tried", "sites", "matched", "refused",
                          "unreached"}
        assert set(f["unreached"]) == {"count", "reasons", "attributes", "accepted"}
        counts = f["matched"]["count"] + f["refused"]["count"] + f["unreached"]["count"]
        assert f["sites"] == counts
        assert f["tried"] == any(f["root_ops"].values())
        nodes = (set(f["matched"]["nodes"])
                 | {n for r in f["refused"]["reasons"] for n in r["nodes"]}
                 | {n for r in f["unreached"]["reasons"] for n in r["nodes"]})
        assert len(nodes) == f["sites"]
    tried = [f for f in doc["families"] if f["tried"]]
    assert tried and doc["families"][:len(tried)] == tried  # tried families first
    # The NasRNN cell's two MatMuls on concatenable operands are merged.
    merged = _family(doc, "MatMul merge (concatenated)")
    assert merged["matched"]["count"] > 0


def test_text_on_the_zoo(capsys, zoo_model_path):
    rc, out, err = _explain(capsys, str(zoo_model_path("squeezenet")))
    assert rc == 0, err
    assert "families" in out and "tried" in out
    assert "not reached at" in out and "the rule wants" in out
    assert "not tried (no node of their root op in the model)" in out


def test_mnasnet_shows_what_was_tried_and_why_nothing_applies(capsys, shared_models):
    """BatchNorms already folded, no shortcut convolutions: every tried family says why. The
    one family that matches (an inverted-residual Add of a block's projection Conv and the
    previous block's, merged along input channels) is not cheaper anywhere: the previous
    block's Conv feeds the next block too, so it stays and the merge only adds work."""
    model = str(shared_models / "mnasnet0_5.onnx")
    doc = _json(capsys, model)
    tried = [f for f in doc["families"] if f["tried"]]
    assert len(tried) >= 3
    matched = [f for f in doc["families"] if f["matched"]["count"]]
    assert [f["family"] for f in matched] == ["Conv merge (concatenated)"]
    changes = matched[0]["matched"]["cost_change_s"]
    assert len(changes) == matched[0]["matched"]["count"] and all(c > 0 for c in changes.values())
    assert not any(f["family"] == "Conv+BatchNormalization fold" and f["tried"]
                   for f in doc["families"])  # no BatchNormalization node left
    for f in tried:  # every site of a tried family is explained
        reasons = f["refused"]["reasons"] + f["unreached"]["reasons"]
        assert reasons and all(r["reason"] and r["nodes"] for r in reasons)
    conv = [r["reason"] for f in tried for r in f["unreached"]["reasons"]
            if "Conv" in f["root_ops"]]
    assert any("Conv with 3 inputs" in r for r in conv), conv  # the exporter's bias input

    rc, out, err = _explain(capsys, model)
    assert rc == 0, err
    assert "matched nowhere" in out and "not cheaper on its own" in out
    assert "Conv with 3 inputs" in out
    # listed as not tried (the paragraph is wrapped to the terminal: compare words)
    assert "Conv+BatchNormalization fold" in " ".join(out.split())


def test_shufflenet_conv_bn_fold_matches_and_names_the_convs_it_misses(capsys, shared_models):
    """With the shipped database the BN-fold family (attribute variables) folds all 56 BNs;
    narrowed to the generated rule written at fixed Conv attributes (group 1, strides 1), the
    depthwise and strided convs it misses are named with their attribute values."""
    model = str(shared_models / "shufflenet_v2_x0_5_bn.onnx")
    doc = _json(capsys, model, "--family", "batchnorm")
    [fold] = doc["families"]
    assert fold["family"] == "Conv+BatchNormalization fold"
    assert fold["root_ops"] == {"BatchNormalization": 56}
    assert fold["matched"]["count"] == 56
    assert fold["refused"]["count"] + fold["unreached"]["count"] == 0

    # the generated fold (BatchNormalization (Conv ?t ?k11) ...), at group 1 and strides (1, 1)
    [fixed] = [r.id for r in load_rules().proved()
               if [str(p) for p in r.src] == ["(BatchNormalization (Conv ?t ?k11) ?bn_scale "
                                              "?bn_bias ?bn_mean ?bn_var)"]]
    doc = _json(capsys, model, "--rule", fixed)
    [fold] = doc["families"]
    assert 0 < fold["matched"]["count"] < 56
    assert fold["refused"]["count"] + fold["unreached"]["count"] > 0
    texts = [r["reason"] for r in fold["refused"]["reasons"] + fold["unreached"]["reasons"]]
    assert any("group=" in t for t in texts), texts
    assert any("strides=(2, 2)" in t for t in texts), texts
    seen = {(a["op"], a["attr"]) for a in fold["unreached"]["attributes"]}
    if fold["unreached"]["count"]:
        assert ("Conv", "group") in seen and ("Conv", "strides") in seen
        assert fold["unreached"]["accepted"]["Conv"]["group"]

    rc, out, err = _explain(capsys, model, "--rule", fixed, "--sites", "2")
    assert rc == 0, err
    assert "Conv+BatchNormalization fold" in out and "matched at" in out
    assert "group=" in out and "strides=(2, 2)" in out
    assert "... and" in out  # node lists are capped


def test_rule_narrows_to_one_rule(capsys, shared_models):
    model = str(shared_models / "shufflenet_v2_x0_5_bn.onnx")
    fold = _json(capsys, model, "--family", "batchnorm")["families"][0]
    fired = sorted({r for ids in fold["matched"]["nodes"].values() for r in ids})
    doc = _json(capsys, model, "--rule", fired[0])
    assert doc["rules"] == 1
    [only] = doc["families"]
    assert only["rules"] == [fired[0]] and only["matched"]["count"] > 0


def test_rules_file_and_refusal_reasons(capsys, tmp_path, zoo_model_path):
    """A rules file of its own: only its rules are explained, each miss named."""
    rule = _rule(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"}, example={"x": (2, 4)},
                 proof={"result": "proved"})
    rules = tmp_path / "rules.json"
    save_rules([rule], rules)
    doc = _json(capsys, str(zoo_model_path("squeezenet")), "--rules", str(rules))
    [f] = doc["families"]
    assert f["rules"] == [rule.id] and f["tried"]
    # squeezenet has no Relu of a Relu: every Relu is not reached, its input named.
    assert f["unreached"]["count"] == f["root_ops"]["Relu"]
    assert all("the rule wants Relu" in r["reason"] for r in f["unreached"]["reasons"])


@pytest.mark.parametrize("argv,phrase", [
    (["nosuch.onnx"], "no such file"),
    (["{model}", "--rule", "rnosuchrule"], "no rule"),
    (["{model}", "--family", "no such family"], "selects no family"),
    (["{model}", "--rules", "{missing}"], "no such rules file"),
])
def test_bad_input_one_line_exit_2(capsys, tmp_path, zoo_model_path, argv, phrase):
    model = str(zoo_model_path("squeezenet"))
    argv = [a.format(model=model, missing=tmp_path / "none.json") for a in argv]
    rc, out, err = _explain(capsys, *argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("superopt rules: error:") and phrase in err, err


def test_a_match_that_is_not_cheaper_says_so(zoo_model_path, capsys):
    """ResNet-50's one shared-input pair (layer1.0's conv1 and downsample) matches the biased
    Conv merge, but the Split it needs copies a million elements: the roofline says no."""
    model = str(zoo_model_path("resnet50"))
    assert main(["rules", "explain", model, "--family", "conv merge", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [fam] = [f for f in doc["families"] if f["family"] == "Conv merge (shared input)"]
    changes = fam["matched"]["cost_change_s"]
    assert set(changes) == {"layer1.0.conv1", "layer1.0.downsample"}
    assert all(c > 0 for c in changes.values())
    assert main(["rules", "explain", model, "--family", "conv merge"]) == 0
    assert "not cheaper on its own" in capsys.readouterr().out


def test_a_miss_is_explained_in_the_operand_order_that_agrees_most():
    """`(Mul (Relu ?x) ?c)` at Mul(c, Sigmoid(x)): the matcher tries both orders of a Mul, so
    the miss named is the Sigmoid where the Relu should be, not the constant in the written
    order's place."""
    import numpy as np

    from superopt.core.ir import Graph, Node, Value
    from superopt.core.types import FLOAT, TensorType
    from superopt.face.commands.rules_explain import explain_model

    rule = _rule(["(Mul (Relu ?x) ?c)"], ["(Relu (Mul ?x ?c))"],
                 {"x": {"kind": "tensor", "rank": 2}, "c": {"kind": "weight", "rank": 0}},
                 proof={"result": "proved"})
    x = Value.input("x", TensorType(FLOAT, (2, 3)))
    c = Value.const(np.float32(2.0).reshape(()), "c")
    sig = Node.make("Sigmoid", {}, [x], name="sig").outputs[0]
    graph = Graph([x], [("y", Node.make("Mul", {}, [c, sig], name="mul").outputs[0])])
    [report] = explain_model(graph, [rule])
    assert [m.text for m in report.unreached["mul"]] == [
        "input 1 of Mul is Sigmoid (the rule wants Relu)"]
