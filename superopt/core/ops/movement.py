"""Data movement: Concat, Split, Transpose, Reshape, Flatten, with their Z3 semantics, generator
instances and axioms (a Split output is a Slice at the offset of the parts before it; Concat
and Slice compose; Transpose composes and commutes with Concat)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import numpy_helper

from superopt.core.axiom_spec import AxiomBook, I, compose, in_range, inverse
from superopt.core.generator_spec import Arg, OpInstance, SymShape
from superopt.core.ops.common import (
    lower_generic,
    make_node,
    nbytes,
    norm_axis,
    on_terms,
    onnx_attrs,
    plain_to_onnx,
    sym,
)
from superopt.core.registry import MULTI_OUTPUT, Attrs, OpDef, Z3Semantics
from superopt.core.types import Dim, Shape, TensorType


def _concat_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    rank = len(t[0].shape)
    ax = norm_axis(a["axis"], rank)
    for x in t[1:]:
        if len(x.shape) != rank or any(
                isinstance(p, int) and isinstance(q, int) and p != q
                for i, (p, q) in enumerate(zip(t[0].shape, x.shape)) if i != ax):
            raise ValueError(f"Concat: shapes {t[0].shape} and {x.shape} differ off axis {ax}")
    dims = [x.shape[ax] for x in t]
    total: Dim = sum(dims) if all(isinstance(d, int) for d in dims) else sym(
        "+".join(str(d) for d in dims))
    shape = list(t[0].shape)
    shape[ax] = total
    return [TensorType(t[0].elem_type, tuple(shape))]


def _concat_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if types[0] is None or types[0].shape is None:
        return None
    return {"axis": norm_axis(int(a["axis"]), types[0].rank)}, list(range(len(node.input)))


def _concat_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate(x, axis=a["axis"])]


def _split_infer(a: Attrs, t: list[TensorType]) -> list[TensorType]:
    ax = a["axis"]
    d = t[0].shape[ax]
    if isinstance(d, int) and sum(a["split"]) != d:
        raise ValueError(f"Split sizes {a['split']} do not sum to dim {d}")
    out = []
    for s in a["split"]:
        shape = list(t[0].shape)
        shape[ax] = s
        out.append(TensorType(t[0].elem_type, tuple(shape)))
    return out


def _split_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    bounds = np.cumsum(a["split"])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x[0], bounds, axis=a["axis"])]


def _split_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    t = types[0]
    if t is None or t.shape is None:
        return None
    ax = norm_axis(int(a.get("axis", 0)), t.rank)
    n_out = len(node.output)
    if len(node.input) > 1 and node.input[1]:
        sizes = const(1)
        if sizes is None:
            return None
        split = tuple(int(s) for s in sizes)
    elif "split" in a:
        split = tuple(int(s) for s in a["split"])
    else:
        d = t.shape[ax]
        if not isinstance(d, int):
            return None
        # Equal parts; opset 18 puts the remainder in the last part.
        size = -(-d // n_out)
        split = tuple([size] * (n_out - 1) + [d - size * (n_out - 1)])
    if set(a) - {"axis", "split", "num_outputs"} or any(not o for o in node.output):
        return None
    return {"axis": ax, "split": split}, [0]


def _split_to_onnx(attrs: Attrs, ins, outs, name, opset):
    sizes = numpy_helper.from_array(np.array(attrs["split"], np.int64), f"{name}_split")
    return [make_node("Split", [ins[0], sizes.name], outs, name, axis=attrs["axis"])], [sizes]


def _transpose_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if types[0] is None or types[0].shape is None or set(a) - {"perm"}:
        return None
    perm = tuple(a.get("perm", range(types[0].rank - 1, -1, -1)))
    return {"perm": tuple(int(p) for p in perm)}, [0]


def _transpose_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.transpose(x[0], a["perm"]))]


def reshape_target(in_shape: Shape, target: Sequence[int], allowzero: int = 0) -> Shape:
    """ONNX Reshape's output shape (0 copies a dim unless allowzero, -1 is inferred)."""
    out: list[Dim] = [in_shape[i] if (d == 0 and not allowzero) else d
                      for i, d in enumerate(target)]
    if -1 in out:
        i = out.index(-1)
        known = [d for j, d in enumerate(out) if j != i]
        if all(isinstance(d, int) for d in in_shape) and all(isinstance(d, int) for d in known):
            total = int(np.prod(in_shape, dtype=np.int64))
            rest = int(np.prod(known, dtype=np.int64))
            if rest == 0 or total % rest:
                raise ValueError(f"cannot reshape {in_shape} to {tuple(target)}")
            out[i] = total // rest
        else:
            # Cancel symbols that appear on both sides; what is left must be integral.
            ins = list(in_shape)
            num_syms = [d for d in ins if not isinstance(d, int)]
            den_syms = [d for d in known if not isinstance(d, int)]
            for s in list(den_syms):
                if s in num_syms:
                    num_syms.remove(s)
                    den_syms.remove(s)
            num = int(np.prod([d for d in ins if isinstance(d, int)], dtype=np.int64))
            den = int(np.prod([d for d in known if isinstance(d, int)], dtype=np.int64))
            if not den_syms and den and num % den == 0:
                val = num // den
                out[i] = val if not num_syms else sym("*".join(map(str, num_syms)), f"*{val}")
            else:
                out[i] = sym("reshape", len(ins), "->", i)
    return tuple(out)


