"""`superopt inspect FILE`: what is in a file superopt reads or writes. This module holds the
command's parser, its logic and its rendering.

`summarize(path)` looks at the file's *content* (not its extension) and returns a summary:

- an ONNX model -> `ModelSummary` (imported with `superopt.load`, so it also says which op types
  the registry models and which stay opaque),
- JSON with `"format": "superopt-rules/2"` (or `/1`, migrated) -> `RulesSummary` (via
  `superopt.core.rules.load_rules`),
- JSON with `"format": "superopt-report/2"` (`superopt optimize --json`), or the earlier
  `superopt-report/1` -> `ReportSummary`: the run's verdict and the list of rewrites (full
  schema: docs/report-schema.md).

Every summary has `to_json()` (stable keys, below) and `render(console)` (tables on a
`superopt.face.console.Console`).

JSON keys of an ONNX summary (`"kind": "onnx"`):
    path, file_bytes, ir_version, producer ("name version"), opset_imports ({domain: version},
    "" is the default domain), inputs / outputs ([{name, dtype, shape}], a dynamic dim is its
    symbol string), node_count (nodes in the file's main graph), op_counts ({op_type: n} in the
    file, custom domains as "domain::Op"), imported_node_count (nodes after import, which folds
    Constant nodes and static shape computations), modeled ({registry op: n} after import),
    opaque ({op_type: n} after import: nodes carried unchanged), parameter_count (elements of
    all initializers), parameter_bytes (their raw bytes), external_data (bool).
JSON keys of a rules summary (`"kind": "rules"`):
    path, file_bytes, format, meta, rule_count, by_result ({proof result: n}, rules without a
    proof record count as "unverified"), by_op ({registry op: rules mentioning it}),
    skipped (messages for malformed rules, which are not counted).
JSON keys of a report summary (`"kind": "report"`):
    path, format (the report's), input, output, written, device, provider, original_kept
    (true: the original model was kept, no rewrite applied), verdict (e.g. "written: faster",
    "original kept: not faster beyond the noise"), kept_reason (one line: why), speedup,
    latency_before_s / latency_after_s (medians, null when not timed), nodes_before /
    nodes_after, stop_reason, check ("passed" / "failed" / "skipped"), applied (true: the rewrites
    are those of the written model; false: the original was kept and they are the best
    candidate's), rewrites ([{index, rule_id, rule_name, matched_nodes, created_nodes, gain_s}]).

Example:
    >>> s = summarize("resnet50.onnx")          # doctest: +SKIP
    >>> s.to_json()["opaque"]                    # doctest: +SKIP
    {}
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from superopt.core.errors import ModelError, UsageError
from superopt.core.rules import READ_FORMATS as RULES_FORMATS
from superopt.face.commands import add_verbosity
from superopt.face.console import Console, Table, escape, format_bytes
from superopt.pipeline.optimize import READABLE_REPORT_FORMATS, REPORT_FORMAT

InputShapes = Mapping[str | None, Sequence[int | str]]


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect", help="summarize an ONNX model or a rules file",
        description="Summarize a file superopt reads or writes, recognized by its content: an "
                    "ONNX model (inputs, outputs, op counts, which ops superopt models and "
                    "which stay opaque, opsets, size, parameters) or a superopt rules file "
                    "(rules by proof result and by op).")
    p.add_argument("file", metavar="FILE",
                   help="an .onnx model, a superopt rules .json or an optimization report .json")
    p.add_argument("--json", action="store_true",
                   help="print machine-readable JSON (keys in the docstring of "
                        "superopt/face/commands/inspect.py)")
    p.add_argument("--overwrite-input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="fix an input's shape before inspecting, e.g. input:1,3,224,224 "
                        "(repeatable; the name may be left out when the model has one input)")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from superopt.face.commands.optimize import parse_input_shapes

    summary = summarize(args.file, parse_input_shapes(args.overwrite_input_shape))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    elif not args.quiet:
        # 80 columns into files and pipes, as before (the console's default there is 100).
        summary.render(Console(stderr=False, width=80))
    return 0


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


@dataclass
class ModelSummary:
    """An ONNX model at a glance (see the module docstring for the JSON keys)."""

    path: str
    file_bytes: int
    ir_version: int
    producer: str
    opset_imports: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    node_count: int
    op_counts: dict[str, int]
    imported_node_count: int
    modeled: dict[str, int]
    opaque: dict[str, int]
    parameter_count: int
    parameter_bytes: int
    external_data: bool
    kind: str = "onnx"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, console: Console) -> None:
        head = Table(title=f"{self.path}", show_header=False, title_justify="left")
        head.add_column(style="bold")
        head.add_column()
        head.add_row("file", f"{format_bytes(self.file_bytes)}"
                     + (" + external data" if self.external_data else ""))
        head.add_row("IR version", str(self.ir_version))
        head.add_row("producer", self.producer or "-")
        head.add_row("opsets", ", ".join(f"{d or 'ai.onnx'} {v}"
                                         for d, v in self.opset_imports.items()))
        head.add_row("nodes", f"{self.node_count} in the file, {self.imported_node_count} "
                              "after import")
        head.add_row("parameters",
                     f"{self.parameter_count:,} ({format_bytes(self.parameter_bytes)})")
        console.print(head)

        io = Table(title="inputs and outputs", title_justify="left")
        for col in ("", "name", "dtype", "shape"):
            io.add_column(col)
        for label, values in (("input", self.inputs), ("output", self.outputs)):
            for v in values:
                io.add_row(label, v["name"], v["dtype"], _shape_text(v["shape"]))
        console.print(io)

        ops = Table(title="ops", title_justify="left")
        ops.add_column("op type")
        ops.add_column("in file", justify="right")
        ops.add_column("modeled", justify="right")
        ops.add_column("opaque", justify="right")
        for op in sorted(set(self.op_counts) | set(self.modeled) | set(self.opaque),
                         key=lambda o: (-self.op_counts.get(o, 0), o)):
            ops.add_row(op, str(self.op_counts.get(op, 0) or "-"),
                        str(self.modeled.get(op, "-")), str(self.opaque.get(op, "-")))
        console.print(ops)


@dataclass
class RulesSummary:
    """A rules file at a glance: counts by proof result and by op."""

    path: str
    file_bytes: int
    format: str
    meta: dict[str, Any]
    rule_count: int
    by_result: dict[str, int]
    by_op: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    kind: str = "rules"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, console: Console) -> None:
        console.print(f"[bold]{self.path}[/bold]: {self.rule_count} rules ({self.format}, "
                      f"{format_bytes(self.file_bytes)})")
        results = Table(title="by proof result", title_justify="left")
        results.add_column("result")
        results.add_column("rules", justify="right")
        for result, n in self.by_result.items():
            results.add_row(result, str(n))
        console.print(results)
        ops = Table(title="by op (rules mentioning it)", title_justify="left")
        ops.add_column("op")
        ops.add_column("rules", justify="right")
        for op, n in self.by_op.items():
            ops.add_row(op, str(n))
        console.print(ops)
        for msg in self.skipped:
            console.print(f"[yellow]skipped[/yellow] {msg}")


@dataclass
class ReportSummary:
    """An optimization report (`superopt-report/2` or `/1`) at a glance: verdict and rewrites."""

    path: str
    format: str
    input: str | None
    output: str | None
    written: bool
    device: str
    provider: str
    original_kept: bool
    verdict: str
    kept_reason: str
    speedup: float
    latency_before_s: float | None
    latency_after_s: float | None
    nodes_before: int
    nodes_after: int
    stop_reason: str
    check: str
    applied: bool
    rewrites: list[dict[str, Any]]
    kind: str = "report"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, console: Console) -> None:
        lat = ("not timed" if self.latency_before_s is None else
               f"{self.latency_before_s * 1e3:.3f} ms -> {self.latency_after_s * 1e3:.3f} ms "
               f"({self.speedup:.3f}x, {self.device}, {self.provider})")
        console.print(f"[bold]{escape(self.path)}[/bold]: report of "
                      f"{escape(str(self.input))} -> {escape(str(self.output))}"
                      + ("" if self.written else " (nothing written)"))
        head = self.verdict.split(":", 1)[0] or (
            "original kept" if self.original_kept else "optimized")
        style = "yellow" if self.original_kept else "green"
        console.print(f"[{style}]{escape(head)}[/{style}]: "
                      + escape(self.kept_reason.removeprefix("kept the original: ")))
        console.print(f"latency {lat}; nodes {self.nodes_before} -> {self.nodes_after}; "
                      f"check {self.check}; search stopped: {escape(self.stop_reason)}")
        title = ("rewrites applied" if self.applied else
                 "rewrites of the best candidate (not applied: the original was kept)")
        table = Table(title=f"{title} ({len(self.rewrites)})", title_justify="left")
        for col, justify in (("#", "right"), ("rule", "left"), ("matched nodes", "left"),
                             ("created nodes", "left"), ("est. gain", "right")):
            table.add_column(col, justify=justify)
        for r in self.rewrites:
            label = r["rule_id"] + (f" ({r['rule_name']})" if r["rule_name"] else "")
            table.add_row(str(r["index"]), escape(label), escape(", ".join(r["matched_nodes"])),
                          escape(", ".join(r["created_nodes"])), f"{r['gain_s'] * 1e6:.1f} µs")
        console.print(table)


Summary = ModelSummary | RulesSummary | ReportSummary


def detect_kind(path: str | os.PathLike) -> str:
    """"onnx", "rules" or "report", from the file's content; ModelError if unreadable."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not a file")
    try:
        with open(path, "rb") as f:
            start = f.read(1024).lstrip()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    if not start.startswith(b"{"):
        return "onnx"  # binary protobuf; load() names the problem if it is not ONNX
    fmt = _json_format(path)
    if fmt in RULES_FORMATS:  # an older rules format is migrated on load
        return "rules"
    if fmt in READABLE_REPORT_FORMATS:
        return "report"
    raise ModelError(f"{path}: a JSON file, but neither an ONNX model nor a superopt rules or "
                     f"report file (format {fmt!r})")


