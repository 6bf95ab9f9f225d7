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
  axiom shows up as a counterexample. It is total: an op that does not apply at the given
  shapes gives an `Undefined` term instead of raising, and a dim past a tensor's rank (which
  the symbolic world leaves unconstrained) is `UNKNOWN`, so an axiom's guard and each of its
  sides can be judged separately at any shapes (three-valued: True, False or UNKNOWN).

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

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import z3

from superopt.core.ops.weights import per_channel_nchw
from superopt.verifier.semantics import BoundedContext, bounded_apply

MAX_RANK = 6  # typing facts are stated per dim up to this rank


def perm_code(perm: Sequence[int]) -> int:
    """A unique integer for a permutation (digits, with a leading 1 to keep the length)."""
    return int("1" + "".join(str(p) for p in perm))


# ---------------------------------------------------------------------------------------------
# Typing facts: what holds because a primitive's term type-checks. Written once against the
# algebra (A.all / A.any / A.implies / A.dim / A.rank), so that `Symbolic` states them as Z3
# hypotheses and `Concrete` evaluates the very same facts at concrete shapes (the bounded
# check of an axiom admits a case only where its guard and these facts can hold, exactly as
# the axiom's premise does; and a fact that is false where the op applies is reported).


def _per_dim(A, a, fact) -> list:
    return [A.implies(k < A.rank(a), fact(k)) for k in range(MAX_RANK)]


def typing_tensor(A, t) -> list:
    return [A.rank(t) >= 0, *_per_dim(A, t, lambda k: A.dim(t, k) >= 1)]


def typing_binary(A, name, a, b) -> list:
    D = A.dim
    return [A.implies(A.rank(a) == A.rank(b), f) for f in _per_dim(
        A, a, lambda k: A.any(D(a, k) == D(b, k), D(a, k) == 1, D(b, k) == 1))]


def typing_matmul(A, a, b) -> list:
    return [A.dim(a, A.rank(a) - 1) == A.dim(b, A.rank(b) - 2)]


def typing_conv(A, x, w, p) -> list:
    # p = (sh, sw, pt, pl, pb, pr, g, dh, dw); the dilated kernel must fit the padded input
    return [A.dim(x, 1) == p[6] * A.dim(w, 1), A.rank(x) == 4, A.rank(w) == 4, p[0] >= 1,
            p[1] >= 1, p[6] >= 1, p[7] >= 1, p[8] >= 1, *[q >= 0 for q in p[2:6]],
            A.dim(x, 2) + p[2] + p[4] >= (A.dim(w, 2) - 1) * p[7] + 1,
            A.dim(x, 3) + p[3] + p[5] >= (A.dim(w, 3) - 1) * p[8] + 1]


def typing_pool(A, kind, x, p) -> list:
    return [A.rank(x) == 4, p[0] >= 1, p[1] >= 1, p[2] >= 1, p[3] >= 1]


def typing_cat(A, axis, a, b) -> list:
    return [A.rank(a) == A.rank(b), axis >= 0, axis < A.rank(a), *_per_dim(
        A, a, lambda k: A.any(k == axis, A.dim(a, k) == A.dim(b, k)))]


def typing_slice(A, x, axis, start, length) -> list:
    return [start >= 0, length >= 1, start + length <= A.dim(x, axis), axis >= 0,
            axis < A.rank(x)]


def typing_transpose(A, x, perm) -> list:
    return [A.rank(x) == len(perm)]


def typing_enlarge(A, w, ref) -> list:
    return [A.rank(w) == 4, A.rank(ref) == 4, A.dim(w, 2) <= A.dim(ref, 2),
            A.dim(w, 3) <= A.dim(ref, 3)]


LIKE_RANK = {"IdentityKernelLike": 4, "IdentityMatrixLike": 2}  # OnesLike: any rank


def typing_like(A, name, w) -> list:
    return [A.rank(w) == LIKE_RANK[name]] if name in LIKE_RANK else []