def _reshape_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    target = const(1)
    if target is None or types[0] is None or types[0].shape is None or set(a) - {"allowzero"}:
        return None
    return {"shape": tuple(int(d) for d in target), "allowzero": int(a.get("allowzero", 0))}, [0]


def _reshape_to_onnx(attrs: Attrs, ins, outs, name, opset):
    shape = numpy_helper.from_array(np.array(attrs["shape"], np.int64), f"{name}_shape")
    extra = {"allowzero": attrs["allowzero"]} if attrs["allowzero"] else {}
    return [make_node("Reshape", [ins[0], shape.name], outs, name, **extra)], [shape]


def _reshape_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [x[0].reshape(reshape_target(x[0].shape, a["shape"], a["allowzero"]))]


def _flatten_shape(shape: Shape, axis: int) -> Shape:
    ax = axis % len(shape) if axis < 0 else axis

    def prod(ds: Sequence[Dim]) -> Dim:
        if all(isinstance(d, int) for d in ds):
            return int(np.prod(ds, dtype=np.int64))
        return sym("*".join(map(str, ds)))
    return (prod(shape[:ax]), prod(shape[ax:]))


def _flatten_from_onnx(node, types, const, opset):
    a = onnx_attrs(node)
    if types[0] is None or types[0].shape is None or set(a) - {"axis"}:
        return None
    return {"axis": int(a.get("axis", 1))}, [0]


def _flatten_compute(a: Attrs, x: list[np.ndarray]) -> list[np.ndarray]:
    return [x[0].reshape(_flatten_shape(x[0].shape, a["axis"]))]


# ---------------------------------------------------------------------------------------------
# Z3 lowerings


def _lowered_axis(attrs, ranks, op):
    """The axis in [0, rank). The prover passes rank 0 for an input whose rank it does not
    know, and a Concat or Split of rank-0 tensors does not exist: either way, no lowering."""
    axis = attrs["axis"]
    if not isinstance(axis, int):
        return axis
    if not ranks or ranks[0] < 1:
        raise ValueError(f"{op} needs the rank of its inputs (unknown, or 0: a scalar has no "
                         "axis); give the rule example shapes / ranks")
    if not -ranks[0] <= axis < ranks[0]:
        raise ValueError(f"{op} axis {axis} is out of range for rank {ranks[0]}")
    return axis % ranks[0]


def _lower_concat(A, attrs, args, ranks, op):
    axis = _lowered_axis(attrs, ranks, op)
    out = args[-1]
    for a in reversed(args[:-1]):
        out = A.cat(axis, a, out)
    return [out]


def _lower_split(A, attrs, args, ranks, op):
    axis = _lowered_axis(attrs, ranks, op)
    outs, start = [], 0
    A.typed(sum(attrs["split"]) == A.dim(args[0], axis))  # ONNX Split: the sizes add up
    for size in attrs["split"]:
        outs.append(A.slice(args[0], axis, start, size))
        start = start + size
    return outs


def _lower_transpose(A, attrs, args, ranks, op):
    return [A.transpose(args[0], tuple(attrs["perm"]))]


# ---------------------------------------------------------------------------------------------
# generator instances


def _concat(axis: int, ranks: tuple[int, ...] = (2, 4)):
    def attrs(args: Sequence[Arg]) -> dict | None:
        a, b = args[0].shape, args[1].shape
        if len(a) not in ranks or len(a) != len(b) or axis >= len(a):
            return None
        if any(x != y for i, (x, y) in enumerate(zip(a, b)) if i != axis):
            return None
        return {"axis": axis}
    return attrs


