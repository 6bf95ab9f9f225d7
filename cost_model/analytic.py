"""The analytic cost model: FLOPs and bytes from the op registry against a roofline.

cost(node) = overhead + max(flops / peak_flops, bytes / bandwidth), with FLOPs and bytes moved
from the registry's `OpDef.cost`. Deterministic and instant; used by tests and as
`--cost analytic`. Ops with no FLOPs and no bytes (Reshape, Flatten: views in ONNX Runtime)
cost nothing. Opaque nodes, which no rewrite ever changes, are charged their bytes (Shape and Size
only their output: they read no element) plus the overhead so that totals stay comparable with
the measured model. Symbolic dims count as 1
here; a run on a model with symbolic dims costs through `superopt.cost_model.symbolic.AtSizes`,
so the counts are taken at the representative sizes.

Example:
    >>> AnalyticCost.for_device("cpu").node_cost(conv_node)   # doctest: +SKIP
    0.00213
"""

from __future__ import annotations

from dataclasses import dataclass

from superopt.core.costing import CostModel
from superopt.core.ir import Node
from superopt.core.ops import get_op


@dataclass(frozen=True)
class Roofline:
    """Peak arithmetic (FLOP/s), memory bandwidth (B/s) and a fixed per-kernel cost (s).

    `saturation_elems`: how many output elements a kernel needs to keep the whole device busy
    (0: any kernel does). A GPU runs one thread per output element in waves over its SMs; a
    kernel with fewer elements than the SMs hold leaves them idle and reaches only that share
    of the peak FLOP rate and bandwidth. This is why merging small kernels (Q/K/V, 1x1 Convs
    reading one tensor) pays on a GPU beyond the launches it saves: measured 1.17-1.19x for
    BERT-base's Q/K/V merge and 1.43x for SqueezeNet's enlarge + merge on an H200 (anchors.md),
    where the launch floor alone predicts a few percent.
    """

    flops_per_s: float
    bytes_per_s: float
    overhead_s: float
    saturation_elems: float = 0.0

    def utilization(self, out_elems: float) -> float:
        """The share of the peak a kernel producing `out_elems` elements reaches."""
        if self.saturation_elems <= 0:
            return 1.0
        return min(1.0, max(out_elems, 1.0) / self.saturation_elems)


# Rough figures: a 2-core development VM, and a data-center GPU where the launch floor
# dominates at batch 1 (anchors.md: ~4.4 µs per kernel on an H200).
ROOFLINES = {
    "cpu": Roofline(flops_per_s=50e9, bytes_per_s=10e9, overhead_s=5e-6),
    # H200: 132 SMs x 2048 resident threads ~ 270k output elements fill the device.
    "cuda": Roofline(flops_per_s=20e12, bytes_per_s=1.5e12, overhead_s=4.4e-6,
                     saturation_elems=132 * 2048),
}


# ONNX ops that read only their input's type, never its elements
METADATA_OPS = frozenset({"Shape", "Size"})


class AnalyticCost(CostModel):
    """Roofline cost from the registry's FLOPs and bytes."""

    name = "analytic"

    def __init__(self, roofline: Roofline | None = None, device: str = "cpu") -> None:
        self.device = device
        self.roofline = roofline or ROOFLINES[device]
        self._memo: dict[Node, float] = {}

    @classmethod
    def for_device(cls, device: str) -> AnalyticCost:
        """The model with the default roofline of "cpu" or "cuda"."""
        return cls(ROOFLINES[device], device)

    def flops_bytes(self, node: Node) -> tuple[float, float]:
        """(FLOPs, bytes moved) of one node; opaque nodes: bytes of their known types."""
        ins = [v.type for v in node.inputs if v is not None]
        outs = [o.type for o in node.outputs]
        if node.is_opaque:
            if node.attr("op_type") in METADATA_OPS:
                ins = []  # reads no element: charged as reading its input, a Shape of a
                # (1, 128, 128) activation cost 3.9 ms (its 3-element output sets utilization)
            return 0.0, float(sum(t.numel() * 4 for t in ins + outs if t.shape is not None))
        op = get_op(node.op)
        if op.cost is None:
            return 0.0, float(sum(t.numel() * 4 for t in ins + outs))
        flops, nbytes = op.cost(node.attr_dict, ins, outs)
        return float(flops), float(nbytes)

    def node_cost(self, node: Node) -> float:
        hit = self._memo.get(node)
        if hit is not None:
            return hit
        flops, nbytes = self.flops_bytes(node)
        r = self.roofline
        util = r.utilization(sum(float(o.type.numel()) for o in node.outputs
                                 if o.type.shape is not None))
        cost = 0.0 if flops == 0 and nbytes == 0 else (
            r.overhead_s + max(flops / r.flops_per_s, nbytes / r.bytes_per_s) / util)
        self._memo[node] = cost
        return cost

    def describe(self) -> dict:
        r = self.roofline
        return {"name": self.name, "device": self.device, "flops_per_s": r.flops_per_s,
                "bytes_per_s": r.bytes_per_s, "overhead_s": r.overhead_s,
                "saturation_elems": r.saturation_elems}