def typing_bn(A, x, s, b, m, v, eps) -> list:
    # ONNX: scale, bias, mean and var are 1-D of the channel count.
    return [A.rank(x) >= 2, *[f for p in (s, b, m, v) for f in (
        A.rank(p) == 1, A.dim(p, 0) == A.dim(x, 1))]]


def typing_channel(A, c) -> list:
    return [A.rank(c) == 1]


def typing_scale_axis0(A, w, s) -> list:
    # s holds one factor per slice of w along axis 0: shape (dim(w, 0), 1, ..., 1)
    return [A.rank(w) >= 1, A.rank(s) >= 1, A.dim(s, 0) == A.dim(w, 0),
            *_per_dim(A, s, lambda k: A.any(k == 0, A.dim(s, k) == 1))]


def typing_channel_vector(A, c) -> list:
    return [per_channel_nchw(A, c)]


def typing_none(A, *args) -> list:
    return []


TYPING = {
    "unary": typing_none, "binary": typing_binary, "matmul": typing_matmul,
    "conv": typing_conv, "pool": typing_pool, "cat": typing_cat, "slice": typing_slice,
    "transpose": typing_transpose, "enlarge": typing_enlarge, "like": typing_like,
    "bn": typing_bn, "fold_kernel": typing_none, "fold_bias": typing_none,
    "channel": typing_channel, "scale_axis0": typing_scale_axis0,
    "channel_vector": typing_channel_vector,
}


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
            "Conv": (T, T) + (Int,) * 9 + (T,),
            "Concat": (Int, T, T, T),
            "Slice": (T, Int, Int, Int, T),
            "Transpose": (T, Int, T),
            "EnlargeKernel": (T, T, T),
            "BatchNormalization": (T, T, T, T, T, z3.RealSort(), T),
            "BatchNormFoldKernel": (T, T, T, z3.RealSort(), T),
            "BatchNormFoldBias": (T, T, T, T, z3.RealSort(), T),
            "BiasNCHW": (T, T),
            "ScaleAxis0": (T, T, T),
            "ChannelVector": (T, T),
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
        self.typed(*typing_tensor(self, t))
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
    def any(*conds: Any) -> Any:
        if any(c is True for c in conds):
            return True
        conds = [c for c in conds if c is not False]
        return z3.Or(*conds) if conds else False

    @staticmethod
    def implies(a: Any, b: Any) -> Any:
        if a is False or b is True:
            return True
        if a is True:
            return b
        return z3.Implies(a, b)

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

    # ---- primitives
    def unary(self, name: str, x: z3.ExprRef) -> z3.ExprRef:
        return self.fn(name, self.T, self.T)(x)

    def binary(self, name: str, a: z3.ExprRef, b: z3.ExprRef) -> z3.ExprRef:
        self.typed(*typing_binary(self, name, a, b))
        return self.fn(name, self.T, self.T, self.T)(a, b)

    def matmul(self, a, b):
        self.typed(*typing_matmul(self, a, b))
        return self._prim("MatMul")(a, b)

    def conv(self, x, w, p: Sequence[Any]):
        self.typed(*typing_conv(self, x, w, p))
        return self._prim("Conv")(x, w, *p)

    def pool(self, kind: str, x, p: Sequence[Any]):
        self.typed(*typing_pool(self, kind, x, p))
        return self.fn(kind, self.T, *([z3.IntSort()] * 9), self.T)(x, *p)

    def cat(self, axis, a, b):
        self.typed(*typing_cat(self, axis, a, b))
        return self._prim("Concat")(axis, a, b)

    def slice(self, x, axis, start, length):
        self.typed(*typing_slice(self, x, axis, start, length))
        return self._prim("Slice")(x, axis, start, length)

    def transpose(self, x, perm: Sequence[int]):
        self.typed(*typing_transpose(self, x, perm))
        self.perms.add(tuple(perm))
        return self._prim("Transpose")(x, perm_code(perm))

    def enlarge(self, w, ref):
        self.typed(*typing_enlarge(self, w, ref))
        return self._prim("EnlargeKernel")(w, ref)

    def like(self, name: str, w):
        """IdentityKernelLike (4-D) / IdentityMatrixLike (2-D) / OnesLike of a weight."""
        self.typed(*typing_like(self, name, w))
        return self.fn(name, self.T, self.T)(w)

    def bn(self, x, s, b, m, v, eps: Any):
        self.typed(*typing_bn(self, x, s, b, m, v, eps))
        return self._prim("BatchNormalization")(x, s, b, m, v, _real(eps))

    def fold_kernel(self, w, s, v, eps: Any):
        """BatchNormFoldKernel: w scaled per output channel (axis 0) by s / sqrt(v + eps)."""
        return self._prim("BatchNormFoldKernel")(w, s, v, _real(eps))

    def fold_bias(self, s, b, m, v, eps: Any):
        """BatchNormFoldBias: b - m * s / sqrt(v + eps)."""
        return self._prim("BatchNormFoldBias")(s, b, m, v, _real(eps))

    def channel(self, c):
        """A 1-D per-channel vector as an NCHW tensor (1, C, 1, 1): how a Conv adds its bias."""
        self.typed(*typing_channel(self, c))
        return self._prim("BiasNCHW")(c)

    def scale_axis0(self, w, s):
        """ScaleAxis0: w with each slice along axis 0 multiplied by its factor in s."""
        self.typed(*typing_scale_axis0(self, w, s))
        return self._prim("ScaleAxis0")(w, s)

    def channel_vector(self, c):
        """ChannelVector: a per-channel NCHW constant ((C, 1, 1) or (1, C, 1, 1)) as (C,)."""
        self.typed(*typing_channel_vector(self, c))
        return self._prim("ChannelVector")(c)

    def generic(self, key: str, args: Sequence[Any], n_out: int = 1) -> list:
        """An op with no axioms: one uninterpreted function per (op, attributes, output)."""
        return [self.fn(f"{key}#{k}", *([self.T] * len(args)), self.T)(*args)
                for k in range(n_out)]


