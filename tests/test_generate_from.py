"""`superopt generate --from MODEL.onnx`: the enumeration follows the op configurations a model
uses (ops, attributes, ranks), and the database it writes leaves out duplicates up to renaming
and self-concatenation towers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt.core.rules import Rule, rule_key
from superopt.face.cli import main
from superopt.generator.from_model import model_universe
from superopt.generator.selection import select_rules

SEED = 77


def _strided_model(path):
    """Conv 3x3 stride 2 pads 1 with bias -> Sigmoid -> Conv 1x1 with bias (rank-4 only)."""
    rng = np.random.default_rng(SEED)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (8, 4, 3, 3)), ("b1", (8,)), ("w2", (4, 8, 1, 1)), ("b2", (4,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["y"], pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Sigmoid", ["y"], ["s"]),
             helper.make_node("Conv", ["s", "w2", "b2"], ["out"])]
    graph = helper.make_graph(
        nodes, "strided", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_universe_follows_the_model(tmp_path):
    universe, configs, facts = model_universe([_strided_model(tmp_path / "m.onnx")])
    labels = [i.label for i in universe.instances]
    # the model's own stride and pads, at its kernel size; an op with no preset instance
    assert "Conv+b[(3, 3)][pads=(1, 1, 1, 1)][strides=(2, 2)]" in labels
    assert "Conv+b[(1, 1)]" in labels and "Sigmoid" in labels
    assert "Concat.vectors" in labels  # so that merged Convs can join their biases
    assert not any(i.op in ("MatMul", "Gemm", "BatchNormalization") for i in universe.instances)
    names = {s.name: s.shape for s in universe.inputs}
    assert names["k"] == names["j"] == (4, 4, 3, 3) and names["k11"] == names["j11"]
    assert names["cb"] == names["db"] == (4,)
    assert "x" not in names and "a" not in names  # no 2-D activations or matrices in the model
    assert universe.settings["from"] == ["m.onnx"] and len(configs) == 3
    assert facts["conv_bias"] and not facts["self_concat"]


def test_generate_from_writes_proved_rules_at_the_models_configuration(tmp_path, capsys):
    model = _strided_model(tmp_path / "m.onnx")
    out = tmp_path / "rules.json"
    assert main(["generate", "--from", str(model), "--max-ops", "3", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    rules = [Rule.from_json(d) for d in doc["rules"]]
    assert rules and all(r.proved for r in rules)
    allowed = {"Conv", "Sigmoid", "Concat", "Split", "EnlargeKernel"}
    assert all(r.ops() <= allowed for r in rules), [r.ops() for r in rules]
    texts = [" ".join(map(str, r.src + r.dst)) for r in rules]
    # two biased Convs at the model's stride and pads, merged: found by the enumeration
    merge = ("(Concat[axis=1] (Conv[pads=(1, 1, 1, 1), strides=(2, 2)] ?t ?k ?cb) "
             "(Conv[pads=(1, 1, 1, 1), strides=(2, 2)] ?t ?j ?db))")
    assert any(t.startswith(merge) for t in texts), texts
    assert doc["meta"]["settings"]["from"] == ["m.onnx"]
    assert doc["meta"]["stages"]["candidates kept"] >= len(rules)
    assert len({rule_key(r) for r in rules}) == len(rules)
    assert "op configurations in 1 model" in capsys.readouterr().err


def test_duplicates_up_to_renaming_and_self_concatenation_are_left_out():
    v = {"t": {"kind": "tensor", "rank": 2}, "a": {"kind": "weight", "rank": 2},
         "b": {"kind": "weight", "rank": 2}}
    ex = {"t": (2, 4), "a": (4, 4), "b": (4, 4)}
    one = Rule.make(["(MatMul ?t (Add ?a ?b))"], ["(Add (MatMul ?t ?a) (MatMul ?t ?b))"], v,
                    example=ex)
    renamed = Rule.make(["(MatMul ?t (Add ?b ?a))"], ["(Add (MatMul ?t ?b) (MatMul ?t ?a))"], v,
                        example=ex)
    # Add's operands in the other order: the same rule (the matcher tries both orders)
    scalar = {"t": {"kind": "tensor", "rank": 2}, "c": {"kind": "weight", "rank": 0}}
    t_c = Rule.make(["(Relu (Add ?t ?c))"], ["(Relu (Add ?t ?c))"], scalar,
                    example={"t": (2, 4), "c": ()})
    c_t = Rule.make(["(Relu (Add ?c ?t))"], ["(Relu (Add ?c ?t))"], scalar,
                    example={"t": (2, 4), "c": ()})
    tower = Rule.make(["(Relu (Concat[axis=0] ?t ?t))"],
                      ["(Concat[axis=0] (Relu ?t) (Relu ?t))"],
                      {"t": {"kind": "tensor", "rank": 2}}, example={"t": (2, 4)})
    assert one.id != renamed.id and rule_key(one) == rule_key(renamed)
    assert rule_key(t_c) == rule_key(c_t)
    kept, dropped = select_rules([one, renamed, tower, t_c, c_t])
    assert kept == [one, t_c]
    assert dropped == {"self-concatenation": 1, "duplicates (renaming, operand order)": 2}
    kept, _ = select_rules([tower], keep_self_concat=True)  # a model concatenates x with x
    assert kept == [tower]


def test_rule_key_keeps_rules_with_different_conditions_apart():
    """A rule narrowed by a condition is not the general rule (merge must keep both)."""
    def conv_rule(w: str, *conditions: str) -> Rule:
        return Rule.make([f"(Add (Conv ?t ?{w}) ?t)"], [f"(Add ?t (Conv ?t ?{w}))"],
                         {"t": {"kind": "tensor", "rank": 4}, w: {"kind": "weight", "rank": 4}},
                         example={"t": (1, 4, 5, 5), w: (4, 4, 3, 3)}, conditions=conditions)

    general = conv_rule("k")
    narrow = conv_rule("k", "shape(?k)[2:] == (3, 3)")
    renamed = conv_rule("j", "shape(?j)[2:] == (3, 3)")
    assert rule_key(general) != rule_key(narrow)
    assert rule_key(narrow) == rule_key(renamed)


@pytest.mark.parametrize("argv,phrase", [
    (["--from", "missing.onnx"], "no such file"),
    (["--from", "MODEL", "--ray"], "does not take --ray"),
])
def test_bad_from_arguments_one_line_exit_2(tmp_path, capsys, argv, phrase):
    model = str(_strided_model(tmp_path / "m.onnx"))
    argv = [model if a == "MODEL" else a for a in argv]
    rc = main(["generate", *argv, "-o", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and phrase in err and "Traceback" not in err


def test_rule_key_renames_dim_references_too():
    """`split=(dim(?v,2), dim(?z,2))` names the variables as well: two rules that differ only by
    swapping ?v and ?z everywhere are one rule (the shipped build had one such pair from the
    rank-3 MatMul preset and the zoo run)."""
    v = {"v": {"kind": "tensor", "rank": 3}, "z": {"kind": "tensor", "rank": 3}}
    ex = {"v": (2, 2, 4), "z": (2, 2, 4)}

    def split_swap(a: str, b: str) -> Rule:
        split = f"axis=2, split=(dim(?{a},2), dim(?{b},2))"
        back = f"axis=2, split=(dim(?{b},2), dim(?{a},2))"
        return Rule.make([f"(Split[{split}] (Concat[axis=2] ?{a} ?{b}))",
                          f"(Split.1[{split}] (Concat[axis=2] ?{a} ?{b}))"],
                         [f"(Split.1[{back}] (Concat[axis=2] ?{b} ?{a}))",
                          f"(Split[{back}] (Concat[axis=2] ?{b} ?{a}))"], v, example=ex)

    one, other = split_swap("v", "z"), split_swap("z", "v")
    assert one.id != other.id and rule_key(one) == rule_key(other)
