"""What superopt prints and writes says what happened: op counts and sizes of the files as
written, a report key that reads right (`superopt-report/2`), a check line that reads as a pass,
one line per warning, a cache that says where it is, a table that fits 80 columns, and typed
public signatures."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from handwritten_rules import ASSOC
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.rules import save_rules
from superopt.face.cli import main

SEED = 0
README = Path(__file__).resolve().parents[1] / "README.md"


def model_with_import_cleanup(path: Path, k: int = 256) -> Path:
    """y = reshape((x @ A) @ B) where the Reshape's target comes from Constant nodes and a
    static Shape -> Gather -> Unsqueeze -> Concat chain: 9 nodes in the file, of which import
    folds the 6 Constant and shape nodes."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) / 20, n)
             for n, shape in (("A", (k, k)), ("B", (k, 16)))]
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["t"], name="mm1"),
        helper.make_node("MatMul", ["t", "B"], ["u"], name="mm2"),
        helper.make_node("Shape", ["u"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["zero"], name="c0",
                         value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["rows", "axes"], ["rows1"], name="unsq"),
        helper.make_node("Constant", [], ["axes"], name="c1",
                         value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Constant", [], ["minus1"], name="c2",
                         value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["rows1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["u", "target"], ["y"], name="reshape"),
    ]
    # topological order for ONNX's checker: the Constants first
    nodes.sort(key=lambda n: n.op_type != "Constant")
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    return path


@pytest.fixture
def rules_file(tmp_path) -> Path:
    path = tmp_path / "rules.json"
    save_rules([ASSOC], path)
    return path


@pytest.fixture
def long_folder(tmp_path) -> Path:
    folder = tmp_path / ("a_folder_with_a_rather_long_name_" * 3) / "and_another_level_below_it"
    folder.mkdir(parents=True)
    return folder


# ---------------------------------------------------------------------------------------------
# counts and sizes of the files as written; the table at 80 columns


def test_before_counts_the_input_file_and_import_cleanup_has_its_own_line(
        long_folder, rules_file, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    src = model_with_import_cleanup(long_folder / "a_model_with_a_long_file_name.onnx")
    out = long_folder / "out.onnx"
    rc = main(["optimize", str(src), str(out), "--rules", str(rules_file), "--device", "cpu",
               "--cost", "analytic", "--json", str(long_folder / "r.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    doc = json.loads((long_folder / "r.json").read_text())
    in_file = [n.op_type for n in onnx.load(str(src)).graph.node]
    assert sum(doc["op_counts"]["before"].values()) == len(in_file) == 10
    assert doc["op_counts"]["before"]["Constant"] == 3
    assert sum(doc["op_counts"]["imported"].values()) == 3  # MatMul, MatMul, Reshape
    assert doc["size_bytes"]["before"] == src.stat().st_size
    assert doc["size_bytes"]["after"] == out.stat().st_size
    lines = err.splitlines()
    folded = "import folded 7 Constant and static shape nodes (10 in the file, 3 searched)"
    assert folded in lines
    # The header and the table (everything above the import line) fit 80 columns.
    table = lines[:lines.index(folded)]
    assert len(table) > 8 and max(len(line) for line in table) <= 80, table
    cells = [line.replace("│", " ").split() for line in table]
    assert ["nodes", "10", "2"] in cells and ["Constant", "3", "0"] in cells
    # The path is shortened in the middle, never broken over lines.
    header = next(line for line in lines if line.startswith("superopt optimize: "))
    assert "…" in header and header.endswith("a_model_with_a_long_file_name.onnx")
    assert str(long_folder) not in err.replace(f"wrote {out}", "")  # only the 'wrote' line


def test_the_written_models_counts_when_the_original_is_kept(tmp_path, capsys):
    src = model_with_import_cleanup(tmp_path / "m.onnx", k=16)
    r = superopt.optimize(src, tmp_path / "out.onnx", rules=[], device="cpu", cost="analytic")
    assert r.original_kept and r.verdict == "original kept: no cheaper graph"
    # before: the file; after: what was written (the original, re-exported after cleanup)
    assert sum(r.op_counts_before.values()) == 10
    assert r.op_counts_after == r.op_counts_imported == {"MatMul": 2, "Reshape": 1}
    assert r.import_folded == 7 and r.size_before == src.stat().st_size


# ---------------------------------------------------------------------------------------------
# superopt-report/2: original_kept and verdict; inspect reads /1 too


def test_report_2_says_what_was_kept(tmp_path, rules_file):
    from superopt.pipeline.optimize import REPORT_FORMAT

    src = model_with_import_cleanup(tmp_path / "m.onnx", k=16)
    written = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic",
                                gate=False).to_json()
    kept = superopt.optimize(src, rules=[], device="cpu", cost="analytic", write=False).to_json()
    assert REPORT_FORMAT == written["format"] == "superopt-report/2"
    assert "kept" not in written
    assert written["original_kept"] is False and kept["original_kept"] is True
    assert written["verdict"] == "written: cheapest by the cost model (gate off)"
    assert kept["verdict"] == "original kept: no cheaper graph"


def test_inspect_reads_a_report_1_document(tmp_path, rules_file, capsys):
    src = model_with_import_cleanup(tmp_path / "m.onnx", k=16)
    doc = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic",
                            gate=False).to_json()
    old = {k: v for k, v in doc.items() if k not in ("original_kept", "verdict")}
    old["format"], old["kept"] = "superopt-report/1", True  # /1: true meant "candidate written"
    old["op_counts"] = {"before": doc["op_counts"]["imported"], "after": doc["op_counts"]["after"]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert main(["inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "superopt-report/1" and summary["original_kept"] is False
    assert summary["verdict"] == "written" and summary["nodes_before"] == 3
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "written: " in out and "rewrites applied (1)" in out
    old["kept"] = False
    path.write_text(json.dumps(old))
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["original_kept"] is True


# ---------------------------------------------------------------------------------------------
# the check line


def test_a_passed_check_reads_as_a_pass():
    from superopt.face.commands.optimize import check_line
    from superopt.pipeline.check import CheckResult

    check = CheckResult(True, 3, 1e-4, 1e-5, 2.1e-6, 9.2e-4, compared=24576,
                        tolerances={"float32": {"rtol": 1e-4, "atol": 1e-5}})
    line = check_line(check)
    assert line.startswith("check: passed on 3 random input sets")
    assert "max abs error 2.1e-06" in line and "max rel error 9.2e-04" in line
    # the tolerance is named as the bound it is, next to the figures
    assert "each within atol + rtol·|original| (float32 atol 1e-05, rtol 1e-04)" in line
    assert "0.00092" not in line and "FAILED" not in line


# ---------------------------------------------------------------------------------------------
# warnings, one line each; the cache command


def test_warnings_print_as_one_line(tmp_path, monkeypatch, capsys):
    import superopt.face.commands.cache as cache_cmd
    from superopt.cost_model.cache import FILE_NAME, CostCache

    (tmp_path / FILE_NAME).write_bytes(b"\x00not SQLite\xff" * 100)

    def noisy(args):
        CostCache(tmp_path).put("k", 1.0)
        warnings.warn("a library's\nwarning over two lines", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cache_cmd, "run_info", noisy)
    assert main(["cache", "info"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"warning: the cost cache {tmp_path / FILE_NAME} was unreadable (file is not a "
        "database); replaced it with a new one",
        "warning: a library's warning over two lines (RuntimeWarning)"]
    assert not [p for p in os.listdir(tmp_path) if ".corrupt" in p]


def test_cache_info_and_clear(tmp_path, monkeypatch, capsys):
    from superopt.cost_model.cache import CostCache
    from superopt.pipeline.trust import CACHE_FILE

    folder = tmp_path / "cache"
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(folder))
    assert main(["cache", "info"]) == 0
    assert "not created yet" in capsys.readouterr().out
    with CostCache() as cache:
        cache.put("k", 1.0)
    (folder / CACHE_FILE).write_text('{"format": "superopt-proof-cache/1", "entries": {}}\n')
    (folder / "unrelated.txt").write_text("mine")
    assert main(["cache", "info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["folder"] == str(folder) and doc["source"] == "SUPEROPT_CACHE_DIR"
    kinds = {f["name"]: f["kind"] for f in doc["files"]}
    assert kinds["costs.sqlite3"] == "cost cache" and kinds[CACHE_FILE] == "proof cache"
    assert "unrelated.txt" not in kinds and doc["total_bytes"] > 0
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"cache folder: {folder} (set by $SUPEROPT_CACHE_DIR)" in out
    assert "proofs.json" in out and "superopt cache clear" in out
    assert main(["cache", "clear"]) == 0
    assert "removed" in capsys.readouterr().out
    assert sorted(os.listdir(folder)) == ["unrelated.txt"]
    assert main(["cache", "clear"]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_help_and_readme_say_where_the_cache_is_and_the_exit_statuses(capsys):
    from superopt.face.cli import build_parser

    text = build_parser().format_help()
    for needle in ("SUPEROPT_CACHE_DIR", "superopt cache info", "superopt cache clear",
                   "~/.cache/superopt", "130", "143"):
        assert needle in text, needle
    readme = README.read_text()
    for needle in ("SUPEROPT_CACHE_DIR", "superopt cache clear", "--custom-lib",
                   "| 0 |", "| 2 |", "| 3 |", "| 130 |", "| 143 |"):
        assert needle in readme, needle


# ---------------------------------------------------------------------------------------------
# the public API


def test_optimize_has_the_pipelines_signature():
    from superopt.pipeline import optimize as pipeline

    assert inspect.signature(superopt.optimize) == inspect.signature(pipeline.optimize)
    for name in ("optimize", "load", "save", "to_onnx", "register_custom_op_library"):
        function = getattr(superopt, name)
        kinds = {p.kind for p in inspect.signature(function).parameters.values()}
        assert not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}
        assert len(inspect.getdoc(function) or "") > 100, name
        assert inspect.signature(function).return_annotation is not inspect.Signature.empty


def test_import_superopt_stays_light():
    code = ("import sys, superopt\n"
            "heavy = [m for m in ('superopt.pipeline.optimize', 'onnxruntime', 'z3')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_real_export_reports_its_own_file(shared_models, tmp_path, capsys):
    """The dynamic-shape RoBERTa export as a user runs it: the "before" counts and size are the
    file's (213 nodes, not the 81 left after import folding), the cleanup is on its own line,
    the JSON says what was kept in words, and the check line reads as a pass."""
    src = shared_models / "roberta_tiny.onnx"
    in_file = onnx.load(str(src))
    out, report = tmp_path / "r.opt.onnx", tmp_path / "r.json"
    rc = main(["optimize", str(src), str(out), "--device", "cpu", "--cost", "analytic",
               "--time-limit", "5", "--json", str(report)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    doc = json.loads(report.read_text())
    assert doc["format"] == "superopt-report/2"
    assert sum(doc["op_counts"]["before"].values()) == len(in_file.graph.node) == 213
    assert sum(doc["op_counts"]["imported"].values()) < 213
    assert doc["size_bytes"]["before"] == src.stat().st_size
    assert isinstance(doc["original_kept"], bool) and doc["verdict"]
    assert doc["verdict"].startswith("original kept") == doc["original_kept"]
    assert "import folded" in text.out + text.err
    check_line = next(line for line in (text.out + text.err).splitlines()
                      if line.startswith("check:"))
    assert check_line.startswith("check: passed"), check_line
    assert "kept" not in doc  # the /1 key that read backwards is gone
