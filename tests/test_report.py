"""The optimization report: JSON keys against docs/report-schema.md, the HTML page, the SVG
drawings, `superopt inspect report.json`, and a headless-Chromium render where Chromium exists.

Models are two chained MatMuls (rule: MatMul associativity, which folds the weights into one
MatMul) with hostile node and value names, so escaping is checked on real reports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from handwritten_rules import ASSOC
from onnx import TensorProto, helper, numpy_helper

import superopt
from superopt.core.ir import Graph, Node, Value
from superopt.core.rules import save_rules
from superopt.core.types import TensorType
from superopt.face.cli import main
from superopt.face.commands.inspect import ReportSummary, summarize
from superopt.face.drawing import draw_subgraph
from superopt.face.report import render_html, write_json, write_report
from superopt.pipeline.describe import describe_subgraph

SEED = 0
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "report-schema.md"
HOSTILE = '<script>alert("x")</script>&'


def hostile_matmul_model(path: Path, k: int = 256) -> Path:
    """y = (x @ A) @ B with a narrow B; the first node's name is an HTML injection, the middle
    value has '<'."""
    rng = np.random.default_rng(SEED)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    # B is narrow, so x @ (A @ B) does ~17x less work than (x @ A) @ B: a win the end-to-end
    # gate sees even on a loaded machine (no timing assertion rests on a small margin).
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) / 20, n)
             for n, shape in (("A", (k, k)), ("B", (k, 16)))]
    nodes = [helper.make_node("MatMul", ["x", "A"], ["t<1>"], name=HOSTILE),
             helper.make_node("MatMul", ["t<1>", "B"], ["y"], name="mm2")]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Two real runs: through the CLI with the A/B gate (kept, timed), and via the API without
    gate and check (latency and check null)."""
    folder = tmp_path_factory.mktemp("reports")
    rules = folder / "rules.json"
    save_rules([ASSOC], rules)
    model = hostile_matmul_model(folder / "mm.onnx")
    rc = main(["optimize", str(model), str(folder / "out.onnx"), "--rules", str(rules),
               "--device", "cpu", "--cost", "analytic", "--json", str(folder / "gated.json"),
               "--report", str(folder / "gated.html"), "-q"])
    assert rc == 0
    result = superopt.optimize(model, folder / "out2.onnx", rules=rules, device="cpu",
                               cost="analytic", gate=False, check=False)
    write_json(result, folder / "ungated.json")
    write_report(result, folder / "ungated.html")
    return {"gated": folder / "gated.json", "ungated": folder / "ungated.json",
            "gated_html": folder / "gated.html", "ungated_html": folder / "ungated.html",
            "folder": folder}


# ---------------------------------------------------------------------------------------------
# the JSON against the documented schema


def documented_keys() -> dict[str, set[str]]:
    """{key path: allowed JSON types} from the tables of docs/report-schema.md."""
    keys: dict[str, set[str]] = {}
    for line in SCHEMA.read_text().splitlines():
        m = re.match(r"^\| `([^`]+)` \| ([^|]+(?:\\\|[^|]+)*) \|", line)
        if m:
            keys[m.group(1)] = {t.strip() for t in m.group(2).replace("\\|", "|").split("|")}
    return keys


def json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def flatten(doc, prefix: str = "") -> list[tuple[str, object]]:
    """(path, value) for every key and list element, in the schema's notation."""
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            path = f"{prefix}.{k}" if prefix else k
            out.append((path, v))
            out.extend(flatten(v, path))
    elif isinstance(doc, list):
        for v in doc:
            out.append((f"{prefix}[]", v))
            out.extend(flatten(v, f"{prefix}[]"))
    return out


def documented_path(path: str, keys: dict[str, set[str]]) -> str | None:
    """The documented pattern that `path` falls under (`*` matches one map key), or None."""
    path = path.replace("candidate_steps[]", "steps[]")
    path = path.replace(".subgraph.after", ".subgraph.before")
    for pattern in keys:
        rx = "^" + re.escape(pattern).replace(r"\*", r"[^.\[]+") + "$"
        if re.match(rx, path):
            return pattern
    return None


