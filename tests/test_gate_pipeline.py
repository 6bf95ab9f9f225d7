"""The gate phase of `optimize`: nothing is timed when the search's best graph is the original,
and the gate's figures reach the result and the report."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from handwritten_rules import MERGE_CONV
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.costing import OpTableCost
from superopt.core.rules import save_rules
from superopt.pipeline import gate as gate_module
from superopt.runtime import SessionRounds


def two_convs(path):
    """Two convs on one input that MERGE_CONV can merge (through a Split)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y3", "y1")]
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W3", (8, 8, 3, 3)), ("W1", (8, 8, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "W3"], ["y3"], pads=[1, 1, 1, 1], name="c3"),
             helper.make_node("Conv", ["x", "W1"], ["y1"], name="c1")]
    g = helper.make_graph(nodes, "g", [x], outs, inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              path)
    return path


@pytest.fixture
def no_timing(monkeypatch):
    """Every way the gate could time a model raises; the calls are counted."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the gate timed something")

    monkeypatch.setattr(gate_module, "compare_models", refuse)
    monkeypatch.setattr(SessionRounds, "__init__", refuse)
    return calls


@pytest.mark.parametrize("gate", [True, False])
def test_the_original_as_best_graph_times_nothing(tmp_path, no_timing, gate):
    rules = tmp_path / "rules.json"
    save_rules([MERGE_CONV], rules)
    src = two_convs(tmp_path / "m.onnx")
    # A Split costs 10 here: the merged graph is found, but costs more than the original.
    result = superopt.optimize(src, tmp_path / "out.onnx", rules=rules, device="cpu",
                               cost_model=OpTableCost({"Split": 10.0}), gate=gate)
    assert no_timing == []
    assert result.search.steps == [] and len(result.search.candidates) > 1  # found, not best
    assert result.original_kept and result.steps == []
    assert result.verdict == "original kept: no cheaper graph"
    assert result.kept_reason == "the search found no graph cheaper than the original"
    assert result.latency_before is None and result.ab_summary == ""
    doc = result.to_json()
    assert doc["latency"]["gate"] is None and doc["latency"]["before"] is None
    assert [n.op_type for n in onnx.load(tmp_path / "out.onnx").graph.node] == ["Conv", "Conv"]


def test_a_cheaper_graph_is_timed_and_the_gates_figures_are_reported(tmp_path, monkeypatch):
    rules = tmp_path / "rules.json"
    save_rules([MERGE_CONV], rules)
    src = two_convs(tmp_path / "m.onnx")
    seen = {}
    real = gate_module.compare_models

    def spy(baseline, candidates, device, **kwargs):
        seen.update(kwargs, n=len(candidates))
        return real(baseline, candidates, device, **kwargs)

    monkeypatch.setattr(gate_module, "compare_models", spy)
    result = superopt.optimize(src, rules=rules, device="cpu", write=False, gate_budget_s=1.5,
                               cost_model=OpTableCost({"Split": 0.01}))
    assert seen["budget_s"] == 1.5 and seen["n"] >= 1
    gate = result.to_json()["latency"]["gate"]
    assert gate["method"] == "A/A-calibrated sequential test" and gate["budget_s"] == 1.5
    assert len(gate["candidates"]) == seen["n"] and gate["twin"]["median_s"] > 0
    # Whether the merge is faster here depends on the machine; the verdict must match the gate.
    won = gate["best_index"] is not None
    assert result.kept == won
    assert ("faster end to end" if won else "not faster beyond the noise") in (
        result.kept_reason + result.verdict)
    assert "A'" in result.ab_summary


def test_the_gate_budget_flag(tmp_path):
    from superopt.face.cli import main

    src = two_convs(tmp_path / "m.onnx")
    with pytest.raises(SystemExit):
        main(["optimize", str(src), "--gate-budget", "x"])
    assert main(["optimize", str(src), str(tmp_path / "o.onnx"), "--gate-budget", "0",
                 "--device", "cpu", "-q"]) == 2
