"""Costing graphs with symbolic dims: any cost model, at representative sizes.

The search works on the graph as the model declares it, with symbolic dims (`batch`, `seq`, and
expressions of them such as `(batch*seq)`) in place, so that a rewrite is made for every size.
A cost needs numbers, though: `AtSizes` wraps a cost model and hands it each graph with its
symbols replaced by sizes (`sizes`: symbol -> int, the representative sizes the pipeline chose,
`superopt.pipeline.shapes`). The wrapped model never sees a symbol: the measured model builds
and times its one-node models at those sizes, the analytic one counts FLOPs and bytes at them.

How a graph gets its sizes: graph inputs take `known` types (by value name) or their dims with
each symbol replaced by its size; registry nodes are rebuilt on the sized inputs, so their
output shapes come from the registry's shape inference (a new node made by a rewrite is sized
like any other); opaque nodes (which keep the output types ONNX inferred, with symbols ONNX
made up such as `unk__3`) take `known` types by name, else their dims with symbols replaced.
`known` holds the types of the same model loaded at the representative sizes, so even the
symbols ONNX made up have sizes. A dim that still has no size costs as 1 (counted in
`unsized`); a node that cannot be rebuilt at the sizes is costed as it is (the measured model
then estimates it analytically).

Example:
    >>> model = AtSizes(MeasuredCost("cpu"), {"batch": 1, "seq": 128})   # doctest: +SKIP
    >>> model.graph_cost(graph)                                          # doctest: +SKIP
    0.00213
"""

from __future__ import annotations

from collections.abc import Mapping

from superopt.core.costing import CostModel
from superopt.core.ir import Graph, Node, Value
from superopt.core.types import TensorType


class AtSizes(CostModel):
    """`inner`'s costs of graphs whose symbolic dims are replaced by `sizes` (see the module
    doc); `known` gives the sized types of values by name (inputs and opaque outputs)."""

    def __init__(self, inner: CostModel, sizes: Mapping[str, int],
                 known: Mapping[str, TensorType] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.sizes = dict(sizes)
        self.known = dict(known or {})
        self.unsized = 0  # dims costed as 1 because no size was found for their symbol
        self.unbuilt = 0  # nodes costed at their symbolic shapes (could not be rebuilt)
        self._values: dict[Value, Value] = {}
        self._nodes: dict[Node, Node] = {}

    # -- the interface -------------------------------------------------------------------------

    def node_cost(self, node: Node, *args, **kwargs) -> float:
        return self.inner.node_cost(self.sized_node(node), *args, **kwargs)

    def graph_cost(self, graph: Graph) -> float:
        return self.inner.graph_cost(self.sized_graph(graph))

    def describe(self) -> dict:
        d = dict(self.inner.describe())
        d["sizes"] = dict(sorted(self.sizes.items()))
        if self.unsized or self.unbuilt:
            d["unsized_dims"] = self.unsized
            d["unsized_nodes"] = self.unbuilt
        return d

    def __getattr__(self, name: str):
        # Everything else (counters such as `measured`, `cache`) is the wrapped model's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- sizing --------------------------------------------------------------------------------

    def sized_graph(self, graph: Graph) -> Graph:
        """`graph` with every symbolic dim sized (the same graph when it has none)."""
        for node in graph.nodes:  # topological: a node's inputs are sized before it
            self.sized_node(node)
        inputs = [self._value(v) for v in graph.inputs]
        outputs = [(name, self._value(v)) for name, v in graph.outputs]
        if all(a is b for a, b in zip(inputs, graph.inputs)) and all(
                a[1] is b[1] for a, b in zip(outputs, graph.outputs)):
            return graph
        return Graph(inputs, outputs, graph.meta)

    def sized_node(self, node: Node) -> Node:
        """`node` rebuilt on sized inputs (memoized; upstream nodes first, without recursion)."""
        hit = self._nodes.get(node)
        if hit is not None:
            return hit
        stack = [node]
        while stack:
            n = stack[-1]
            pending = [v.node for v in n.inputs if v is not None and v.node is not None
                       and v.node not in self._nodes]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if n not in self._nodes:
                self._nodes[n] = self._rebuild(n)
        return self._nodes[node]

    def sized_type(self, v: Value) -> TensorType:
        """The type of input or opaque output `v` at the sizes."""
        t = v.type
        if t.shape is None or t.is_static:
            return t
        k = self.known.get(v.name)
        if k is not None and k.shape is not None and len(k.shape) == len(t.shape) and \
                k.is_static and all(not isinstance(a, int) or a == b
                                    for a, b in zip(t.shape, k.shape)):
            return TensorType(t.elem_type, k.shape)
        dims = []
        for d in t.shape:
            if isinstance(d, int):
                dims.append(d)
            elif d in self.sizes:
                dims.append(int(self.sizes[d]))
            else:
                self.unsized += 1
                dims.append(1)
        return TensorType(t.elem_type, tuple(dims))

    def _value(self, v: Value | None) -> Value | None:
        if v is None or v.is_const:
            return v
        if v.node is not None:
            return self.sized_node(v.node).outputs[v.index]
        hit = self._values.get(v)
        if hit is None:
            t = self.sized_type(v)
            hit = self._values[v] = v if t == v.type else Value.input(v.name, t)
        return hit

    def _rebuild(self, node: Node) -> Node:
        ins = [self._value(v) for v in node.inputs]
        names = [o.name for o in node.outputs]
        if node.is_opaque:
            types = [self.sized_type(o) for o in node.outputs]
            if all(a is b for a, b in zip(ins, node.inputs)) and \
                    types == [o.type for o in node.outputs]:
                return node
            return Node.make(node.op, node.attrs, ins, name=node.name, output_names=names,
                             output_types=types)
        if all(a is b for a, b in zip(ins, node.inputs)) and \
                all(o.type.is_static or o.type.shape is None for o in node.outputs):
            return node
        try:
            return Node.make(node.op, node.attrs, ins, name=node.name, output_names=names)
        except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError):
            self.unbuilt += 1
            return node
