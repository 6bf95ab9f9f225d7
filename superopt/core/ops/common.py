"""Helpers the op families share: ONNX attribute reading and plain mappings, broadcasting,
byte counts for cost hints, and the generic parts of the Z3 semantics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from onnx import NodeProto, helper

from superopt.core.registry import Attrs
from superopt.core.types import Dim, Shape, TensorType


def onnx_attrs(node: NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def sym(*parts: Any) -> str:
    """A symbol for a dynamic dim computed from others (kept readable for `inspect`)."""
    return "(" + "".join(str(p) for p in parts) + ")"


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy broadcasting over dims that may be symbols."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        non_one = [d for d in dims if d != 1]
        if not non_one:
            out.append(1)
            continue
        ints = {d for d in non_one if isinstance(d, int)}
        if len(ints) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(ints.pop() if ints else non_one[0])
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def make_node(op_type: str, ins: list[str], outs: list[str], name: str,
              **attrs: Any) -> NodeProto:
    return helper.make_node(op_type, ins, outs, name=name,
                            **{k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in attrs.items() if v is not None})


def nbytes(types: Sequence[TensorType | None]) -> float:
    """Bytes of float32 tensors of these types (the analytic cost's memory traffic)."""
    return float(sum(t.numel() * 4 for t in types if t is not None))


def plain_to_onnx(op_type: str, keys: Sequence[str] = ()):
    def to_onnx(attrs: Attrs, ins: list[str], outs: list[str], name: str, opset: int):
        return [make_node(op_type, ins, outs, name, **{k: attrs[k] for k in keys})], []
    return to_onnx


def plain_from_onnx(keys: Sequence[str] = (), n_inputs: int | None = None):
    def from_onnx(node, types, const, opset):
        a = onnx_attrs(node)
        if set(a) - set(keys):
            return None  # an attribute we do not model: keep the node opaque
        n = len(node.input) if n_inputs is None else n_inputs
        return {k: a[k] for k in keys if k in a}, list(range(n))
    return from_onnx


def ew_cost(attrs, ins, outs):
    return float(outs[0].numel()), nbytes(ins) + nbytes(outs)


# ---------------------------------------------------------------------------------------------
# Z3 semantics shared by several families (see `registry.Z3Semantics`)


def on_terms(compute: Callable) -> Callable:
    """The numpy semantics as the bounded encoding: they also run on object arrays of Z3
    terms."""
    def bounded(ctx, attrs: dict, inputs: list) -> list:
        return compute(dict(attrs), list(inputs))
    return bounded


def lower_generic(A, attrs, args, ranks, op, n_out=1):
    """An op with no axioms: one uninterpreted function per (op, attributes, output)."""
    key = op + repr(sorted((k, v) for k, v in attrs.items()))
    return A.generic(key, args, n_out)