def _concat_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    ax = attrs["axis"]
    out = list(args[0].sym)
    out[ax] = args[0].sym[ax] + args[1].sym[ax]
    return [tuple(out)]


def _split(axis: int, ranks: tuple[int, ...] = (2, 4)):
    # TASO splits where a Concat joined: only a dim that is a sum of two input dims is cut.
    def attrs(args: Sequence[Arg]) -> dict | None:
        sym = args[0].sym
        if axis >= len(sym) or len(sym[axis]) != 2 or len(args[0].shape) not in ranks:
            return None
        return {"axis": axis, "split": sym[axis]}  # atoms; sizes resolved by the enumerator
    return attrs


def _split_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    ax = attrs["axis"]
    outs = []
    for atom in attrs["split"]:
        s = list(args[0].sym)
        s[ax] = (atom,)
        outs.append(tuple(s))
    return outs


def _transpose(args: Sequence[Arg]) -> dict | None:
    return {"perm": (1, 0)} if len(args[0].shape) == 2 else None


def _transpose_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [(args[0].sym[1], args[0].sym[0])]


RC = ((2, 4), (2, 4))
R3 = ((3,), (3,))
M3D = ("matmul3d",)

# ---------------------------------------------------------------------------------------------
# axioms

AXIOMS = AxiomBook()
axiom, shape_axiom, _rank_axiom = AXIOMS.axiom, AXIOMS.shape, AXIOMS.rank

# Concat and Split (Split output k is a Slice at the offset of the parts before it)


@axiom("Split-all", ["Split"], "x", "ax s l", [I({"x": (2, 3)}, {"ax": 1, "s": 0, "l": 3}),
                                               I({"x": (4,)}, {"ax": 0, "s": 0, "l": 4})])
def _(A, t, i, s):
    x = t["x"]
    return A.slice(x, i["ax"], i["s"], i["l"]), x, A.all(
        i["s"] == 0, i["l"] == A.dim(x, i["ax"]), 0 <= i["ax"], i["ax"] < A.rank(x))


@axiom("Split-Concat-left", ["Split", "Concat"], "a b", "ax s l",
       [I({"a": (3, 2), "b": (1, 2)}, {"ax": 0, "s": 1, "l": 2}),
        I({"a": (2, 2), "b": (2, 3)}, {"ax": 1, "s": 0, "l": 2})])
def _(A, t, i, s):
    a, b, ax, st, ln = t["a"], t["b"], i["ax"], i["s"], i["l"]
    return (A.slice(A.cat(ax, a, b), ax, st, ln), A.slice(a, ax, st, ln),
            A.all(in_range(A, a, ax, st, ln), A.rank(a) == A.rank(b)))


@axiom("Split-Concat-right", ["Split", "Concat"], "a b", "ax s l",
       [I({"a": (3, 2), "b": (2, 2)}, {"ax": 0, "s": 3, "l": 2}),
        I({"a": (2, 2), "b": (2, 3)}, {"ax": 1, "s": 3, "l": 1})])
def _(A, t, i, s):
    a, b, ax, st, ln = t["a"], t["b"], i["ax"], i["s"], i["l"]
    return (A.slice(A.cat(ax, a, b), ax, st, ln), A.slice(b, ax, st - A.dim(a, ax), ln),
            A.all(st >= A.dim(a, ax), in_range(A, b, ax, st - A.dim(a, ax), ln),
                  A.rank(a) == A.rank(b)))


@axiom("Concat-Splits", ["Split", "Concat"], "x", "ax s l m",
       [I({"x": (4, 2)}, {"ax": 0, "s": 0, "l": 1, "m": 2}),
        I({"x": (2, 5)}, {"ax": 1, "s": 1, "l": 2, "m": 2})])
def _(A, t, i, s):
    x, ax, st, ln, m = t["x"], i["ax"], i["s"], i["l"], i["m"]
    return (A.cat(ax, A.slice(x, ax, st, ln), A.slice(x, ax, st + ln, m)),
            A.slice(x, ax, st, ln + m), A.all(in_range(A, x, ax, st, ln + m), m >= 0))


@axiom("Concat-assoc", ["Concat"], "a b c", "ax",
       [I({"a": (1, 2), "b": (2, 2), "c": (1, 2)}, {"ax": 0}),
        I({"a": (2, 1), "b": (2, 1), "c": (2, 2)}, {"ax": 1})], triggers="both")
def _(A, t, i, s):
    a, b, c, ax = t["a"], t["b"], t["c"], i["ax"]
    return A.cat(ax, A.cat(ax, a, b), c), A.cat(ax, a, A.cat(ax, b, c)), True


