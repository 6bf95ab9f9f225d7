"""The subgraph a rewrite touched: a small serializable description, and its inline SVG drawing.

`describe_subgraph(graph, focus)` records the `focus` nodes (the nodes a rule matched, or the
nodes it created) with their immediate neighbours (producers of their inputs, users of their
outputs) as plain data: node names, ops, key attributes, value names, types. That data goes into
the JSON report, and `draw_subgraph(description)` turns it into a self-contained `<svg>` element
with a layered top-to-bottom layout (longest-path layers, barycentre ordering). No JavaScript,
no fonts or images from elsewhere; every user string (node and value names) is escaped.

Example:
    >>> from superopt.core.ir import Node, Value, TensorType, Graph
    >>> x = Value.input("x", TensorType(1, (2, 4)))
    >>> r = Node.make("Relu", {}, [x], name="r1")
    >>> d = describe_subgraph(Graph([x], [("y", r.outputs[0])]), ["r1"])
    >>> [n["name"] for n in d["nodes"]], d["values"]["x"]["kind"]
    (['r1'], 'input')
    >>> draw_subgraph(d).startswith("<svg")
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any

import numpy as np

from superopt.core.ir import Graph, Node, Value, opaque_op_type

#: at most this many neighbour nodes are drawn around the focus (wide fan-outs are cut)
MAX_CONTEXT_NODES = 10
#: attribute text is cut to this many characters per node
MAX_ATTR_CHARS = 44

Description = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# description


def describe_subgraph(graph: Graph, focus: Iterable[str]) -> Description:
    """The focus nodes (by name) of `graph` and their immediate neighbours, as JSON-able data.

    Keys: `nodes` ([{name, op, attrs, inputs, outputs, focus}] in topological order; an omitted
    optional input is null) and `values` ({value name: {type, dtype, shape, kind, graph_output,
    external_users}}) for every value a drawn node reads or writes. `kind` is "input", "const"
    or "output" (of a node); `external_users` counts readers outside the drawn nodes.
    """
    wanted = set(focus)
    order = graph.nodes
    focus_nodes = [n for n in order if n.name in wanted]
    users = graph.users
    context: dict[Node, None] = {}
    for n in focus_nodes:
        for v in n.inputs:
            if v is not None and v.node is not None and v.node.name not in wanted:
                context.setdefault(v.node)
        for o in n.outputs:
            for user, _ in users.get(o, ()):
                if user.name not in wanted:
                    context.setdefault(user)
    context_set = set(list(context)[:MAX_CONTEXT_NODES])
    drawn = [n for n in order if n.name in wanted or n in context_set]
    drawn_set = set(drawn)
    graph_outputs = {v for _, v in graph.outputs}
    nodes, values = [], {}
    for n in drawn:
        nodes.append({
            "name": n.name,
            "op": opaque_op_type(n) if n.is_opaque else n.op,
            "attrs": {} if n.is_opaque else {k: _attr_text(v) for k, v in n.attrs},
            "inputs": [None if v is None else v.name for v in n.inputs],
            "outputs": [o.name for o in n.outputs],
            "focus": n.name in wanted,
        })
        for v in [*n.inputs, *n.outputs]:
            if v is not None and v.name not in values:
                values[v.name] = _value_entry(v, users, drawn_set, graph_outputs)
    return {"nodes": nodes, "values": values}


def _value_entry(v: Value, users, drawn: set[Node], graph_outputs: set[Value]) -> dict[str, Any]:
    shape = v.type.shape
    return {
        "type": str(v.type),
        "dtype": str(v.type).split("[")[0],
        "shape": None if shape is None else [d if isinstance(d, int) else str(d) for d in shape],
        "kind": v.kind,
        "graph_output": v in graph_outputs,
        "external_users": sum(1 for u, _ in users.get(v, ()) if u not in drawn),
    }


def _attr_text(value: Any) -> str:
    """A short, readable attribute value: (1, 1, 1, 1) -> "1,1,1,1"."""
    if isinstance(value, tuple) and value and value[0] == "ndarray":
        return f"tensor{list(value[2])}"
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.ndarray):
        return f"tensor{list(value.shape)}"
    if isinstance(value, tuple):
        return ",".join(_attr_text(x) for x in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# layout and drawing

_CHAR_W = 7.0  # px per character of the 12 px monospace-ish label font
_BOX_H = 46
_VALUE_H = 24
_LAYER_GAP = 46
_H_GAP = 18
_MARGIN = 12


class _Item:
    """A box in the drawing: an op node, or a value with no drawn producer / reader."""

    def __init__(self, key: str, lines: list[str], kind: str, title: str) -> None:
        self.key, self.lines, self.kind, self.title = key, lines, kind, title
        self.preds: list[_Item] = []
        self.layer = 0
        self.order = 0.0
        self.x = self.y = 0.0
        self.w = max(60.0, max(len(s) for s in lines) * _CHAR_W + 16)
        self.h = float(_BOX_H if kind in ("focus", "context") else _VALUE_H)


def draw_subgraph(description: Description | None, *, side: str = "before",
                  max_width: int = 560, ident: str = "g") -> str:
    """An inline `<svg>` of a `describe_subgraph` description (empty text for None).

    Focus nodes are filled (red-ish on the "before" side, green-ish "after"), neighbours are
    dashed; graph inputs, constants and values read elsewhere are small rounded boxes. Edges
    carry the tensor's shape. The SVG scales down to `max_width` pixels. `ident` makes the
    arrowhead's element id unique when several drawings share one page.
    """
    marker = f"arrow-{_safe_id(ident)}"
    if not description or not description.get("nodes"):
        return '<p class="nodraw">(no nodes to draw)</p>'
    items, edges = _items_and_edges(description)
    _layer(items)
    width, height = _place(items)
    scale = min(1.0, max_width / width)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="subgraph {escape(side)}" '
           f'width="{width * scale:.0f}" height="{height * scale:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
           f'aria-label="subgraph {escape(side)} the rewrite">',
           f'<defs><marker id="{marker}" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#667"/></marker>'
           '</defs>']
    for src, dst, label in edges:
        out.append(_edge_svg(src, dst, label, marker))
    for it in items:
        out.append(_item_svg(it))
    out.append("</svg>")
    return "\n".join(out)


def _items_and_edges(d: Description) -> tuple[list[_Item], list[tuple[_Item, _Item, str]]]:
    values = d.get("values", {})
    producer: dict[str, _Item] = {}
    items: list[_Item] = []
    for n in d["nodes"]:
        attrs = ", ".join(f"{k}={v}" for k, v in n.get("attrs", {}).items())
        lines = [str(n["op"]), _cut(str(n["name"]), 30)]
        if attrs:
            lines.append(_cut(attrs, MAX_ATTR_CHARS))
        title = f"{n['op']} {n['name']}" + (f"\n{attrs}" if attrs else "")
        it = _Item(f"n:{n['name']}", lines, "focus" if n.get("focus") else "context", title)
        it.h = float(_BOX_H + (12 if attrs else 0))
        items.append(it)
        for o in n["outputs"]:
            producer[o] = it
    node_items = dict(zip((n["name"] for n in d["nodes"]), items))
    edges: list[tuple[_Item, _Item, str]] = []
    sources: dict[str, _Item] = {}
    read: set[str] = set()
    for n in d["nodes"]:
        dst = node_items[n["name"]]
        for name in n["inputs"]:
            if name is None:
                continue
            read.add(name)
            src = producer.get(name)
            if src is None and not n.get("focus"):
                continue  # a neighbour's other inputs are not part of the rewrite
            if src is None:
                src = sources.get(name)
                if src is None:
                    info = values.get(name, {})
                    kind = {"input": "input", "const": "const"}.get(info.get("kind"), "value")
                    src = _Item(f"v:{name}", [_cut(name, 30)], kind,
                                f"{name}: {info.get('type', '?')}")
                    sources[name] = src
                    items.append(src)
            edges.append((src, dst, _shape_text(values.get(name))))
            dst.preds.append(src)
    for name, src in producer.items():
        info = values.get(name, {})
        if src.kind != "focus":
            continue  # only the rewritten values' other readers and graph outputs matter
        if info.get("graph_output") or info.get("external_users") or name not in read:
            sink = _Item(f"o:{name}", [_cut(name, 30)],
                         "output" if info.get("graph_output") else "value",
                         f"{name}: {info.get('type', '?')}")
            sink.preds.append(src)
            items.append(sink)
            edges.append((src, sink, _shape_text(info)))
    return items, edges


def _layer(items: list[_Item]) -> None:
    """Longest-path layers (items are few: a simple fixed point is enough)."""
    changed = True
    while changed:
        changed = False
        for it in items:
            want = max((p.layer + 1 for p in it.preds), default=0)
            if want > it.layer:
                it.layer, changed = want, True


def _place(items: list[_Item]) -> tuple[float, float]:
    layers: dict[int, list[_Item]] = {}
    for i, it in enumerate(items):
        it.order = float(i)
        layers.setdefault(it.layer, []).append(it)
    for k in sorted(layers)[1:]:  # barycentre of predecessors, one downward sweep
        for it in layers[k]:
            if it.preds:
                it.order = sum(p.order for p in it.preds) / len(it.preds)
        layers[k].sort(key=lambda it: it.order)
        for i, it in enumerate(layers[k]):
            it.order = float(i)
    widths = {k: sum(it.w for it in row) + _H_GAP * (len(row) - 1) for k, row in layers.items()}
    width = max(widths.values()) + 2 * _MARGIN
    y = float(_MARGIN)
    for k in sorted(layers):
        row = layers[k]
        x = (width - widths[k]) / 2
        row_h = max(it.h for it in row)
        for it in row:
            it.x, it.y = x, y + (row_h - it.h) / 2
            x += it.w + _H_GAP
        y += row_h + _LAYER_GAP
    return width, y - _LAYER_GAP + _MARGIN


def _edge_svg(src: _Item, dst: _Item, label: str, marker: str) -> str:
    x1, y1 = src.x + src.w / 2, src.y + src.h
    x2, y2 = dst.x + dst.w / 2, dst.y
    mid = (y1 + y2) / 2
    path = (f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} '
            f'{x2:.1f},{y2 - 2:.1f}" marker-end="url(#{marker})"/>')
    if not label:
        return path
    lx, ly = (x1 + x2) / 2 + 4, mid + 4
    return path + f'<text class="shape" x="{lx:.1f}" y="{ly:.1f}">{escape(label)}</text>'


def _item_svg(it: _Item) -> str:
    rx = 4 if it.kind in ("focus", "context") else 11
    parts = [f'<g class="item {it.kind}"><title>{escape(it.title)}</title>',
             f'<rect x="{it.x:.1f}" y="{it.y:.1f}" width="{it.w:.1f}" height="{it.h:.1f}" '
             f'rx="{rx}"/>']
    cx = it.x + it.w / 2
    if it.kind in ("focus", "context"):
        for i, line in enumerate(it.lines):
            cls = ("op", "name", "attrs")[i]
            parts.append(f'<text class="{cls}" x="{cx:.1f}" y="{it.y + 17 + 13 * i:.1f}" '
                         f'text-anchor="middle">{escape(line)}</text>')
    else:
        parts.append(f'<text class="value" x="{cx:.1f}" y="{it.y + 16:.1f}" '
                     f'text-anchor="middle">{escape(it.lines[0])}</text>')
    parts.append("</g>")
    return "".join(parts)


def _shape_text(info: dict | None) -> str:
    if not info or info.get("shape") is None:
        return ""
    return "×".join(str(d) for d in info["shape"]) or "scalar"


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
