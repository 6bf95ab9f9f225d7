"""The report of an `optimize` run: one self-contained HTML file, and the same data as JSON.

The HTML is rendered from the JSON document (`OptimizeResult.to_json()`, format
`superopt-report/2`, documented in docs/report-schema.md), so the two never disagree and a report
can be re-rendered from its JSON later (`render_html(json.load(f))`). The page needs nothing from
the network: CSS and the SVG drawings (`superopt.face.drawing`) are inline, rewrites fold with
native `<details>` elements (no JavaScript), and a print stylesheet keeps each rewrite on one
page where it fits. Every string that comes from the model or the rules is escaped.

Example:
    >>> result = superopt.optimize("m.onnx", device="cpu")     # doctest: +SKIP
    >>> write_report(result, "report.html")                     # doctest: +SKIP
    >>> write_json(result, "report.json")                       # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from html import escape
from typing import Any

from superopt.core.atomic import atomic_write
from superopt.face.console import format_bytes
from superopt.face.drawing import draw_subgraph
from superopt.pipeline.optimize import REPORT_FORMAT

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d5d9e0; --bg:#f6f7f9; --good:#176c35;
        --bad:#a3261b; --accent:#2d5bd3; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1160px; padding: 20px 24px 60px; }
h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; margin: 0; }
.sub { color: var(--muted); margin: 0 0 14px; }
.verdict { padding: 10px 14px; border-radius: 6px; margin: 12px 0; font-weight: 600; }
.verdict.kept { background: #e5f4ea; color: var(--good); border: 1px solid #b7dfc4; }
.verdict.orig { background: #fdf3e1; color: #7a4a00; border: 1px solid #f0d49c; }
.verdict.fail { background: #fbe7e5; color: var(--bad); border: 1px solid #f0bcb6; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; }
.card { background: var(--bg); border: 1px solid var(--line); border-radius: 6px;
        padding: 8px 12px; }
.card .k { color: var(--muted); font-size: 12px; } .card .v { font-size: 18px; font-weight: 600; }
.card .d { color: var(--muted); font-size: 12px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; align-items: start; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left;
         vertical-align: top; }
th { background: var(--bg); font-weight: 600; } td.n, th.n { text-align: right;
  font-variant-numeric: tabular-nums; }
tr.fewer td { color: var(--good); font-weight: 600; } tr.more td { color: #8a5a00; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
                   font-size: 12.5px; }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: 6px 8px;
      margin: 4px 0; white-space: pre-wrap; word-break: break-all; }
details.rewrite { border: 1px solid var(--line); border-radius: 6px; margin: 14px 0;
                  padding: 0 14px 10px; }
details.rewrite > summary { cursor: pointer; padding: 10px 0; list-style-position: outside; }
.gain { float: right; font-weight: 600; } .gain.pos { color: var(--good); }
.gain.neg { color: var(--bad); }
.names { color: var(--muted); } .names code { color: var(--fg); }
.side h4 { margin: 8px 0 4px; font-size: 13px; color: var(--muted); text-transform: uppercase;
           letter-spacing: .04em; }
.side svg { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
            background: #fff; }
svg .edge { fill: none; stroke: #667; stroke-width: 1.2; }
svg text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; fill: #1d2330; }
svg text.op { font-weight: 700; font-size: 12px; }
svg text.shape { fill: #6a7183; font-size: 10px; }
svg text.attrs { fill: #4b5262; font-size: 10px; }
svg .item rect { stroke: #778; stroke-width: 1; fill: #fff; }
svg .context rect { stroke-dasharray: 4 3; fill: #f4f5f7; }
svg.before .focus rect { fill: #fde4e1; stroke: #c2453a; stroke-width: 1.6; }
svg.after .focus rect { fill: #def3e4; stroke: #2f8a4c; stroke-width: 1.6; }
svg .input rect { fill: #e6edfb; stroke: #6c8bd6; } svg .const rect { fill: #f1ecfa;
  stroke: #9a83c9; } svg .output rect { fill: #fff7df; stroke: #c9a43b; }
svg .value rect { fill: #fff; stroke: #aab; stroke-dasharray: 2 2; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; color: var(--muted); }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px;
            border: 1px solid #778; vertical-align: -1px; }
.muted { color: var(--muted); }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  details.rewrite { break-inside: avoid; page-break-inside: avoid; border-color: #999; }
  details.rewrite > summary { list-style: none; }
  h2 { break-after: avoid; } .cards { grid-template-columns: repeat(4, 1fr); }
  .verdict, .card, th, svg .item rect { -webkit-print-color-adjust: exact;
                                        print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""


def write_report(result: Any, path: str | os.PathLike) -> None:
    """Write the HTML report of `result` (an `OptimizeResult` or its `to_json()` dict)."""
    atomic_write(path, render_html(_as_doc(result)))


def write_json(result: Any, path: str | os.PathLike) -> None:
    """Write the JSON report of `result` (an `OptimizeResult` or its `to_json()` dict)."""
    atomic_write(path, json.dumps(_as_doc(result), indent=1, default=str) + "\n")


def _as_doc(result: Any) -> dict[str, Any]:
    doc = result if isinstance(result, dict) else result.to_json()
    if doc.get("format") != REPORT_FORMAT:
        raise ValueError(f"not a {REPORT_FORMAT} document (format {doc.get('format')!r})")
    return doc


# ---------------------------------------------------------------------------------------------
# HTML


def render_html(doc: dict[str, Any]) -> str:
    """The whole report page for a `superopt-report/2` document."""
    title = f"superopt report: {doc.get('input') or 'model'}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">superopt {_e(doc.get("superopt_version"))} · '
        f'{_e(doc.get("device"))} ({_e(doc.get("device_name"))}) · '
        f'{_e(doc.get("provider"))} · ONNX Runtime {_e(doc.get("ort_version"))}</p>',
        _verdict(doc),
        _cards(doc),
        '<div class="grid2">', _op_table(doc), _run_table(doc), "</div>",
        _search_section(doc),
        _rewrites_section(doc),
        f"<footer>Format {_e(doc.get('format'))}. Estimated gains are the cost model's "
        f"({_e(doc.get('cost_model', {}).get('name'))}); the verdict above is measured end to "
        "end.</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _verdict(doc: dict) -> str:
    check = doc.get("check")
    if check is not None and not check.get("passed", True):
        return f'<div class="verdict fail">Numerical check failed: {_e(doc["kept_reason"])}</div>'
    optimized = not doc.get("original_kept", True)
    cls = "kept" if optimized else "orig"
    head = "Optimized model written" if optimized else "Original model kept"
    if not doc.get("written"):
        head += " (nothing written)"
    reason = str(doc.get("kept_reason") or "").removeprefix("kept the original: ")
    verdict = f' <span class="muted">({_e(doc["verdict"])})</span>' if doc.get("verdict") else ""
    return f'<div class="verdict {cls}">{head}: {_e(reason)}{verdict}</div>'


def _cards(doc: dict) -> str:
    lat = doc.get("latency", {})
    before, after = lat.get("before"), lat.get("after")
    ops_b = sum(doc["op_counts"]["before"].values())
    ops_a = sum(doc["op_counts"]["after"].values())
    size = doc["size_bytes"]
    check = doc.get("check")
    if check is None:
        check_v, check_d = "skipped", "--no-check"
    elif check.get("skipped"):
        check_v, check_d = "skipped", _e(check.get("note", ""))
    else:
        check_v = "passed" if check["passed"] else "failed"
        check_d = _e(f"{check['n']} inputs, {_check_errors(check, '.2g')}")
    cards = [
        ("latency before", _median(before), f"± {_spread(before)} · {_e(doc.get('device'))}"),
        ("latency after", _median(after), f"± {_spread(after)} · {_e(doc.get('provider'))}"),
        ("speedup", f"{lat.get('speedup', 1.0):.3f}×", "measured end to end" if before
         else "not timed"),
        ("nodes", f"{ops_b} → {ops_a}", _delta(ops_b, ops_a) + _import_note(doc)),
        ("model size", f"{format_bytes(size['before'])} → {format_bytes(size['after'])}",
         _delta(size["before"], size["after"])),
        ("rewrites", str(len(doc.get("steps", []))),
         f"{len(doc.get('candidate_steps', []))} in the best candidate"),
        ("numerical check", check_v, check_d),
        ("time taken", f"{sum(doc.get('phase_s', {}).values()):.1f} s",
         f"stop: {_e(doc['search']['stop_reason'])}"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
        f'<div class="d">{d}</div></div>' for k, v, d in cards) + "</div>"


def _op_table(doc: dict) -> str:
    before, after = doc["op_counts"]["before"], doc["op_counts"]["after"]
    rows = []
    for op in sorted(set(before) | set(after), key=lambda o: (-before.get(o, 0), o)):
        b, a = before.get(op, 0), after.get(op, 0)
        cls = "fewer" if a < b else ("more" if a > b else "")
        rows.append(f'<tr class="{cls}"><td class="mono">{_e(op)}</td><td class="n">{b}</td>'
                    f'<td class="n">{a}</td></tr>')
    return ('<div><h2>Op counts</h2><table><tr><th>op type</th><th class="n">before</th>'
            '<th class="n">after</th></tr>' + "".join(rows) + "</table></div>")


def _run_table(doc: dict) -> str:
    cm = doc.get("cost_model", {})
    check = doc.get("check")
    lat = doc.get("latency", {})
    rows = [
        ("input", doc.get("input")), ("output", doc.get("output")),
        ("written", "yes" if doc.get("written") else "no"),
        ("device", f"{doc.get('device')} — {doc.get('device_name')}"),
        ("provider", doc.get("provider")), ("ONNX Runtime", doc.get("ort_version")),
        ("cost model", ", ".join(f"{k}={_num(v)}" for k, v in cm.items())),
        ("latency before", _latency(lat.get("before"))),
        ("latency after", _latency(lat.get("after"))),
        ("verdict", f"{doc.get('verdict')}: {doc.get('kept_reason')}"),
        *_gate_rows(lat.get("gate")),
        ("rules loaded", doc.get("rules_loaded")),
    ]
    if check is not None and check.get("skipped"):
        rows.append(("check", f"skipped: {check.get('note', '')}"))
    elif check is not None:
        tolerances = check.get("tolerances") or {"float32": {"rtol": check["rtol"],
                                                             "atol": check["atol"]}}
        tols = ", ".join(f"{dtype} rtol {t['rtol']:g} atol {t['atol']:g}"
                         for dtype, t in sorted(tolerances.items()))
        rows.append(("check", f"{'passed' if check['passed'] else 'FAILED'} on {check['n']} "
                              f"random inputs ({_check_errors(check, '.3g')})"))
        rows.append(("check tolerance", f"each |result − original| ≤ atol + rtol·|original| "
                                        f"({tols})"))
        if check.get("within_noise"):
            noise = ", ".join(f"{name} {v:.3g}" for name, v in
                              sorted((check.get("rounding_noise") or {}).items()))
            rows.append(("check rounding noise",
                         f"{check['within_noise']} value(s) beyond that bound passed within "
                         f"twice the original's own rounding noise (the largest difference "
                         f"ORT's graph optimizations alone make, by output: {noise})"))
        if check.get("failure"):
            rows.append(("check failure", check["failure"]))
        for name, domain in (check.get("inputs") or {}).items():
            rows.append((f"check input {name}", domain))
        if check.get("distributions"):
            rows.append(("check inputs drawn", ", ".join(check["distributions"])))
    else:
        rows.append(("check", "skipped (--no-check)"))
    rows.append(("phases", ", ".join(f"{k} {v:.2f} s" for k, v in doc.get("phase_s", {}).items())))
    for d in doc.get("dropped_candidates", []):
        rows.append(("dropped", d))
    out = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    ab = lat.get("ab")
    pre = f"<pre>{_e(ab)}</pre>" if ab else ""
    return f"<div><h2>Run</h2><table>{out}</table>{pre}</div>"


def _gate_rows(gate: dict | None) -> list[tuple[str, str]]:
    """The A/A-calibrated gate's figures (`latency.gate`; absent in older reports)."""
    if not gate:
        return []
    rows = [("gate", f"{gate.get('method', 'A/B')}: one-sided alpha {gate.get('alpha', 0):g} "
                     f"overall; {gate.get('looks')} of {gate.get('looks_planned')} looks "
                     f"({gate.get('stop')}); {gate.get('rounds')} rounds × "
                     f"{gate.get('runs_per_round')} runs, {gate.get('sessions')} sessions "
                     f"per model; {gate.get('elapsed_s', 0):.1f} s of a "
                     f"{gate.get('budget_s', 0):g} s budget"),
            ("gate A/A′", f"{gate.get('control_ratio', 1.0):.3f}× (two copies of the "
                          "original, the noise in this run)")]
    for i, c in enumerate(gate.get("candidates", [])):
        rows.append((f"gate candidate {i}",
                     f"{c['ratio']:.3f}× (p = {c['p_value']:.2g}; needs > {c['needs']:.3f}×): "
                     f"{'faster' if c['won'] else 'not faster beyond the noise'}"))
    return rows