@axiom("Split-Concat-other-axis", ["Split", "Concat"], "a b", "ax bx s l",
       [I({"a": (1, 3), "b": (2, 3)}, {"ax": 0, "bx": 1, "s": 1, "l": 2}),
        I({"a": (3, 1), "b": (3, 2)}, {"ax": 1, "bx": 0, "s": 0, "l": 2})])
def _(A, t, i, s):
    a, b, ax, bx, st, ln = t["a"], t["b"], i["ax"], i["bx"], i["s"], i["l"]
    return (A.slice(A.cat(ax, a, b), bx, st, ln),
            A.cat(ax, A.slice(a, bx, st, ln), A.slice(b, bx, st, ln)),
            A.all(ax != bx, in_range(A, a, bx, st, ln), A.rank(a) == A.rank(b)))


@axiom("Concat-Concat-swap", ["Concat"], "a b c d", "ax bx",
       [I({"a": (1, 1), "b": (1, 2), "c": (2, 1), "d": (2, 2)}, {"ax": 0, "bx": 1}),
        I({"a": (1, 2), "b": (2, 2), "c": (1, 1), "d": (2, 1)}, {"ax": 1, "bx": 0})],
       triggers="both")
def _(A, t, i, s):
    a, b, c, d, ax, bx = t["a"], t["b"], t["c"], t["d"], i["ax"], i["bx"]
    return (A.cat(ax, A.cat(bx, a, b), A.cat(bx, c, d)),
            A.cat(bx, A.cat(ax, a, c), A.cat(ax, b, d)),
            A.all(ax != bx, A.dim(a, bx) == A.dim(c, bx), A.dim(b, bx) == A.dim(d, bx)))


# ---------------------------------------------------------------------------------------------
# Transpose


@axiom("Transpose-Transpose", ["Transpose"], "x", "",
       [I({"x": (2, 3)}, static=((1, 0), (1, 0))),
        I({"x": (2, 3, 4)}, static=((1, 2, 0), (0, 2, 1)))], schema="perm2")
def _(A, t, i, pq):
    p, q = pq
    x = t["x"]
    r = compose(p, q)
    rhs = x if r == tuple(range(len(r))) else A.transpose(x, r)
    return A.transpose(A.transpose(x, p), q), rhs, A.rank(x) == len(p)


@axiom("Transpose-Concat", ["Transpose", "Concat"], "a b", "",
       [I({"a": (1, 2), "b": (2, 2)}, static=((1, 0), 0)),
        I({"a": (2, 1, 3), "b": (2, 2, 3)}, static=((2, 0, 1), 1))], schema="perm_axis")
def _(A, t, i, pa):
    p, ax = pa
    a, b = t["a"], t["b"]
    return (A.transpose(A.cat(ax, a, b), p),
            A.cat(inverse(p)[ax], A.transpose(a, p), A.transpose(b, p)),
            A.all(A.rank(a) == len(p), A.rank(b) == len(p)))


# shape axioms
shape_axiom("dim-Concat", ["Concat"], "a b", "ax",
            [I({"a": (1, 2), "b": (2, 2)}, {"ax": 0}), I({"a": (2, 1), "b": (2, 3)}, {"ax": 1})],
            lambda A, t, i: A.cat(i["ax"], t["a"], t["b"]),
            lambda A, t, i, k: A.ite(k == i["ax"], A.dim(t["a"], k) + A.dim(t["b"], k),
                                     A.dim(t["a"], k)), ranks=lambda x: 2,
            out_rank=lambda A, t, i: A.rank(t["a"]))
shape_axiom("dim-Split", ["Split"], "x", "ax s l",
            [I({"x": (3, 2)}, {"ax": 0, "s": 1, "l": 1}), I({"x": (2, 4)}, {"ax": 1, "s": 1,
                                                                          "l": 3})],
            lambda A, t, i: A.slice(t["x"], i["ax"], i["s"], i["l"]),
            lambda A, t, i, k: A.ite(k == i["ax"], i["l"], A.dim(t["x"], k)),
            ranks=lambda x: 2, out_rank=lambda A, t, i: A.rank(t["x"]))
_rank_axiom("rank-Concat", ["Concat"], "a b", "ax", [I({"a": (1, 2), "b": (1, 2)}, {"ax": 0})],
            lambda A, t, i: A.cat(i["ax"], t["a"], t["b"]), lambda A, t, i: A.rank(t["a"]))
