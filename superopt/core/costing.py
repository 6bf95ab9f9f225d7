"""The cost interface: the cost of one node given its input types, and of a whole graph.

`CostModel.node_cost(node)` is in seconds (a ranking, not a prediction: the end-to-end A/B gate
decides). `graph_cost(graph)` sums the nodes that run: a node computing only on constants costs
nothing (the exporter folds it with numpy), and weight-only helper ops cost nothing either.

`NodeCount` is the trivial implementation for tests (egg's `AstSize`): every running node
costs 1.

Example:
    >>> NodeCount().graph_cost(graph)     # doctest: +SKIP
    3.0
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from superopt.core.ir import Graph, Node
from superopt.core.ops import WEIGHT_ONLY, get_op

# progress(label, done, total): called while a cost model measures (total None: unknown).
Progress = Callable[[str, int, "int | None"], None]


def runtime_nodes(graph: Graph) -> list[Node]:
    """The nodes that run in the exported model (constant-only and weight-only ones fold)."""
    return [node for node in graph.nodes
            if node.is_opaque or not ((node.outputs and node.outputs[0].is_weight)
                                      or get_op(node.op).has(WEIGHT_ONLY))]


class CostModel(ABC):
    """Estimated run time of nodes and graphs, in seconds."""

    #: short name for reports ("analytic", "measured", ...)
    name: str = "cost"

    @abstractmethod
    def node_cost(self, node: Node) -> float:
        """Seconds to run `node` at its input types."""

    def graph_cost(self, graph: Graph) -> float:
        """Sum of `node_cost` over the nodes that run (see `runtime_nodes`)."""
        return float(sum(self.node_cost(n) for n in runtime_nodes(graph)))

    def describe(self) -> dict:
        """What a report should say about this cost model."""
        return {"name": self.name}


class NodeCount(CostModel):
    """Every running node costs 1 (the trivial model, for tests)."""

    name = "node-count"

    def node_cost(self, node: Node) -> float:
        return 1.0


class OpTableCost(CostModel):
    """A fixed cost per op type (default 1.0 for ops not listed): a stub for tests.

    Example:
        >>> OpTableCost({"Split": 0.1}).node_cost(split_node)   # doctest: +SKIP
        0.1
    """

    name = "op-table"

    def __init__(self, costs: dict[str, float], default: float = 1.0) -> None:
        self.costs = dict(costs)
        self.default = default

    def node_cost(self, node: Node) -> float:
        return self.costs.get(node.op, self.default)
