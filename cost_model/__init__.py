"""Costs of graphs: the interface, an analytic roofline model and ONNX Runtime measurements.

`make_cost_model("measured" | "analytic", device)` builds the model `optimize` uses.
"""

from __future__ import annotations

from superopt.core.costing import CostModel, NodeCount, OpTableCost, runtime_nodes

__all__ = ["CostModel", "NodeCount", "OpTableCost", "make_cost_model", "runtime_nodes"]


def make_cost_model(kind: str, device: str = "auto", **kwargs) -> CostModel:
    """The cost model named `kind` for `device` (measured imports ONNX Runtime lazily)."""
    from superopt.core.errors import UsageError

    if kind == "analytic":
        from superopt.cost_model.analytic import AnalyticCost
        from superopt.runtime import resolve_device

        return AnalyticCost.for_device(resolve_device(device))
    if kind == "measured":
        from superopt.cost_model.measured import MeasuredCost

        return MeasuredCost(device, **kwargs)
    raise UsageError(f"unknown cost model {kind!r}: choose measured or analytic")
