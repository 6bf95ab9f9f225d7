"""Import TASO's rule collection (`graph_subst.pb`) as superopt rules.

The file is decoded straight from the protobuf wire format (varints and length-delimited
fields; six small messages: RuleCollection, Rule, Operator, Tensor, Parameter, MapOutput), so
no protobuf schema is needed. Each
TASO rule becomes a `Rule` with TASO's semantics made explicit:
- variables by opId: x1..x3 (2×4 runtime), w1..w3 (4×4 weights), i1..i3 (2×4×5×5 runtime),
  k1..k9 kernels (4×4×3×3, 4×4×1×3, 4×4×3×1), kd (4×1×3×3), s (a scalar weight);
- Conv2D's group is inferred from shapes (input channels / kernel input channels), PAD SAME /
  VALID becomes explicit pads, a fused activation (ACTI) an explicit Relu/Sigmoid/Tanh;
- Split on a Concat output splits at the sizes of the concatenated parts (`dim(?v, axis)`).

Example:
    >>> rules = import_taso("graph_subst.pb")    # doctest: +SKIP
    >>> len(rules)                                # doctest: +SKIP
    133
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from superopt.core.errors import RulesError
from superopt.core.ir import Node, Value
from superopt.core.ops import get_op
from superopt.core.ops.geometry import explicit_pads
from superopt.core.rules import Rule
from superopt.core.types import FLOAT, TensorType

# TASO OpType values and PMParameter keys.
OP_CONV, OP_POOL_MAX, OP_POOL_AVG, OP_RELU, OP_CONCAT, OP_SPLIT = 3, 6, 7, 8, 12, 13
OP_TRANSPOSE, OP_ADD, OP_MUL, OP_MATMUL, OP_SCALAR_MUL, OP_ENLARGE = 15, 16, 17, 18, 19, 20
OP_CONST_IMM, OP_CONST_ICONV, OP_CONST_ONE = 22, 23, 24
P_NUM_INPUTS, P_NUM_OUTPUTS, P_GROUP, P_KERNEL_H, P_KERNEL_W = 1, 2, 3, 4, 5
P_STRIDE_H, P_STRIDE_W, P_PAD, P_ACTI, P_NUMDIM, P_AXIS, P_PERM = 6, 7, 8, 9, 10, 11, 12
ACTIVATIONS = {0: None, 1: "Sigmoid", 2: "Relu", 3: "Tanh"}

# opId -> (variable name, shape, kind)
VARIABLES: dict[int, tuple[str, tuple[int, ...], str]] = {}
for _k in range(3):
    VARIABLES[-1 - _k] = (f"x{_k + 1}", (2, 4), "tensor")
    VARIABLES[-4 - _k] = (f"w{_k + 1}", (4, 4), "weight")
    VARIABLES[-7 - _k] = (f"i{_k + 1}", (2, 4, 5, 5), "tensor")
    VARIABLES[-10 - _k] = (f"k{_k + 1}", (4, 4, 3, 3), "weight")
    VARIABLES[-13 - _k] = (f"k{_k + 4}", (4, 4, 1, 3), "weight")
    VARIABLES[-16 - _k] = (f"k{_k + 7}", (4, 4, 3, 1), "weight")
VARIABLES[-19] = ("kd", (4, 1, 3, 3), "weight")
VARIABLES[-20] = ("s", (), "weight")


# ---------------------------------------------------------------------------------------------
# wire format


class _Reader:
    def __init__(self, data: bytes, base: int, path: str) -> None:
        self.data, self.base, self.path, self.pos = data, base, path, 0

    def fail(self, what: str, at: int | None = None) -> RulesError:
        off = self.base + (self.pos if at is None else at)
        return RulesError(f"{self.path}: not a TASO rule file: {what} at byte offset {off}")

    def varint(self) -> int:
        start, shift, value = self.pos, 0, 0
        while True:
            if self.pos >= len(self.data):
                raise self.fail("truncated varint", start)
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value
            if shift >= 70:
                raise self.fail("varint longer than 10 bytes", start)

    def fields(self, allowed: dict[int, int]) -> list[tuple[int, Any, int]]:
        """(field number, value, offset) for each field; `allowed` maps number -> wire type."""
        out = []
        while self.pos < len(self.data):
            start = self.pos
            key = self.varint()
            number, wire = key >> 3, key & 7
            if allowed.get(number) != wire:
                raise self.fail(f"unexpected field {number} (wire type {wire})", start)
            if wire == 0:
                v = self.varint()
                v = v - (1 << 64) if v >= 1 << 63 else v
                if not -(1 << 31) <= v < 1 << 31:
                    raise self.fail("value out of int32 range", start)
                out.append((number, v, start))
            else:
                n = self.varint()
                if self.pos + n > len(self.data):
                    raise self.fail(f"truncated field {number} ({n} bytes announced)", start)
                out.append((number, _Reader(self.data[self.pos:self.pos + n],
                                            self.base + self.pos, self.path), start))
                self.pos += n
        return out


@dataclass
class TasoOp:
    type: int
    inputs: list[tuple[int, int]]
    params: dict[int, int]


@dataclass
class TasoRule:
    src: list[TasoOp]
    dst: list[TasoOp]
    mapped: list[tuple[int, int, int, int]] = field(default_factory=list)


def _operator(r: _Reader) -> TasoOp:
    op = TasoOp(-1, [], {})
    for num, v, _ in r.fields({1: 0, 2: 2, 3: 2}):
        if num == 1:
            op.type = v
        elif num == 2:
            t = dict((n, x) for n, x, _ in v.fields({1: 0, 2: 0}))
            op.inputs.append((t.get(1, 0), t.get(2, 0)))
        else:
            p = dict((n, x) for n, x, _ in v.fields({1: 0, 2: 0}))
            op.params[p.get(1, 0)] = p.get(2, 0)
    if op.type < 0:
        raise r.fail("operator without a type", 0)
    return op


def decode(data: bytes, path: str = "<bytes>") -> list[TasoRule]:
    """The rules of a graph_subst.pb file; RulesError names the byte offset of a bad field."""
    rules = []
    for _, rv, _ in _Reader(data, 0, path).fields({1: 2}):
        rule = TasoRule([], [])
        for num, v, _ in rv.fields({1: 2, 2: 2, 3: 2}):
            if num in (1, 2):
                (rule.src if num == 1 else rule.dst).append(_operator(v))
            else:
                m = dict((n, x) for n, x, _ in v.fields({1: 0, 2: 0, 3: 0, 4: 0}))
                rule.mapped.append(tuple(m.get(k, 0) for k in (1, 2, 3, 4)))  # type: ignore
        rules.append(rule)
    if not rules:
        raise RulesError(f"{path}: not a TASO rule file: no rules at byte offset 0")
    return rules


# ---------------------------------------------------------------------------------------------
# conversion


class _Side:
    """Builds the patterns of one side, tracking IR values for shapes."""

    def __init__(self, ops: list[TasoOp], used: dict[str, tuple[int, ...]],
                 kinds: dict[str, str], retyped: dict[int, tuple[int, ...]]) -> None:
        self.ops = ops
        self.retyped = retyped
        self.used, self.kinds = used, kinds
        self.outs: dict[int, list[tuple[str, Value]]] = {}

    def ref(self, op_id: int, ts_id: int) -> tuple[str, Value]:
        if op_id < 0:
            if op_id not in VARIABLES:
                raise ValueError(f"unknown TASO variable opId {op_id}")
            name, shape, kind = VARIABLES[op_id]
            shape = self.retyped.get(op_id, shape)
            self.used[name], self.kinds[name] = shape, kind
            return f"?{name}", Value.input(f"?{name}", TensorType(FLOAT, shape))
        if op_id not in self.outs:
            self.outs[op_id] = self.convert(self.ops[op_id])
        return self.outs[op_id][ts_id]

    def dim_text(self, op_id: int, ts_id: int, axis: int) -> str:
        """`dim(?v, a)` naming a variable dim equal to this output's dim, else the number."""
        if op_id < 0:
            return f"dim(?{VARIABLES[op_id][0]},{axis})"
        op = self.ops[op_id]
        ins = op.inputs
        if op.type in (OP_RELU, OP_ADD, OP_MUL):
            return self.dim_text(*ins[0], axis)
        if op.type == OP_CONV and axis == 1:
            return self.dim_text(*ins[1], 0)
        if op.type == OP_CONV and axis == 0:
            return self.dim_text(*ins[0], 0)
        if op.type == OP_MATMUL:
            rank = len(self.ref(*ins[0])[1].shape)
            return self.dim_text(*ins[1], axis) if axis == rank - 1 else \
                self.dim_text(*ins[0], axis)
        return str(self.ref(op_id, ts_id)[1].shape[axis])

    def concat_parts(self, op_id: int, axis: int) -> tuple[list, int] | None:
        """The Concat whose parts this output's `axis` is made of, looking through
        element-wise ops, Conv (channels come from the kernels' axis 0) and MatMul."""
        if op_id < 0:
            return None
        op = self.ops[op_id]
        if op.type == OP_CONCAT:
            return (op.inputs, axis) if op.params.get(P_AXIS) == axis else None
        if op.type in (OP_RELU, OP_ADD, OP_MUL):
            return self.concat_parts(op.inputs[0][0], axis)
        if op.type == OP_CONV and axis == 1:
            return self.concat_parts(op.inputs[1][0], 0)
        if op.type == OP_MATMUL:
            rank = len(self.ref(*op.inputs[0])[1].shape)
            if axis == rank - 1:
                return self.concat_parts(op.inputs[1][0], axis)
            return self.concat_parts(op.inputs[0][0], axis)
        return None

    def node(self, op: str, attrs: dict, args: list[tuple[str, Value]], text_attrs: str
             ) -> list[tuple[str, Value]]:
        node = Node.make(op, get_op(op).canonical_attrs(attrs), [v for _, v in args])
        head = f"{op}[{text_attrs}]" if text_attrs else op
        body = " ".join(t for t, _ in args)
        if len(node.outputs) == 1:
            return [(f"({head} {body})", node.outputs[0])]
        return [(f"({op}.{k}[{text_attrs}] {body})" if k else f"({head} {body})", o)
                for k, o in enumerate(node.outputs)]

    def activation(self, op: TasoOp, out: list[tuple[str, Value]]) -> list[tuple[str, Value]]:
        act = ACTIVATIONS.get(op.params.get(P_ACTI, 0), "?")
        if act == "?":
            raise ValueError(f"unknown ACTI {op.params[P_ACTI]}")
        return out if act is None else self.node(act, {}, out, "")

    def convert(self, op: TasoOp) -> list[tuple[str, Value]]:
        args = [self.ref(*i) for i in op.inputs]
        t, p = op.type, op.params
        if t == OP_CONV:
            (xt, x), (wt, w) = args
            group = x.shape[1] // w.shape[1]
            strides = (p.get(P_STRIDE_H, 1), p.get(P_STRIDE_W, 1))
            mode = "SAME_UPPER" if p.get(P_PAD, 0) == 0 else "VALID"
            pads = explicit_pads(mode, x.shape[2:], w.shape[2:], strides)
            attrs = {"pads": pads, "strides": strides, "group": group}
            text = f"group={group}, pads={_tup(pads)}, strides={_tup(strides)}"
            return self.activation(op, self.node("Conv", attrs, args, text))
        if t == OP_MATMUL:
            return self.activation(op, self.node("MatMul", {}, args, ""))
        if t in (OP_ADD, OP_MUL):
            return self.node("Add" if t == OP_ADD else "Mul", {}, args, "")
        if t == OP_RELU:
            return self.node("Relu", {}, args, "")
        if t == OP_CONCAT:
            axis = p[P_AXIS]
            ranks = {len(v.shape) for _, v in args}
            if len(ranks) > 1:
                # TASO also used the 2-D weights w1..w3 as kernels: give such a weight the
                # shape of the kernel it is concatenated with, and convert again.
                big = max(args, key=lambda a: len(a[1].shape))[1].shape
                for (i, _), (_, v) in zip(op.inputs, args):
                    if i < 0 and len(v.shape) < len(big) and VARIABLES[i][2] == "weight":
                        raise _Retype(i, big)
            return self.node("Concat", {"axis": axis}, args, f"axis={axis}")
        if t == OP_SPLIT:
            axis = p[P_AXIS]
            src_id, src_ts = op.inputs[0]
            n_out = p.get(P_NUM_OUTPUTS, 2)
            found = self.concat_parts(src_id, axis)
            if found is not None and len(found[0]) == n_out:
                parts, part_axis = found
                texts = [self.dim_text(i, ts, part_axis) for i, ts in parts]
                sizes = tuple(int(self.ref(i, ts)[1].shape[part_axis]) for i, ts in parts)
            else:
                d = args[0][1].shape[axis]
                sizes = tuple([d // n_out] * n_out)
                texts = [str(s) for s in sizes]
            attrs = {"axis": axis, "split": sizes}
            return self.node("Split", attrs, args, f"axis={axis}, split=({', '.join(texts)})")
        if t == OP_TRANSPOSE:
            raise ValueError("Transpose's PERM encoding is not supported")
        raise ValueError(f"TASO op type {t} is not supported")


class _Retype(Exception):
    def __init__(self, op_id: int, shape: tuple[int, ...]) -> None:
        self.op_id, self.shape = op_id, shape


def _tup(v: tuple) -> str:
    return "(" + ", ".join(str(x) for x in v) + ")"


def convert(rule: TasoRule, index: int) -> Rule:
    """One TASO rule as a superopt Rule (ValueError if it uses something not modeled)."""
    retyped: dict[int, tuple[int, ...]] = {}
    for _ in range(len(VARIABLES)):
        used: dict[str, tuple[int, ...]] = {}
        kinds: dict[str, str] = {}
        src = _Side(rule.src, used, kinds, retyped)
        dst = _Side(rule.dst, used, kinds, retyped)
        src_pats, dst_pats = [], []
        try:
            for s_op, d_op, s_ts, d_ts in rule.mapped:
                src_pats.append(src.ref(s_op, s_ts)[0])
                dst_pats.append(dst.ref(d_op, d_ts)[0])
        except _Retype as r:
            retyped[r.op_id] = r.shape
            continue
        break
    return Rule.make(src_pats, dst_pats, kinds, name=f"taso-{index}", example=used,
                     provenance={"source": "TASO graph_subst.pb", "index": index})


def import_taso(path: str | os.PathLike, *, skipped: list[str] | None = None) -> list[Rule]:
    """TASO's rules from a graph_subst.pb file, as superopt rules (in file order).

    Raises RulesError for a missing, truncated or foreign file (naming the byte offset). A rule
    that cannot be converted raises RulesError naming its index, unless a `skipped` list is
    given: then it gets "TASO rule i: why" appended there and the others are returned.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RulesError(f"{path}: cannot read ({e.strerror})") from None
    out: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(decode(data, path)):
        try:
            rule = convert(r, i)
            if rule.id in seen:
                # TASO ships some rules twice (equal after conversion): keep both, distinct ids.
                rule = Rule(**{**rule.__dict__, "id": f"{rule.id}-taso{i}"})
            seen.add(rule.id)
            out.append(rule)
        except (ValueError, KeyError, IndexError) as e:
            if skipped is None:
                raise RulesError(f"{path}: TASO rule {i}: {e}") from None
            skipped.append(f"TASO rule {i}: {e}")
    return out
