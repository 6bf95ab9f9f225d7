"""What is in a file superopt reads or writes: the logic behind `superopt inspect`.

`summarize(path)` looks at the file's *content* (not its extension) and returns a summary:

- an ONNX model -> `ModelSummary` (imported with `superopt.load`, so it also says which op types
  the registry models and which stay opaque),
- JSON with `"format": "superopt-rules/1"` -> `RulesSummary` (via `superopt.rules.load_rules`),
- JSON with `"format": "superopt-report/1"` -> `summarize_report` (not built yet: one clear
  error; that is the dispatch point for the report's summary).

Every summary has `to_json()` (stable keys, below) and `render(console)` (rich tables).

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

Example:
    >>> s = summarize("resnet50.onnx")          # doctest: +SKIP
    >>> s.to_json()["opaque"]                    # doctest: +SKIP
    {}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from superopt.errors import ModelError, SuperoptError, UsageError

RULES_FORMAT = "superopt-rules/1"
REPORT_FORMAT = "superopt-report/1"

InputShapes = Mapping[str | None, Sequence[int | str]]


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

    def render(self, console) -> None:
        from rich.table import Table

        head = Table(title=f"{self.path}", show_header=False, title_justify="left")
        head.add_column(style="bold")
        head.add_column()
        head.add_row("file", f"{_size(self.file_bytes)}"
                     + (" + external data" if self.external_data else ""))
        head.add_row("IR version", str(self.ir_version))
        head.add_row("producer", self.producer or "-")
        head.add_row("opsets", ", ".join(f"{d or 'ai.onnx'} {v}"
                                         for d, v in self.opset_imports.items()))
        head.add_row("nodes", f"{self.node_count} in the file, {self.imported_node_count} "
                              "after import")
        head.add_row("parameters", f"{self.parameter_count:,} ({_size(self.parameter_bytes)})")
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

    def render(self, console) -> None:
        from rich.table import Table

        console.print(f"[bold]{self.path}[/bold]: {self.rule_count} rules ({self.format}, "
                      f"{_size(self.file_bytes)})")
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


Summary = ModelSummary | RulesSummary


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
    if fmt == RULES_FORMAT:
        return "rules"
    if fmt == REPORT_FORMAT:
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

    from superopt.ir import opaque_op_type
    from superopt.onnx_io import load

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
    from superopt.rules import load_rules

    rules = load_rules(path, strict=False)
    by_result = Counter(r.proof.get("result", "unverified") for r in rules.rules)
    by_op = Counter(op for r in rules.rules for op in sorted(r.ops()))
    return RulesSummary(
        path=str(path), file_bytes=Path(path).stat().st_size, format=RULES_FORMAT,
        meta=dict(rules.meta), rule_count=len(rules.rules),
        by_result=dict(by_result.most_common()),
        by_op=dict(sorted(by_op.items(), key=lambda kv: (-kv[1], kv[0]))),
        skipped=list(rules.skipped))


def summarize_report(path: str | os.PathLike) -> Summary:
    """Dispatch point for optimization reports (`superopt-report/1`): not built yet."""
    raise SuperoptError(f"{path}: inspecting {REPORT_FORMAT} reports is not yet supported; "
                        "open the report's HTML or read its JSON directly")


def _io_entry(name: str, ty) -> dict[str, Any]:
    from onnx import helper

    dtype = (helper.tensor_dtype_to_string(ty.elem_type).replace("TensorProto.", "").lower()
             if ty.elem_type else "?")
    return {"name": name, "dtype": dtype,
            "shape": None if ty.shape is None else list(ty.shape)}


def _shape_text(shape: list | None) -> str:
    return "?" if shape is None else "×".join(str(d) for d in shape) or "scalar"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