_rank_axiom("rank-Split", ["Split"], "x", "ax s l", [I({"x": (2, 3)}, {"ax": 1, "s": 0, "l": 2})],
            lambda A, t, i: A.slice(t["x"], i["ax"], i["s"], i["l"]),
            lambda A, t, i: A.rank(t["x"]))

# ---------------------------------------------------------------------------------------------
# the ops

OPS = (
    OpDef(
        name="Concat", onnx_type="Concat", arity=(1, -1), infer=_concat_infer,
        compute=_concat_compute, from_onnx=_concat_from_onnx,
        to_onnx=plain_to_onnx("Concat", ("axis",)),
        cost=lambda a, i, o: (0.0, nbytes(i) + nbytes(o)),
        doc="join along an axis",
        z3=Z3Semantics(on_terms(_concat_compute), _lower_concat),
        axioms=AXIOMS.of("Concat"),
        generator=(
            OpInstance("Concat.0", "Concat", 2, _concat(0), _concat_sym, on_weights=True,
                       ranks=RC),
            OpInstance("Concat.1", "Concat", 2, _concat(1), _concat_sym, on_weights=True,
                       ranks=RC),
            OpInstance("Concat.0", "Concat", 2, _concat(0, (2,)), _concat_sym, on_weights=True,
                       ranks=((2,), (2,)), presets=M3D),
            OpInstance("Concat.1", "Concat", 2, _concat(1, (2,)), _concat_sym, on_weights=True,
                       ranks=((2,), (2,)), presets=M3D),
            OpInstance("Concat.2", "Concat", 2, _concat(2, (3,)), _concat_sym, on_weights=True,
                       ranks=R3, presets=M3D),
        )),
    OpDef(
        name="Split", onnx_type="Split", arity=(1, 1), infer=_split_infer,
        compute=_split_compute,
        props=frozenset({MULTI_OUTPUT}), from_onnx=_split_from_onnx, to_onnx=_split_to_onnx,
        cost=lambda a, i, o: (0.0, nbytes(i) + nbytes(o)),
        doc="cut into parts of the given sizes along an axis",
        z3=Z3Semantics(on_terms(_split_compute), _lower_split),
        axioms=AXIOMS.of("Split"),
        generator=(
            OpInstance("Split.0", "Split", 1, _split(0), _split_sym, on_weights=True,
                       ranks=((2, 4),)),
            OpInstance("Split.1", "Split", 1, _split(1), _split_sym, on_weights=True,
                       ranks=((2, 4),)),
            OpInstance("Split.2", "Split", 1, _split(2, (3,)), _split_sym, on_weights=True,
                       ranks=((3,),), presets=M3D),
        )),
    OpDef(
        name="Transpose", onnx_type="Transpose", arity=(1, 1),
        infer=lambda a, t: [TensorType(t[0].elem_type,
                                       tuple(t[0].shape[p] for p in a["perm"]))],
        compute=_transpose_compute,
        from_onnx=_transpose_from_onnx, to_onnx=plain_to_onnx("Transpose", ("perm",)),
        cost=lambda a, i, o: (0.0, nbytes(i) + nbytes(o)), doc="permute axes",
        z3=Z3Semantics(on_terms(_transpose_compute), _lower_transpose),
        axioms=AXIOMS.of("Transpose"),
        generator=(OpInstance("Transpose", "Transpose", 1, _transpose, _transpose_sym,
                              on_weights=True, ranks=((2,),), presets=("default", "matmul3d")),)),
    OpDef(
        name="Reshape", onnx_type="Reshape", arity=(1, 1),
        infer=lambda a, t: [TensorType(t[0].elem_type,
                                       reshape_target(t[0].shape, a["shape"], a["allowzero"]))],
        compute=_reshape_compute,
        defaults={"allowzero": 0}, from_onnx=_reshape_from_onnx, to_onnx=_reshape_to_onnx,
        cost=lambda a, i, o: (0.0, 0.0), doc="reshape to a constant target shape",
        z3=Z3Semantics(on_terms(_reshape_compute), lower_generic)),
    OpDef(
        name="Flatten", onnx_type="Flatten", arity=(1, 1),
        infer=lambda a, t: [TensorType(t[0].elem_type, _flatten_shape(t[0].shape, a["axis"]))],
        compute=_flatten_compute,
        defaults={"axis": 1}, from_onnx=_flatten_from_onnx,
        to_onnx=plain_to_onnx("Flatten", ("axis",)), cost=lambda a, i, o: (0.0, 0.0),
        doc="collapse to 2-D at an axis",
        z3=Z3Semantics(on_terms(_flatten_compute), lower_generic)),
)
AXIOMS.done()
