"""`superopt bench`: the Markdown results, failures, the GPU script (the interleaved timing it
uses is tested with the runtime adapter, in test_ort_runtime.py).

One benchmark run (squeezenet from the zoo, a MatMul chain a hand-written rule rewrites, and a
model ONNX Runtime cannot load) is shared by the tests that read its results. No assertion
depends on how fast anything ran: timings are checked for presence and consistency only.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt import zoo
from superopt.core.errors import UsageError
from superopt.core.rules import Rule, save_rules
from superopt.face.cli import main
from superopt.face.commands.bench import (
    ORT_TRANSFORMERS,
    BenchReport,
    ModelBench,
    _resolve_models,
    default_out_path,
    geomean,
    is_transformer,
    render_markdown,
    report_from_json,
    report_json,
    run_bench,
    targets,
)
from superopt.runtime import Timing

SEED = 0
ROOT = Path(__file__).resolve().parents[1]
ASSOC = Rule.make(["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"],
                  {"x": "tensor", "a": "weight", "b": "weight"}, name="matmul-assoc",
                  ranks={"x": 2, "a": 2, "b": 2},  # its class: the verifier re-proves it there
                  proof={"result": "proved"})


def matmul_chain(k: int = 256) -> onnx.ModelProto:
    """y = (x A) B with constant A, B: `matmul-assoc` folds it into one MatMul."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, k])
    inits = [numpy_helper.from_array(rng.standard_normal((k, k)).astype(np.float32) / 16, n)
             for n in ("A", "B")]
    nodes = [helper.make_node("MatMul", ["x", "A"], ["t"], name="mm1"),
             helper.make_node("MatMul", ["t", "B"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "chain", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def broken_model() -> onnx.ModelProto:
    """Loads in superopt (the unknown op is opaque) but not in ONNX Runtime."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example", name="mystery")
    graph = helper.make_graph([node], "broken", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example", 1)],
                             ir_version=8)


def builder(name: str) -> onnx.ModelProto:
    if name == "mm-chain":
        return matmul_chain()
    if name == "broken":
        return broken_model()
    return zoo.build(name)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """(report, Markdown text, JSON data) of one small run on the CPU."""
    folder = tmp_path_factory.mktemp("bench")
    rules = folder / "rules.json"
    save_rules([ASSOC], rules)
    out, json_out = folder / "cpu.md", folder / "cpu.json"
    report = run_bench(["squeezenet", "broken", "mm-chain"], device="cpu", rounds=3,
                       timing_budget_s=0.3, rules=rules, time_limit=5, cache_dir=folder / "cache",
                       out=out, json_out=json_out, command="superopt bench (test)",
                       notes=["a Ray job ran alongside"], builder=builder)
    return report, out.read_text(), json.loads(json_out.read_text())


def table(markdown: str) -> tuple[list[str], dict[str, list[str]]]:
    """Headers and rows (by first cell) of the Markdown results table."""
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
    headers, body = split[0], split[2:]
    return headers, {row[0]: row for row in body}


def test_markdown_has_the_header_fields(bench_run):
    report, text, _ = bench_run
    assert text.startswith(f"# superopt bench: cpu ({report.device_name})")
    assert re.search(r"^- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", text, re.M)
    assert "provider: CPUExecutionProvider" in text
    versions = re.search(r"^- versions: (.*)$", text, re.M).group(1)
    for package in ("onnxruntime", "onnx", "numpy", "superopt", "python"):
        assert re.search(rf"\b{package} \d", versions), package
    assert "- command: `superopt bench (test)`" in text
    assert "- rules: 1 proved rules from" in text
    assert "Method:" in text and "3 rounds" in text and "2 fresh sessions" in text
    assert "\n- a Ray job ran alongside\n" in text  # --note, in the notes


def test_rows_hold_the_measured_values(bench_run):
    report, text, _ = bench_run
    headers, rows = table(text)
    assert list(rows) == ["squeezenet", "broken", "mm-chain", "**geomean**"]
    squeeze = next(m for m in report.models if m.name == "squeezenet")
    assert squeeze.nodes_before == len(zoo.build("squeezenet").graph.node)
    assert set(squeeze.timings) >= {"ORT disable", "ORT all", "superopt"}
    assert all(len(t.samples) == 3 and t.median_s > 0 for t in squeeze.timings.values())
    row = dict(zip(headers, rows["squeezenet"]))
    assert row["nodes before → after"] == f"{squeeze.nodes_before} → {squeeze.nodes_after}"
    all_ms = squeeze.timings["ORT all"]
    assert row["ORT all (ms)"] == f"{all_ms.median_s * 1e3:.3f} ± {all_ms.spread:.0%}"
    speedup = np.median([a / b for a, b in zip(all_ms.samples,
                                               squeeze.timings["superopt"].samples)])
    assert row["superopt vs ORT all"].startswith(f"{speedup:.3f}×")
    assert re.match(r"\d+\.\d \((cold: \d+ ops measured|warm)", row["optimize (s)"])


def test_rewrites_are_reported_with_the_gate_decision(bench_run):
    report, text, _ = bench_run
    chain = next(m for m in report.models if m.name == "mm-chain")
    cell = table(text)[1]["mm-chain"][-1]
    # Whether the gate kept the rewrite depends on the machine; either outcome must be reported.
    if chain.kept:
        assert chain.rewrites == {"matmul-assoc": 1}
        assert chain.nodes_after == 1 and cell == "matmul-assoc ×1"
    else:
        assert cell.startswith("none (original kept:") and chain.nodes_after == 2


def test_geomean_row_is_the_geomean_of_the_rows(bench_run):
    report, text, _ = bench_run
    headers, rows = table(text)
    for column in ("superopt vs ORT all", "superopt vs disable"):
        i = headers.index(column)
        values = [float(rows[name][i].split("×")[0]) for name in ("squeezenet", "mm-chain")]
        assert rows["broken"][i] == "—"
        expected = math.exp(sum(math.log(v) for v in values) / len(values))
        assert float(rows["**geomean**"][i].rstrip("×")) == pytest.approx(expected, abs=2e-3)


def test_a_failing_model_is_reported_and_the_others_still_run(bench_run):
    report, text, _ = bench_run
    broken = next(m for m in report.models if m.name == "broken")
    assert broken.error and "does not run in ONNX Runtime" in broken.error
    assert "**error**" in table(text)[1]["broken"][-1]
    after = next(m for m in report.models if m.name == "mm-chain")
    assert after.error is None and "superopt" in after.timings


def test_json_round_trips_to_the_same_markdown(bench_run):
    report, text, data = bench_run
    assert data["format"] == "superopt-bench/1"
    assert render_markdown(report_from_json(data)) == text
    assert report_json(report_from_json(data)) == data


def test_peer_column_or_note(bench_run):
    report, text, _ = bench_run
    headers, _ = table(text)
    if "onnxslim" in report.peers:
        assert "onnxslim (ms)" in headers and "onnxslim vs ORT all" in headers
    else:
        assert "onnxslim not installed: skipped" in text and "onnxslim (ms)" not in headers


def test_geomean():
    assert geomean([2.0, 0.5, None, 1.0]) == pytest.approx(1.0)
    assert geomean([4.0, 1.0]) == pytest.approx(2.0)
    assert geomean([None]) is None


def _timing(rounds_ms: list[float]) -> Timing:
    return Timing.from_samples([ms / 1e3 for ms in rounds_ms])


def test_speedups_are_paired_by_round_and_marked_within_the_noise():
    """A speedup is the median of the per-round ratios: the machine slowing down by a third
    for the last rounds, for every variant alike, cancels. It is marked n.s. when 1 lies within
    the 10th-90th percentile of those ratios, or within max(1%, the spreads in quadrature)."""
    # rounds 1-3 fast, 4-6 slow (x1.35) for every variant
    shift = [1, 1, 1, 1.35, 1.35, 1.35]
    orig = _timing([3.0 * k for k in shift])
    fast = ModelBench("a", timings={
        "ORT all": orig,
        "superopt": _timing([2.0 * k for k in shift]),
        # 2% faster in some rounds, slower in others
        "ORT disable": _timing([a * k for a, k in zip([1.9, 2.1, 1.95, 2.08, 2.0, 2.06], shift)]),
    })
    assert fast.speedup_over_all == pytest.approx(1.5) and fast.significant("ORT all")
    # the shift spreads each variant's rounds by 30%: within the 50% gain (hypot 42%)
    assert fast.timings["ORT all"].spread == pytest.approx((4.05 - 3.0) / 3.525)
    assert fast.speedup_over_disable == pytest.approx(np.median(
        [a / 2.0 for a in [1.9, 2.1, 1.95, 2.08, 2.0, 2.06]]))
    assert not fast.significant("ORT disable")
    # medians of unpaired rounds would mix fast and slow rounds: 1.25 from these
    mixed = ModelBench("b", timings={"ORT all": _timing([3.0 * k for k in shift]),
                                     "superopt": _timing([2.0 * k for k in reversed(shift)])})
    assert mixed.round_ratios("ORT all") == pytest.approx(
        [1.5 / 1.35] * 3 + [1.5 * 1.35] * 3)
    within = ModelBench("c", timings={"ORT all": _timing([3.0, 3.0, 3.0]),
                                      "superopt": _timing([2.98, 2.98, 2.98])})
    assert not within.significant("ORT all")  # under 1%, however steady
    # every round 2% faster, but each variant's rounds spread 10%: within the noise
    offset = ModelBench("d", timings={"ORT all": _timing([3.06, 2.91, 3.21]),
                                      "superopt": _timing([3.0, 2.85, 3.15])})
    assert offset.speedup_over_all == pytest.approx(1.02, abs=0.001)
    assert not offset.significant("ORT all")
    report = BenchReport("cpu", "test cpu", "CPUExecutionProvider", {}, "", "today", 3, 1.0, "",
                         models=[fast])
    text = render_markdown(report)
    assert f"| 1.500× | {fast.speedup_over_disable:.3f}× (n.s.) |" in text


def test_default_out_path():
    assert default_out_path("cpu", "AMD EPYC (2 cores)") == Path("benchmarks/results/cpu.md")
    assert default_out_path("cuda", "NVIDIA H200").name == "cuda-nvidia-h200.md"


def test_time_limit_skips_the_remaining_models(tmp_path):
    report = run_bench(["squeezenet", "bert"], device="cpu", max_total_s=0.0,
                       out=tmp_path / "r.md", cache_dir=tmp_path)
    skipped = "skipped: the run's time limit (0 s) was reached"
    assert [m.error for m in report.models] == [skipped] * 2
    assert "skipped: the run's time limit" in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["bench", "nosuchmodel", "--device", "cpu"], "unknown model 'nosuchmodel'"),
    (["bench", "squeezenet", "--rounds", "0"], "--rounds must be at least 1"),
    (["bench", "squeezenet", "--gate-budget", "0"], "--gate-budget must be positive"),
])
def test_cli_rejects_bad_arguments_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_gpu_script_dry_run_on_cpu_without_rich_or_z3(tmp_path):
    """benchmarks/gpu_bench.sh with the CPU provider, as on the GPU machine: rich and z3 absent."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    # sitecustomize runs at interpreter start: the packages the GPU machine may lack vanish.
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['rich'] = None\n"
                                              "sys.modules['z3'] = None\n")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, SUPEROPT_BENCH_DEVICE="cpu",
               SUPEROPT_BENCH_MODELS="squeezenet", SUPEROPT_BENCH_ROUNDS="2",
               SUPEROPT_BENCH_TIMING_S="0.2", SUPEROPT_BENCH_SEARCH_S="2",
               SUPEROPT_BENCH_CACHE=str(tmp_path / "cache"),
               SUPEROPT_GATE_MODELS="resnet50", SUPEROPT_GATE_BUDGET_S="1",
               PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_bench.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "rich missing" in (out / "env.txt").read_text()
    assert "z3 missing" in (out / "env.txt").read_text()
    _, rows = table((out / "cpu.md").read_text())
    assert list(rows) == ["squeezenet", "**geomean**"]
    assert json.loads((out / "cpu.json").read_text())["models"][0]["name"] == "squeezenet"
    assert (out / "costs.sqlite3").stat().st_size > 0
    log = (out / "bench.log").read_text()
    assert "[1/1] squeezenet" in log and "┏" not in log  # the plain-text table, not rich's
    # first phase: the analytic best graph through the gate (resnet50: its conv-add-merge)
    [line] = (out / "gate.txt").read_text().splitlines()
    assert line.startswith("resnet50 | 1 rewrites: conv-add-merge | ")
    assert json.loads((out / "gate-resnet50.json").read_text())["cost_model"]


def _spread(ms: float, spread: float, reverse: bool = False) -> Timing:
    """Three rounds spreading `spread` around `ms`; reversed, the variant's slow round meets
    the reference's fast one."""
    rounds = [ms * (1 - spread / 2), ms, ms * (1 + spread / 2)]
    return _timing(rounds[::-1] if reverse else rounds)


def test_targets_say_met_or_not_with_the_figures():
    nas = ModelBench("nasrnn", timings={"ORT all": _spread(3.6, 0.02),
                                        "superopt": _spread(3.0, 0.02, True)})
    slow = ModelBench("resnet50", timings={"ORT all": _spread(10.0, 0.01),
                                           "superopt": _spread(11.0, 0.01, True)})
    same = ModelBench("bert", timings={"ORT all": _spread(10.0, 0.2),
                                       "superopt": _spread(10.5, 0.2, True)})
    report = BenchReport("cpu", "test cpu", "CPUExecutionProvider", {}, "", "today", 3, 1.0, "",
                         models=[nas, slow, same])
    lines = targets(report)
    assert lines[0] == "NasRNN at least 1.10× over ORT all: met (1.200×)."
    assert lines[1] == ("geomean at least 1.05× over ORT all: not met (1.013× over 3 models "
                        "with the models whose original was kept at 1.000×; 1.013× as "
                        "measured).")
    # resnet50 is 10% slower in every round; bert's rounds read 0.78-1.16
    assert lines[2] == "no model slower than ORT all beyond the noise: not met (resnet50 0.909×)."
    assert "Targets:" in render_markdown(report)
    report.models = [nas]
    assert targets(report)[-1] == "no model slower than ORT all beyond the noise: met."
    # a model whose original superopt kept is the same model: its ratio is noise, never a win
    nas.kept, slow.kept = False, False
    report.models = [nas, slow]
    lines = targets(report)
    assert lines[0] == ("NasRNN at least 1.10× over ORT all: not met (superopt kept the "
                        "original; measured 1.200×, noise).")
    assert lines[1].startswith("geomean at least 1.05× over ORT all: not met (1.000× over 2 "
                               "models with")
    assert lines[2] == "no model slower than ORT all beyond the noise: met."
    nas.kept = True
    nas.timings["superopt"] = _spread(3.4, 0.2, True)  # rounds 0.95-1.19
    assert targets(report)[0] == ("NasRNN at least 1.10× over ORT all: not met (1.059×, within "
                                  "the noise).")


def small_transformer() -> onnx.ModelProto:
    """MatMul -> Softmax -> MatMul -> residual Add -> LayerNormalization."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (16, 16)), ("V", (16, 16)), ("g", (16,)), ("b", (16,)))]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["s"]),
             helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "V"], ["o"]),
             helper.make_node("Add", ["o", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "g", "b"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_ort_transformer_peer_column_or_one_line_note(tmp_path):
    assert is_transformer(small_transformer()) and not is_transformer(matmul_chain(8))
    rules = tmp_path / "rules.json"
    save_rules([ASSOC], rules)
    report = run_bench(["tiny", "mm-chain"], device="cpu", rounds=2, timing_budget_s=0.2,
                       rules=rules, time_limit=2, cache_dir=tmp_path / "cache", gate_budget_s=1,
                       builder=lambda n: small_transformer() if n == "tiny" else matmul_chain(8))
    tiny, chain = report.models
    assert tiny.error is None and chain.error is None  # the gate budget reached optimize
    assert ORT_TRANSFORMERS not in chain.timings  # not a transformer: no such variant
    failed = [n for n in tiny.notes if n.startswith("ORT transformer optimizer failed: ")]
    if ORT_TRANSFORMERS in tiny.timings:
        headers, rows = table(render_markdown(report))
        assert "ORT transformers (ms)" in headers and "ORT transformers vs ORT all" in headers
        assert rows["mm-chain"][headers.index("ORT transformers (ms)")] == "—"
    else:
        assert len(failed) == 1 and "\n" not in failed[0]


def test_shared_exports_are_benchmarked_with_the_zoo(tmp_path):
    onnx.save(matmul_chain(8), tmp_path / "chain_export.onnx")
    names, build, notes = _resolve_models(None, tmp_path)
    assert names == [*zoo.list_models(), "chain_export"] and notes == []
    assert [n.op_type for n in build("chain_export").graph.node] == ["MatMul", "MatMul"]
    assert _resolve_models(["shared", "squeezenet"], tmp_path)[0] == ["chain_export",
                                                                      "squeezenet"]
    names, _, notes = _resolve_models(None, tmp_path / "missing")
    assert names == zoo.list_models() and "no shared exports in" in notes[0]
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        _resolve_models(["nope"], tmp_path)
