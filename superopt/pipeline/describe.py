"""The subgraph a rewrite touched, as plain data for the report (the face draws it).

`describe_subgraph(graph, focus)` records the `focus` nodes (the nodes a rule matched, or the
nodes it created) with their immediate neighbours (producers of their inputs, users of their
outputs): node names, ops, key attributes as short text, value names and types. That data goes
into the JSON report (`steps[].subgraph`), and `superopt.face.drawing.draw_subgraph` lays it
out as SVG. `describe_step(step)` describes one recorded search step from the graphs the search
held (`Step.before`, `Step.after`): nothing is matched or applied again.

Example:
    >>> from superopt.core.ir import Node, Value, TensorType, Graph
    >>> x = Value.input("x", TensorType(1, (2, 4)))
    >>> r = Node.make("Relu", {}, [x], name="r1")
    >>> d = describe_subgraph(Graph([x], [("y", r.outputs[0])]), ["r1"])
    >>> [n["name"] for n in d["nodes"]], d["values"]["x"]["kind"]
    (['r1'], 'input')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from superopt.core.ir import Graph, Node, Value, opaque_op_type

if TYPE_CHECKING:
    from superopt.search import Step

#: at most this many neighbour nodes are described around the focus (wide fan-outs are cut)
MAX_CONTEXT_NODES = 10

Description = dict[str, Any]


def describe_step(step: Step) -> dict[str, Description]:
    """{"before", "after"} descriptions of a search `Step`: its matched nodes in the graph
    before, and in the graph after the nodes it created (or, when it created none, the nodes
    now reading the values it replaced; `Step.after_focus`)."""
    return {"before": describe_subgraph(step.before, step.matched_nodes),
            "after": describe_subgraph(step.after, step.after_focus)}


def describe_subgraph(graph: Graph, focus: Iterable[str]) -> Description:
    """The focus nodes (by name) of `graph` and their immediate neighbours, as JSON-able data.

    Keys: `nodes` ([{name, op, attrs, inputs, outputs, focus}] in topological order; an omitted
    optional input is null) and `values` ({value name: {type, dtype, shape, kind, graph_output,
    external_users}}) for every value a described node reads or writes. `kind` is "input",
    "const" or "output" (of a node); `external_users` counts readers outside the described nodes.
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
