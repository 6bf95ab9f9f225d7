"""Reductions: ReduceMean (RMSNorm's mean of squares, a global average pool written as
ReduceMean over H and W).

The axes are an attribute up to opset 17 and a constant input from opset 18 (ReduceSum moved at
13: `AXES_INPUT_FROM`); import reads either and keeps them as the attribute `axes` (normalized,
sorted; () when absent or empty), export writes the form of the model's opset. A runtime axes
input keeps the node opaque. `noop_with_empty_axes` (opset 18) is kept; absent axes reduce over
every axis unless it is set.

ReduceSum is not modeled yet (tests/test_roundtrip.py keeps a ReduceSum opaque on purpose);
adding it is one more `_reduce(...)` entry here.

Z3: the sum of the reduced elements divided by their count, exactly (`on_terms`); no axioms,
no generator instances yet.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from onnx import numpy_helper

from superopt.core.axiom_spec import AxiomBook
from superopt.core.ops.common import (
    lower_generic,
    make_node,
    nbytes,
    norm_axis,
    on_terms,
    onnx_attrs,
)
from superopt.core.registry import Attrs, OpDef, Z3Semantics
from superopt.core.types import TensorType

# The opset from which each reduction takes its axes as an input instead of an attribute.
AXES_INPUT_FROM = {"ReduceMean": 18, "ReduceSum": 13}


def reduced_axes(a: Attrs, rank: int) -> tuple[int, ...] | None:
    """The axes a reduction reduces over; None when it is the identity (no axes and
    `noop_with_empty_axes`)."""
    if a["axes"]:
        return tuple(a["axes"])
    return None if a["noop_with_empty_axes"] else tuple(range(rank))


def _infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    shape = t[0].shape
    axes = reduced_axes(a, len(shape))
    if axes is None:
        return [t[0]]
    if any(not 0 <= ax < len(shape) for ax in axes):
        raise ValueError(f"reduction axes {axes} out of range for rank {len(shape)}")
    out = [1 if i in axes else d for i, d in enumerate(shape)] if a["keepdims"] else \
        [d for i, d in enumerate(shape) if i not in axes]
    return [TensorType(t[0].elem_type, tuple(out))]


def _mean(x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    if x.dtype == object:  # Z3 terms: the exact sum over the count
        count = int(np.prod([x.shape[ax] for ax in axes], dtype=np.int64))
        return np.asarray(x.sum(axis=axes, keepdims=keepdims) / count, dtype=object)
    if x.dtype.kind in "iu":  # ONNX Runtime divides the integer sum (C++ truncation)
        s = x.sum(axis=axes, keepdims=keepdims, dtype=np.int64)
        count = int(np.prod([x.shape[ax] for ax in axes], dtype=np.int64))
        return (np.trunc(s / count) if count else s).astype(x.dtype)
    return np.asarray(np.mean(x, axis=axes, keepdims=keepdims)).astype(x.dtype, copy=False)


def _reduce_compute(fn: Callable) -> Callable:
    def compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
        axes = reduced_axes(a, x[0].ndim)
        if axes is None:
            return [x[0].copy()]
        return [fn(x[0], axes, bool(a["keepdims"]))]
    return compute


def _from_onnx(name: str):
    def from_onnx(node, types, const, opset):
        a = onnx_attrs(node)
        t = types[0]
        if t is None or t.shape is None or set(a) - {"axes", "keepdims", "noop_with_empty_axes"}:
            return None
        if opset >= AXES_INPUT_FROM[name]:
            if "axes" in a:
                return None
            if len(node.input) > 1 and node.input[1]:
                arr = const(1)
                if arr is None:
                    return None  # runtime axes
                axes = [int(v) for v in arr.reshape(-1)]
            else:
                axes = []
        else:
            if len([i for i in node.input if i]) > 1:
                return None
            axes = [int(v) for v in a.get("axes", ())]
        rank = len(t.shape)
        norm = sorted({norm_axis(ax, rank) for ax in axes})
        if len(norm) != len(axes):
            return None  # repeated axes
        return ({"axes": tuple(norm), "keepdims": int(a.get("keepdims", 1)),
                 "noop_with_empty_axes": int(a.get("noop_with_empty_axes", 0))}, [0])
    return from_onnx


def _to_onnx(name: str):
    def to_onnx(attrs: Attrs, ins, outs, node_name, opset):
        extra = {"keepdims": attrs["keepdims"]}
        if attrs["noop_with_empty_axes"]:
            extra["noop_with_empty_axes"] = attrs["noop_with_empty_axes"]
        axes = list(attrs["axes"])
        if opset < AXES_INPUT_FROM[name]:
            if attrs["noop_with_empty_axes"]:
                raise ValueError(f"{name} node {node_name}: noop_with_empty_axes needs opset "
                                 f"{AXES_INPUT_FROM[name]}")
            return [make_node(name, ins[:1], outs, node_name, axes=axes or None, **extra)], []
        if not axes:
            return [make_node(name, ins[:1], outs, node_name, **extra)], []
        t = numpy_helper.from_array(np.array(axes, np.int64), f"{node_name}_axes")
        return [make_node(name, [ins[0], t.name], outs, node_name, **extra)], [t]
    return to_onnx


def _cost(a, ins, outs):
    return float(ins[0].numel()), nbytes(ins) + nbytes(outs)


AXIOMS = AxiomBook()


def _reduce(name: str, fn: Callable, doc: str) -> OpDef:
    compute = _reduce_compute(fn)
    return OpDef(
        name=name, onnx_type=name, arity=(1, 1), infer=_infer, compute=compute,
        defaults={"axes": (), "keepdims": 1, "noop_with_empty_axes": 0},
        from_onnx=_from_onnx(name), to_onnx=_to_onnx(name), cost=_cost, doc=doc,
        z3=Z3Semantics(on_terms(compute), lower_generic), axioms=AXIOMS.of(name))


OPS = (
    _reduce("ReduceMean", _mean, "mean over `axes` (all when empty), keeping them as size-1 "
            "dims if `keepdims`"),
)
AXIOMS.done()
