"""The inline SVG drawing of the subgraph a rewrite touched.

The pipeline records each rewrite's affected subgraph as plain data (node names, ops, key
attributes, value names and types: `superopt.pipeline.describe.describe_subgraph`, from the
graphs the search recorded) in the JSON report; `draw_subgraph(description)` turns one such
description into a self-contained `<svg>` element with a layered top-to-bottom layout
(longest-path layers, barycentre ordering). No JavaScript, no fonts or images from elsewhere;
every user string (node and value names) is escaped.

Example:
    >>> d = {"nodes": [{"name": "r1", "op": "Relu", "attrs": {}, "inputs": ["x"],
    ...                 "outputs": ["y"], "focus": True}],
    ...      "values": {"x": {"type": "float[2x4]", "shape": [2, 4], "kind": "input"},
    ...                 "y": {"type": "float[2x4]", "shape": [2, 4], "kind": "output",
    ...                       "graph_output": True, "external_users": 0}}}
    >>> draw_subgraph(d).startswith("<svg")
    True
"""

from __future__ import annotations

from html import escape
from typing import Any

#: attribute text is cut to this many characters per node
MAX_ATTR_CHARS = 44

Description = dict[str, Any]


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
    """An inline `<svg>` of a subgraph description (a note instead for None or no nodes).

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
