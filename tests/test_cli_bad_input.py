"""`superopt optimize` on bad input: one clear line, exit 2 (130 for Ctrl-C), no output file, no
traceback unless -v. Also: every option of every subcommand has a one-line help."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt.core.rules import Rule, save_rules
from superopt.face.cli import build_parser, main

SEED = 0
ROOT = Path(__file__).resolve().parents[1]
ASSOC = Rule.make(["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"],
                  {"x": "tensor", "a": "weight", "b": "weight"}, name="matmul-assoc",
                  proof={"result": "proved"})


def matmul_model(path: Path, custom: bool = False, k: int = 16) -> Path:
    """x[4,k] -> MatMul -> (com.example::FancyOp) -> MatMul -> y."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, k])
    inits = [numpy_helper.from_array(rng.standard_normal((k, k)).astype(np.float32), n)
             for n in ("A", "B")]
    nodes = [helper.make_node("MatMul", ["x", "A"], ["t"], name="mm1")]
    if custom:
        nodes.append(helper.make_node("FancyOp", ["t"], ["u"], name="custom",
                                      domain="com.example", alpha=0.5))
    nodes.append(helper.make_node("MatMul", ["u" if custom else "t", "B"], ["y"], name="mm2"))
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)]
                                              if custom else [])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=opsets, ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def rules(tmp_path) -> Path:
    path = tmp_path / "rules.json"
    save_rules([ASSOC], path)
    return path


def run_cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(["optimize", *args, "--device", "cpu", "--cost", "analytic", "-q"])
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, phrase: str) -> None:
    assert rc == 2, err
    assert err.startswith("superopt optimize: error: ") and len(err.strip().splitlines()) == 1, err
    assert phrase in err, err
    assert "Traceback" not in err


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("case,phrase", [
    ("missing", "no such file"),
    ("directory", "is a directory"),
    ("not-onnx", "not a valid ONNX model"),
    ("truncated", "not a valid ONNX model"),
])
def test_unreadable_model(tmp_path, capsys, rules, case, phrase):
    good = matmul_model(tmp_path / "good.onnx")
    src = tmp_path / f"{case}.onnx"
    if case == "directory":
        src.mkdir()
    elif case == "not-onnx":
        src.write_text("this is not a model\n")
    elif case == "truncated":
        src.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    before = files_in(tmp_path)
    rc, err = run_cli(capsys, str(src), "--rules", str(rules))
    assert_one_line_error(rc, err, phrase)
    assert files_in(tmp_path) == before


def test_custom_domain_op_passes_through(tmp_path, capsys, rules):
    src = matmul_model(tmp_path / "custom.onnx", custom=True)
    rc, err = run_cli(capsys, str(src), "--rules", str(rules), "--json", str(tmp_path / "r.json"))
    assert rc == 0, err
    out = onnx.load(str(tmp_path / "custom.opt.onnx"))
    [custom] = [n for n in out.graph.node if n.domain == "com.example"]
    assert custom.op_type == "FancyOp" and custom.name == "custom"
    assert custom.attribute[0].name == "alpha" and custom.attribute[0].f == 0.5
    assert [n.op_type for n in out.graph.node] == ["MatMul", "FancyOp", "MatMul"]


@pytest.mark.parametrize("spec,phrase", [
    ("nosuch:4,16", "input shape given for 'nosuch'"),
    ("x:1,4,16", "has rank 2, the override (1, 4, 16) has rank 3"),
    ("4,16,1", "has rank 2"),
    ("x:4,a", "expected NAME:1,3,224,224"),
])
def test_bad_input_shape_override(tmp_path, capsys, rules, spec, phrase):
    src = matmul_model(tmp_path / "m.onnx")
    rc, err = run_cli(capsys, str(src), "--rules", str(rules), "--overwrite-input-shape", spec)
    assert_one_line_error(rc, err, phrase)
    assert not (tmp_path / "m.opt.onnx").exists()


