"""Run an IR graph with the registry's numpy semantics (`OpDef.compute`): the reference the
matching and search tests compare a rewritten graph against, without ONNX Runtime."""

from __future__ import annotations

import numpy as np

from superopt.core.ir import Graph
from superopt.core.ops import get_op


def run_numpy(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs for `feeds` (input name -> array); constants are their arrays."""
    vals: dict = {v: feeds[v.name] for v in graph.inputs}
    for n in graph.nodes:
        ins = [vals.get(v, v.array) for v in n.inputs]
        for o, a in zip(n.outputs, get_op(n.op).compute(n.attr_dict, ins)):
            vals[o] = a
    return [vals.get(v, v.array) for v in graph.output_values]
