"""Hostile external data: a model whose weights point outside its folder, at an absolute path,
through a symlink that leaves the folder, or at a file that is not there. `superopt.load` raises
a one-line `ModelError`; `superopt optimize` and `superopt inspect` print one line and exit 2,
with no traceback and no output file. Nothing outside the model's folder is ever read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
# A file outside every test folder that the tests create, readable by the test process.
OUTSIDE = Path("/etc/hostname") if Path("/etc/hostname").is_file() else Path(sys.executable)


def external(name: str, location: str, size: int = 4) -> TensorProto:
    """A float tensor of `size` elements whose bytes live in `location` (offset 0)."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[size])
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    t.external_data.add(key="offset", value="0")
    t.external_data.add(key="length", value=str(4 * size))
    return t


def add_model(weight: TensorProto, where: str = "initializer") -> onnx.ModelProto:
    """y = x + w; w an initializer (or the value of a Constant node) with external data."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    inits = [weight]
    if where == "constant":
        nodes.insert(0, helper.make_node("Constant", [], ["w"], name="c", value=weight))
        inits = []
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def write(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())  # onnx.save would try to resolve the data
    return path


def hostile(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    if case == "dotdot":
        depth = len(folder.resolve().parts) - 1
        return write(add_model(external("w", "../" * depth + str(OUTSIDE).lstrip("/"))),
                     folder / "bad.onnx")
    if case == "dotdot-etc":  # the literal path from the issue
        return write(add_model(external("w", "../../etc/hostname")), folder / "bad.onnx")
    if case == "absolute":
        return write(add_model(external("w", str(OUTSIDE))), folder / "bad.onnx")
    if case == "symlink":
        (folder / "w.bin").symlink_to(OUTSIDE)
        return write(add_model(external("w", "w.bin")), folder / "bad.onnx")
    if case == "symlink-folder":
        (folder / "sub").symlink_to(OUTSIDE.parent, target_is_directory=True)
        return write(add_model(external("w", f"sub/{OUTSIDE.name}")), folder / "bad.onnx")
    if case == "missing":
        return write(add_model(external("w", "w.bin")), folder / "bad.onnx")
    if case == "constant-dotdot":  # external data in a Constant node's attribute
        return write(add_model(external("w", "../../etc/hostname"), "constant"),
                     folder / "bad.onnx")
    if case == "too-short":  # the file is there but holds fewer bytes than the tensor needs
        (folder / "w.bin").write_bytes(b"\0" * 8)
        return write(add_model(external("w", "w.bin")), folder / "bad.onnx")
    raise AssertionError(case)


CASES = {
    "dotdot": "outside the model's folder",
    "dotdot-etc": "outside the model's folder",
    "absolute": "absolute path",
    "symlink": "through a symbolic link, outside the model's folder",
    "symlink-folder": "through a symbolic link, outside the model's folder",
    "missing": "no such file",
    "constant-dotdot": "outside the model's folder",
    "too-short": "external data",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_raises_one_line(tmp_path, case):
    path = hostile(tmp_path, case)
    with pytest.raises(ModelError) as info:
        superopt.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert CASES[case] in message, message


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "superopt", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_optimize_exits_2_with_one_line(tmp_path, case):
    path = hostile(tmp_path, case)
    out = tmp_path / "out.onnx"
    proc = run_cli("optimize", str(path), str(out), "--device", "cpu", "--cost", "analytic",
                   "-q", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superopt optimize: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert CASES[case] in lines[0], lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


@pytest.mark.parametrize("case", ["dotdot-etc", "absolute", "symlink", "missing"])
def test_cli_inspect_exits_2_with_one_line(tmp_path, case):
    path = hostile(tmp_path, case)
    proc = run_cli("inspect", str(path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("superopt inspect: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_external_data_inside_the_folder_still_loads(tmp_path):
    """The checks do not reject the ordinary case: data next to the model, or in a subfolder."""
    folder = tmp_path / "models"
    (folder / "data").mkdir(parents=True)
    w = np.arange(4, dtype=np.float32)
    (folder / "data" / "w.bin").write_bytes(w.tobytes())
    path = write(add_model(external("w", "data/w.bin")), folder / "ok.onnx")
    graph = superopt.load(path)
    [const] = graph.constants()
    assert np.array_equal(const.array, w)


def test_external_data_without_a_folder(tmp_path):
    """Bytes or a ModelProto that still point at external data: no folder to read it from."""
    model = add_model(external("w", "w.bin"))
    for source in (model, model.SerializeToString()):
        with pytest.raises(ModelError, match="external data"):
            superopt.load(source)


def test_ordinary_weights_are_not_affected(tmp_path):
    model = add_model(numpy_helper.from_array(np.ones(4, np.float32), "w"))
    graph = superopt.load(write(model, tmp_path / "m.onnx"))
    assert graph.op_counts() == {"Add": 1}