def test_rules_file_that_is_not_json(tmp_path, capsys):
    src = matmul_model(tmp_path / "m.onnx")
    bad = tmp_path / "rules.json"
    bad.write_text("{not json")
    rc, err = run_cli(capsys, str(src), "--rules", str(bad))
    assert_one_line_error(rc, err, "not a JSON rules file")
    assert not (tmp_path / "m.opt.onnx").exists()


@pytest.mark.parametrize("where,phrase", [
    ("missing-folder", "does not exist"),
    ("under-a-file", "is not a folder"),
    ("proc", "cannot write"),
    ("report-under-a-file", "is not a folder"),
    ("json-missing-folder", "does not exist"),
])
def test_unwritable_output(tmp_path, capsys, rules, where, phrase):
    # Tests run as root, which chmod does not stop: use paths no one can create files in.
    src = matmul_model(tmp_path / "m.onnx")
    regular = tmp_path / "afile"
    regular.write_text("x")
    extra = {
        "missing-folder": [str(tmp_path / "no" / "out.onnx")],
        "under-a-file": [str(regular / "out.onnx")],
        "proc": ["/proc/superopt-test.onnx"],
        "report-under-a-file": ["--report", str(regular / "r.html")],
        "json-missing-folder": ["--json", str(tmp_path / "no" / "r.json")],
    }[where]
    before = files_in(tmp_path)
    rc, err = run_cli(capsys, str(src), *extra, "--rules", str(rules))
    assert_one_line_error(rc, err, phrase)
    assert files_in(tmp_path) == before  # no model, no report, no temp file
    assert not Path("/proc/superopt-test.onnx").exists()


def test_verbose_shows_the_traceback(tmp_path, capsys, rules):
    from superopt.core.errors import ModelError

    with pytest.raises(ModelError, match="no such file"):
        main(["optimize", str(tmp_path / "nope.onnx"), "--cost", "analytic", "-v"])


def test_ctrl_c_during_search_exits_130_and_leaves_nothing(tmp_path):
    """A real SIGINT to a real process, once it is searching (a squeezenet with a rule that
    fires everywhere and a long time limit)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    model = tmp_path / "sq.onnx"
    subprocess.run([sys.executable, "-m", "superopt", "zoo", "build", "squeezenet", "-o",
                    str(model)], check=True, capture_output=True, env=env, timeout=120)
    rules = tmp_path / "rules.json"
    save_rules([Rule.make(["(Concat[axis=1] (Relu ?a) (Relu ?b))"],
                          ["(Relu (Concat[axis=1] ?a ?b))"], {"a": "tensor", "b": "tensor"},
                          name="relu-past-concat", proof={"result": "proved"},
                          example={"a": (1, 2, 3, 3), "b": (1, 2, 3, 3)})], rules)
    before = files_in(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "superopt", "optimize", str(model), "--rules", str(rules),
         "--device", "cpu", "--cost", "analytic", "--time-limit", "600", "--budget", "1000000",
         "--alpha", "1.5", "--report", str(tmp_path / "r.html")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    time.sleep(4.0)  # loading takes about a second; the search then runs for minutes
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "superopt optimize: interrupted; nothing was written", err
    assert files_in(tmp_path) == before  # no model, no report, no temp files


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"optimize", "inspect", "zoo"} <= set(sub.choices)
    checked, missing = 0, []
    parsers = [("superopt", parser)]
    for name, p in sub.choices.items():  # subcommands, and their own subcommands (rules list...)
        parsers.append((name, p))
        parsers += [(f"{name} {n}", q) for a in p._actions
                    if isinstance(a, argparse._SubParsersAction) for n, q in a.choices.items()]
    for label, q in parsers:
        for action in q._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            text = (action.help or "").strip()
            what = "/".join(action.option_strings) or action.dest
            if not text or text == argparse.SUPPRESS or "\n" in text:
                missing.append(f"{label} {what}")
            checked += 1
    assert not missing, f"options without a one-line help: {missing}"
    assert checked > 30


@pytest.mark.parametrize("args,phrase", [
    (["--help"], "optimize"),
    (["optimize", "--help"], "--save-as-external-data"),
    (["--version"], "superopt 0."),
])
def test_help_and_version_exit_0(capsys, args, phrase):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0 and phrase in capsys.readouterr().out
