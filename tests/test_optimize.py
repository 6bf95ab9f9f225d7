"""End to end: optimize() and `superopt optimize` with hand-written rules and the analytic cost."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from handwritten_rules import ASSOC, MERGE_CONV, PROVED
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.errors import CheckError, ShapeError
from superopt.core.rules import Rule, save_rules
from superopt.face.cli import main

SEED = 0


def matmul_model(path, n=64, k=512, batch="64"):
    rng = np.random.default_rng(SEED)
    dims = [batch if not batch.isdigit() else int(batch), k]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [
        numpy_helper.from_array(rng.standard_normal((k, k)).astype(np.float32) / 20, nm)
        for nm in ("A", "B")
    ]
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "A"], ["t"], name="mm1"),
            helper.make_node("MatMul", ["t", "B"], ["y"], name="mm2"),
        ],
        "g",
        [x],
        [y],
        inits,
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def conv_model(path):
    """A 3x3 conv with few filters and a wide 1x1 on one input: merging them (enlarging the
    1x1 to 3x3) multiplies the 1x1's arithmetic by 9, much slower on a CPU."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 28, 28])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y3", "y1")]
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("W3", (8, 64, 3, 3)), ("W1", (256, 64, 1, 1)))
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W3"], ["y3"], pads=[1, 1, 1, 1], name="c3"),
        helper.make_node("Conv", ["x", "W1"], ["y1"], name="c1"),
    ]
    g = helper.make_graph(nodes, "g", [x], outs, inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.json"
    save_rules([ASSOC, MERGE_CONV], path)
    return path


def test_optimize_writes_a_checked_model(tmp_path, rules_file):
    src = matmul_model(tmp_path / "mm.onnx")
    out = tmp_path / "mm.opt.onnx"
    r = superopt.optimize(src, out, rules=rules_file, device="cpu", cost="analytic")
    assert out.exists() and r.written and r.check.passed
    assert r.check.max_abs_error < 1e-3
    written = [n.op_type for n in onnx.load(out).graph.node]
    assert written == (["MatMul"] if r.kept else ["MatMul", "MatMul"]), r.kept_reason
    assert r.latency_before is not None and len(r.candidate_steps) == 1
    doc = r.to_json()
    assert doc["format"] == "superopt-report/2" and doc["op_counts"]["before"] == {"MatMul": 2}
    json.dumps(doc)


def test_optimize_without_gate_writes_the_cheapest_candidate(tmp_path, rules_file):
    src = matmul_model(tmp_path / "mm.onnx", k=32)
    r = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic", gate=False)
    out = tmp_path / "mm.opt.onnx"
    assert r.kept and [n.op_type for n in onnx.load(out).graph.node] == ["MatMul"]
    assert r.steps[0].rule_name == "matmul-assoc"
    assert r.rules[ASSOC.id]["proof"]["result"] == "proved"


def test_gate_rejects_a_slower_candidate_and_keeps_the_original(tmp_path, rules_file):
    from superopt.core.costing import OpTableCost

    src = conv_model(tmp_path / "conv.onnx")
    out = tmp_path / "conv.opt.onnx"
    r = superopt.optimize(
        src, out, rules=rules_file, device="cpu", cost_model=OpTableCost({"Split": 0.1})
    )
    assert len(r.candidate_steps) == 1  # the stub cost model wanted the merge...
    assert not r.kept and "kept the original" in r.kept_reason  # ...ORT timing said no
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Conv", "Conv"]
    assert r.steps == [] and r.check.passed


def test_check_failure_writes_nothing(tmp_path, rules_file):
    wrong = Rule.make(
        ["(MatMul (MatMul ?x ?a) ?b)"],
        ["(MatMul ?x ?a)"],
        {"x": "tensor", "a": "weight", "b": "weight"},
        proof=PROVED,
    )
    src = matmul_model(tmp_path / "mm.onnx", k=16)
    out = tmp_path / "out.onnx"
    with pytest.raises(CheckError, match="nothing was written"):
        superopt.optimize(src, out, rules=[wrong], device="cpu", cost="analytic", gate=False)
    assert not out.exists()


def test_dynamic_shapes_are_kept_or_fixed_by_an_override(tmp_path, rules_file):
    # Symbolic dims no longer need an override: they stay symbolic (tests/test_dynamic_shapes.py
    # has the rest); an override still fixes them.
    src = matmul_model(tmp_path / "dyn.onnx", k=16, batch="N")
    r = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic", gate=False)
    assert r.check.passed and r.kept
    dims = onnx.load(tmp_path / "dyn.opt.onnx").graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"
    with pytest.raises(ShapeError, match="shape-hint"):  # a hint must fit the model
        superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic",
                          shape_hints={"x": (4, 8)})
    r = superopt.optimize(
        src,
        rules=rules_file,
        device="cpu",
        cost="analytic",
        gate=False,
        input_shapes={"x": (4, 16)},
    )
    assert r.check.passed and r.kept


