"""Bad input gets one clear line naming the problem: from `superopt.load` as a SuperoptError
subclass, and from `superopt inspect FILE` as exit code 2 with no traceback."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

import superopt
from superopt.core.errors import ModelError, ShapeError, SuperoptError
from superopt.face.cli import main


def _model(nodes, inputs, outputs, opset=17, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _vi(name, shape=(1, 1, 2, 2), elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _write(path, model: onnx.ModelProto):
    path.write_bytes(model.SerializeToString())
    return path


def bad_files(tmp_path, zoo_model_path) -> dict:
    """name -> (path, error class, phrase the message must contain)."""
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a model\n")
    real = zoo_model_path("squeezenet").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(real[:len(real) // 2])
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    cyclic = _write(tmp_path / "cyclic.onnx", _model(
        [helper.make_node("Relu", ["b"], ["a"], name="r1"),
         helper.make_node("Relu", ["a"], ["b"], name="r2")], [_vi("x")], [_vi("b")]))
    duplicate = _write(tmp_path / "duplicate.onnx", _model(
        [helper.make_node("Relu", ["x"], ["a"], name="r1"),
         helper.make_node("Tanh", ["x"], ["a"], name="r2")], [_vi("x")], [_vi("a")]))
    dangling = _write(tmp_path / "dangling.onnx", _model(
        [helper.make_node("Relu", ["nowhere"], ["y"], name="r")], [_vi("x")], [_vi("y")]))
    # Upsample-1 without its scale attributes: the converter's 6->7 adapter rejects it.
    opset6 = _write(tmp_path / "opset6.onnx", _model(
        [helper.make_node("Upsample", ["x"], ["y"], name="up")], [_vi("x")],
        [_vi("y", (1, 1, 4, 4))], opset=6))
    # Upsample at opset 10 is deprecated; the converter passes it through to opset 13 unchanged.
    opset10 = _write(tmp_path / "opset10.onnx", _model(
        [helper.make_node("Upsample", ["x", "s"], ["y"], name="up")], [_vi("x")],
        [_vi("y", (1, 1, 4, 4))], opset=10,
        inits=[helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])]))
    return {
        "missing": (tmp_path / "absent.onnx", ModelError, "no such file"),
        "directory": (tmp_path, ModelError, "is a directory"),
        "text": (text, ModelError, "not a valid ONNX model"),
        "truncated": (truncated, ModelError, "truncated or corrupt protobuf"),
        "empty": (empty, ModelError, "not an ONNX model"),
        "cyclic": (cyclic, ModelError, "the graph has a cycle (through node r"),
        "duplicate": (duplicate, ModelError, "duplicate value name 'a'"),
        "dangling": (dangling, ModelError, "reads 'nowhere', which nothing produces"),
        "opset6": (opset6, ModelError, ("opset 6 is below 13 and the ONNX version converter "
                                        "cannot upgrade it (adapt_upsample_6_7")),
        "opset10": (opset10, ModelError, "it uses Upsample (node up), which opset 13 no longer"),
    }


CASES = ["missing", "directory", "text", "truncated", "empty", "cyclic", "duplicate", "dangling",
         "opset6", "opset10"]


@pytest.mark.parametrize("case", CASES)
def test_load_raises_one_clear_line(case, tmp_path, zoo_model_path):
    path, error, phrase = bad_files(tmp_path, zoo_model_path)[case]
    with pytest.raises(error) as info:
        superopt.load(path)
    message = str(info.value)
    assert phrase in message
    assert message.startswith(str(path)), "the message names the file"
    assert "\n" not in message


@pytest.mark.parametrize("case", CASES)
def test_cli_inspect_exits_2_without_traceback(case, tmp_path, zoo_model_path, capsys):
    path, _, phrase = bad_files(tmp_path, zoo_model_path)[case]
    assert main(["inspect", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superopt inspect: error: ")
    assert "Traceback" not in captured.err
    if case != "directory":  # inspect's own content check words it slightly differently
        assert phrase in lines[0]


def test_old_opset_that_converts_is_upgraded(tmp_path):
    """Opset 9 Upsample (scales as an input) converts to Resize: loading works."""
    model = _model([helper.make_node("Upsample", ["x", "s"], ["y"], name="up")], [_vi("x")],
                   [_vi("y", (1, 1, 4, 4))], opset=9,
                   inits=[helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])])
    graph = superopt.load(_write(tmp_path / "opset9.onnx", model))
    assert graph.meta.opset("") == 13
    assert graph.op_counts() == {"Resize": 1}


SHAPE_CASES = {
    "unknown input": ({"nope": (1, 3, 224, 224)}, ("input shape given for 'nope', but the "
                                                   "model's inputs are input")),
    "wrong rank": ({"input": (1, 3, 224)}, "has rank 4, the override (1, 3, 224) has rank 3"),
    "fixed dim": ({"input": (2, 3, 224, 224)}, ("dim 0 is fixed at 1 in the model; the "
                                                "override says 2")),
    "negative dim": ({"input": (1, 3, -1, 224)}, "dim 2 must be positive, got -1"),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_input_shape_override_that_does_not_fit(case, zoo_model_path):
    shapes, phrase = SHAPE_CASES[case]
    with pytest.raises(ShapeError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        superopt.load(zoo_model_path("squeezenet"), input_shapes=shapes)


def test_shape_override_that_breaks_inference(tmp_path):
    """A free dim fixed to a size the graph cannot take: MatMul inner dims 5 vs 4."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.0] * 8)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   [_vi("x", ("n", "k"))], [_vi("y", ("n", 2))], inits=[w])
    path = _write(tmp_path / "mm.onnx", model)
    assert superopt.load(path, input_shapes={"x": (3, 4)}).inputs[0].type.shape == (3, 4)
    with pytest.raises(ShapeError, match="the input shapes do not fit the model"):
        superopt.load(path, input_shapes={"x": (3, 5)})


def test_cli_shape_errors_exit_2(zoo_model_path, capsys):
    path = str(zoo_model_path("squeezenet"))
    assert main(["inspect", path, "--overwrite-input-shape", "input:1,3,224"]) == 2
    assert "has rank 4" in capsys.readouterr().err
    assert main(["inspect", path, "--overwrite-input-shape", "input:1,x,224"]) == 2
    err = capsys.readouterr().err
    assert "expected NAME:1,3,224,224" in err and "Traceback" not in err


def test_every_error_is_a_superopt_error(tmp_path, zoo_model_path):
    for case in CASES:
        path, error, _ = bad_files(tmp_path, zoo_model_path)[case]
        assert issubclass(error, SuperoptError)
        with pytest.raises(SuperoptError):
            superopt.load(path)
