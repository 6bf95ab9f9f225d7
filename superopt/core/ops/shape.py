"""Shape ops as exporters write them: Squeeze, Unsqueeze, Expand (to a constant shape) and
Slice (constant starts / ends / axes / steps).

Parameters that ONNX passes as inputs (Squeeze / Unsqueeze axes from opset 13, Expand's shape,
Slice's starts, ends, axes and steps from opset 10) become attributes when they are constants;
a runtime parameter keeps the node opaque. Export writes the form of the model's opset (axes as
an attribute before 13, Slice's attributes before 10). Dims may be symbols: Squeeze and
Unsqueeze keep them, Expand broadcasts them, and a Slice of a symbolic dim gets a symbol for its
length (the dim itself when it takes everything).

Z3: the numpy semantics on object arrays (`on_terms`), exact; no axioms, no generator
instances yet.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import numpy_helper

from superopt.core.axiom_spec import AxiomBook
from superopt.core.ops.common import (
    broadcast_shapes,
    lower_generic,
    make_node,
    nbytes,
    norm_axis,
    on_terms,
    onnx_attrs,
    sym,
)
from superopt.core.registry import Attrs, OpDef, Z3Semantics
from superopt.core.types import Dim, Shape, TensorType

# Slice bounds at or beyond these mean "to the end" / "to the beginning" whatever the dim.
BIG = 2**62


def _ints(name: str, values: Sequence[int], node_name: str):
    return numpy_helper.from_array(np.array(list(values), np.int64), f"{node_name}_{name}")


def _const_ints(node, const, i: int) -> list[int] | None:
    """Constant integer input i as a list; None when it is a runtime input."""
    arr = const(i)
    if arr is None or arr.dtype.kind not in "iu":
        return None
    return [int(v) for v in arr.reshape(-1)]


# ---------------------------------------------------------------------------------------------
# Squeeze / Unsqueeze (axes: attribute before opset 13, input from 13)


def _axes_from_onnx(node, const, opset) -> tuple[list[int] | None, bool]:
    """(axes or None when absent, ok): ok is False when the axes are a runtime input."""
    a = onnx_attrs(node)
    if opset < 13:
        return ([int(v) for v in a["axes"]] if "axes" in a else None), \
            len([i for i in node.input if i]) == 1 and set(a) <= {"axes"}
    if a:
        return None, False
    if len(node.input) < 2 or not node.input[1]:
        return None, True
    axes = _const_ints(node, const, 1)
    return axes, axes is not None


def _squeeze_from_onnx(node, types, const, opset):
    t = types[0]
    if t is None or t.shape is None:
        return None
    axes, ok = _axes_from_onnx(node, const, opset)
    if not ok:
        return None
    rank = len(t.shape)
    if not axes:  # every dim of size 1; a symbolic dim may or may not be one
        if any(not isinstance(d, int) for d in t.shape):
            return None
        axes = [i for i, d in enumerate(t.shape) if d == 1]
    norm = sorted({norm_axis(ax, rank) for ax in axes})
    if len(norm) != len(axes):
        return None
    return {"axes": tuple(norm)}, [0]


def _squeeze_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    shape = t[0].shape
    for ax in a["axes"]:
        if not 0 <= ax < len(shape) or (isinstance(shape[ax], int) and shape[ax] != 1):
            raise ValueError(f"Squeeze: axis {ax} of shape {shape} is not of size 1")
    return [TensorType(t[0].elem_type,
                       tuple(d for i, d in enumerate(shape) if i not in a["axes"]))]


def _squeeze_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [np.squeeze(x[0], axis=tuple(a["axes"])) if a["axes"] else x[0].copy()]


def _unsqueeze_from_onnx(node, types, const, opset):
    t = types[0]
    if t is None or t.shape is None:
        return None
    axes, ok = _axes_from_onnx(node, const, opset)
    if not ok or not axes:
        return None
    out_rank = len(t.shape) + len(axes)
    norm = sorted({norm_axis(ax, out_rank) for ax in axes})
    if len(norm) != len(axes):
        return None
    return {"axes": tuple(norm)}, [0]


def unsqueeze_shape(shape: Shape, axes: Sequence[int]) -> Shape:
    out_rank = len(shape) + len(axes)
    if any(not 0 <= ax < out_rank for ax in axes):
        raise ValueError(f"Unsqueeze: axes {tuple(axes)} out of range for rank {out_rank}")
    rest = iter(shape)
    return tuple(1 if i in axes else next(rest) for i in range(out_rank))


def _unsqueeze_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [x[0].reshape(unsqueeze_shape(x[0].shape, a["axes"]))]


def _axes_to_onnx(op_type: str):
    def to_onnx(attrs: Attrs, ins, outs, name, opset):
        axes = list(attrs["axes"])
        if not axes:  # Squeeze of no dim: written without axes (there is no size-1 dim)
            return [make_node(op_type, ins[:1], outs, name)], []
        if opset < 13:
            return [make_node(op_type, ins[:1], outs, name, axes=axes)], []
        t = _ints("axes", axes, name)
        return [make_node(op_type, [ins[0], t.name], outs, name)], [t]
    return to_onnx


# ---------------------------------------------------------------------------------------------
# Expand (bidirectional broadcast to a constant shape)


def _expand_from_onnx(node, types, const, opset):
    t = types[0]
    if t is None or t.shape is None or onnx_attrs(node) or len(node.input) != 2:
        return None
    shape = _const_ints(node, const, 1)
    if shape is None or any(d < 0 for d in shape):
        return None
    return {"shape": tuple(shape)}, [0]


def _expand_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    return [TensorType(t[0].elem_type, broadcast_shapes(t[0].shape, tuple(a["shape"])))]


def _expand_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    shape = np.broadcast_shapes(x[0].shape, tuple(a["shape"]))
    return [np.array(np.broadcast_to(x[0], shape))]


def _expand_to_onnx(attrs: Attrs, ins, outs, name, opset):
    t = _ints("shape", attrs["shape"], name)
    return [make_node("Expand", [ins[0], t.name], outs, name)], [t]


# ---------------------------------------------------------------------------------------------
# Slice


def _slice_from_onnx(node, types, const, opset):
    t = types[0]
    if t is None or t.shape is None:
        return None
    a = onnx_attrs(node)
    if opset < 10:
        if set(a) - {"starts", "ends", "axes"} or len([i for i in node.input if i]) != 1:
            return None
        starts, ends = [int(v) for v in a["starts"]], [int(v) for v in a["ends"]]
        axes = [int(v) for v in a["axes"]] if "axes" in a else None
        steps = None
    else:
        if a or len(node.input) < 3:
            return None
        parts = []
        for i in range(1, 5):
            if i < len(node.input) and node.input[i]:
                v = _const_ints(node, const, i)
                if v is None:
                    return None  # a runtime parameter
                parts.append(v)
            else:
                parts.append(None)
        starts, ends, axes, steps = parts
    rank = len(t.shape)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        return None
    norm = [norm_axis(ax, rank) for ax in axes]
    if len(set(norm)) != len(norm):
        return None
    return {"starts": tuple(starts), "ends": tuple(ends), "axes": tuple(norm),
            "steps": tuple(steps)}, [0]


def _bound(v: int) -> str:
    return "" if abs(v) >= BIG else str(v)


def slice_dim(d: Dim, start: int, end: int, step: int) -> Dim:
    """The length of d[start:end:step] (ONNX clamping, which is Python's); a symbol when d is
    one (d itself when the slice takes every element)."""
    if isinstance(d, int):
        return len(range(*slice(start, end, step).indices(d)))
    if step == 1 and start == 0 and end >= BIG:
        return d
    if step == -1 and start >= BIG and end <= -BIG:
        return d
    return sym(d, "[", _bound(start), ":", _bound(end), "" if step == 1 else f":{step}", "]")


def _slice_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    shape = list(t[0].shape)
    for start, end, ax, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        if not 0 <= ax < len(shape) or step == 0:
            raise ValueError(f"Slice: bad axis {ax} or step {step} for shape {t[0].shape}")
        shape[ax] = slice_dim(shape[ax], start, end, step)
    return [TensorType(t[0].elem_type, tuple(shape))]


def _slice_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    index: list[slice] = [slice(None)] * x[0].ndim
    for start, end, ax, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        index[ax] = slice(start, end, step)  # numpy clamps as ONNX does (Python's rules)
    return [np.array(x[0][tuple(index)])]


def _slice_to_onnx(attrs: Attrs, ins, outs, name, opset):
    if opset < 10:
        if any(s != 1 for s in attrs["steps"]):
            raise ValueError(f"Slice node {name}: steps need opset 10")
        return [make_node("Slice", ins[:1], outs, name, starts=list(attrs["starts"]),
                          ends=list(attrs["ends"]), axes=list(attrs["axes"]))], []
    ts = [_ints(k, attrs[k], name) for k in ("starts", "ends", "axes", "steps")]
    return [make_node("Slice", [ins[0]] + [t.name for t in ts], outs, name)], ts


# ---------------------------------------------------------------------------------------------
# the ops

AXIOMS = AxiomBook()


def _view_cost(a, ins, outs):
    return 0.0, 0.0  # ONNX Runtime reuses the input buffer (like Reshape)


def _copy_cost(a, ins, outs):
    return 0.0, 2.0 * nbytes(outs)


OPS = (
    OpDef(
        name="Squeeze", onnx_type="Squeeze", arity=(1, 1), infer=_squeeze_infer,
        compute=_squeeze_compute, defaults={"axes": ()}, from_onnx=_squeeze_from_onnx,
        to_onnx=_axes_to_onnx("Squeeze"), cost=_view_cost,
        doc="drop the size-1 dims `axes` (absent axes: every size-1 dim, made explicit)",
        z3=Z3Semantics(on_terms(_squeeze_compute), lower_generic),
        axioms=AXIOMS.of("Squeeze")),
    OpDef(
        name="Unsqueeze", onnx_type="Unsqueeze", arity=(1, 1),
        infer=lambda a, t: [TensorType(t[0].elem_type, unsqueeze_shape(t[0].shape,
                                                                       a["axes"]))],
        compute=_unsqueeze_compute, defaults={"axes": ()}, from_onnx=_unsqueeze_from_onnx,
        to_onnx=_axes_to_onnx("Unsqueeze"), cost=_view_cost,
        doc="insert size-1 dims at `axes` (positions in the output)",
        z3=Z3Semantics(on_terms(_unsqueeze_compute), lower_generic),
        axioms=AXIOMS.of("Unsqueeze")),
    OpDef(
        name="Expand", onnx_type="Expand", arity=(1, 1), infer=_expand_infer,
        compute=_expand_compute, defaults={"shape": ()}, from_onnx=_expand_from_onnx,
        to_onnx=_expand_to_onnx, cost=_copy_cost,
        doc="broadcast (both ways, as numpy) to a constant shape",
        z3=Z3Semantics(on_terms(_expand_compute), lower_generic),
        axioms=AXIOMS.of("Expand")),
    OpDef(
        name="Slice", onnx_type="Slice", arity=(1, 1), infer=_slice_infer,
        compute=_slice_compute, defaults={"starts": (), "ends": (), "axes": (), "steps": ()},
        from_onnx=_slice_from_onnx, to_onnx=_slice_to_onnx, cost=_copy_cost,
        doc="x[starts:ends:steps] along `axes` (ONNX clamping), constant parameters",
        z3=Z3Semantics(on_terms(_slice_compute), lower_generic),
        axioms=AXIOMS.of("Slice")),
)
AXIOMS.done()