def test_cli_optimize_prints_and_writes_json(tmp_path, rules_file, capsys):
    src = matmul_model(tmp_path / "mm.onnx", k=32)
    rc = main(
        [
            "optimize",
            str(src),
            "--rules",
            str(rules_file),
            "--device",
            "cpu",
            "--cost",
            "analytic",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == 0 and (tmp_path / "mm.opt.onnx").exists()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["format"] == "superopt-report/2" and doc["check"]["passed"]
    assert "rewrites applied" in capsys.readouterr().err


@pytest.mark.parametrize(
    "case", ["missing-rules", "corrupt-rules", "unknown-rank", "bad-shape", "unknown-skip"]
)
def test_cli_bad_inputs_exit_2_without_output(tmp_path, rules_file, capsys, case):
    src = matmul_model(tmp_path / "m.onnx", k=16, batch="4")
    if case == "unknown-rank":  # symbolic dims are kept; an input of unknown rank is refused
        model = onnx.load(src)
        model.graph.input[0].type.tensor_type.ClearField("shape")
        onnx.save(model, src)
    corrupt = tmp_path / "bad.json"
    corrupt.write_text("{not json")
    extra = {
        "missing-rules": ["--rules", str(tmp_path / "nope.json")],
        "corrupt-rules": ["--rules", str(corrupt)],
        "unknown-rank": ["--rules", str(rules_file)],
        "bad-shape": ["--rules", str(rules_file), "--overwrite-input-shape", "x:1,2,3"],
        "unknown-skip": ["--rules", str(rules_file), "--skip-rules", "rdeadbeef"],
    }[case]
    rc = main(["optimize", str(src), "--device", "cpu", "--cost", "analytic", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "error:" in err, err
    assert not (tmp_path / "m.opt.onnx").exists()


def test_cli_cuda_where_cuda_does_not_work(tmp_path, rules_file, capsys):
    from superopt.runtime import cuda_probe

    if cuda_probe()[0]:
        pytest.skip("CUDA works here")
    src = matmul_model(tmp_path / "m.onnx", k=16)
    rc = main(["optimize", str(src), "--device", "cuda", "--rules", str(rules_file)])
    assert rc == 2 and "CUDA" in capsys.readouterr().err
    assert not (tmp_path / "m.opt.onnx").exists()


def test_ctrl_c_during_search_leaves_no_file(tmp_path, rules_file, monkeypatch, capsys):
    import superopt.search as search_pkg

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(search_pkg, "search_auto", interrupted)
    src = matmul_model(tmp_path / "m.onnx", k=16)
    rc = main(
        ["optimize", str(src), "--device", "cpu", "--cost", "analytic", "--rules", str(rules_file)]
    )
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "m.opt.onnx").exists()


def test_a_candidate_ort_cannot_load_is_dropped(tmp_path, rules_file, monkeypatch):
    import superopt.pipeline.optimize as opt

    monkeypatch.setattr(opt, "_ort_loads", lambda proto: "ONNX Runtime cannot load it")
    src = matmul_model(tmp_path / "mm.onnx", k=16)
    r = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic")
    assert not r.kept and r.dropped_candidates and r.check.passed
    assert r.kept_reason == "every candidate failed to load in ONNX Runtime"


def test_optimize_runs_its_phases_over_the_options(tmp_path, rules_file):
    import dataclasses
    import inspect

    from superopt.core.errors import UsageError
    from superopt.pipeline.optimize import PHASES, OptimizeOptions, optimize
    from superopt.search import StopReason

    # Every keyword of optimize() is a field of the options, with the same default.
    params = dict(list(inspect.signature(optimize).parameters.items())[2:])
    fields = {f.name: f.default for f in dataclasses.fields(OptimizeOptions)}
    assert fields == {k: p.default for k, p in params.items()}
    with pytest.raises(UsageError, match="check-n"):
        OptimizeOptions(check_n=0)
    assert [k for k, _ in PHASES] == ["load", "load", "search", "export", "gate", "check",
                                      "write", "describe"]
    src = matmul_model(tmp_path / "mm.onnx", k=16)
    seen = []
    r = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic", gate=False,
                          progress=lambda phase, *a: seen.append(phase))
    assert list(r.phase_s) == ["load", "search", "export", "gate", "check", "write", "describe"]
    assert list(dict.fromkeys(seen)) == ["load", "rules", "search", "check", "write", "describe"]
    assert r.stop_reason is StopReason.EXHAUSTED and r.to_json()["search"]["stop_reason"] == (
        "queue empty")
    assert r.search.steps == r.steps == r.candidate_steps
    assert len(r.search.iterations) == r.search_stats["expansions"]


def _flat_measured():
    """A measured cost model that finds every graph as costly as the original (one-node
    timings that see no gain), without timing anything."""
    from superopt.cost_model.measured import MeasuredCost

    class Flat(MeasuredCost):
        def __init__(self) -> None:  # no cache, no ORT
            pass

        def node_cost(self, node, const_mask=None) -> float:
            return 1.0

        def graph_cost(self, graph) -> float:
            return 1.0

        def describe(self) -> dict:
            return {"name": "measured", "target": "cpu"}

    return Flat()


@pytest.mark.parametrize("roofline", [True, False])
def test_the_roofline_candidate_is_timed_when_measured_costs_see_no_gain(
        tmp_path, rules_file, monkeypatch, roofline):
    """nasrnn on the 2-core CPU: measured one-node costs found nothing cheaper, the analytic
    roofline's best graph was written 1.065x faster. Here the measured model sees no gain in
    anything; the roofline's search folds (x·A)·B into x·(AB), and that candidate is chosen
    (gate off: the cheapest candidate), with its steps and rules in the report."""
    import superopt.cost_model as cost_models

    monkeypatch.setattr(cost_models, "make_cost_model", lambda *a, **k: _flat_measured())
    src = matmul_model(tmp_path / "mm.onnx", k=32)
    r = superopt.optimize(src, rules=rules_file, device="cpu", gate=False, write=False,
                          roofline_candidate=roofline)
    assert r.search.steps == []  # the measured search: nothing cheaper
    doc = r.to_json()
    if not roofline:
        assert not r.kept and r.kept_reason.startswith("the search found no graph cheaper")
        assert doc["search"]["roofline"] is None
        return
    assert r.kept and [s.rule_name for s in r.steps] == ["matmul-assoc"]
    assert r.op_counts_after == {"MatMul": 1} and r.rules[ASSOC.id]["name"] == "matmul-assoc"
    roof = doc["search"]["roofline"]
    assert set(roof) == {"rewrites", "cost_ratio", "elapsed_s", "stop_reason", "timed",
                         "chosen"}  # as docs/report-schema.md lists them
    assert roof["rewrites"] == 1 and roof["timed"] and roof["chosen"]
    assert 0 < roof["cost_ratio"] < 1 and roof["stop_reason"] == "queue empty"
    assert doc["steps"][0]["rule_name"] == "matmul-assoc"


def test_no_roofline_candidate_with_analytic_costs(tmp_path, rules_file):
    src = matmul_model(tmp_path / "mm.onnx", k=16)
    r = superopt.optimize(src, rules=rules_file, device="cpu", cost="analytic", gate=False,
                          write=False)
    assert r.roofline is None and r.to_json()["search"]["roofline"] is None
