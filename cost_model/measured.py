"""The measured cost model: every node timed as a one-node ONNX model in ONNX Runtime.

Each distinct (op, attributes, input shapes, dtypes, which inputs are constants) is built as a
one-node model (constant inputs as initializers, so ORT sees weights the way it will in the
real model), timed on the chosen execution provider with the `superopt.runtime` helpers (warm-up,
repeated runs, median; IO binding, so host/device copies are not timed) and cached on disk in a
`CostCache` keyed by the node's signature *and* the provider, device name and ORT version.

Calibration (anchors.md):
- the fixed cost of one session run (`session_fixed_cost`, ~17.5 µs on CUDA) is subtracted;
- a per-kernel floor applies (4.4 µs on CUDA: no kernel is cheaper inside a graph; 1 µs on the
  CPU);
- groups ORT fuses or removes itself at ORT_ENABLE_ALL are costed as ORT runs them
  (`superopt.cost_model.ort_fusions`): an element-wise op fused into its producer (Conv+Relu,
  Conv+Add+Relu, MatMul+Add -> Gemm) adds nothing; a BatchNormalization or per-channel Mul/Add
  after a Conv costs nothing and the Conv is charged with a bias (ConvBNFusion, ...), so a BN
  fold is not predicted as a gain; decomposed LayerNorm/RMSNorm chains cost one
  LayerNormalization, Gelu chains one element-wise pass; cancelling Transposes, no-ops,
  Identity, scalar scales and transposes into MatMuls cost nothing; duplicate computations
  are charged once (ORT's common-subexpression elimination).

A graph with symbolic dims (a dynamic batch or sequence) reaches this model through
`superopt.cost_model.symbolic.AtSizes`, which sizes every node at the run's representative
sizes: the one-node models are built and timed with plain ints (a node still symbolic here is
estimated analytically). bfloat16 inputs are drawn and fed like float ones.

Opaque nodes are never rewritten, so they cost the same in every candidate; they get the
analytic estimate instead of a measurement. A node ORT cannot run alone falls back to the
analytic estimate too (counted in `failures`).

Example:
    >>> model = MeasuredCost("cpu")                     # doctest: +SKIP
    >>> model.graph_cost(graph)                         # doctest: +SKIP
    0.0123
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from superopt.core.costing import CostModel, Progress, runtime_nodes
from superopt.core.ir import Graph, Node, Value
from superopt.core.ops import get_op
from superopt.cost_model.analytic import AnalyticCost
from superopt.cost_model.cache import CostCache, make_key
from superopt.cost_model.ort_fusions import common_subexpressions, fused_nodes, ort_fusions
from superopt.runtime import (
    resolve_device,
    runtime_fingerprint,
    session_fixed_cost,
    time_model,
)

#: per-kernel floor in seconds, by device
KERNEL_FLOOR_S = {"cuda": 4.4e-6, "cpu": 1e-6}
# Version of how one-node timings are made; part of every key, bumped when the method changes.
METHOD = "one-node/1"


class MeasuredCost(CostModel):
    """Costs measured with ONNX Runtime on `device` ("auto", "cpu" or "cuda")."""

    name = "measured"

    def __init__(self, device: str = "auto", *, cache: CostCache | None = None,
                 warmup: int = 3, min_repeats: int = 5, max_repeats: int = 50,
                 target_s: float = 0.05, progress: Progress | None = None,
                 seed: int = 0) -> None:
        self.device = resolve_device(device)
        self.cache = cache if cache is not None else CostCache()
        self.fingerprint = runtime_fingerprint(self.device)
        self.warmup, self.min_repeats, self.max_repeats = warmup, min_repeats, max_repeats
        self.target_s = target_s
        self.progress = progress
        self.floor_s = KERNEL_FLOOR_S[self.device]
        self.analytic = AnalyticCost.for_device(self.device)
        self.measured = 0  # timings made in this process (cache misses)
        self.cache_hits = 0
        self.failures = 0
        self.measure_s = 0.0
        self._fixed: float | None = None
        self._rng = np.random.default_rng(seed)
        self._memo: dict[tuple[Node, tuple[bool, ...]], float] = {}
        # the same cost by what the signature is made of: a rewrite rebuilds every node
        # downstream of it (new Node objects of unchanged op, attributes and input types), and
        # building the signature's JSON for each of them was a quarter of a search's costing
        self._by_form: dict[tuple, float] = {}

    # -- the interface -------------------------------------------------------------------------

    def node_cost(self, node: Node, const_mask: Sequence[bool] | None = None) -> float:
        """Seconds for `node`; `const_mask[i]` says whether input i is a constant (weight)."""
        if const_mask is None:
            const_mask = [v is not None and v.is_const for v in node.inputs]
        mask = tuple(bool(c) for c in const_mask)
        key = (node, mask)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._cost(node, mask)
        return hit

    def graph_cost(self, graph: Graph) -> float:
        """Sum over the nodes ORT runs: each node charged as its fused group's stand-in
        (`ort_fusions`), nodes absorbed into a group charged nothing, duplicate computations
        once (`common_subexpressions`)."""
        graph = common_subexpressions(graph)
        fusions = ort_fusions(graph, self.device)
        total = 0.0
        for node in runtime_nodes(graph):
            charged = fusions.charged(node)
            if charged is None:
                continue
            total += self.node_cost(charged, [v is not None and v.is_weight
                                              for v in charged.inputs])
        return total

    def describe(self) -> dict:
        return {"name": self.name, "target": self.device, **self.fingerprint,
                "floor_s": self.floor_s, "fixed_cost_s": self._fixed,
                "measured": self.measured, "cache_hits": self.cache_hits,
                "failures": self.failures, "measure_s": round(self.measure_s, 3),
                "cache": str(self.cache.path) if self.cache.persistent else "memory"}

    # -- measuring -----------------------------------------------------------------------------

    def signature(self, node: Node, mask: tuple[bool, ...]) -> str:
        """The cache key: op, attributes, input types, constant mask, runtime, method."""
        attrs = {k: (v if not isinstance(v, bytes) else v.hex()) for k, v in node.attrs}
        ins = [None if v is None else [v.type.elem_type, list(v.type.shape or ())]
               for v in node.inputs]
        return make_key(method=METHOD, op=node.op, attrs=attrs, inputs=ins, const=list(mask),
                        **self.fingerprint)

    def _cost(self, node: Node, mask: tuple[bool, ...]) -> float:
        if node.is_opaque or not all(v is None or v.type.is_static for v in node.inputs):
            return self.analytic.node_cost(node)
        form = (node.op, node.attrs, tuple(None if v is None else v.type for v in node.inputs),
                mask)
        hit = self._by_form.get(form)
        if hit is None:
            hit = self._by_form[form] = self._cost_of_form(node, mask)
        return hit

    def _cost_of_form(self, node: Node, mask: tuple[bool, ...]) -> float:
        key = self.signature(node, mask)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        label = f"{node.op} " + " ".join(
            "x".join(map(str, v.type.shape)) for v in node.inputs if v is not None)
        if self.progress is not None:
            self.progress(label, self.measured, None)
        start = time.perf_counter()
        try:
            seconds = self._time_one_node(node, mask)
        except Exception:  # noqa: BLE001 - ORT cannot run it alone (or the export fails): estimate instead
            self.failures += 1
            return self.analytic.node_cost(node)
        finally:
            self.measure_s += time.perf_counter() - start
        self.measured += 1
        self.cache.put(key, seconds)
        return seconds

    def fixed_cost(self) -> float:
        if self._fixed is None:
            self._fixed = session_fixed_cost(self.device)
        return self._fixed

    def _time_one_node(self, node: Node, mask: tuple[bool, ...]) -> float:
        model, feeds = self.one_node_model(node, mask)
        timing = time_model(model, self.device, level="all", feeds=feeds, warmup=self.warmup,
                            target_s=self.target_s, min_repeats=self.min_repeats,
                            repeats=self.max_repeats)
        return max(self.floor_s, timing.median_s - self.fixed_cost())

    def one_node_model(self, node: Node, mask: tuple[bool, ...]
                       ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
        """The node as an ONNX model (constants as random initializers) and random feeds."""
        op = get_op(node.op)
        if op.to_onnx is None:
            raise ValueError(f"{node.op} has no ONNX form")
        in_names, inputs, inits, feeds = [], [], [], {}
        for i, (v, is_const) in enumerate(zip(node.inputs, mask)):
            if v is None:
                in_names.append("")
                continue
            name = f"in{i}"
            in_names.append(name)
            array = self._random(v)
            if is_const:
                inits.append(onnx.numpy_helper.from_array(array, name))
            else:
                inputs.append(helper.make_tensor_value_info(name, v.type.elem_type,
                                                            list(v.type.shape)))
                feeds[name] = array
        out_names = [f"out{i}" for i in range(len(node.outputs))]
        protos, extra = op.to_onnx(node.attr_dict, in_names, out_names, "node", 17)
        outputs = [helper.make_tensor_value_info(n, o.type.elem_type, list(o.type.shape))
                   for n, o in zip(out_names, node.outputs)]
        graph = helper.make_graph(protos, "one_node", inputs, outputs, inits + list(extra))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  ir_version=8)
        return model, feeds

    def _random(self, v: Value) -> np.ndarray:
        dtype = v.type.numpy_dtype
        shape = tuple(v.type.shape)
        if v.is_const and v.array is not None and v.array.size <= 1 << 22:
            return np.ascontiguousarray(v.array)
        if dtype.kind == "f" or dtype.name == "bfloat16":
            return self._rng.standard_normal(shape).astype(dtype)
        return np.ones(shape, dtype)


__all__ = ["KERNEL_FLOOR_S", "METHOD", "MeasuredCost", "fused_nodes"]
