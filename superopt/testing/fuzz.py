"""Differential fuzzing: random valid ONNX graphs, every rule match and the unguarded search,
each checked against the original model in ONNX Runtime.

**The generator** (`generate`) builds a random ONNX model (opset 17) over the registry's ops
from a *choice sequence* (`Choices`, in the style of Hypothesis): every random decision is one
integer drawn from a seeded RNG and recorded, so a case is reproduced from its seed
(`"SEED:INDEX"`) or from its recorded choices, and a failing case is shrunk by shortening and
lowering its choices (zero is always the simplest option: fewer features, smaller dims). A model
is 2-6 *motifs*: natural subgraphs biased towards the shapes the shipped rules match (MatMul
chains with weights and 1-D operands, Conv with same pads and per-channel constants,
Concat/Split pairs, Add/Mul with scalars, `(C,1,1)` and `(D,)` constants, twin nodes and sibling
branches, transposes, random single ops), and *rule instances*: a rule's source pattern built at
its example's shapes or at mutated ones (another rank, a per-channel or vector weight, the
symbolic batch; each Add and Mul in either operand order), bound to values already in the graph
where shapes allow. It covers ranks 0-4, broadcasting one way and both ways, values read by
several nodes, graph outputs taken from intermediate values, weights as initializers, as graph
inputs, as initializers also declared as inputs (their defaults are used) and computed from
initializers by a node of the model (a rule instance's weight as `Mul(W/2, 2)`), int64 islands,
float16 models and a symbolic batch dim (a `dim_param` whose run-time size the fuzzer picks).
Each input's domain (any real, positive, away from zero) is recorded in the model's metadata, so
feeds are always valid; every model is checked (`onnx.checker`, full) and run before it is used.

**The checks** (`Checker.check`) run the original on ORT's CPU provider with every graph
optimization off and compare, output by output (NaN and ±Inf patterns equal; finite values
within a dtype-appropriate tolerance scaled by the output's magnitude):

- *roundtrip*: `superopt.load` then `superopt.to_onnx` with no rewrite (a failure here stops
  the case: every rewrite would inherit it);
- *match*: every match of every rule (`find_matches`), applied one at a time (`apply_match`),
  exported and run;
- *search*: `search_auto` with no gate and no numerical check (NodeCount or the analytic cost),
  its best graph exported and run; a failure is pinned on the first step of the path whose
  graph already differs.

A failure of a rewrite carries a *cause* (`classify`): the ranks or shapes the rule's variables
were bound to against those of the example the rule was proved at (`rank:per-channel`,
`rank:vector`, `rank:1-d-operand`: proved at one rank, matched at another; `broadcast`;
`shape`; `same`). Interface changes (input/output names, dtypes, shapes), NaN/Inf patterns,
export errors, ORT load/run errors and crashes of the matcher, applier or search are failures
too.

**Minimization** (`minimize`) shrinks a failure's choice sequence, then the model itself (drop
outputs, cut nodes into inputs, bypass unary nodes) while the same failure (check, kind, rule)
persists, and `save_regression` writes `<id>.onnx` and `<id>.json` (with the defect it shows)
for `tests/test_fuzz.py` to replay.

Command line:

    python -m superopt.testing.fuzz --cases 300 --seed 1 [--minimize] [--out DIR] [--rules FILE]

prints a summary (cases, cases with a match, matches applied, search rewrites, failures by
rule and kind, time) and exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GENERATOR_VERSION = 1
OPSET = 17
IR_VERSION = 8
SYM = "N"  # the symbolic batch dim's name
META_KEY = "superopt.fuzz"
REGRESSION_FORMAT = "superopt-fuzz-regression/1"
DEFAULT_REGRESSIONS = Path("tests") / "fuzz_regressions"  # relative to the checkout (make fuzz)

FLOAT, FLOAT16, INT64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64
_NP = {FLOAT: np.float32, FLOAT16: np.float16, INT64: np.int64,
       TensorProto.DOUBLE: np.float64, TensorProto.INT32: np.int32}
# (rtol, atol): atol is scaled by the output's largest finite magnitude (at least 1).
TOLERANCE = {FLOAT: (1e-4, 1e-5), FLOAT16: (2e-2, 1e-2), TensorProto.DOUBLE: (1e-9, 1e-12)}

UNARY = ("Relu", "Sigmoid", "Tanh", "Erf", "Identity")
BINARY = ("Add", "Mul", "Sub", "Div")

__all__ = ["Choices", "GenParams", "Case", "generate", "make_feeds", "run_model",
           "compare_outputs", "classify", "FuzzConfig", "Failure", "CaseReport", "Checker",
           "FuzzSummary", "fuzz", "minimize", "Minimized", "save_regression",
           "replay_regression", "load_proved_rules", "main"]


# ---------------------------------------------------------------------------------------------
# the choice sequence


class Choices:
    """Random decisions as a recorded sequence of small integers.

    Fresh (`Choices(seed=...)`): each draw comes from a seeded RNG and is recorded. Replay
    (`Choices(prefix=[...])`): draws come from the prefix (taken modulo the bound), 0 past its
    end. Every draw's 0 is the simplest option, so lowering and deleting choices shrinks a case.

    Example:
        >>> ch = Choices(seed="1:0"); a = ch.below(10)
        >>> Choices(prefix=ch.record).below(10) == a
        True
    """

    def __init__(self, seed: int | str | None = None, prefix: Sequence[int] | None = None,
                 limit: int = 4000) -> None:
        self._rng = random.Random(seed)
        self._prefix = None if prefix is None else list(prefix)
        self._limit = limit
        self.record: list[int] = []

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        if n <= 1:
            return 0
        i = len(self.record)
        if i >= self._limit:
            v = 0
        elif self._prefix is None:
            v = self._rng.randrange(n)
        else:
            v = self._prefix[i] % n if i < len(self._prefix) else 0
        self.record.append(v)
        return v

    def flag(self, p: float) -> bool:
        """True with probability p (a zero draw is False)."""
        return self.below(100) >= 100 - int(round(p * 100))

    def pick(self, items: Sequence[Any]) -> Any:
        """One of items (the first is the simplest)."""
        return items[self.below(len(items))]

    def weighted(self, items: Sequence[tuple[Any, int]]) -> Any:
        total = sum(w for _, w in items)
        r = self.below(total)
        for item, w in items:
            if r < w:
                return item
            r -= w
        return items[-1][0]


# ---------------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class GenParams:
    """Knobs of the generator (the defaults are what CI runs)."""

    min_motifs: int = 2
    max_motifs: int = 6
    max_nodes: int = 32
    p_float16: float = 0.08
    p_symbolic: float = 0.25
    p_int_island: float = 0.12
    p_weight_input: float = 0.12
    p_overridable: float = 0.04
    p_tap: float = 0.15  # an intermediate value also made a graph output


@dataclass(frozen=True)
class _V:
    name: str
    dtype: int
    shape: tuple


def _broadcast(a: tuple, b: tuple) -> tuple:
    r = max(len(a), len(b))
    a2 = (1,) * (r - len(a)) + tuple(a)
    b2 = (1,) * (r - len(b)) + tuple(b)
    out = []
    for x, y in zip(a2, b2):
        if x == y:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
    return tuple(out)


def _prod(dims: Iterable[int]) -> int:
    return int(math.prod(dims))


class _Builder:
    """One model under construction: nodes, inputs, initializers and the pool of runtime
    values later nodes may read (several readers of one value happen through the pool)."""

    def __init__(self, ch: Choices, params: GenParams, rules: Sequence[Any] = ()) -> None:
        self.ch = ch
        self.p = params
        self.rules = list(rules)
        self.wrng = np.random.default_rng(ch.below(1 << 16))
        self.fdt = FLOAT16 if ch.flag(params.p_float16) else FLOAT
        self.sym = ch.flag(params.p_symbolic)
        self.batch = ch.pick((2, 1, 3))
        self.base = ch.pick((4, 2, 3, 5))
        self.nodes: list[onnx.NodeProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.overridable: list[onnx.ValueInfoProto] = []
        self.inits: list[TensorProto] = []
        self.pool: list[_V] = []
        self.produced: list[_V] = []
        self.consts: list[tuple[_V, str]] = []
        self.domains: dict[str, str] = {}
        self.used: set[str] = set()
        self.features: set[str] = set()
        self.n = 0
        if self.fdt == FLOAT16:
            self.features.add("float16")

    # -- names, dims, values

    def _name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def dim(self) -> int:
        return self.ch.pick((2, 3, 4, 5)) if self.ch.flag(0.3) else self.base

    def spatial(self) -> int:
        return self.ch.pick((3, 4, 5, 2))

    def bdim(self) -> int | str:
        return SYM if self.sym else self.batch

    def _array(self, shape: tuple, dtype: int, kind: str) -> np.ndarray:
        rng = self.wrng
        if dtype == INT64:
            if kind == "normal":
                a = rng.integers(-3, 4, size=shape)
            else:
                a = rng.integers(1, 4, size=shape)
                if kind == "nonzero":
                    a = a * rng.choice(np.array([-1, 1]), size=shape)
            return np.asarray(a, dtype=np.int64)
        if kind == "pos":
            a = rng.uniform(0.5, 1.5, size=shape)
        elif kind == "nonzero":
            a = rng.uniform(0.5, 2.0, size=shape) * rng.choice(np.array([-1.0, 1.0]), size=shape)
        else:
            a = rng.standard_normal(size=shape) * 0.5
        return np.asarray(a, dtype=_NP[dtype])

    def new_input(self, shape: tuple, dtype: int | None = None, domain: str = "normal") -> _V:
        dtype = self.fdt if dtype is None else dtype
        name = self._name("in")
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        if domain != "normal":
            self.domains[name] = domain
        if SYM in shape:
            self.features.add("symbolic")
        if len(shape) == 0:
            self.features.add("rank0")
        v = _V(name, dtype, tuple(shape))
        self.pool.append(v)
        return v

    def const(self, shape: tuple, dtype: int | None = None, kind: str = "normal",
              param: bool = False, array: np.ndarray | None = None) -> _V:
        """An initializer; `param` for shape/split operands (never overridable or reused)."""
        dtype = self.fdt if dtype is None else dtype
        shape = tuple(shape)
        if not param and array is None and self.ch.flag(0.25):
            same = [v for v, k in self.consts if v.shape == shape and v.dtype == dtype
                    and k == kind]
            if same:
                self.features.add("shared-weight")
                return self.ch.pick(same)
        arr = self._array(shape, dtype, kind) if array is None else array
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(arr, name))
        v = _V(name, dtype, shape)
        if not param:
            self.consts.append((v, kind))
            if self.ch.flag(self.p.p_overridable):
                self.overridable.append(helper.make_tensor_value_info(name, dtype, list(shape)))
                self.features.add("overridable-initializer")
        return v

    def weight(self, shape: tuple, dtype: int | None = None, kind: str = "normal") -> _V:
        """A weight: an initializer, or (sometimes, and always with a symbolic dim) a graph
        input fed at run time."""
        if SYM in shape or self.ch.flag(self.p.p_weight_input):
            if SYM not in shape:
                self.features.add("weight-as-input")
            return self.new_input(shape, dtype, kind)
        return self.const(shape, dtype, kind)

    def take(self, pred: Callable[[_V], bool]) -> _V | None:
        cands = [v for v in self.pool if pred(v)]
        if not cands:
            return None
        if self.ch.flag(0.2):
            return self.ch.pick(cands)
        return cands[len(cands) - 1 - self.ch.below(min(len(cands), 3))]

    def operand(self, shape: tuple, dtype: int, allow_const: bool = True) -> _V:
        """A value of exactly this shape: one already in the graph, a weight or a new input."""
        shape = tuple(shape)
        if self.ch.flag(0.5):
            v = self.take(lambda u: u.shape == shape and u.dtype == dtype)
            if v is not None:
                return v
        if allow_const and SYM not in shape and self.ch.flag(0.5):
            return self.const(shape, dtype)
        return self.new_input(shape, dtype)

    def fresh_shape(self, rank: int) -> tuple:
        if rank == 0:
            return ()
        if rank == 1:
            return (self.dim(),)
        if rank == 2:
            return (self.bdim(), self.dim()) if self.ch.flag(0.5) else (self.dim(), self.dim())
        if rank == 3:
            s = [self.bdim(), self.dim(), self.dim()]
        else:
            s = [self.bdim(), self.dim(), self.spatial(), self.spatial()]
        if self.ch.flag(0.1):
            s[1 + self.ch.below(rank - 1)] = 1
            self.features.add("unit-axis")
        return tuple(s)

    def activation(self, ranks: Sequence[int] = (2, 3, 4, 1, 0), dtype: int | None = None,
                   pred: Callable[[_V], bool] | None = None) -> _V:
        dtype = self.fdt if dtype is None else dtype
        if self.ch.flag(0.7):
            v = self.take(lambda u: u.dtype == dtype and len(u.shape) in ranks
                          and (pred is None or pred(u)))
            if v is not None:
                return v
        return self.new_input(self.fresh_shape(self.ch.pick(ranks)), dtype)

    def node(self, op: str, inputs: Sequence[_V | None], outs: Sequence[tuple[int, tuple]],
             **attrs: Any) -> list[_V]:
        vals = [_V(self._name("t"), dt, tuple(sh)) for dt, sh in outs]
        self.nodes.append(helper.make_node(
            op, [i.name if i is not None else "" for i in inputs], [v.name for v in vals],
            name=self._name(f"{op}_"), **attrs))
        for i in inputs:
            if i is not None:
                self.used.add(i.name)
        self.pool.extend(vals)
        self.produced.extend(vals)
        return vals

    # -- one op each; None when the op does not apply to `a`

    def op_unary(self, a: _V, op: str | None = None) -> _V | None:
        if a.dtype == INT64:
            op = "Identity"
        op = op or self.ch.pick(UNARY)
        return self.node(op, [a], [(a.dtype, a.shape)])[0]

    def op_binary(self, a: _V, op: str | None = None,
                  forms: Sequence[str] | None = None) -> _V | None:
        op = op or self.ch.pick(BINARY)
        s, r = a.shape, len(a.shape)
        if forms is None:
            forms = ["same", "scalar"]
            if r >= 1:
                forms += ["vector", "unit", "suffix"]
            if r >= 2:
                forms += ["channel"]
            if r <= 3:
                forms += ["both", "higher"]
        form = self.ch.pick(forms)
        d = self.dim()
        if form == "scalar":
            bs: tuple = ()
        elif form == "vector":
            bs = (s[-1],) if r else (d,)
        elif form == "channel" and r >= 3:
            bs = (s[1],) + (1,) * (r - 2)
        elif form == "channel" and r == 2:
            bs = (s[0], 1)
        elif form == "unit" and r:
            i = self.ch.below(r)
            bs = s[:i] + (1,) + s[i + 1:]
        elif form == "suffix" and r:
            bs = s[1 + self.ch.below(r):] if r > 1 else s
        elif form == "both":
            ones = [i for i, x in enumerate(s) if x == 1]
            if ones:  # a has a unit axis: b is larger there, a elsewhere
                i = self.ch.pick(ones)
                bs = tuple(d if k == i else 1 for k in range(r))
            else:  # b gets a new leading axis, a unit axis where a is larger
                i = self.ch.below(r) if r else 0
                bs = (d,) + tuple(1 if k == i else x for k, x in enumerate(s))
            self.features.add("broadcast-both-ways")
        elif form == "higher" and r <= 3:
            bs = (d,) + s
        else:
            bs = s
        bs = tuple(bs)
        if op == "Div":
            b = self.weight(bs, a.dtype, "nonzero")
        elif form in ("scalar", "vector", "channel", "suffix") and self.ch.flag(0.7):
            b = self.weight(bs, a.dtype)  # a constant, as the rules' weight variables want
        else:
            b = self.operand(bs, a.dtype)
        out = _broadcast(s, bs)
        if out != s:
            self.features.add("broadcast")
        first, second = (b, a) if op != "Div" and self.ch.flag(0.3) else (a, b)
        return self.node(op, [first, second], [(a.dtype, out)])[0]

    def op_self(self, a: _V) -> _V:
        """x + x, x * x: the shape of many rules' sources (one value, two readers)."""
        op = self.ch.pick(("Add", "Mul")) if a.dtype != INT64 else "Add"
        return self.node(op, [a, a], [(a.dtype, a.shape)])[0]

    def op_matmul(self, a: _V, form: str | None = None) -> _V | None:
        s, r = a.shape, len(a.shape)
        if r == 0 or s[-1] == SYM:
            return None
        k = s[-1]
        forms = ["w2", "w2", "w2", "vec", "rt2", "left"] + (["batched"] if r >= 3 else [])
        form = form or self.ch.pick(forms)
        m = self.dim()
        if a.dtype == INT64:
            form = "w2"
        if form == "left":
            if r < 2 or s[-2] == SYM:
                form = "w2"
            else:
                k2 = s[-2]
                if self.ch.flag(0.3):
                    w = self.weight((k2,), a.dtype)
                    out = s[:-2] + (s[-1],)
                    self.features.add("matmul-1d")
                else:
                    w = self.weight((m, k2), a.dtype)
                    out = s[:-2] + (m, s[-1])
                return self.node("MatMul", [w, a], [(a.dtype, out)])[0]
        if form == "vec":
            b = self.weight((k,), a.dtype)
            self.features.add("matmul-1d")
            return self.node("MatMul", [a, b], [(a.dtype, s[:-1])])[0]
        if form == "batched" and r >= 3:
            b = self.operand(s[:-2] + (k, m), a.dtype, allow_const=SYM not in s)
        elif form == "rt2":
            b = self.operand((k, m), a.dtype, allow_const=False)
        else:
            b = self.weight((k, m), a.dtype)
        out = s[:-1] + (m,) if r >= 2 else (m,)
        if r == 1:
            self.features.add("matmul-1d")
        return self.node("MatMul", [a, b], [(a.dtype, out)])[0]

    def op_gemm(self, a: _V) -> _V | None:
        s = a.shape
        if len(s) != 2 or a.dtype == INT64:
            return None
        trans_a = s[0] != SYM and self.ch.flag(0.15)
        rows, k = (s[1], s[0]) if trans_a else (s[0], s[1])
        if k == SYM:
            return None
        n = self.dim()
        trans_b = self.ch.flag(0.3)
        b = self.weight((n, k) if trans_b else (k, n), a.dtype)
        ins = [a, b]
        cform = self.ch.pick((None, (n,), (), (1, n)))
        if cform is not None:
            ins.append(self.weight(cform, a.dtype))
        attrs: dict[str, Any] = {}
        if trans_a:
            attrs["transA"] = 1
        if trans_b:
            attrs["transB"] = 1
        if self.ch.flag(0.3):
            attrs["alpha"] = self.ch.pick((0.5, 2.0))
        if cform is not None and self.ch.flag(0.3):
            attrs["beta"] = self.ch.pick((0.5, 2.0))
        return self.node("Gemm", ins, [(a.dtype, (rows, n))], **attrs)[0]

    def _spatial_ok(self, a: _V, ranks: Sequence[int] = (4,)) -> bool:
        return (len(a.shape) in ranks and a.dtype != INT64
                and all(isinstance(x, int) for x in a.shape[1:]))

    def op_conv(self, a: _V) -> _V | None:
        if not self._spatial_ok(a):
            return None
        n, c, h, w = a.shape
        kernel, pads = self.ch.pick((((1, 1), (0, 0, 0, 0)), ((3, 3), (1, 1, 1, 1)),
                                     ((1, 3), (0, 1, 0, 1)), ((3, 1), (1, 0, 1, 0))))
        o = c if self.ch.flag(0.6) else self.dim()
        groups = [g for g in (2, 4) if c % g == 0 and o % g == 0 and c > 1]
        g = self.ch.pick(groups) if groups and self.ch.flag(0.25) else 1
        strides = (2, 2) if self.ch.flag(0.12) else (1, 1)
        wt = self.weight((o, c // g) + kernel, a.dtype)
        ins = [a, wt]
        if self.ch.flag(0.15):
            ins.append(self.weight((o,), a.dtype))
        attrs: dict[str, Any] = {}
        if strides == (1, 1) and kernel != (1, 1) and self.ch.flag(0.1):
            attrs["auto_pad"] = "SAME_UPPER"
        elif any(pads) or self.ch.flag(0.5):
            attrs["pads"] = list(pads)
        if strides != (1, 1) or self.ch.flag(0.3):
            attrs["strides"] = list(strides)
        if g > 1:
            attrs["group"] = g
        if self.ch.flag(0.3):
            attrs["kernel_shape"] = list(kernel)
        oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
        ow = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
        return self.node("Conv", ins, [(a.dtype, (n, o, oh, ow))], **attrs)[0]

    def op_pool(self, a: _V, op: str | None = None) -> _V | None:
        if not self._spatial_ok(a):
            return None
        op = op or self.ch.pick(("MaxPool", "AveragePool"))
        n, c, h, w = a.shape
        if h >= 2 and w >= 2 and self.ch.flag(0.3):
            k, s, pads = (2, 2), (2, 2), (0, 0, 0, 0)
        else:
            k, s, pads = (3, 3), (1, 1), (1, 1, 1, 1)
        attrs: dict[str, Any] = {"kernel_shape": list(k)}
        if any(pads):
            attrs["pads"] = list(pads)
        if s != (1, 1) or self.ch.flag(0.3):
            attrs["strides"] = list(s)
        if op == "AveragePool":
            attrs["count_include_pad"] = self.ch.pick((1, 0))
        oh = (h + pads[0] + pads[2] - k[0]) // s[0] + 1
        ow = (w + pads[1] + pads[3] - k[1]) // s[1] + 1
        return self.node(op, [a], [(a.dtype, (n, c, oh, ow))], **attrs)[0]

    def op_gap(self, a: _V) -> _V | None:
        if not self._spatial_ok(a, (3, 4)):
            return None
        out = a.shape[:2] + (1,) * (len(a.shape) - 2)
        return self.node("GlobalAveragePool", [a], [(a.dtype, out)])[0]

    def op_bn(self, a: _V) -> _V | None:
        if len(a.shape) not in (2, 3, 4) or a.shape[1] == SYM or a.dtype == INT64:
            return None
        c = a.shape[1]
        ins = [a, self.weight((c,), a.dtype), self.weight((c,), a.dtype),
               self.weight((c,), a.dtype), self.weight((c,), a.dtype, "pos")]
        attrs = {"epsilon": 1e-3} if self.ch.flag(0.2) else {}
        return self.node("BatchNormalization", ins, [(a.dtype, a.shape)], **attrs)[0]

    def op_ln(self, a: _V) -> _V | None:
        r = len(a.shape)
        if r == 0 or a.dtype == INT64:
            return None
        axis = -2 if r >= 2 and self.ch.flag(0.2) else -1
        norm = a.shape[axis:]
        if SYM in norm:
            return None
        ins = [a, self.weight(norm, a.dtype)]
        if self.ch.flag(0.6):
            ins.append(self.weight(norm, a.dtype))
        attrs = {"axis": axis} if axis != -1 or self.ch.flag(0.3) else {}
        return self.node("LayerNormalization", ins, [(a.dtype, a.shape)], **attrs)[0]

    def op_softmax(self, a: _V) -> _V | None:
        r = len(a.shape)
        if r == 0 or a.dtype == INT64:
            return None
        axis = self.ch.pick((-1,) + tuple(range(r)))
        attrs = {"axis": axis} if axis != -1 or self.ch.flag(0.3) else {}
        return self.node("Softmax", [a], [(a.dtype, a.shape)], **attrs)[0]

    def op_concat(self, a: _V, axis: int | None = None) -> tuple[_V, int, list[int]] | None:
        s, r = a.shape, len(a.shape)
        axes = [i for i in range(r) if s[i] != SYM]
        if not axes:
            return None
        ax = axis if axis is not None and axis in axes else self.ch.pick(axes)
        parts = [a]
        for _ in range(self.ch.pick((1, 1, 1, 2))):
            form = self.ch.pick(("self", "new", "pool", "const"))
            if form == "self":
                parts.append(a)
                continue
            if form == "pool":
                v = self.take(lambda u: u.dtype == a.dtype and len(u.shape) == r
                              and u.shape[ax] != SYM and all(
                                  x == y for i, (x, y) in enumerate(zip(u.shape, s)) if i != ax))
                if v is not None:
                    parts.append(v)
                    continue
            shape = s[:ax] + (self.dim(),) + s[ax + 1:]
            if form == "const" and SYM not in shape:
                parts.append(self.const(shape, a.dtype))
            else:
                parts.append(self.new_input(shape, a.dtype))
        if self.ch.flag(0.5):  # rotate the parts (the new one first, ...)
            k = self.ch.below(len(parts))
            parts = parts[k:] + parts[:k]
        sizes = [p.shape[ax] for p in parts]
        out = s[:ax] + (sum(sizes),) + s[ax + 1:]
        attr_axis = ax - r if self.ch.flag(0.2) else ax
        v = self.node("Concat", parts, [(a.dtype, out)], axis=attr_axis)[0]
        return v, ax, sizes

    def op_split(self, a: _V, axis: int | None = None,
                 sizes: Sequence[int] | None = None) -> list[_V] | None:
        s, r = a.shape, len(a.shape)
        if sizes is None:
            axes = [i for i in range(r) if s[i] != SYM and s[i] >= 2]
            if not axes:
                return None
            axis = self.ch.pick(axes)
            d = s[axis]
            form = self.ch.pick(("halves", "uneven", "three", "equal"))
            if form == "halves" and d % 2 == 0:
                sizes = [d // 2, d // 2]
            elif form == "three" and d >= 3:
                sizes = [1, 1, d - 2]
            elif form == "equal":
                k = next((k for k in (2, 3) if d % k == 0), None)
                if k is not None:
                    outs = [(a.dtype, s[:axis] + (d // k,) + s[axis + 1:])] * k
                    attrs = {"axis": axis} if axis or self.ch.flag(0.5) else {}
                    return self.node("Split", [a], outs, **attrs)
                sizes = [1, d - 1]
            else:
                sizes = [1, d - 1]
        assert axis is not None
        split = self.const((len(sizes),), INT64, param=True,
                           array=np.asarray(sizes, dtype=np.int64))
        outs = [(a.dtype, s[:axis] + (k,) + s[axis + 1:]) for k in sizes]
        attrs = {"axis": axis - r} if self.ch.flag(0.2) else {"axis": axis}
        return self.node("Split", [a, split], outs, **attrs)

    def op_transpose(self, a: _V, perm: Sequence[int] | None = None) -> _V | None:
        r = len(a.shape)
        if r < 2:
            return None
        if perm is None:
            p = list(range(r))
            for i in range(r - 1, 0, -1):
                j = self.ch.below(i + 1)
                p[i], p[j] = p[j], p[i]
            if p == list(range(r)):
                p.reverse()
            perm = p
        if list(perm) == list(reversed(range(r))) and self.ch.flag(0.2):
            attrs: dict[str, Any] = {}
        else:
            attrs = {"perm": list(perm)}
        out = tuple(a.shape[i] for i in perm)
        return self.node("Transpose", [a], [(a.dtype, out)], **attrs)[0]

    def op_reshape(self, a: _V) -> _V | None:
        s = a.shape
        if SYM in s:
            if s[0] != SYM or SYM in s[1:] or len(s) < 2:
                return None
            head: list[int] = [0]
            rest = list(s[1:])
        else:
            head, rest = [], list(s)
        form = self.ch.pick(("flatten", "merge", "split", "unsqueeze", "squeeze"))
        new = list(rest)
        if form == "flatten" or not rest:
            new = [_prod(rest)] if rest or not head else [1]
        elif form == "merge" and len(rest) >= 2:
            i = self.ch.below(len(rest) - 1)
            new = rest[:i] + [rest[i] * rest[i + 1]] + rest[i + 2:]
        elif form == "split" and any(x >= 4 and x % 2 == 0 for x in rest):
            i = self.ch.pick([k for k, x in enumerate(rest) if x >= 4 and x % 2 == 0])
            new = rest[:i] + [2, rest[i] // 2] + rest[i + 1:]
        elif form == "squeeze" and 1 in rest:
            i = rest.index(1)
            new = rest[:i] + rest[i + 1:]
        else:
            i = self.ch.below(len(rest) + 1)
            new = rest[:i] + [1] + rest[i:]
        if len(head) + len(new) > 4:
            return None
        target = head + list(new)
        if new and self.ch.flag(0.3):
            target[len(head) + self.ch.below(len(new))] = -1
        shape = self.const((len(target),), INT64, param=True,
                           array=np.asarray(target, dtype=np.int64))
        out = ((SYM,) if head else ()) + tuple(new)
        return self.node("Reshape", [a, shape], [(a.dtype, out)])[0]

    def op_flatten(self, a: _V) -> _V | None:
        s, r = a.shape, len(a.shape)
        if r == 0:
            return None
        if SYM in s:
            if s[0] != SYM or SYM in s[1:] or r < 2:
                return None
            out = (SYM, _prod(s[1:]))
            return self.node("Flatten", [a], [(a.dtype, out)], axis=1)[0]
        axis = self.ch.below(r + 1)
        out = (_prod(s[:axis]), _prod(s[axis:]))
        attrs = {"axis": axis} if axis != 1 or self.ch.flag(0.3) else {}
        return self.node("Flatten", [a], [(a.dtype, out)], **attrs)[0]

    def random_op(self, a: _V) -> _V | None:
        if a.dtype == INT64:
            ops = ["unary", "binary", "self", "matmul", "concat", "split", "transpose",
                   "reshape", "flatten"]
        else:
            ops = ["unary", "binary", "self", "matmul", "gemm", "conv", "maxpool", "avgpool",
                   "gap", "bn", "ln", "softmax", "concat", "split", "transpose", "reshape",
                   "flatten"]
        op = self.ch.pick(ops)
        if op == "concat":
            got = self.op_concat(a)
            return got[0] if got else None
        if op == "split":
            outs = self.op_split(a)
            return outs[0] if outs else None
        if op == "maxpool":
            return self.op_pool(a, "MaxPool")
        if op == "avgpool":
            return self.op_pool(a, "AveragePool")
        fn = {"unary": self.op_unary, "binary": self.op_binary, "self": self.op_self,
              "matmul": self.op_matmul, "gemm": self.op_gemm, "conv": self.op_conv,
              "gap": self.op_gap, "bn": self.op_bn, "ln": self.op_ln,
              "softmax": self.op_softmax, "transpose": self.op_transpose,
              "reshape": self.op_reshape, "flatten": self.op_flatten}[op]
        return fn(a)

    # -- motifs: small subgraphs shaped like the shipped rules' sources

    def motif_mm_chain(self) -> None:
        a: _V | None = self.activation((2, 3, 2, 1, 4), pred=lambda u: u.shape[-1] != SYM)
        for _ in range(1 + self.ch.below(3)):
            if a is None:
                return
            if self.ch.flag(0.3):
                a = self.op_binary(a, self.ch.pick(("Mul", "Add")), ("scalar", "vector"))
            if self.ch.flag(0.15):
                a = self.op_unary(a, "Relu")
            a = self.op_matmul(a, "vec" if self.ch.flag(0.2) else "w2")
        if a is not None and a.shape and self.ch.flag(0.3):
            self.op_binary(a, "Add", ("vector",))

    def motif_vec_mm(self) -> None:
        a = self.activation((2, 3), pred=lambda u: u.shape[-1] != SYM)
        v = self.op_binary(a, self.ch.pick(("Mul", "Add")), ("vector", "scalar"))
        if v is not None:
            self.op_matmul(v, "w2")

    def motif_conv(self) -> None:
        a = self.activation((4,), pred=lambda u: self._spatial_ok(u))
        if not self._spatial_ok(a):
            return
        x = self.op_conv(a)
        if x is None:
            return
        if self.ch.flag(0.5):
            x = self.op_binary(x, self.ch.pick(("Mul", "Add")), ("scalar", "channel"))
        if self.ch.flag(0.2):
            x = self.op_bn(x) or x
        if self.ch.flag(0.4):
            x = self.op_unary(x, "Relu")
        if self.ch.flag(0.3):
            y = self.op_conv(a)
            if y is not None and y.shape[2:] == x.shape[2:] and y.shape[0] == x.shape[0]:
                if y.shape == x.shape and self.ch.flag(0.4):
                    x = self.node("Add", [x, y], [(x.dtype, x.shape)])[0]
                else:
                    c = x.shape[1] + y.shape[1]
                    x = self.node("Concat", [x, y], [(x.dtype, x.shape[:1] + (c,) + x.shape[2:])],
                                  axis=1)[0]
        if self.ch.flag(0.2):
            x = self.op_pool(x) or x
        if x.shape == a.shape and self.ch.flag(0.2):
            self.node("Add", [x, a], [(x.dtype, x.shape)])

    def motif_concat_split(self) -> None:
        a = self.activation((2, 3, 4, 1))
        got = self.op_concat(a)
        if got is None:
            return
        c, axis, sizes = got
        if self.ch.flag(0.4):
            c = self.op_self(c) if self.ch.flag(0.5) else self.op_unary(c)
        if self.ch.flag(0.7):
            self.op_split(c, axis, sizes)

    def motif_elementwise(self) -> None:
        a: _V | None = self.activation((4, 3, 2, 1, 0))
        for _ in range(1 + self.ch.below(3)):
            if a is None:
                return
            form = self.ch.pick(("const", "self", "unary", "any"))
            if form == "const":
                a = self.op_binary(a, self.ch.pick(("Mul", "Add", "Sub")),
                                   ("scalar", "channel", "vector") if a.shape else ("scalar",))
            elif form == "self":
                a = self.op_self(a)
            elif form == "unary":
                a = self.op_unary(a)
            else:
                a = self.op_binary(a)

    def motif_transpose(self) -> None:
        a = self.activation((2, 3, 4))
        t = self.op_transpose(a)
        if t is None:
            return
        form = self.ch.pick(("matmul", "concat", "binary", "back", "unary"))
        if form == "matmul":
            self.op_matmul(t)
        elif form == "concat":
            self.op_concat(t)
        elif form == "binary":
            self.op_binary(t)
        elif form == "back":
            perm = [int(x) for x in _transpose_perm(self.nodes[-1], len(a.shape))]
            inv = [perm.index(i) for i in range(len(perm))]
            self.op_transpose(t, inv)
        else:
            self.op_unary(t)

    def motif_int(self) -> None:
        a: _V | None = self.activation((1, 2, 3, 0), INT64)
        self.features.add("int64")
        for _ in range(1 + self.ch.below(3)):
            if a is None:
                return
            a = self.random_op(a)

    def motif_random(self) -> None:
        a = self.activation()
        self.random_op(a)

    def motif_twin(self) -> None:
        """Two equal nodes on the same inputs, combined (TASO's rules are full of
        `(Concat (Conv ?t ?k) (Conv ?t ?k))` and `(Add (MatMul ?x ?a) (MatMul ?x ?a))`)."""
        cands = [n for n in self.nodes if len(n.output) == 1 and n.op_type != "Split"]
        if not cands:
            self.motif_random()
            return
        node = cands[len(cands) - 1 - self.ch.below(min(len(cands), 4))]
        src = next((v for v in self.produced if v.name == node.output[0]), None)
        if src is None or None in src.shape:
            self.motif_random()
            return
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = self._name(f"{node.op_type}_")
        out = _V(self._name("t"), src.dtype, src.shape)
        del twin.output[:]
        twin.output.append(out.name)
        self.nodes.append(twin)
        self.pool.append(out)
        self.produced.append(out)
        form = self.ch.pick(("concat", "add", "mul", "concat", "sub"))
        axes = [i for i, d in enumerate(src.shape) if d != SYM]
        if form == "concat" and axes:
            ax = self.ch.pick(axes)
            shape = src.shape[:ax] + (src.shape[ax] * 2,) + src.shape[ax + 1:]
            self.node("Concat", [src, out], [(src.dtype, shape)], axis=ax)
        else:
            op = {"add": "Add", "mul": "Mul", "sub": "Sub"}.get(form, "Add")
            if src.dtype == INT64 and op == "Mul":
                op = "Add"
            self.node(op, [src, out], [(src.dtype, src.shape)])

    def motif_siblings(self) -> None:
        """One input, two nodes of one op with their own weights, joined by Add or Concat
        (the shape of QKV projections and Inception branches)."""
        kind = self.ch.pick(("matmul", "conv", "unary", "pool"))
        if kind == "conv" or kind == "pool":
            a = self.activation((4,), pred=lambda u: self._spatial_ok(u))
        else:
            a = self.activation((2, 3, 1, 4), pred=lambda u: u.shape[-1] != SYM)
        outs = []
        for _ in range(2):
            if kind == "matmul":
                outs.append(self.op_matmul(a, "w2"))
            elif kind == "conv":
                outs.append(self.op_conv(a))
            elif kind == "pool":
                outs.append(self.op_pool(a))
            else:
                outs.append(self.op_unary(a, self.ch.pick(("Relu", "Sigmoid", "Tanh"))))
        x, y = outs
        if x is None or y is None or len(x.shape) != len(y.shape):
            return
        diff = [i for i, (p, q) in enumerate(zip(x.shape, y.shape)) if p != q]
        if not diff and self.ch.flag(0.4):
            self.node(self.ch.pick(("Add", "Mul")), [x, y], [(x.dtype, x.shape)])
            return
        if len(diff) > 1:
            return
        axes = diff or [i for i, d in enumerate(x.shape) if d != SYM]
        if not axes:
            return
        ax = axes[0] if diff else self.ch.pick(axes)
        shape = x.shape[:ax] + (x.shape[ax] + y.shape[ax],) + x.shape[ax + 1:]
        self.node("Concat", [x, y], [(x.dtype, shape)], axis=ax)

    def motif_nest(self) -> None:
        """Concat of a Concat on the same axis, or an Add/Mul of an Add/Mul."""
        a = self.activation((2, 3, 4, 1))
        if self.ch.flag(0.5):
            got = self.op_concat(a)
            if got is not None:
                c, axis, _ = got
                self.op_concat(c if self.ch.flag(0.5) else a, axis)
                if self.ch.flag(0.5) and c.shape:
                    self.op_concat(c, axis)
            return
        op = self.ch.pick(("Add", "Mul"))
        x = self.op_binary(a, op, ("same", "scalar"))
        if x is not None:
            self.op_binary(x, op, ("same", "scalar"))

    def motif_rule(self) -> None:
        """A shipped rule's source pattern, instantiated at its example's shapes or at mutated
        ones (other ranks, per-channel and vector weights, a symbolic batch), its tensor
        variables bound to values already in the graph where shapes allow."""
        if not self.rules:
            self.motif_random()
            return
        rule = self.rules[self.ch.below(len(self.rules))]
        for attempt in range(4):
            shapes = {k: tuple(v) for k, v in rule.example.items()}
            if any(k not in shapes for k in rule.vars):
                break
            if attempt or self.ch.flag(0.5):
                self._mutate_shapes(shapes, rule)
            for name, kind in sorted(rule.vars.items()):
                s = shapes[name]
                # The symbolic batch only where its run-time size is the dim it replaces, so
                # the dims it must agree with agree at run time.
                if kind == "tensor" and self.sym and s and s[0] == self.batch \
                        and self.ch.flag(0.5):
                    shapes[name] = (SYM,) + s[1:]
            got = _instantiate(rule, shapes, self.fdt, self)
            if got is not None:
                self.features.add("rule-instance")
                if attempt or shapes != {k: tuple(v) for k, v in rule.example.items()}:
                    self.features.add("rule-instance-mutated")
                return
        self.motif_random()

    def _mutate_shapes(self, shapes: dict[str, tuple], rule: Any) -> None:
        names = sorted(shapes)
        tensors = [shapes[n] for n in names if rule.vars.get(n) == "tensor"]
        for _ in range(1 + self.ch.below(2)):
            name = self.ch.pick(names)
            s = shapes[name]
            form = self.ch.pick(("channel", "vector", "drop", "prepend", "scalar", "unit"))
            if form == "channel":
                four = [t for t in tensors if len(t) == 4]
                c = four[0][1] if four else (s[0] if s else self.dim())
                s = (c, 1, 1)
            elif form == "vector":
                s = (tensors[0][-1],) if tensors and tensors[0] else (self.dim(),)
            elif form == "drop" and s:
                s = s[1:]
            elif form == "prepend" and len(s) < 4:
                s = (self.dim(),) + s
            elif form == "scalar":
                s = ()
            elif s:
                i = self.ch.below(len(s))
                s = s[:i] + (1,) + s[i + 1:]
            shapes[name] = tuple(s)

    # (motif, weight): about one motif in four instantiates a rule; the rest build natural
    # graphs biased towards the rules' shapes.
    MOTIFS = (("rule", 7), ("random", 3), ("mm_chain", 3), ("conv", 3), ("twin", 4),
              ("siblings", 3), ("concat_split", 2), ("elementwise", 2), ("vec_mm", 1),
              ("transpose", 1), ("nest", 1))

    def build(self) -> None:
        for _ in range(self.p.min_motifs + self.ch.below(self.p.max_motifs
                                                          - self.p.min_motifs + 1)):
            name = self.ch.weighted(self.MOTIFS)
            getattr(self, f"motif_{name}")()
            if len(self.nodes) >= self.p.max_nodes:
                break
        if self.ch.flag(self.p.p_int_island):
            self.motif_int()
        if not self.nodes:
            self.op_unary(self.activation())


def _transpose_perm(node: onnx.NodeProto, rank: int) -> list[int]:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return list(reversed(range(rank)))


def _instantiate(rule: Any, shapes: dict[str, tuple], dtype: int, b: _Builder) -> bool | None:
    """Build `rule`'s source patterns over values of these shapes (through the IR, so the
    registry's shape inference decides what type-checks), export them and splice the nodes into
    `b`. None (nothing added) when the shapes do not type-check."""
    from superopt import Graph, TensorType, Value, to_onnx
    from superopt.core.pattern import Bindings, build

    tensors, bound = {}, {}
    inputs = []
    for name, kind in sorted(rule.vars.items()):
        shape = shapes[name]
        if kind == "weight":
            if SYM in shape:
                return None
            arr = b._array(shape, dtype, "pos" if "var" in name else "normal")
            tensors[name] = Value.const(arr, name=f"fz_c_{name}")
        else:
            v = Value.input(f"fz_v_{name}", TensorType(dtype, shape))
            tensors[name] = v
            inputs.append(v)
    try:
        roots = [build(p, Bindings(tensors)) for p in rule.src]
        model = to_onnx(Graph(inputs, [(f"fz_o{i}", r) for i, r in enumerate(roots)]))
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:
        return None
    # The registry's inference is not the judge of validity (it may accept what ORT refuses,
    # e.g. a rank-2 perm on a rank-3 tensor): the instance must run.
    feeds = {i.name: np.zeros([b.batch if d == SYM else d for d in shapes[
        i.name.removeprefix("fz_v_")]], dtype=_NP[dtype]) for i in model.graph.input}
    if run_model(model, feeds).outputs is None:
        return None
    types = {vi.name: vi.type.tensor_type for vi in list(inferred.graph.value_info)
             + list(inferred.graph.output) + list(inferred.graph.input)}
    if not model.graph.node:
        return None
    rename: dict[str, str] = {}
    for vi in model.graph.input:
        shape = shapes[vi.name.removeprefix("fz_v_")]
        same = None
        if b.ch.flag(0.5):
            same = b.take(lambda u, shape=shape: u.shape == shape and u.dtype == dtype)
        if same is None:
            same = b.new_input(shape, dtype)
        bound[vi.name] = same
        rename[vi.name] = same.name
    for t in model.graph.initializer:
        new = onnx.TensorProto()
        new.CopyFrom(t)
        new.name = rename[t.name] = b._name("w")
        if t.data_type != INT64 and b.ch.flag(0.2):
            # a weight computed from constants (half of it, times 2: exact in binary), as a
            # kernel an earlier rewrite scaled or concatenated is: rules bind it as a weight
            half = numpy_helper.to_array(t) / 2
            new = numpy_helper.from_array(half, b._name("w"))
            two = numpy_helper.from_array(np.array(2, half.dtype), b._name("w"))
            b.inits += [new, two]
            b.nodes.append(helper.make_node("Mul", [new.name, two.name], [rename[t.name]],
                                            name=b._name("Mul_")))
            b.features.add("computed-weight")
            continue
        b.inits.append(new)
    for node in model.graph.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.name = b._name(f"{node.op_type}_")
        if n.op_type in ("Add", "Mul") and len(n.input) == 2 and b.ch.flag(0.5):
            # the other operand order, as exporters also write it: the matcher tries both
            n.input[0], n.input[1] = node.input[1], node.input[0]
        for k, x in enumerate(n.input):
            if x:
                n.input[k] = rename[x]
                b.used.add(rename[x])
        outs = []
        for k, x in enumerate(node.output):
            rename[x] = n.output[k] = b._name("t")
            tt = types.get(x)
            if tt is None or not tt.HasField("shape"):
                continue
            # A dim computed from the symbol (N + N after a Concat) is unknown here (None):
            # such a value becomes a graph output, never another node's operand.
            dims = tuple(d.dim_value if d.HasField("dim_value")
                         else (SYM if d.dim_param == SYM else None) for d in tt.shape.dim)
            outs.append(_V(rename[x], tt.elem_type, dims))
        b.nodes.append(n)
        b.pool.extend(v for v in outs if None not in v.shape)
        b.produced.extend(outs)
    return True


@dataclass
class Case:
    """One generated model, how to reproduce it and what it covers."""

    model: onnx.ModelProto
    choices: list[int]
    seed: int | str | None = None
    index: int | None = None
    features: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.seed}:{self.index}" if self.index is not None else str(self.seed)

    @property
    def n_nodes(self) -> int:
        return len(self.model.graph.node)


def generate(seed: int | str | None = None, params: GenParams | None = None, *,
             choices: Sequence[int] | None = None, index: int | None = None,
             rules: Sequence[Any] = ()) -> Case:
    """A random valid model: from `seed` (fresh draws) or replayed from `choices`.

    Example:
        >>> case = generate("1:0")
        >>> case.model.opset_import[0].version
        17
    """
    params = params or GenParams()
    ch = Choices(seed=seed, prefix=choices)
    b = _Builder(ch, params, rules)
    b.build()
    outs = [v for v in b.produced if v.name not in b.used]
    taps = [v for v in b.produced if v.name in b.used and ch.flag(params.p_tap)]
    if taps:
        b.features.add("intermediate-output")
    if len(outs) + len(taps) > 1 and ch.flag(0.3):
        k = ch.below(len(outs) + len(taps))
        order = outs + taps
        order = order[k:] + order[:k]
    else:
        order = outs + taps
    out_infos = [helper.make_tensor_value_info(v.name, v.dtype, list(v.shape)) for v in order]
    if any(v.dtype == INT64 for v in order):
        b.features.add("int64")
    graph = helper.make_graph(b.nodes, "fuzz", b.inputs + b.overridable, out_infos, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="superopt-fuzz")
    meta = {"version": GENERATOR_VERSION, "dims": {SYM: b.batch}, "domains": b.domains}
    helper.set_model_props(model, {META_KEY: json.dumps(meta, sort_keys=True)})
    # One runtime value read by two or more nodes.
    reads = Counter(i for n in b.nodes for i in set(n.input) if i)
    if any(c > 1 for name, c in reads.items()
           if name not in {t.name for t in b.inits}):
        b.features.add("shared-value")
    return Case(model, list(ch.record), seed, index, frozenset(b.features))


# ---------------------------------------------------------------------------------------------
# feeds, running, comparing


def _meta(model: onnx.ModelProto) -> dict:
    for p in model.metadata_props:
        if p.key == META_KEY:
            try:
                return json.loads(p.value)
            except ValueError:
                return {}
    return {}


def _draw(rng: np.random.Generator, shape: tuple, elem: int, domain: str) -> np.ndarray:
    dtype = _NP.get(elem, np.float32)
    if np.issubdtype(dtype, np.integer):
        if domain == "normal":
            a = rng.integers(-4, 5, size=shape)
        else:
            a = rng.integers(1, 4, size=shape)
            if domain == "nonzero":
                a = a * rng.choice(np.array([-1, 1]), size=shape)
        return np.asarray(a, dtype=dtype)
    if domain == "pos":
        a = rng.uniform(0.5, 2.0, size=shape)
    elif domain == "nonzero":
        a = rng.uniform(0.5, 2.0, size=shape) * rng.choice(np.array([-1.0, 1.0]), size=shape)
    else:
        a = rng.standard_normal(size=shape)
    return np.asarray(a, dtype=dtype)


def make_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed inputs from each input's domain (recorded in the model's metadata); a
    symbolic dim gets the size the generator chose for it (1 when none is recorded)."""
    meta = _meta(model)
    dims, domains = meta.get("dims", {}), meta.get("domains", {})
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue  # an overridable initializer keeps its default
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else int(dims.get(d.dim_param, 1))
                      for d in tt.shape.dim)
        feeds[vi.name] = _draw(rng, shape, tt.elem_type, domains.get(vi.name, "normal"))
    return feeds


class _Ran:
    """The outputs of one model run, or why it could not run."""

    def __init__(self, outputs: dict[str, np.ndarray] | None = None, kind: str = "",
                 detail: str = "") -> None:
        self.outputs = outputs
        self.kind = kind
        self.detail = detail


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> _Ran:
    """ORT, CPU provider, every graph optimization off, one thread."""
    from superopt.runtime import make_session

    try:
        session = make_session(model, "cpu", level="disable", threads=1)
    except Exception as e:  # ModelError, or anything ORT raises while loading
        return _Ran(kind="ort-load", detail=_line(e))
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        return _Ran(kind="interface", detail=f"new inputs {missing}")
    try:
        outs = session.run(None, {n: feeds[n] for n in names}, _quiet_run())
    except Exception as e:
        return _Ran(kind="ort-run", detail=_line(e))
    return _Ran(dict(zip([o.name for o in session.get_outputs()], outs)))


def _quiet_run() -> Any:
    """Run options that keep ORT's native log quiet: a failing run is a result here, and its
    message is in the exception."""
    import onnxruntime as ort  # RunOptions only; sessions come from superopt.runtime

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


def compare_outputs(want: dict[str, np.ndarray],
                    got: dict[str, np.ndarray]) -> tuple[str, str] | None:
    """None when every output agrees, else (kind, detail): `interface`, `dtype`, `shape`,
    `nan-pattern` (NaN/±Inf at different places) or `mismatch` (beyond tolerance)."""
    if list(want) != list(got):
        return "interface", f"outputs {list(got)}, the original {list(want)}"
    for name, a in want.items():
        b = np.asarray(got[name])
        a = np.asarray(a)
        if a.dtype != b.dtype:
            return "dtype", f"{name}: {b.dtype}, the original {a.dtype}"
        if a.shape != b.shape:
            return "shape", f"{name}: shape {b.shape}, the original {a.shape}"
        if a.size == 0:
            continue
        if a.dtype.kind in "iub":
            if not np.array_equal(a, b):
                bad = int(np.sum(a != b))
                return "mismatch", f"{name}: {bad}/{a.size} elements differ (exact dtype)"
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        for what, fn in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
            if not np.array_equal(fn(a64), fn(b64)):
                return "nan-pattern", (f"{name}: {what} at {int(np.sum(fn(b64)))} places, the "
                                       f"original at {int(np.sum(fn(a64)))}")
        fin = np.isfinite(a64)
        if not fin.any():
            continue
        rtol, atol = TOLERANCE.get(_onnx_dtype(a.dtype), (1e-4, 1e-5))
        scale = max(1.0, float(np.max(np.abs(a64[fin]))))
        err = np.abs(a64[fin] - b64[fin])
        tol = atol * scale + rtol * np.abs(a64[fin])
        if np.any(err > tol):
            i = int(np.argmax(err - tol))
            return "mismatch", (f"{name}: max abs error {float(err.max()):.3g} (scale "
                                f"{scale:.3g}; e.g. {float(b64[fin][i]):.5g} vs "
                                f"{float(a64[fin][i]):.5g})")
    return None


def _onnx_dtype(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:240]}"


def _interface(model: onnx.ModelProto) -> tuple[list, list]:
    inits = {t.name for t in model.graph.initializer}
    ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input
           if i.name not in inits]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    return ins, outs


# ---------------------------------------------------------------------------------------------
# the checks


@dataclass(frozen=True)
class FuzzConfig:
    """How hard each case is checked (the defaults are what CI runs)."""

    per_rule_limit: int = 20  # matches per rule and graph
    case_match_cap: int = 120  # matches applied per case (round robin over rules)
    search: bool = True
    search_budget: int = 20  # expansions
    search_time_s: float = 2.0
    cost: str = "mixed"  # node | analytic | mixed (alternate by case)
    feed_seed: int = 0


@dataclass
class Failure:
    """One failed check. `check`: case (the generator made an invalid model), load,
    roundtrip, match or search; `kind`: what went wrong; `rule_id`: the rule applied."""

    check: str
    kind: str
    rule_id: str | None
    detail: str
    cause: str = ""
    binding: str = ""
    case: str = ""
    step: int | None = None
    cost: str = ""  # the search's cost model (node or analytic), for a search failure

    @property
    def signature(self) -> tuple[str, str, str | None]:
        return (self.check, self.kind, self.rule_id)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class CaseReport:
    """What checking one model did and found."""

    matches: int = 0
    applied: int = 0
    refused: int = 0
    duplicates: int = 0
    capped: int = 0
    rules_matched: set[str] = field(default_factory=set)
    searched: bool = False
    search_rewrites: int = 0
    search_changed: bool = False
    nodes: int = 0
    failures: list[Failure] = field(default_factory=list)


def load_proved_rules(path: str | os.PathLike | None = None) -> list:
    """The proved rules of a rule file (default: the shipped database)."""
    from superopt.core.rules import load_rules

    return [r for r in load_rules(path).rules if r.proved]


def _shape_text(shape: Sequence | None) -> str:
    return "?" if shape is None else "(" + ",".join(str(d) for d in shape) + ")"


def classify(rule: Any, bindings: Any) -> tuple[str, str]:
    """(cause, the bindings' shapes against the rule's example) for a failing match.

    Causes: `rank:<how>` when a variable (a weight, if any weight is) is bound at another rank
    than in the example the rule was proved at: `per-channel` (a scalar there, a `(C,1,1)`-like
    constant here), `vector` (a scalar there, a `(D,)` here), `1-d-operand` (a matrix there, a
    vector here) or `other`, joined with `+` when several apply; `broadcast` (same ranks, a
    size-1 dim where the example had none); `shape` (same ranks, other sizes); `same` (the
    example's shapes)."""
    how: dict[str, set[str]] = {"weight": set(), "tensor": set()}
    broadcast, shapes = [], []
    parts = []
    for name in sorted(bindings.tensors):
        v = bindings.tensors[name]
        shape = getattr(v, "shape", None)
        ex = rule.example.get(name)
        parts.append(f"?{name}={_shape_text(shape)}"
                     + (f" (proved at {_shape_text(ex)})" if ex is not None else ""))
        if ex is None or shape is None:
            continue
        if len(shape) != len(ex):
            kind = how["weight" if rule.vars.get(name) == "weight" else "tensor"]
            if len(ex) == 0 and len(shape) >= 2 and all(d == 1 for d in shape[1:]):
                kind.add("per-channel")
            elif len(ex) == 0 and len(shape) == 1:
                kind.add("vector")
            elif len(ex) >= 2 and len(shape) == 1:
                kind.add("1-d-operand")
            else:
                kind.add("other")
        elif any(d == 1 and e != 1 for d, e in zip(shape, ex)):
            broadcast.append(name)
        elif tuple(shape) != tuple(ex):
            shapes.append(name)
    text = ", ".join(parts)
    # A weight at another rank says more than an activation at another rank (rules are meant
    # to hold for activations of any rank), so weights decide when there are both.
    ranked = how["weight"] or how["tensor"]
    if ranked:
        return "rank:" + "+".join(sorted(ranked)), text
    if broadcast:
        return "broadcast", text
    if shapes:
        return "shape", text
    return "same", text


class Checker:
    """Runs the checks of one model against a rule set.

    Example:
        >>> checker = Checker(load_proved_rules())             # doctest: +SKIP
        >>> checker.check(generate("1:0").model).failures      # doctest: +SKIP
        []
    """

    def __init__(self, rules: Sequence[Any], config: FuzzConfig | None = None) -> None:
        from superopt.search import RuleIndex

        self.rules = list(rules)
        self.index = RuleIndex(self.rules)
        self.config = config or FuzzConfig()

    def cost_kind(self, parity: int) -> str:
        kind = self.config.cost
        if kind == "mixed":
            kind = "node" if parity % 2 == 0 else "analytic"
        return kind

    @staticmethod
    def _cost(kind: str) -> Any:
        from superopt.cost_model import NodeCount
        from superopt.cost_model.analytic import AnalyticCost

        return NodeCount() if kind == "node" else AnalyticCost.for_device("cpu")

    def check(self, model: onnx.ModelProto, *, label: str = "", matches: bool = True,
              search: bool | None = None, parity: int = 0, cost: str | None = None,
              only_rules: Sequence[Any] | None = None) -> CaseReport:
        """All checks of one model (see the module doc); never raises for a superopt error.

        The search's cost model alternates with `parity` (config `mixed`) unless `cost`
        (node or analytic) says which."""
        import superopt

        report = CaseReport(nodes=len(model.graph.node))
        cfg = self.config
        search = cfg.search if search is None else search

        def fail(check: str, kind: str, rule_id: str | None, detail: str, **kw: Any) -> None:
            report.failures.append(Failure(check, kind, rule_id, detail, case=label, **kw))

        feeds = make_feeds(model, cfg.feed_seed)
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:
            fail("case", "invalid-case", None, _line(e))
            return report
        ref = run_model(model, feeds)
        if ref.outputs is None:
            fail("case", "invalid-case", None, f"the original does not run: {ref.detail}")
            return report
        interface = _interface(model)
        try:
            graph = superopt.load(model)
        except Exception as e:
            fail("load", "load-error", None, _line(e))
            return report
        bad = self._differs(graph, interface, feeds, ref.outputs)
        if bad is not None:
            fail("roundtrip", bad[0], None, bad[1])
            return report
        if matches:
            self._check_matches(graph, interface, feeds, ref.outputs, report, fail, only_rules)
        if search:
            self._check_search(graph, interface, feeds, ref.outputs, report, fail,
                               cost or self.cost_kind(parity))
        return report

    def _differs(self, graph: Any, interface: tuple, feeds: dict,
                 ref: dict) -> tuple[str, str] | None:
        import superopt

        try:
            proto = superopt.to_onnx(graph)
        except Exception as e:
            return "export-error", _line(e)
        ins, outs = _interface(proto)
        if [n for n, _ in ins] != [n for n, _ in interface[0]] or outs != interface[1]:
            return "interface", (f"inputs {[n for n, _ in ins]} outputs {outs}, the original "
                                 f"{[n for n, _ in interface[0]]} {interface[1]}")
        ran = run_model(proto, feeds)
        if ran.outputs is None:
            return ran.kind, ran.detail
        return compare_outputs(ref, ran.outputs)

    def _check_matches(self, graph: Any, interface: tuple, feeds: dict, ref: dict,
                       report: CaseReport, fail: Callable[..., None],
                       only_rules: Sequence[Any] | None) -> None:
        from superopt.search import Refused, RuleIndex, apply_match, find_matches
        from superopt.search.match import nodes_by_op

        index = self.index if only_rules is None else RuleIndex(only_rules)
        by_op = nodes_by_op(graph)
        per_rule = []
        for rule in index.candidates(by_op):
            try:
                found = find_matches(graph, rule, by_op=by_op, limit=self.config.per_rule_limit)
            except Exception as e:
                fail("match", "match-crash", rule.id, _line(e))
                continue
            if found:
                per_rule.append(found)
                report.rules_matched.add(rule.id)
                report.matches += len(found)
        seen = {graph}
        for m in _round_robin(per_rule):
            if report.applied >= self.config.case_match_cap:
                report.capped += 1
                continue
            try:
                applied = apply_match(graph, m)
            except Refused:
                report.refused += 1
                continue
            except Exception as e:
                fail("match", "apply-crash", m.rule.id, _line(e))
                continue
            if applied.graph in seen:
                report.duplicates += 1
                continue
            seen.add(applied.graph)
            report.applied += 1
            bad = self._differs(applied.graph, interface, feeds, ref)
            if bad is not None:
                cause, binding = classify(m.rule, m.bindings)
                fail("match", bad[0], m.rule.id, bad[1], cause=cause, binding=binding)

    def _check_search(self, graph: Any, interface: tuple, feeds: dict, ref: dict,
                      report: CaseReport, fail: Callable[..., None], cost: str) -> None:
        from superopt.search import SearchLimits, search_auto

        cfg = self.config
        limits = SearchLimits(budget=cfg.search_budget, time_limit_s=cfg.search_time_s,
                              max_matches_per_rule=cfg.per_rule_limit, keep_candidates=1)
        report.searched = True
        try:
            result = search_auto(graph, self.index, self._cost(cost), limits)
        except Exception as e:
            fail("search", "search-crash", None, _line(e))
            return
        report.search_rewrites = len(result.steps)
        if result.best == graph:
            return
        report.search_changed = True
        bad = self._differs(result.best, interface, feeds, ref)
        if bad is None:
            return
        for i, step in enumerate(result.steps):
            b = self._differs(step.after, interface, feeds, ref)
            if b is not None:
                cause, binding = _classify_step(step)
                fail("search", b[0], step.rule.id, b[1], cause=cause, binding=binding, step=i,
                     cost=cost)
                return
        fail("search", bad[0], None, bad[1], cost=cost)


def _classify_step(step: Any) -> tuple[str, str]:
    from superopt.search import find_matches

    try:
        for m in find_matches(step.before, step.rule):
            if tuple(m.roots) == tuple(step.replaced):
                return classify(step.rule, m.bindings)
    except Exception:
        pass
    return "", ""


def _round_robin(groups: list[list]) -> Iterable:
    """One match of each rule in turn, so a cap still tries every rule that matched."""
    for i in range(max((len(g) for g in groups), default=0)):
        for g in groups:
            if i < len(g):
                yield g[i]


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class FuzzSummary:
    """Counts over a run, and its failures."""

    seed: int
    cases: int = 0
    cases_with_match: int = 0
    matches: int = 0
    applied: int = 0
    refused: int = 0
    duplicates: int = 0
    capped: int = 0
    searched: int = 0
    search_changed: int = 0
    search_rewrites: int = 0
    nodes: int = 0
    rules: int = 0
    rules_path: str = ""
    rules_matched: set[str] = field(default_factory=set)
    features: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    failing_cases: dict[str, Case] = field(default_factory=dict, repr=False)
    elapsed_s: float = 0.0
    regressions: list[str] = field(default_factory=list)

    def add(self, case: Case, report: CaseReport) -> None:
        self.cases += 1
        self.nodes += report.nodes
        self.features.update(case.features)
        self.cases_with_match += bool(report.rules_matched)
        self.matches += report.matches
        self.applied += report.applied
        self.refused += report.refused
        self.duplicates += report.duplicates
        self.capped += report.capped
        self.searched += report.searched
        self.search_changed += report.search_changed
        self.search_rewrites += report.search_rewrites
        self.rules_matched |= report.rules_matched
        self.failures.extend(report.failures)
        if report.failures:
            self.failing_cases[case.label] = case

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def by_signature(self) -> list[tuple[tuple, int, int, Failure]]:
        """(signature, failures, cases, first failure), most frequent first."""
        count: Counter = Counter()
        cases: dict[tuple, set[str]] = {}
        first: dict[tuple, Failure] = {}
        for f in self.failures:
            count[f.signature] += 1
            cases.setdefault(f.signature, set()).add(f.case)
            first.setdefault(f.signature, f)
        return [(sig, n, len(cases[sig]), first[sig]) for sig, n in count.most_common()]

    def by_cause(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter] = {}
        for f in self.failures:
            out.setdefault(f.cause or f.kind, Counter())[f.rule_id or "-"] += 1
        return {k: dict(v.most_common()) for k, v in sorted(out.items())}

    def text(self) -> str:
        pct = 100.0 * self.cases_with_match / self.cases if self.cases else 0.0
        lines = [
            f"superopt fuzz: seed {self.seed}, {self.cases} cases, "
            f"{self.rules} proved rules ({self.rules_path})",
            f"  cases                 {self.cases} ({self.nodes} nodes; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.features.items())) + ")",
            f"  cases with a match    {self.cases_with_match} ({pct:.1f}%), "
            f"{len(self.rules_matched)} distinct rules matched",
            f"  matches               {self.matches} found, {self.applied} applied and run "
            f"({self.refused} refused, {self.duplicates} duplicate graphs, "
            f"{self.capped} over the per-case cap)",
            f"  search                {self.searched} searched, {self.search_changed} changed "
            f"the graph, {self.search_rewrites} rewrites on best paths",
            f"  failures              {len(self.failures)} in {len(self.failing_cases)} cases",
        ]
        for (check, kind, rule_id), n, ncases, f in self.by_signature():
            lines.append(f"    {rule_id or '-':<12} {check:<9} {kind:<13} {n:>4} failures in "
                         f"{ncases:>3} cases  {f.cause or ''} e.g. case {f.case}: "
                         f"{f.detail[:100]}")
        causes = self.by_cause()
        if causes:
            lines.append("  by cause")
            for cause, rules in causes.items():
                lines.append(f"    {cause:<12} {sum(rules.values()):>5} failures, "
                             f"{len(rules)} rules: "
                             + ", ".join(f"{r} ({n})" for r, n in list(rules.items())[:12])
                             + (" ..." if len(rules) > 12 else ""))
        for r in self.regressions:
            lines.append(f"  regression saved      {r}")
        lines.append(f"  time                  {self.elapsed_s:.1f} s "
                     f"({self.elapsed_s / max(self.cases, 1) * 1e3:.0f} ms per case)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"seed": self.seed, "cases": self.cases, "cases_with_match": self.cases_with_match,
                "matches": self.matches, "applied": self.applied, "refused": self.refused,
                "duplicates": self.duplicates, "capped": self.capped,
                "searched": self.searched, "search_changed": self.search_changed,
                "search_rewrites": self.search_rewrites, "rules": self.rules,
                "rules_matched": len(self.rules_matched), "features": dict(self.features),
                "failures": [f.to_json() for f in self.failures],
                "by_cause": self.by_cause(), "regressions": self.regressions,
                "elapsed_s": round(self.elapsed_s, 2)}


def fuzz(cases: int, seed: int, *, rules: Sequence[Any] | None = None,
         rules_path: str | os.PathLike | None = None, config: FuzzConfig | None = None,
         params: GenParams | None = None, start: int = 0,
         progress: Callable[[int, FuzzSummary], None] | None = None) -> FuzzSummary:
    """Generate and check `cases` models (case i has the seed "SEED:i")."""
    t0 = time.perf_counter()
    rules = load_proved_rules(rules_path) if rules is None else list(rules)
    checker = Checker(rules, config)
    summary = FuzzSummary(seed=seed, rules=len(rules),
                          rules_path=str(rules_path or "shipped rules_db/rules.json"))
    for i in range(start, start + cases):
        label = f"{seed}:{i}"
        try:
            case = generate(label, params, index=i, rules=rules)
        except Exception as e:  # a generator bug: reported, never hidden
            case = Case(onnx.ModelProto(), [], seed, i)
            report = CaseReport(failures=[Failure("case", "generator-crash", None, _line(e),
                                                  case=label)])
        else:
            case.seed = seed
            try:
                report = checker.check(case.model, label=label, parity=i)
            except Exception as e:
                report = CaseReport(failures=[Failure("case", "checker-crash", None, _line(e),
                                                      case=label)])
        summary.add(case, report)
        if progress is not None:
            progress(i - start + 1, summary)
    summary.elapsed_s = time.perf_counter() - t0
    return summary


# ---------------------------------------------------------------------------------------------
# minimization and regression cases


def _reproduces(checker: Checker, model: onnx.ModelProto, sig: tuple, rule: Any | None,
                cost: str = "") -> bool:
    check, kind, rule_id = sig
    if check == "match" and rule is not None:
        report = checker.check(model, search=False, only_rules=[rule])
    elif check == "search":
        report = checker.check(model, matches=False, search=True, cost=cost or None)
    else:
        report = checker.check(model, matches=False, search=False)
    return any(f.signature == sig for f in report.failures)


def _shrink_choices(choices: list[int], test: Callable[[list[int]], bool],
                    budget: int, deadline: float) -> list[int]:
    """Shorten and lower a choice sequence while `test` holds (deletions of blocks, then
    each value lowered to 0, halved, minus one)."""
    best = list(choices)
    evals = 0

    def ok(cand: list[int]) -> bool:
        nonlocal evals
        if evals >= budget or time.perf_counter() > deadline:
            return False
        evals += 1
        return test(cand)

    improved = True
    while improved and evals < budget and time.perf_counter() < deadline:
        improved = False
        for k in (16, 8, 4, 2, 1):
            i = len(best) - k
            while i >= 0:
                cand = best[:i] + best[i + k:]
                if ok(cand):
                    best, improved = cand, True
                i -= k if k > 2 else 1
        for i in range(len(best)):
            if best[i] == 0:
                continue
            for v in sorted({0, best[i] // 2, best[i] - 1}):
                if v >= best[i]:
                    continue
                cand = best[:i] + [v] + best[i + 1:]
                if ok(cand):
                    best, improved = cand, True
                    break
    return best


def _infer_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inf = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out = {}
    for vi in list(inf.graph.value_info) + list(inf.graph.output) + list(inf.graph.input):
        out[vi.name] = vi
    return out


def _prune(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop dead nodes, and inputs and initializers nothing reads."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in live]
    del g.initializer[:]
    g.initializer.extend(inits)
    ins = [i for i in g.input if i.name in live]
    del g.input[:]
    g.input.extend(ins)
    return m


def _model_variants(model: onnx.ModelProto) -> Iterable[onnx.ModelProto]:
    """Smaller models: one output fewer, one node cut into a new input, one unary node
    bypassed."""
    g = model.graph
    if len(g.output) > 1:
        for i in range(len(g.output)):
            m = onnx.ModelProto()
            m.CopyFrom(model)
            del m.graph.output[i]
            yield _prune(m)
    try:
        types = _infer_types(model)
    except Exception:
        types = {}
    outputs = {o.name for o in g.output}
    for i, node in enumerate(g.node):
        if any(o in outputs for o in node.output):
            continue
        if not all(o in types and types[o].type.tensor_type.HasField("shape")
                   for o in node.output if o):
            continue
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.node[i]
        for o in node.output:
            if o:
                vi = onnx.ValueInfoProto()
                vi.CopyFrom(types[o])
                m.graph.input.append(vi)
        yield _prune(m)
    for i, node in enumerate(g.node):
        if node.op_type not in UNARY or node.output[0] in outputs:
            continue
        m = onnx.ModelProto()
        m.CopyFrom(model)
        del m.graph.node[i]
        for n in m.graph.node:
            for k, name in enumerate(n.input):
                if name == node.output[0]:
                    n.input[k] = node.input[0]
        yield _prune(m)


def _shrink_model(model: onnx.ModelProto, test: Callable[[onnx.ModelProto], bool],
                  budget: int, deadline: float) -> onnx.ModelProto:
    best = model
    evals = 0
    improved = True
    while improved and evals < budget and time.perf_counter() < deadline:
        improved = False
        for cand in _model_variants(best):
            if evals >= budget or time.perf_counter() > deadline:
                break
            if len(cand.graph.node) > len(best.graph.node) or not cand.graph.node:
                continue
            evals += 1
            try:
                good = test(cand)
            except Exception:
                good = False
            if good:
                best, improved = cand, True
                break
    return best


@dataclass
class Minimized:
    """A shrunk failing case: the model, the failure it still shows, sizes before and after."""

    model: onnx.ModelProto
    failure: Failure
    choices: list[int]
    nodes_before: int
    nodes_after: int
    seconds: float


def minimize(case: Case, failure: Failure, checker: Checker, *, params: GenParams | None = None,
             budget: int = 400, time_limit_s: float = 60.0) -> Minimized | None:
    """Shrink `case` while `failure` (its check, kind and rule) persists: first the choice
    sequence (regenerating), then the model (outputs, nodes). None if it does not reproduce."""
    t0 = time.perf_counter()
    deadline = t0 + time_limit_s
    sig = failure.signature
    cost = failure.cost
    rule = next((r for r in checker.rules if r.id == failure.rule_id), None)
    if not _reproduces(checker, case.model, sig, rule, cost):
        return None

    def test_choices(cand: list[int]) -> bool:
        try:
            cand_case = generate(None, params, choices=cand, rules=checker.rules)
            return _reproduces(checker, cand_case.model, sig, rule, cost)
        except Exception:
            return False

    choices = _shrink_choices(case.choices, test_choices, budget // 2, deadline)
    shrunk = generate(None, params, choices=choices, rules=checker.rules)
    model = shrunk.model if _reproduces(checker, shrunk.model, sig, rule, cost) else case.model
    model = _shrink_model(model, lambda m: _reproduces(checker, m, sig, rule, cost), budget // 2,
                          deadline + 15.0)
    # The failure as the final model shows it (details, cause).
    if sig[0] == "match" and rule is not None:
        report = checker.check(model, search=False, only_rules=[rule])
    else:
        report = checker.check(model, matches=sig[0] == "match", search=sig[0] == "search",
                               cost=cost or None)
    final = next((f for f in report.failures if f.signature == sig), failure)
    return Minimized(model, final, choices, case.n_nodes, len(model.graph.node),
                     time.perf_counter() - t0)


def regression_id(failure: Failure) -> str:
    return f"{failure.rule_id or failure.check}-{failure.check}-{failure.kind}"


def describe_defect(failure: Failure, rule: Any | None) -> str:
    """A one-line statement of the defect a failure exhibits."""
    if failure.check in ("match", "search") and rule is not None:
        what = {
            "rank:per-channel": "proved for a scalar, matched at a per-channel (C,1,1) "
                                "constant",
            "rank:vector": "proved for a scalar, matched at a (D,) vector",
            "rank:1-d-operand": "proved for matrices, matched at a 1-D operand",
            "broadcast": "proved at its example's shapes, matched where a size-1 dim "
                         "broadcasts",
            "shape": "proved at its example's shapes, matched at other sizes",
            "same": "fails at the ranks it was proved at",
        }.get(failure.cause, "proved at the ranks of its example, matched at other ranks"
              if failure.cause.startswith("rank") else "unsound where it matched")
        return (f"unsound rule {rule.id} {' | '.join(str(p) for p in rule.src)} => "
                f"{' | '.join(str(p) for p in rule.dst)}: {what} ({failure.binding}); "
                f"{failure.kind}: {failure.detail}")
    return f"{failure.check} {failure.kind}: {failure.detail}"


def save_regression(folder: str | os.PathLike, mini: Minimized, *, rule: Any | None,
                    found_by: dict, checker: Checker) -> Path | None:
    """Write `<id>.onnx` and `<id>.json`, after confirming that the saved files replay the
    failure; None (nothing written) when they do not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rid = regression_id(mini.failure)
    f = mini.failure
    doc = {
        "format": REGRESSION_FORMAT,
        "id": rid,
        "model": f"{rid}.onnx",
        "check": f.check,
        "kind": f.kind,
        "rule_id": f.rule_id,
        "rule": ({"src": [str(p) for p in rule.src], "dst": [str(p) for p in rule.dst],
                  "vars": dict(rule.vars), "conditions": list(rule.conditions),
                  "example": {k: list(v) for k, v in rule.example.items()}}
                 if rule is not None else None),
        "cause": f.cause,
        "defect": describe_defect(f, rule),
        "detail": f.detail,
        "binding": f.binding,
        "status": "open: fails while the defect is present",
        "found_by": found_by,
        "replay": "tests/test_fuzz.py loads the .onnx and checks every proved rule's matches "
                  "on it (and the search, for a search failure); `found_by.choices` replays "
                  "the case as found (`shrunk_choices`: after shrinking the choices, before "
                  "shrinking the model) with superopt.testing.fuzz.generate(choices=..., "
                  "rules=<the proved rules of the time>)",
        "minimized": {"nodes_before": mini.nodes_before, "nodes_after": mini.nodes_after,
                      "seconds": round(mini.seconds, 1)},
        "feed_seed": checker.config.feed_seed,
        "cost": f.cost,
    }
    model_path = folder / f"{rid}.onnx"
    json_path = folder / f"{rid}.json"
    onnx.save(mini.model, str(model_path))
    json_path.write_text(_dump_json(doc))
    failures = replay_regression(json_path, rules=checker.rules, config=checker.config)
    if not any(x.signature == f.signature for x in failures):
        model_path.unlink()
        json_path.unlink()
        return None
    return json_path


def _dump_json(doc: dict) -> str:
    """Indented JSON with lists of numbers kept on one line."""
    text = json.dumps(doc, indent=1)
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text) + "\n"


def replay_regression(path: str | os.PathLike, *, rules: Sequence[Any] | None = None,
                      config: FuzzConfig | None = None) -> list[Failure]:
    """The failures a saved regression case shows today: every rule's matches (and the search,
    for a case found by the search) on its model. Empty once the defect is fixed."""
    path = Path(path)
    doc = json.loads(path.read_text())
    model = onnx.load(str(path.parent / doc["model"]))
    rules = load_proved_rules() if rules is None else rules
    config = replace(config or FuzzConfig(), feed_seed=int(doc.get("feed_seed", 0)))
    checker = Checker(rules, config)
    return checker.check(model, label=doc["id"], search=doc.get("check") == "search",
                         cost=doc.get("cost") or None).failures


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m superopt.testing.fuzz",
                                 description="Differential fuzzing of the rules and the search "
                                             "against ONNX Runtime.")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="index of the first case")
    ap.add_argument("--rules", default=None, help="rule file (default: the shipped database)")
    ap.add_argument("--minimize", action="store_true",
                    help="shrink each distinct failure and save it as a regression case")
    ap.add_argument("--out", default=None,
                    help="folder for regression cases and summary.json (with --minimize, "
                         "default tests/fuzz_regressions)")
    ap.add_argument("--no-search", action="store_true", help="only the rule-match checks")
    ap.add_argument("--search-budget", type=int, default=FuzzConfig.search_budget)
    ap.add_argument("--match-cap", type=int, default=FuzzConfig.case_match_cap)
    ap.add_argument("--case", default=None, help="check one case SEED:INDEX and print it")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    config = FuzzConfig(search=not args.no_search, search_budget=args.search_budget,
                        case_match_cap=args.match_cap)
    rules = load_proved_rules(args.rules)
    if args.case:
        seed_s, _, index_s = args.case.partition(":")
        case = generate(f"{seed_s}:{index_s}", index=int(index_s), rules=rules)
        print(onnx.printer.to_text(case.model.graph))
        print("features:", ", ".join(sorted(case.features)))
        report = Checker(rules, config).check(case.model, label=args.case, parity=int(index_s))
        print(f"matches {report.matches}, applied {report.applied}, rules "
              f"{sorted(report.rules_matched)}, search rewrites {report.search_rewrites}")
        for f in report.failures:
            print(f"FAIL {f.check} {f.kind} {f.rule_id} {f.cause} {f.binding} {f.detail}")
        return 1 if report.failures else 0

    print(f"fuzz: seed {args.seed}, cases {args.start}..{args.start + args.cases - 1} "
          f"(case i is seed \"{args.seed}:i\"; rerun one with --case {args.seed}:i)", flush=True)

    def progress(done: int, s: FuzzSummary) -> None:
        if not args.quiet and (done % 250 == 0 or done == args.cases):
            print(f"  {done}/{args.cases} cases, {len(s.failures)} failures, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    summary = fuzz(args.cases, args.seed, rules=rules,
                   rules_path=args.rules, config=config, start=args.start, progress=progress)
    out = Path(args.out) if args.out else (DEFAULT_REGRESSIONS if args.minimize else None)
    if args.minimize and summary.failures:
        checker = Checker(rules, config)
        by_id = {r.id: r for r in rules}
        done: set[tuple] = set()
        matched_rules = {f.rule_id for f in summary.failures if f.check == "match"}
        for sig, _, _, first in summary.by_signature():
            if sig in done:
                continue
            done.add(sig)
            if sig[0] == "search" and sig[2] in matched_rules:
                continue  # the same rule's match failure is the smaller regression
            if (out / f"{regression_id(first)}.json").exists():
                print(f"  {sig}: a regression case is already saved", file=sys.stderr)
                continue
            case = summary.failing_cases[first.case]
            mini = minimize(case, first, checker)
            if mini is None:
                print(f"  {sig}: does not reproduce alone; not saved", file=sys.stderr)
                continue
            found_by = {"seed": args.seed, "case": case.index,
                        "generator_version": GENERATOR_VERSION, "choices": case.choices,
                        "shrunk_choices": mini.choices}
            saved = save_regression(out, mini, rule=by_id.get(mini.failure.rule_id),
                                    found_by=found_by, checker=checker)
            if saved is not None:
                summary.regressions.append(
                    f"{saved} ({mini.nodes_before} -> {mini.nodes_after} nodes)")
    print(summary.text())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=1))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