def test_every_json_key_is_documented_with_its_type(reports):
    keys = documented_keys()
    assert len(keys) > 80, "the schema tables did not parse"
    seen: set[str] = set()
    for name in ("gated", "ungated"):
        doc = json.loads(reports[name].read_text())
        for path, value in flatten(doc):
            pattern = documented_path(path, keys)
            assert pattern is not None, f"{name}: key {path} is not in docs/report-schema.md"
            t = json_type(value)
            allowed = keys[pattern]
            assert t in allowed or (t == "integer" and "number" in allowed), \
                f"{name}: {path} is {t}, documented as {allowed}"
            seen.add(pattern)
    # Documented keys these two runs cannot produce (each needs another situation).
    rare = {"dropped_candidates[]", "search.stats.refusals.*",
            "steps[].subgraph.before.nodes[].attrs.*",  # MatMul has no attributes
            "candidate_steps", "steps[].subgraph.after",  # checked through steps[] (renamed)
            # the sizes a model with symbolic dims is checked at (these models are static)
            "check.shapes", "check.shapes[]", "check.shapes[].*", "check.shapes[].*[]",
            # objects inside a proof record (e.g. the classes a rule was proved at)
            "rules.*.proof.*.*", "steps[].proof.*.*",
            # the roofline candidate runs with measured costs only; tests/test_optimize.py's
            # roofline tests produce every one of these keys
            "search.roofline.chosen", "search.roofline.cost_ratio", "search.roofline.elapsed_s",
            "search.roofline.rewrites", "search.roofline.stop_reason", "search.roofline.timed"}
    missing = set(keys) - seen - rare
    assert not missing, f"documented but never produced: {sorted(missing)}"


def test_gated_report_numbers(reports):
    doc = json.loads(reports["gated"].read_text())
    assert doc["format"] == "superopt-report/2"
    assert doc["op_counts"] == {"before": {"MatMul": 2}, "imported": {"MatMul": 2},
                                "after": {"MatMul": 1}}
    assert not doc["original_kept"] and doc["verdict"] == "written: faster"
    assert doc["written"] and doc["check"]["passed"]
    assert doc["latency"]["speedup"] > 1.0 and doc["latency"]["before"]["median_s"] > 0
    assert doc["size_bytes"]["after"] < doc["size_bytes"]["before"]
    [step] = doc["steps"]
    assert step["rule_name"] == "matmul-assoc" and step["gain"] > 0
    assert sorted(step["matched_nodes"]) == sorted([HOSTILE, "mm2"])
    before, after = step["subgraph"]["before"], step["subgraph"]["after"]
    assert {n["name"] for n in before["nodes"] if n["focus"]} == {HOSTILE, "mm2"}
    assert before["values"]["t<1>"]["shape"] == [64, 256]
    assert before["values"]["A"]["kind"] == "const" and before["values"]["x"]["kind"] == "input"
    assert before["values"]["y"]["graph_output"]
    assert {n["name"] for n in after["nodes"] if n["focus"]} == set(step["created_nodes"])
    assert [n["op"] for n in after["nodes"]] == ["MatMul", "MatMul"]


def test_ungated_report_has_null_latency_and_check(reports):
    doc = json.loads(reports["ungated"].read_text())
    assert doc["latency"]["before"] is None and doc["check"] is None
    assert not doc["original_kept"] and len(doc["steps"]) == 1
    assert doc["verdict"] == "written: cheapest by the cost model (gate off)"


# ---------------------------------------------------------------------------------------------
# HTML


def test_html_is_self_contained_and_escaped(reports):
    html = reports["gated_html"].read_text()
    assert "<script" not in html  # the hostile node name is text, never markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert "@media print" in html
    # One section per rewrite, each with a before and an after drawing.
    assert html.count('class="rewrite"') == 1
    assert html.count("<svg") == 2
    # A rules file is re-proved before use (pipeline.trust): the report shows the verifier's record.
    for needle in ("matmul-assoc", "(MatMul (MatMul ?x ?a) ?b)", "axioms",
                   "CPUExecutionProvider", "Optimized model written", "estimated gain"):
        assert needle in html, needle


def test_html_renders_from_the_json_alone(reports):
    doc = json.loads(reports["ungated"].read_text())
    assert render_html(doc) == reports["ungated_html"].read_text()
    assert "not timed" in render_html(doc) and "skipped" in render_html(doc)


def test_html_of_a_kept_original_shows_the_candidate_rewrites(reports):
    doc = json.loads(reports["gated"].read_text())
    doc["candidate_steps"], doc["steps"] = doc["steps"], []
    doc["original_kept"] = True
    doc["kept_reason"] = "kept the original: the best candidate measured 0.9x"
    html = render_html(doc)
    assert "Original model kept" in html and "best candidate the search found" in html
    assert html.count("<svg") == 2


