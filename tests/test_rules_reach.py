"""`superopt rules reach`: every model searched with each cost model, its rewrites, families and
numerics recorded as Markdown; a rewrite that changes the numbers shows as a failure."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from superopt.core.rules import Rule, save_rules
from superopt.face.cli import main
from superopt.face.commands.rules_reach import (
    ReachModel,
    ReachRow,
    markdown,
    reach,
    zoo_models,
)
from superopt.pipeline.optimize import select_rules

# Unsound on purpose: Relu is not the identity.
DROP_RELU = Rule.make(["(Relu ?x)"], ["?x"], {"x": "tensor"}, example={"x": (1, 4, 5, 5)},
                      name="drop-relu (unsound)")


@pytest.fixture(scope="module")
def small_zoo():
    return zoo_models(["squeezenet", "nasrnn"])


def test_rows_rewrites_families_and_numerics(small_zoo):
    # A budget, not a time limit, ends the searches, so the rows do not depend on the speed
    # of the machine (at 3 s, a slow moment left nasrnn with shared-input merges only).
    rows = reach(small_zoo, select_rules(None), costs=["analytic"], time_limit=120, budget=10)
    assert [(r.model, r.source, r.cost) for r in rows] == [
        ("squeezenet", "zoo", "analytic"), ("nasrnn", "zoo", "analytic")]
    for r in rows:
        assert not r.error and r.nodes_before and r.nodes_after and r.stop
        assert sum(r.families.values()) == r.rewrites
    nasrnn = rows[1]
    assert nasrnn.rewrites > 0 and nasrnn.nodes_after < nasrnn.nodes_before
    assert "MatMul merge (concatenated)" in nasrnn.families
    assert nasrnn.passed is True and nasrnn.numerics.startswith("ok")  # compared in ORT

    text = markdown(rows, command="superopt rules reach --models squeezenet,nasrnn",
                    rules_label="shipped", time_limit=120, budget=10, check_n=2)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)  # header + one row per model and cost model
    assert table[2].startswith("| nasrnn | zoo | analytic | ")
    assert "MatMul merge (concatenated) ×" in table[2]
    for needed in ("- date: ", "- machine: ", "- versions: superopt ", "onnxruntime",
                   "- command: `superopt rules reach", "time limit 120 s", "## What this means"):
        assert needed in text
    # the estimate column: best cost over the original's, as the search computed them
    assert 0 < nasrnn.estimate < 0.99
    assert f"| {nasrnn.nodes_after} | {nasrnn.estimate:.3f} | ok (" in table[2]
    assert "models get at least one rewrite that lowers the estimate by more than 1%" in text


def test_a_gain_within_one_percent_of_the_estimate_does_not_count_as_reach():
    """mnasnet0_5's measured search merges a residual Add of two Convs for a 0.05% lower
    estimate (the shortcut's Conv stays for its other reader): noise, not reach."""
    rows = [ReachRow("m", "shared", "measured", nodes_before=99, nodes_after=99, rewrites=1,
                     estimate=0.9995, families={"Conv merge (concatenated)": 1},
                     numerics="ok", passed=True, stop="budget"),
            ReachRow("n", "shared", "analytic", nodes_before=50, nodes_after=40, rewrites=3,
                     estimate=0.8, families={"MatMul merge (shared input)": 3},
                     numerics="ok", passed=True, stop="queue empty")]
    text = markdown(rows, command="c", rules_label="r", time_limit=1, budget=1, check_n=1)
    assert "1 of 2 models get at least one rewrite that lowers the estimate by more than 1%" \
        in text and "of the 2 real exports, 1 (n)" in text
    assert "Not counted above" in text and "m (measured, 0.9995)" in text
    assert "| 99 | 1.000 | ok |" in text and "| 40 | 0.800 | ok |" in text


def test_measured_column(small_zoo):
    rows = reach(small_zoo[:1], select_rules(None), costs=["analytic", "measured"],
                 time_limit=2)
    assert [r.cost for r in rows] == ["analytic", "measured"]
    assert all(not r.error and r.nodes_after for r in rows)


def test_an_unsound_rule_is_a_numerics_failure(capsys, tmp_path):
    rules = tmp_path / "unsound.json"
    save_rules([DROP_RELU], rules)  # no proof: used only with --include-unproved
    out = tmp_path / "reach.md"
    rc = main(["rules", "reach", "--models", "squeezenet", "--costs", "analytic",
               "--time-limit", "3", "--rules", str(rules), "--include-unproved",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    text = out.read_text()
    [row] = [line for line in text.splitlines() if line.startswith("| squeezenet")]
    assert "| **FAIL: " in row and "| Relu elimination ×" in row
    assert "1 rewritten model(s) differ from their input" in text
    assert "1 numerics failure" in err
    assert "--include-unproved" in text  # the command is recorded


def test_unsound_rule_without_include_unproved_is_not_used(capsys, tmp_path):
    rules = tmp_path / "unsound.json"
    save_rules([DROP_RELU], rules)
    rows = reach(zoo_models(["squeezenet"]), select_rules(str(rules)), costs=["analytic"],
                 time_limit=2)
    assert rows[0].rewrites == 0 and rows[0].numerics == "unchanged"


def test_symbolic_dims_are_kept_and_checked_at_two_sizes(tmp_path):
    """As `optimize` does: symbols kept, costed at batch 1 / seq 128, compared at two sets."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])
    nodes = [helper.make_node("Relu", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    relu_relu = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"},
                          example={"x": (2, 3, 8)})
    [row] = reach([ReachModel("dyn", "shared", path)], [relu_relu], costs=["analytic"],
                  time_limit=2)
    assert not row.error, row.error
    assert row.note == "symbolic dims kept, costed at batch=1, seq=128"
    assert (row.rewrites, row.nodes_before, row.nodes_after) == (1, 2, 1)
    assert row.passed is True and "at 2 size sets" in row.numerics, row.numerics


def test_shared_folder_absent_is_a_note(capsys, tmp_path):
    out = tmp_path / "reach.md"
    rc = main(["rules", "reach", "--models", "shared", "--shared", str(tmp_path / "none"),
               "--costs", "analytic", "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert "Note: the shared models folder" in out.read_text()


@pytest.mark.parametrize("argv,phrase", [
    (["--models", "nosuch"], "unknown model 'nosuch'"),
    (["--costs", "fast"], "choose from analytic, measured"),
    (["--time-limit", "0"], "--time-limit must be positive"),
    (["--out", "{tmp}/missing/reach.md"], "cannot write there"),
])
def test_bad_input_one_line_exit_2(capsys, tmp_path, argv, phrase):
    argv = [a.format(tmp=tmp_path) for a in argv]
    rc = main(["rules", "reach", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("superopt rules: error:") and phrase in err, err
