"""The axiom language and its two interpretations.

Axioms and rule translations are written once against a small algebra of tensor primitives
(element-wise ops, MatMul, Conv, pools, binary Concat, Slice, Transpose, the weight helpers
(including the BatchNormalization fold helpers and a Conv bias as an NCHW tensor),
BatchNormalization, and opaque "generic" ops). Two classes implement it:

- `Symbolic`: tensors are an uninterpreted Z3 sort, each primitive an uninterpreted function,
  integer attributes Z3 Ints (quantifiable), shapes through `dim(t, i)` / `rank(t)`. This is
  what the axiomatic prover reasons in, valid for all shapes.
- `Concrete`: tensors are numpy object arrays of Z3 reals at concrete shapes, each primitive
  computed exactly by each op's bounded Z3 encoding (`OpDef.z3`, applied by
  `superopt.verifier.semantics`). The bounded check runs every axiom through it, so a wrong
  axiom shows up as a counterexample.

The axioms themselves are declared next to their ops (`superopt.core.ops`, as
`superopt.core.axiom_spec.Axiom` data) and only ever call methods of an algebra object.

Example:
    >>> import numpy as np
    >>> A = Concrete()
    >>> a = A.tensor("a", (1, 2)); b = A.tensor("b", (1, 3))
    >>> A.dim(A.cat(1, a, b), 1)
    5
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import z3

from superopt.verifier.semantics import BoundedContext, bounded_apply

MAX_RANK = 6  # typing facts are stated per dim up to this rank


def perm_code(perm: Sequence[int]) -> int:
    """A unique integer for a permutation (digits, with a leading 1 to keep the length)."""
    return int("1" + "".join(str(p) for p in perm))


class Symbolic:
    """Uninterpreted-function interpretation (one Z3 function per primitive)."""

    def __init__(self) -> None:
        self.T = z3.DeclareSort("Tensor")
        Int, T = z3.IntSort(), self.T
        self._dim = z3.Function("dim", T, Int, Int)
        self._rank = z3.Function("rank", T, Int)
        self._fns: dict[tuple, z3.FuncDeclRef] = {}
        self.perms: set[tuple[int, ...]] = set()
        # While `collect_typing` is on (lowering a rule's source), each primitive records the
        # shape facts that hold because it type-checks: the rule only fires where it does.
        self.collect_typing = False
        self.typing: list[z3.BoolRef] = []
        self._sig = {
            "MatMul": (T, T, T),
            "Conv": (T, T) + (Int,) * 7 + (T,),
            "Concat": (Int, T, T, T),
            "Slice": (T, Int, Int, Int, T),
            "Transpose": (T, Int, T),
            "EnlargeKernel": (T, T, T),
            "BatchNormalization": (T, T, T, T, T, z3.RealSort(), T),
            "BatchNormFoldKernel": (T, T, T, z3.RealSort(), T),
            "BatchNormFoldBias": (T, T, T, T, z3.RealSort(), T),
            "BiasNCHW": (T, T),
        }

    # ---- building blocks
    def fn(self, name: str, *sig: z3.SortRef) -> z3.FuncDeclRef:
        key = (name, sig)
        f = self._fns.get(key)
        if f is None:
            f = self._fns[key] = z3.Function(name, *sig)
        return f

    def _prim(self, name: str) -> z3.FuncDeclRef:
        return self.fn(name, *self._sig[name])

    def tensor(self, name: str, rank: int | None = None) -> z3.ExprRef:
        t = z3.Const(name, self.T)
        self.typed(self.rank(t) >= 0, *self._per_dim(t, lambda k: self.dim(t, k) >= 1))
        return t

    def int(self, name: str) -> z3.ArithRef:
        return z3.Int(name)

    def dim(self, t: z3.ExprRef, i: Any) -> z3.ArithRef:
        return self._dim(t, i)

    def rank(self, t: z3.ExprRef) -> z3.ArithRef:
        return self._rank(t)

    @staticmethod
    def all(*conds: Any) -> Any:
        conds = [c for c in conds if c is not True]
        return z3.And(*conds) if conds else True

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        return z3.If(c, a, b)

    @staticmethod
    def div(a: Any, b: Any) -> Any:
        """Integer division (Z3's on integer terms)."""
        return a / b if isinstance(a, z3.ArithRef) or isinstance(b, z3.ArithRef) else a // b

    # ---- typing facts of the source pattern
    def typed(self, *facts: Any) -> None:
        """Record shape facts that hold because the term type-checks (while lowering a
        rule's source, see `collect_typing`)."""
        if self.collect_typing:
            self.typing.extend(f for f in facts if f is not True)

    def _per_dim(self, a, fact) -> list:
        return [z3.Implies(k < self.rank(a), fact(k)) for k in range(MAX_RANK)]

    # ---- primitives
    def unary(self, name: str, x: z3.ExprRef) -> z3.ExprRef:
        return self.fn(name, self.T, self.T)(x)

    def binary(self, name: str, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
        D = self.dim
        self.typed(*[z3.Implies(self.rank(a) == self.rank(b), f) for f in self._per_dim(
            a, lambda k: z3.Or(D(a, k) == D(b, k), D(a, k) == 1, D(b, k) == 1))])
        return self.fn(name, self.T, self.T, self.T)(a, b)

    def matmul(self, a, b):
        self.typed(self.dim(a, self.rank(a) - 1) == self.dim(b, self.rank(b) - 2))
        return self._prim("MatMul")(a, b)

    def conv(self, x, w, p: Sequence[Any]):
        self.typed(self.dim(x, 1) == p[6] * self.dim(w, 1), self.rank(x) == 4,
                    self.rank(w) == 4, p[0] >= 1, p[1] >= 1, p[6] >= 1,
                    *[q >= 0 for q in p[2:6]],
                    self.dim(x, 2) + p[2] + p[4] >= self.dim(w, 2),
                    self.dim(x, 3) + p[3] + p[5] >= self.dim(w, 3))
        return self._prim("Conv")(x, w, *p)

    def pool(self, kind: str, x, p: Sequence[Any]):
        self.typed(self.rank(x) == 4, p[0] >= 1, p[1] >= 1, p[2] >= 1, p[3] >= 1)
        return self.fn(kind, self.T, *([z3.IntSort()] * 9), self.T)(x, *p)

    def cat(self, axis, a, b):
        self.typed(self.rank(a) == self.rank(b), axis >= 0, axis < self.rank(a), *self._per_dim(
            a, lambda k: z3.Or(k == axis, self.dim(a, k) == self.dim(b, k))))
        return self._prim("Concat")(axis, a, b)

    def slice(self, x, axis, start, length):
        self.typed(start >= 0, length >= 1, start + length <= self.dim(x, axis), axis >= 0,
                    axis < self.rank(x))
        return self._prim("Slice")(x, axis, start, length)

    def transpose(self, x, perm: Sequence[int]):
        self.typed(self.rank(x) == len(perm))
        self.perms.add(tuple(perm))
        return self._prim("Transpose")(x, perm_code(perm))

    def enlarge(self, w, ref):
        self.typed(self.rank(w) == 4, self.rank(ref) == 4, self.dim(w, 2) <= self.dim(ref, 2),
                    self.dim(w, 3) <= self.dim(ref, 3))
        return self._prim("EnlargeKernel")(w, ref)

    def like(self, name: str, w):
        """IdentityKernelLike / IdentityMatrixLike / OnesLike of a weight."""
        return self.fn(name, self.T, self.T)(w)

    def bn(self, x, s, b, m, v, eps: Any):
        # ONNX: scale, bias, mean and var are 1-D of the channel count.
        self.typed(self.rank(x) >= 2, *[f for p in (s, b, m, v) for f in (
            self.rank(p) == 1, self.dim(p, 0) == self.dim(x, 1))])
        return self._prim("BatchNormalization")(x, s, b, m, v, _real(eps))

    def fold_kernel(self, w, s, v, eps: Any):
        """BatchNormFoldKernel: w scaled per output channel (axis 0) by s / sqrt(v + eps)."""
        return self._prim("BatchNormFoldKernel")(w, s, v, _real(eps))

    def fold_bias(self, s, b, m, v, eps: Any):
        """BatchNormFoldBias: b - m * s / sqrt(v + eps)."""
        return self._prim("BatchNormFoldBias")(s, b, m, v, _real(eps))

    def channel(self, c):
        """A 1-D per-channel vector as an NCHW tensor (1, C, 1, 1): how a Conv adds its bias."""
        self.typed(self.rank(c) == 1)
        return self._prim("BiasNCHW")(c)

    def generic(self, key: str, args: Sequence[Any], n_out: int = 1) -> list:
        """An op with no axioms: one uninterpreted function per (op, attributes, output)."""
        return [self.fn(f"{key}#{k}", *([self.T] * len(args)), self.T)(*args)
                for k in range(n_out)]


def _real(e: Any) -> z3.ArithRef:
    """A real-valued attribute (epsilon): a literal, or a rule parameter / quantified real."""
    if isinstance(e, z3.ArithRef):
        return z3.ToReal(e) if e.is_int() else e
    return z3.RealVal(e)


class Concrete:
    """Exact interpretation over numpy object arrays of Z3 reals (bounded checks)."""

    def __init__(self, ctx: BoundedContext | None = None) -> None:
        self.ctx = ctx or BoundedContext()

    def tensor(self, name: str, shape: Sequence[int]) -> np.ndarray:
        return self.ctx.tensor(name, shape)

    def int(self, name: str) -> int:
        raise TypeError("concrete instances give every integer a value")

    @staticmethod
    def dim(t: np.ndarray, i: int) -> int:
        return int(t.shape[i])

    @staticmethod
    def rank(t: np.ndarray) -> int:
        return t.ndim

    @staticmethod
    def all(*conds: Any) -> bool:
        return all(bool(c) for c in conds)

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        return a if c else b

    @staticmethod
    def div(a: int, b: int) -> int:
        return a // b

    @staticmethod
    def typed(*facts: Any) -> None:
        """Shape facts hold by construction at concrete shapes: nothing to record."""

    def _op(self, op: str, attrs: dict, inputs: list) -> list:
        return bounded_apply(self.ctx, op, attrs, inputs)

    def unary(self, name, x):
        return self._op(name, {}, [x])[0]

    def binary(self, name, a, b):
        return self._op(name, {}, [a, b])[0]

    def matmul(self, a, b):
        return self._op("MatMul", {}, [a, b])[0]

    def conv(self, x, w, p):
        sh, sw, pt, pl, pb, pr, g = (int(v) for v in p)
        if min(pt, pl, pb, pr) < 0 or sh < 1 or sw < 1:
            raise ValueError(f"conv parameters out of range: {p}")
        attrs = {"strides": (sh, sw), "pads": (pt, pl, pb, pr), "dilations": (1, 1), "group": g}
        return self._op("Conv", attrs, [x, w])[0]

    def pool(self, kind, x, p):
        kh, kw, sh, sw, pt, pl, pb, pr, cip = (int(v) for v in p)
        attrs = {"kernel_shape": (kh, kw), "strides": (sh, sw), "pads": (pt, pl, pb, pr),
                 "ceil_mode": 0}
        if kind == "AveragePool":
            attrs["count_include_pad"] = cip
        else:
            attrs["dilations"] = (1, 1)
        return self._op(kind, attrs, [x])[0]

    @staticmethod
    def cat(axis, a, b):
        return np.concatenate([a, b], axis=int(axis))

    @staticmethod
    def slice(x, axis, start, length):
        axis, start, length = int(axis), int(start), int(length)
        if start < 0 or length < 0 or start + length > x.shape[axis]:
            raise ValueError(f"slice [{start}, {start + length}) out of range {x.shape[axis]}")
        return np.take(x, np.arange(start, start + length), axis=axis)

    @staticmethod
    def transpose(x, perm):
        return np.transpose(x, tuple(perm))

    def enlarge(self, w, ref):
        return self._op("EnlargeKernel", {}, [w, ref])[0]

    def like(self, name, w):
        return self._op(name, {}, [w])[0]

    def bn(self, x, s, b, m, v, eps):
        return self._op("BatchNormalization", {"epsilon": eps}, [x, s, b, m, v])[0]

    def fold_kernel(self, w, s, v, eps):
        return self._op("BatchNormFoldKernel", {"epsilon": eps}, [w, s, v])[0]

    def fold_bias(self, s, b, m, v, eps):
        return self._op("BatchNormFoldBias", {"epsilon": eps}, [s, b, m, v])[0]

    @staticmethod
    def channel(c):
        return c.reshape(1, -1, 1, 1)