def _json_format(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: starts like JSON but is not valid JSON ({e})") from None
    return doc.get("format") if isinstance(doc, dict) else None


def summarize(path: str | os.PathLike, input_shapes: InputShapes | None = None) -> Summary:
    """The summary of any file `superopt inspect` understands (dispatch on content)."""
    kind = detect_kind(path)
    if kind != "onnx" and input_shapes:
        raise UsageError(f"{path}: --overwrite-input-shape applies to ONNX models only")
    if kind == "rules":
        return summarize_rules(path)
    if kind == "report":
        return summarize_report(path)
    return summarize_model(path, input_shapes)


def summarize_model(path: str | os.PathLike, input_shapes: InputShapes | None = None
                    ) -> ModelSummary:
    """Summarize an ONNX model file; its import decides what is modeled and what is opaque."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from superopt.core.ir import opaque_op_type
    from superopt.core.onnx_io import load

    graph = load(path, input_shapes=input_shapes)  # first: its errors name the file
    # The file as stored: counts and sizes of what is in it, external data left on disk.
    model = onnx.load(str(path), load_external_data=False)
    file_ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
                       for n in model.graph.node)
    modeled = Counter(n.op for n in graph.nodes if not n.is_opaque)
    opaque = Counter(opaque_op_type(n) for n in graph.nodes if n.is_opaque)
    params = sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)
    param_bytes = sum(
        int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in model.graph.initializer if t.data_type != TensorProto.STRING)
    return ModelSummary(
        path=str(path), file_bytes=Path(path).stat().st_size, ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opset_imports={o.domain: o.version for o in model.opset_import},
        inputs=[_io_entry(v.name, v.type) for v in graph.inputs],
        outputs=[_io_entry(name, v.type) for name, v in graph.outputs],
        node_count=len(model.graph.node), op_counts=dict(file_ops.most_common()),
        imported_node_count=len(graph.nodes), modeled=dict(modeled.most_common()),
        opaque=dict(opaque.most_common()), parameter_count=params, parameter_bytes=param_bytes,
        external_data=any(t.data_location == TensorProto.EXTERNAL
                          for t in model.graph.initializer))


def summarize_rules(path: str | os.PathLike) -> RulesSummary:
    """Counts of a rules file by proof result and by op (malformed rules listed, not counted)."""
    from superopt.core.rules import load_rules

    rules = load_rules(path, strict=False)
    by_result = Counter(r.proof.get("result", "unverified") for r in rules.rules)
    by_op = Counter(op for r in rules.rules for op in sorted(r.ops()))
    return RulesSummary(
        path=str(path), file_bytes=Path(path).stat().st_size, format=rules.format,
        meta=dict(rules.meta), rule_count=len(rules.rules),
        by_result=dict(by_result.most_common()),
        by_op=dict(sorted(by_op.items(), key=lambda kv: (-kv[1], kv[0]))),
        skipped=list(rules.skipped))


def summarize_report(path: str | os.PathLike) -> ReportSummary:
    """The verdict and rewrites of a `superopt optimize --json` report.

    Example:
        >>> summarize_report("report.json").rewrites[0]["rule_name"]    # doctest: +SKIP
        'merge-conv'
    """
    doc = json.loads(Path(path).read_text())
    fmt = doc.get("format", REPORT_FORMAT)
    # /1 said `"kept": true` for "a candidate was written"; /2 says `"original_kept": false`.
    outcome = "original_kept" if fmt != "superopt-report/1" else "kept"
    missing = [k for k in (outcome, "kept_reason", "steps", "candidate_steps", "op_counts",
                           "latency", "search") if k not in doc]
    if missing:
        raise ModelError(f"{path}: an incomplete {fmt} file (missing "
                         f"{', '.join(repr(k) for k in missing)})")
    applied = bool(doc["steps"]) or not doc["candidate_steps"]
    steps = doc["steps"] if applied else doc["candidate_steps"]
    lat = doc["latency"]
    check = doc.get("check")
    try:
        rewrites = [{"index": i, "rule_id": s["rule_id"], "rule_name": s.get("rule_name") or "",
                     "matched_nodes": list(s.get("matched_nodes", [])),
                     "created_nodes": list(s.get("created_nodes", [])),
                     "gain_s": float(s.get("gain", 0.0))} for i, s in enumerate(steps, 1)]
        original_kept = (not doc["kept"]) if outcome == "kept" else bool(doc["original_kept"])
        verdict = doc.get("verdict") or ("original kept" if original_kept else
                                         "written" if doc.get("written") else "chosen")
        return ReportSummary(
            path=str(path), format=str(fmt), input=doc.get("input"), output=doc.get("output"),
            written=bool(doc.get("written")), device=str(doc.get("device")),
            provider=str(doc.get("provider")), original_kept=original_kept,
            verdict=str(verdict), kept_reason=str(doc["kept_reason"]),
            speedup=float(lat.get("speedup", 1.0)),
            latency_before_s=(lat.get("before") or {}).get("median_s"),
            latency_after_s=(lat.get("after") or {}).get("median_s"),
            nodes_before=sum(doc["op_counts"]["before"].values()),
            nodes_after=sum(doc["op_counts"]["after"].values()),
            stop_reason=str(doc["search"].get("stop_reason")),
            check=("skipped" if check is None else "passed" if check.get("passed") else "failed"),
            applied=applied, rewrites=rewrites)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelError(f"{path}: a malformed {fmt} file ({type(e).__name__}: {e})") \
            from None


def _io_entry(name: str, ty) -> dict[str, Any]:
    from onnx import helper

    dtype = (helper.tensor_dtype_to_string(ty.elem_type).replace("TensorProto.", "").lower()
             if ty.elem_type else "?")
    return {"name": name, "dtype": dtype,
            "shape": None if ty.shape is None else list(ty.shape)}


def _shape_text(shape: list | None) -> str:
    return "?" if shape is None else "×".join(str(d) for d in shape) or "scalar"