def _import_note(doc: dict) -> str:
    """" · 132 folded at import" when import-time cleanup removed nodes from the file's."""
    imported = doc["op_counts"].get("imported")
    if not imported:
        return ""
    folded = sum(doc["op_counts"]["before"].values()) - sum(imported.values())
    return f" · {folded} folded at import" if folded > 0 else ""


def _check_errors(check: dict, fmt: str) -> str:
    """The check's errors: over finite values only, NaN/Inf positions counted, never as 0."""
    if check.get("max_abs_error") is None:
        text = "no finite value compared"
    else:
        text = (f"max abs {check['max_abs_error']:{fmt}}, max rel "
                f"{check['max_rel_error']:{fmt}}")
        if "compared" in check:
            text += f" over {check['compared']} finite values"
    nonfinite = check.get("nonfinite", 0)
    mismatched = check.get("nan_mismatches", 0) + check.get("inf_mismatches", 0)
    if nonfinite or mismatched:
        text += (f"; {nonfinite} NaN/Inf in the original, {check.get('nan_mismatches', 0)} NaN "
                 f"and {check.get('inf_mismatches', 0)} Inf positions mismatched")
    return text


def _search_section(doc: dict) -> str:
    stats = doc["search"]["stats"]
    keys = ("expansions", "generated", "deferred", "enqueued", "duplicates", "pruned_cost",
            "pruned_growth", "refused", "regions")
    cells = "".join(f"<tr><th>{_e(k.replace('_', ' '))}</th><td class='n'>{_e(stats.get(k))}"
                    "</td></tr>" for k in keys if k in stats)
    costs = (f"<tr><th>cost</th><td class='n'>{_us(stats.get('initial_cost'))} → "
             f"{_us(stats.get('best_cost'))}</td></tr>"
             f"<tr><th>search time</th><td class='n'>{stats.get('elapsed_s', 0):.2f} s</td></tr>"
             f"<tr><th>stop reason</th><td class='n'>{_e(doc['search']['stop_reason'])}</td></tr>")
    roof = doc["search"].get("roofline")
    if roof:
        what = ("chosen" if roof.get("chosen") else "timed by the gate" if roof.get("timed")
                else "not timed (no rewrite, or a graph the measured search had)")
        costs += (f"<tr><th>roofline candidate</th><td class='n'>{_e(roof.get('rewrites'))} "
                  f"rewrites, cost ×{roof.get('cost_ratio', 1):.3f}, "
                  f"{roof.get('elapsed_s', 0):.2f} s; {_e(what)}</td></tr>")
    fires = stats.get("rule_fires", {})
    rules = doc.get("rules", {})
    fire_rows = "".join(
        f"<tr><td class='mono'>{_e(rid)}</td><td>{_e(rules.get(rid, {}).get('name') or '')}</td>"
        f"<td class='n'>{n}</td></tr>"
        for rid, n in sorted(fires.items(), key=lambda kv: -kv[1]))
    refusals = stats.get("refusals", {})
    ref_rows = "".join(f"<tr><td>{_e(k)}</td><td class='n'>{n}</td></tr>"
                       for k, n in sorted(refusals.items(), key=lambda kv: -kv[1]))
    right = ""
    if fire_rows:
        right += ("<table><tr><th>rule</th><th>name</th><th class='n'>graphs made</th></tr>"
                  + fire_rows + "</table>")
    if ref_rows:
        right += ("<table><tr><th>refused because</th><th class='n'>sites</th></tr>"
                  + ref_rows + "</table>")
    return (f"<h2>Search</h2><div class='grid2'><table>{cells}{costs}</table>"
            f"<div>{right or '<p class=muted>no rule fired</p>'}</div></div>")