def test_rewrite_drawings_come_from_the_search_records(tmp_path, monkeypatch):
    """The report describes each rewrite from the graphs the search recorded: once the search
    has returned, nothing may match or apply a rule again."""
    import superopt.face.report as face_report
    import superopt.pipeline.optimize as pipeline_optimize
    import superopt.search as search_pkg
    import superopt.search.match as match_mod

    real_search = search_pkg.search_auto

    def forbidden(*a, **k):
        raise AssertionError("rules matched or applied after the search")

    def search_then_forbid(*a, **k):
        result = real_search(*a, **k)
        for module in (search_pkg, match_mod):
            monkeypatch.setattr(module, "find_matches", forbidden)
            monkeypatch.setattr(module, "apply_match", forbidden)
        return result

    monkeypatch.setattr(search_pkg, "search_auto", search_then_forbid)
    rules = tmp_path / "rules.json"
    save_rules([ASSOC], rules)
    model = hostile_matmul_model(tmp_path / "mm.onnx", k=32)
    result = superopt.optimize(model, rules=rules, device="cpu", cost="analytic", gate=False,
                               check=False, write=False)
    [step] = result.steps
    assert step.before is result.graph_before and step.after is result.graph_after
    assert result.search.steps == [step] and result.search.iterations
    doc = result.to_json()
    sub = doc["steps"][0]["subgraph"]
    assert {n["name"] for n in sub["before"]["nodes"] if n["focus"]} == {HOSTILE, "mm2"}
    assert {n["name"] for n in sub["after"]["nodes"] if n["focus"]} == set(step.created_nodes)
    assert doc["search"]["stop_reason"] == "queue empty"
    html = render_html(doc)
    assert html.count("<svg") == 2
    # One report format string, defined by the pipeline that produces the document.
    assert face_report.REPORT_FORMAT is pipeline_optimize.REPORT_FORMAT == doc["format"]


def test_write_report_refuses_a_missing_folder(tmp_path, reports):
    from superopt.core.errors import OutputError

    doc = json.loads(reports["gated"].read_text())
    with pytest.raises(OutputError, match="does not exist"):
        write_report(doc, tmp_path / "no" / "r.html")


# ---------------------------------------------------------------------------------------------
# drawing


def _chain():
    x = Value.input("in<0>", TensorType(TensorProto.FLOAT, (2, 4)))
    a = Node.make("Relu", {}, [x], name="a")
    b = Node.make("Relu", {}, [a.outputs[0]], name="b&c")
    c = Node.make("Sigmoid", {}, [b.outputs[0]], name="c")
    d = Node.make("Tanh", {}, [b.outputs[0]], name="d")
    return Graph([x], [("y", c.outputs[0]), ("z", d.outputs[0])])


def test_describe_subgraph_takes_focus_and_neighbours():
    desc = describe_subgraph(_chain(), ["b&c"])
    assert [(n["name"], n["focus"]) for n in desc["nodes"]] == [
        ("a", False), ("b&c", True), ("c", False), ("d", False)]
    out = desc["nodes"][1]["outputs"][0]
    assert desc["values"][out]["external_users"] == 0
    assert desc["values"]["in<0>"]["kind"] == "input"
    assert desc["values"]["c_out"]["graph_output"] is True


def test_drawing_is_well_formed_svg_with_one_box_per_item():
    svg = draw_subgraph(describe_subgraph(_chain(), ["a", "b&c"]), side="after", ident="t1")
    root = ET.fromstring(svg)  # escaped names keep it valid XML
    ns = "{http://www.w3.org/2000/svg}"
    groups = root.findall(f"{ns}g")
    kinds = sorted(g.get("class") for g in groups)
    # a, b&c focus; c, d neighbours; the graph input feeding a
    assert kinds == ["item context", "item context", "item focus", "item focus", "item input"]
    assert len(root.findall(f"{ns}path")) == 4  # in->a, a->b, b->c, b->d
    assert "b&amp;c" in svg and 'marker id="arrow-t1"' in svg
    assert draw_subgraph(None).startswith("<p")


# ---------------------------------------------------------------------------------------------
# inspect


def test_inspect_report_lists_the_rewrites(reports, capsys):
    summary = summarize(reports["gated"])
    assert isinstance(summary, ReportSummary)
    assert summary.applied and not summary.original_kept and summary.nodes_before == 2
    assert summary.verdict == "written: faster" and summary.format == "superopt-report/2"
    assert [r["rule_name"] for r in summary.rewrites] == ["matmul-assoc"]
    assert main(["inspect", str(reports["gated"])]) == 0
    out = capsys.readouterr().out
    assert "rewrites applied (1)" in out and "matmul-assoc" in out
    assert main(["inspect", str(reports["gated"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rewrites"][0]["index"] == 1


def test_inspect_incomplete_report_is_one_line(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"format": "superopt-report/1", "steps": []}))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert "incomplete superopt-report/1" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# a real browser


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed "
                    "(apt-get install chromium) to render the report headless")
def test_report_renders_in_headless_chromium(reports, tmp_path):
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    url = reports["gated_html"].resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Rewrites (1)" in dom.stdout and dom.stdout.count("<svg") == 2
    for bad in ("Uncaught", "CONSOLE"):
        assert bad not in dom.stderr, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    r = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page is a few KB
