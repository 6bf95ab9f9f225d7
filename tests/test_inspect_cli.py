"""`superopt inspect` (ONNX models, rules files, reports) and `superopt zoo list|build`."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

from superopt.core.rules import Rule, save_rules
from superopt.face.cli import main
from superopt.face.commands.inspect import ModelSummary, RulesSummary, summarize

ONNX_KEYS = {"kind", "path", "file_bytes", "ir_version", "producer", "opset_imports", "inputs",
             "outputs", "node_count", "op_counts", "imported_node_count", "modeled", "opaque",
             "parameter_count", "parameter_bytes", "external_data"}


def _inspect_json(capsys, *argv) -> dict:
    assert main(["inspect", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_json_of_a_zoo_model(zoo_model_path, capsys):
    path = zoo_model_path("squeezenet")
    doc = _inspect_json(capsys, str(path))
    assert set(doc) == ONNX_KEYS and doc["kind"] == "onnx"
    model = onnx.load(str(path))
    assert doc["node_count"] == len(model.graph.node) == 65
    assert doc["op_counts"] == {"Conv": 26, "Relu": 26, "Concat": 8, "MaxPool": 3,
                                "GlobalAveragePool": 1, "Flatten": 1}
    assert doc["modeled"] == doc["op_counts"] and doc["opaque"] == {}
    assert doc["inputs"] == [{"name": "input", "dtype": "float", "shape": [1, 3, 224, 224]}]
    assert doc["outputs"] == [{"name": "logits", "dtype": "float", "shape": [1, 1000]}]
    assert doc["opset_imports"] == {"": 17} and doc["ir_version"] == 8
    assert doc["parameter_count"] == sum(onnx.numpy_helper.to_array(t).size
                                         for t in model.graph.initializer)
    assert doc["parameter_bytes"] == 4 * doc["parameter_count"]
    assert doc["file_bytes"] == path.stat().st_size and not doc["external_data"]


def test_inspect_counts_opaque_custom_ops(tmp_path, capsys):
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1"),
             helper.make_node("MyOp", ["a"], ["b"], name="mine", domain="com.example"),
             helper.make_node("Relu", ["b"], ["y"], name="r2")]
    graph = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [2])],
                              [vi("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    doc = _inspect_json(capsys, str(path))
    assert doc["modeled"] == {"Relu": 2}
    assert doc["opaque"] == {"com.example::MyOp": 1}
    assert doc["op_counts"] == {"Relu": 2, "com.example::MyOp": 1}
    assert doc["opset_imports"] == {"": 17, "com.example": 1}


def test_inspect_with_input_shape_override(shared_models, capsys):
    path = str(shared_models / "roberta_tiny.onnx")
    dynamic = _inspect_json(capsys, path)
    assert dynamic["inputs"][0]["shape"] == ["batch", "seq"]
    fixed = _inspect_json(capsys, path, "--overwrite-input-shape", "input_ids:2,7")
    assert fixed["inputs"][0]["shape"] == [2, 7]
    assert fixed["outputs"][0]["shape"] == [2, 7, 128]
    assert fixed["imported_node_count"] < dynamic["imported_node_count"], \
        "static shapes let import fold the shape computations"


def test_inspect_table_output(zoo_model_path, capsys):
    assert main(["inspect", str(zoo_model_path("squeezenet"))]) == 0
    out = capsys.readouterr().out
    for text in ("GlobalAveragePool", "1×3×224×224", "65 in the file", "ai.onnx 17"):
        assert text in out


def _rules_file(tmp_path):
    proved = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"},
                       proof={"result": "proved"})
    refuted = Rule.make(["(Relu (Add ?x ?y))"], ["(Add (Relu ?x) (Relu ?y))"],
                        {"x": "tensor", "y": "tensor"}, proof={"result": "refuted"})
    commute = Rule.make(["(Add ?x ?y)"], ["(Add ?y ?x)"], {"x": "tensor", "y": "tensor"},
                        proof={"result": "proved"})
    path = tmp_path / "rules.json"
    save_rules([proved, refuted, commute], path, {"max_ops": 2})
    return path


def test_inspect_rules_file_counts_by_result_and_op(tmp_path, capsys):
    path = _rules_file(tmp_path)
    summary = summarize(path)
    assert isinstance(summary, RulesSummary)
    doc = _inspect_json(capsys, str(path))
    assert doc["kind"] == "rules" and doc["rule_count"] == 3
    assert doc["by_result"] == {"proved": 2, "refuted": 1}
    assert doc["by_op"] == {"Relu": 2, "Add": 2}
    assert doc["meta"] == {"max_ops": 2}
    assert main(["inspect", str(path)]) == 0
    assert "by proof result" in capsys.readouterr().out


def test_inspect_rejects_shape_override_for_rules(tmp_path, capsys):
    path = _rules_file(tmp_path)
    assert main(["inspect", str(path), "--overwrite-input-shape", "x:1,2"]) == 2
    assert "ONNX models only" in capsys.readouterr().err


@pytest.mark.parametrize("content,phrase", [
    ({"format": "superopt-report/1", "rewrites": []}, "an incomplete superopt-report/1 file"),
    ({"format": "something-else"}, "neither an ONNX model nor a superopt rules or report"),
])
def test_inspect_other_json_files(tmp_path, capsys, content, phrase):
    path = tmp_path / "file.json"
    path.write_text(json.dumps(content))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert phrase in err and len(err.strip().splitlines()) == 1


def test_summarize_model_type(zoo_model_path):
    assert isinstance(summarize(zoo_model_path("nasnet_a")), ModelSummary)


def test_zoo_list_shows_every_model(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet50", "resnext50", "inception_v3", "squeezenet", "bert", "nasnet_a",
                 "nasrnn"):
        assert name in out
    assert "Fire modules" in out


def test_zoo_build_writes_a_valid_model(tmp_path, capsys):
    out = tmp_path / "sq.onnx"
    assert main(["zoo", "build", "squeezenet", "-o", str(out)]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert [p.name for p in tmp_path.iterdir()] == ["sq.onnx"], "no temp file left behind"


def test_zoo_build_unknown_name_lists_valid_names(tmp_path, capsys):
    assert main(["zoo", "build", "alexnet", "-o", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown zoo model 'alexnet'; valid names: resnet50, resnext50" in err
    assert list(tmp_path.iterdir()) == []


def test_zoo_build_into_missing_folder(tmp_path, capsys):
    assert main(["zoo", "build", "squeezenet", "-o", str(tmp_path / "no" / "sq.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