def _rewrites_section(doc: dict) -> str:
    steps = doc.get("steps", [])
    note = ""
    if not steps and doc.get("candidate_steps"):
        steps = doc["candidate_steps"]
        note = ("<p class='muted'>The original model was kept, so no rewrite was applied; these "
                "are the rewrites of the best candidate the search found.</p>")
    head = f"<h2>Rewrites ({len(steps)})</h2>" + note
    if not steps:
        return head + "<p class='muted'>No rewrite was applied.</p>"
    legend = ("<p class='legend'><span><i style='background:#fde4e1'></i>matched (removed)</span>"
              "<span><i style='background:#def3e4'></i>created</span>"
              "<span><i style='background:#f4f5f7;border-style:dashed'></i>neighbour</span>"
              "<span><i style='background:#e6edfb'></i>graph input</span>"
              "<span><i style='background:#f1ecfa'></i>weight</span>"
              "<span><i style='background:#fff7df'></i>graph output</span></p>")
    return head + legend + "\n".join(_step_html(i, s, doc.get("rules", {}))
                                     for i, s in enumerate(steps, 1))


def _step_html(i: int, s: dict, rules: dict) -> str:
    gain = s.get("gain", 0.0)
    base = s.get("cost_before") or 0.0
    pct = f" ({gain / base:+.1%})" if base else ""
    gain_cls = "pos" if gain > 0 else ("neg" if gain < 0 else "")
    label = f"{s.get('rule_name') or 'rule'} ({s['rule_id']})"
    region = f" · region {s['region']}" if s.get("region") is not None else ""
    proof = s.get("proof") or rules.get(s["rule_id"], {}).get("proof") or {}
    proof_rows = "".join(f"<tr><th>{_e(k)}</th><td class='mono'>{_e(_short(v))}</td></tr>"
                         for k, v in proof.items()) or "<tr><td>no proof record</td></tr>"
    sub = s.get("subgraph") or {}
    before = draw_subgraph(sub.get("before"), side="before", ident=f"s{i}b")
    after = draw_subgraph(sub.get("after"), side="after", ident=f"s{i}a")
    if not sub:
        before = after = "<p class='muted'>(no subgraph was recorded for this step)</p>"
    return f"""<details class="rewrite" open id="rewrite-{i}">
<summary><h3 style="display:inline">#{i} {_e(label)}</h3>
<span class="gain {gain_cls}">estimated gain {_e(_us(gain))}{_e(pct)}{_e(region)}</span></summary>
<div class="grid2"><div><b>source</b><pre>{_e(chr(10).join(s.get('src', [])))}</pre>
<b>target</b><pre>{_e(chr(10).join(s.get('dst', [])))}</pre></div>
<div><b>proof</b><table>{proof_rows}</table>
<p class="names">cost {_e(_us(s.get('cost_before')))} → {_e(_us(s.get('cost_after')))}</p></div>
</div>
<p class="names">matched: {_names(s.get('matched_nodes', []))}<br>
created: {_names(s.get('created_nodes', []))}</p>
<div class="grid2"><div class="side"><h4>before</h4>{before}</div>
<div class="side"><h4>after</h4>{after}</div></div>
</details>"""


def _names(names: list[str]) -> str:
    if not names:
        return "<span class='muted'>none</span>"
    return ", ".join(f"<code>{_e(n)}</code>" for n in names)


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:299] + "…"


def _median(t: dict | None) -> str:
    return "—" if not t else f"{t['median_s'] * 1e3:.3f} ms"


def _spread(t: dict | None) -> str:
    return "—" if not t else f"{t['spread']:.1%}"


def _latency(t: dict | None) -> str:
    """Median and spread of an A/B timing, or a dash when the run was not timed."""
    if not t:
        return "—"
    return f"{t['median_s'] * 1e3:.3f} ms ± {t['spread']:.1%}"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _us(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e6:,.1f} µs" if abs(seconds) < 1e-1 else f"{seconds:.3f} s"


def _delta(before: float, after: float) -> str:
    if not before:
        return ""
    return f"{(after - before) / before:+.1%}"