def _real(e: Any) -> z3.ArithRef:
    """A real-valued attribute (epsilon): a literal, or a rule parameter / quantified real."""
    if isinstance(e, z3.ArithRef):
        return z3.ToReal(e) if e.is_int() else e
    return z3.RealVal(e)


class UnknownValue(Exception):
    """An UNKNOWN was used where a definite number is needed (a shape, an axis, a bool)."""


class Unknown:
    """A value the symbolic world leaves unconstrained: a dim past a tensor's rank, the rank
    of an undefined term, or anything computed from one. Arithmetic and comparisons give
    UNKNOWN again; a guard that comes out UNKNOWN could be made true symbolically."""

    __slots__ = ()

    def _same(self, *_: Any) -> Unknown:
        return UNKNOWN

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __neg__ = _same
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _same  # type: ignore[assignment]
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise UnknownValue("an unconstrained value decides this")

    def __int__(self) -> int:
        raise UnknownValue("an unconstrained value is used as a number")

    __index__ = __int__

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()


class Undefined:
    """A term whose op does not apply at these shapes (ONNX would reject it); `why` says so."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"Undefined({self.why})"


def truth(c: Any) -> Any:
    """True, False or UNKNOWN (a Python/numpy bool or an Unknown)."""
    if isinstance(c, Unknown):
        return UNKNOWN
    return bool(c)


def _total(method):
    """A Concrete primitive that gives Undefined (never raises) where its op does not apply:
    an Undefined input, an UNKNOWN shape or attribute, a shape error, or an empty result.
    It also evaluates the primitive's typing facts (`TYPING`) into `typing`, and records in
    `wrong_typing` a fact that is false although the op applies (an unsound hypothesis)."""
    @functools.wraps(method)
    def wrapped(self, *args):
        facts = [truth(f) for f in TYPING[method.__name__](self, *args)]
        self.typing.extend(facts)
        if any(isinstance(a, Undefined) for a in args):
            return Undefined("an input is undefined")
        try:
            out = method(self, *args)
        except (ValueError, IndexError, ZeroDivisionError, UnknownValue) as e:
            return Undefined(f"{method.__name__}: {e}")
        if isinstance(out, np.ndarray) and 0 in out.shape:
            return Undefined(f"{method.__name__}: empty result {out.shape}")
        if any(f is False for f in facts):
            self.wrong_typing.append(f"{method.__name__} at {[_shape(a) for a in args]}")
        return out
    return wrapped


def _shape(a: Any) -> Any:
    return a.shape if isinstance(a, np.ndarray) else a


def _axis(axis: Any, x: np.ndarray) -> int:
    """An axis of the axis language: 0 <= axis < rank (no negative axes, as symbolically)."""
    axis = int(axis)
    if not 0 <= axis < x.ndim:
        raise ValueError(f"axis {axis} out of range for rank {x.ndim}")
    return axis


class Concrete:
    """Exact interpretation over numpy object arrays of Z3 reals (bounded checks), total: see
    `Undefined` and `Unknown`."""

    def __init__(self, ctx: BoundedContext | None = None) -> None:
        self.ctx = ctx or BoundedContext()
        self.typing: list[Any] = []  # every primitive's typing facts: True, False or UNKNOWN
        self.wrong_typing: list[str] = []  # primitives whose facts fail where they apply

    def tensor(self, name: str, shape: Sequence[int]) -> np.ndarray:
        return self.ctx.tensor(name, shape)

    def int(self, name: str) -> int:
        raise TypeError("concrete instances give every integer a value")

    @staticmethod
    def dim(t: Any, i: Any) -> Any:
        """The dim, or UNKNOWN past the rank (or of an undefined term), as symbolically."""
        if isinstance(t, Undefined) or isinstance(i, Unknown):
            return UNKNOWN
        i = int(i)
        return int(t.shape[i]) if 0 <= i < t.ndim else UNKNOWN

    @staticmethod
    def rank(t: Any) -> Any:
        return UNKNOWN if isinstance(t, Undefined) else t.ndim

    @staticmethod
    def all(*conds: Any) -> Any:
        vals = [truth(c) for c in conds]
        if any(v is False for v in vals):
            return False
        return UNKNOWN if any(v is UNKNOWN for v in vals) else True

    @staticmethod
    def any(*conds: Any) -> Any:
        vals = [truth(c) for c in conds]
        if any(v is True for v in vals):
            return True
        return UNKNOWN if any(v is UNKNOWN for v in vals) else False

    @staticmethod
    def implies(a: Any, b: Any) -> Any:
        a, b = truth(a), truth(b)
        if a is False or b is True:
            return True
        return b if a is True else UNKNOWN

    @staticmethod
    def ite(c: Any, a: Any, b: Any) -> Any:
        c = truth(c)
        if c is UNKNOWN:
            same = not isinstance(a, (Unknown, np.ndarray, Undefined)) and \
                not isinstance(b, (Unknown, np.ndarray, Undefined)) and a == b
            return a if same else UNKNOWN
        return a if c else b

    @staticmethod
    def div(a: Any, b: Any) -> Any:
        if isinstance(a, Unknown) or isinstance(b, Unknown) or b == 0:
            return UNKNOWN
        return a // b

    @staticmethod
    def typed(*facts: Any) -> None:
        """Shape facts hold by construction at concrete shapes: nothing to record."""

    def _op(self, op: str, attrs: dict, inputs: list) -> list:
        return bounded_apply(self.ctx, op, attrs, inputs)

    @_total
    def unary(self, name, x):
        return self._op(name, {}, [x])[0]

    @_total
    def binary(self, name, a, b):
        return self._op(name, {}, [a, b])[0]

    @_total
    def matmul(self, a, b):
        return self._op("MatMul", {}, [a, b])[0]

    @_total
    def conv(self, x, w, p):
        sh, sw, pt, pl, pb, pr, g, dh, dw = (int(v) for v in p)
        if min(pt, pl, pb, pr) < 0 or min(sh, sw, g, dh, dw) < 1:
            raise ValueError(f"conv parameters out of range: {p}")
        if x.ndim != 4 or w.ndim != 4 or x.shape[1] != g * w.shape[1] or w.shape[0] % g:
            raise ValueError(f"conv shapes {x.shape} * {w.shape} (group {g})")
        attrs = {"strides": (sh, sw), "pads": (pt, pl, pb, pr), "dilations": (dh, dw),
                 "group": g}
        return self._op("Conv", attrs, [x, w])[0]

    @_total
    def pool(self, kind, x, p):
        kh, kw, sh, sw, pt, pl, pb, pr, cip = (int(v) for v in p)
        if min(kh, kw, sh, sw) < 1 or min(pt, pl, pb, pr) < 0 or x.ndim != 4:
            raise ValueError(f"pool parameters out of range: {p}")
        if max(pt, pb) >= kh or max(pl, pr) >= kw:
            raise ValueError(f"pool pads {p[4:8]} not smaller than the kernel")
        attrs = {"kernel_shape": (kh, kw), "strides": (sh, sw), "pads": (pt, pl, pb, pr),
                 "ceil_mode": 0}
        if kind == "AveragePool":
            attrs["count_include_pad"] = cip
        else:
            attrs["dilations"] = (1, 1)
        return self._op(kind, attrs, [x])[0]

    @_total
    def cat(self, axis, a, b):
        axis = _axis(axis, a)
        return np.concatenate([a, b], axis=axis)

    @_total
    def slice(self, x, axis, start, length):
        axis, start, length = _axis(axis, x), int(start), int(length)
        if start < 0 or length < 1 or start + length > x.shape[axis]:
            raise ValueError(f"slice [{start}, {start + length}) out of range {x.shape[axis]}")
        return np.take(x, np.arange(start, start + length), axis=axis)

    @_total
    def transpose(self, x, perm):
        if sorted(perm) != list(range(x.ndim)):
            raise ValueError(f"perm {tuple(perm)} for rank {x.ndim}")
        return np.transpose(x, tuple(perm))

    @_total
    def enlarge(self, w, ref):
        if w.ndim != 4 or ref.ndim != 4:
            raise ValueError("EnlargeKernel of a kernel that is not 4-D")
        return self._op("EnlargeKernel", {}, [w, ref])[0]

    @_total
    def like(self, name, w):
        if name in LIKE_RANK and w.ndim != LIKE_RANK[name]:
            raise ValueError(f"{name} of a rank-{w.ndim} tensor")
        return self._op(name, {}, [w])[0]

    @_total
    def bn(self, x, s, b, m, v, eps):
        _bn_shapes(x, s, b, m, v)
        return self._op("BatchNormalization", {"epsilon": eps}, [x, s, b, m, v])[0]

    @_total
    def fold_kernel(self, w, s, v, eps):
        if w.ndim < 1 or any(p.shape != (w.shape[0],) for p in (s, v)):
            raise ValueError("BatchNormFoldKernel: scale and var are not 1-D of dim(w, 0)")
        return self._op("BatchNormFoldKernel", {"epsilon": eps}, [w, s, v])[0]

    @_total
    def fold_bias(self, s, b, m, v, eps):
        if b.ndim != 1 or any(p.shape != b.shape for p in (s, m, v)):
            raise ValueError("BatchNormFoldBias: parameters are not 1-D of one size")
        return self._op("BatchNormFoldBias", {"epsilon": eps}, [s, b, m, v])[0]

    @_total
    def scale_axis0(self, w, s):
        return self._op("ScaleAxis0", {}, [w, s])[0]

    @_total
    def channel_vector(self, c):
        return self._op("ChannelVector", {}, [c])[0]

    @_total
    def channel(self, c):
        if c.ndim != 1:
            raise ValueError(f"a per-channel bias must be 1-D, not rank {c.ndim}")
        return c.reshape(1, -1, 1, 1)


def _bn_shapes(x: np.ndarray, *ps: np.ndarray) -> None:
    """ONNX BatchNormalization: x of rank >= 2, the parameters 1-D of dim(x, 1)."""
    if x.ndim < 2 or any(p.shape != (x.shape[1],) for p in ps):
        raise ValueError(f"BatchNormalization of {x.shape} with {[p.shape for p in ps]}")
