"""The generator's universe: its input tensors and the operator instances it may apply.

TASO enumerates graphs over a small, fixed set of input tensors (runtime tensors and weights of a
few shapes) and operator *instances*: an op with its attributes chosen for the inputs it is
applied to (a Conv gets "same" pads for its kernel, a Split cuts where a Concat joined). Each
instance here says, for the shapes of its arguments, whether it applies and with which attributes,
and how the symbolic sizes of its outputs follow from its inputs' (so a Split can be written as
`split=(dim(?a,0), dim(?b,0))` in a rule).

Example:
    >>> universe = default_universe()
    >>> [i.name for i in universe.inputs][:3]
    ['x', 'y', 'a']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from superopt.core.errors import UsageError

# A symbolic dim is a sum of atoms; an atom is (input name, axis).
Atom = tuple[str, int]
SymDim = tuple[Atom, ...]
SymShape = tuple[SymDim, ...]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class InputSpec:
    """One input tensor of the enumeration.

    `kind` is the rule variable kind it becomes ("tensor" for runtime data, "weight" for
    constants); `alt_shape` is the second shape set the final numeric check uses; `role` "free"
    inputs may feed any op, "param" inputs only the op instances that name them (BN parameters).
    """

    name: str
    shape: Shape
    kind: str
    alt_shape: Shape
    positive: bool = False
    role: str = "free"

    def sample(self, rng: np.random.Generator, alt: bool = False) -> np.ndarray:
        shape = self.alt_shape if alt else self.shape
        if self.positive:
            return rng.uniform(0.5, 1.5, size=shape)
        return rng.standard_normal(size=shape)


@dataclass(frozen=True)
class Arg:
    """What an instance sees of one argument: its shape, symbolic dims, and whether it is a
    weight (computed from weights only)."""

    shape: Shape
    sym: SymShape
    weight: bool


# attrs(args) -> the registry attributes (non-default only), or None if the instance does not
# apply to arguments of these shapes.
AttrsFn = Callable[[Sequence[Arg]], "dict | None"]
# sym(args, attrs) -> symbolic shape of each output.
SymFn = Callable[[Sequence[Arg], dict], "list[SymShape]"]


def _first_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [args[0].sym]


@dataclass(frozen=True)
class OpInstance:
    """An op applied with attributes chosen from its arguments' shapes.

    `op` is the registry op; `arity` counts the free arguments, taken from the enumeration's
    tensors; `fixed` names "param" inputs appended after them (BatchNormalization's scale, bias,
    mean and var). `weight_args` says the free arguments must be weights (helper ops);
    `on_weights` whether the instance may apply when every free argument is a weight (algebra
    TASO does on weights: concatenating kernels, adding matrices); `commutative` lets the
    enumeration keep one argument order.
    """

    label: str
    op: str
    arity: int
    attrs: AttrsFn
    sym: SymFn = _first_sym
    fixed: tuple[str, ...] = ()
    weight_args: bool = False
    on_weights: bool = False
    commutative: bool = False
    # Ranks each free argument may have (a fast pre-filter); `same_shape` pairs equal shapes.
    ranks: tuple[tuple[int, ...], ...] = ()
    same_shape: bool = False


@dataclass
class Universe:
    """Inputs plus op instances: everything one enumeration runs over."""

    inputs: list[InputSpec]
    instances: list[OpInstance]
    max_outputs: int = 2
    settings: dict = field(default_factory=dict)

    def input_index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.inputs) if s.name == name)

    def op_names(self) -> list[str]:
        return sorted({i.op for i in self.instances})


# ---------------------------------------------------------------------------------------------
# instance definitions


def _same_shape(args: Sequence[Arg]) -> dict | None:
    return {} if args[0].shape == args[1].shape and args[0].shape != () else None


def _matmul(args: Sequence[Arg]) -> dict | None:
    a, b = args[0].shape, args[1].shape
    return {} if len(a) == 2 and len(b) == 2 and a[1] == b[0] else None


def _matmul_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [(args[0].sym[0], args[1].sym[1])]


def _matmul_3d(args: Sequence[Arg]) -> dict | None:
    # A rank-3 activation times a 2-D weight (a transformer's or RNN's projection: 1×128×768 by
    # 768×768), and 2-D by 2-D for the algebra on weights.
    a, b = args[0].shape, args[1].shape
    if len(b) != 2 or len(a) not in (2, 3) or a[-1] != b[0]:
        return None
    return {}


def _matmul_3d_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [tuple(args[0].sym[:-1]) + (args[1].sym[1],)]


def _scalar_mul(args: Sequence[Arg]) -> dict | None:
    return {} if args[1].shape == () and args[0].shape != () else None


def _unary_any(args: Sequence[Arg]) -> dict | None:
    return {} if args[0].shape != () else None


def _same_pads(kh: int, kw: int) -> tuple[int, int, int, int]:
    # "same" padding for odd kernels: (top, left, bottom, right).
    return (kh // 2, kw // 2, kh // 2, kw // 2)


def _conv(args: Sequence[Arg]) -> dict | None:
    x, w = args[0].shape, args[1].shape
    if not args[1].weight or args[0].weight:
        return None  # a kernel is a weight, and convolving weights is not runtime work
    if len(x) != 4 or len(w) != 4 or w[1] == 0 or x[1] % w[1]:
        return None
    group = x[1] // w[1]
    if w[0] % group or w[2] % 2 == 0 or w[3] % 2 == 0:
        return None
    if len(args) > 2 and args[2].shape != (w[0],):
        return None
    attrs: dict = {}
    pads = _same_pads(w[2], w[3])
    if pads != (0, 0, 0, 0):
        attrs["pads"] = pads
    if group != 1:
        attrs["group"] = group
    return attrs


def _conv_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    x, w = args[0].sym, args[1].sym
    return [(x[0], w[0], x[2], x[3])]


def _pool(avg: bool) -> AttrsFn:
    def attrs(args: Sequence[Arg]) -> dict | None:
        if len(args[0].shape) != 4:
            return None
        out = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}
        if avg:
            out["count_include_pad"] = 1  # so that AveragePool is linear
        return out
    return attrs


def _concat(axis: int, ranks: tuple[int, ...] = (2, 4)) -> AttrsFn:
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


def _split(axis: int, ranks: tuple[int, ...] = (2, 4)) -> AttrsFn:
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


def _enlarge(args: Sequence[Arg]) -> dict | None:
    w, ref = args[0].shape, args[1].shape
    if len(w) != 4 or len(ref) != 4:
        return None
    dh, dw = ref[2] - w[2], ref[3] - w[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2 or dh + dw == 0:
        return None
    return {}


def _enlarge_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    w, ref = args[0].sym, args[1].sym
    return [(w[0], w[1], ref[2], ref[3])]


def _identity_kernel(args: Sequence[Arg]) -> dict | None:
    w = args[0].shape
    return {} if len(w) == 4 and w[2] % 2 and w[3] % 2 else None


def _identity_matrix(args: Sequence[Arg]) -> dict | None:
    w = args[0].shape
    return {} if len(w) == 2 and w[0] == w[1] else None


def _bn(channels: int) -> AttrsFn:
    def attrs(args: Sequence[Arg]) -> dict | None:
        s = args[0].shape
        return {} if len(s) == 4 and s[1] == channels else None
    return attrs


def _bn_kernel(channels: int) -> AttrsFn:
    def attrs(args: Sequence[Arg]) -> dict | None:
        s = args[0].shape
        return {} if len(s) == 4 and s[0] == channels else None
    return attrs


def _bn_bias_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [((("bn_scale", 0),),)]


BN = ("bn_scale", "bn_bias", "bn_mean", "bn_var")
R22 = ((2,), (2,))
R44 = ((4,), (4,))
RC = ((2, 4), (2, 4))


def default_inputs() -> list[InputSpec]:
    """TASO's inputs: 2-D 2×4 runtime and 4×4 weights, 4-D 2×4×5×5 runtime, kernels 3×3 / 1×3 /
    3×1 / 1×1 / grouped 3×3, BatchNormalization parameters, a scalar.

    The second shape set (for the final check) has 8 channels and a 8×2×3×3 grouped kernel, so a
    literal `group=4` in a rule still fits it.
    """
    return [
        InputSpec("x", (2, 4), "tensor", (3, 8)),
        InputSpec("y", (2, 4), "tensor", (3, 8)),
        InputSpec("a", (4, 4), "weight", (8, 8)),
        InputSpec("b", (4, 4), "weight", (8, 8)),
        InputSpec("t", (2, 4, 5, 5), "tensor", (1, 8, 7, 7)),
        InputSpec("k", (4, 4, 3, 3), "weight", (8, 8, 3, 3)),
        InputSpec("j", (4, 4, 3, 3), "weight", (8, 8, 3, 3)),
        InputSpec("k13", (4, 4, 1, 3), "weight", (8, 8, 1, 3)),
        InputSpec("k31", (4, 4, 3, 1), "weight", (8, 8, 3, 1)),
        InputSpec("k11", (4, 4, 1, 1), "weight", (8, 8, 1, 1)),
        InputSpec("kg", (4, 1, 3, 3), "weight", (8, 2, 3, 3)),
        InputSpec("c", (), "weight", ()),
        InputSpec("bn_scale", (4,), "weight", (8,), role="param"),
        InputSpec("bn_bias", (4,), "weight", (8,), role="param"),
        InputSpec("bn_mean", (4,), "weight", (8,), role="param"),
        InputSpec("bn_var", (4,), "weight", (8,), positive=True, role="param"),
    ]


def default_instances(channels: int = 4) -> list[OpInstance]:
    """TASO's operator set in ONNX terms, plus BatchNormalization (and its fold helpers), Gemm
    and Sub."""
    return [
        OpInstance("MatMul", "MatMul", 2, _matmul, _matmul_sym, on_weights=True, ranks=R22),
        OpInstance("Gemm", "Gemm", 2, _matmul, _matmul_sym, ranks=R22),
        OpInstance("Add", "Add", 2, _same_shape, on_weights=True, commutative=True,
                   same_shape=True),
        OpInstance("Sub", "Sub", 2, _same_shape, on_weights=True, same_shape=True),
        OpInstance("Mul", "Mul", 2, _same_shape, on_weights=True, commutative=True,
                   same_shape=True),
        OpInstance("Mul.scalar", "Mul", 2, _scalar_mul, on_weights=True,
                   ranks=((2, 4), (0,))),
        OpInstance("Relu", "Relu", 1, _unary_any, ranks=((2, 4),)),
        OpInstance("Conv", "Conv", 2, _conv, _conv_sym, ranks=R44),
        OpInstance("Conv.bias", "Conv", 3, _conv, _conv_sym, ranks=((4,), (4,), (1,))),
        OpInstance("MaxPool", "MaxPool", 1, _pool(False), ranks=((4,),)),
        OpInstance("AveragePool", "AveragePool", 1, _pool(True), ranks=((4,),)),
        OpInstance("Concat.0", "Concat", 2, _concat(0), _concat_sym, on_weights=True,
                   ranks=RC),
        OpInstance("Concat.1", "Concat", 2, _concat(1), _concat_sym, on_weights=True,
                   ranks=RC),
        OpInstance("Split.0", "Split", 1, _split(0), _split_sym, on_weights=True,
                   ranks=((2, 4),)),
        OpInstance("Split.1", "Split", 1, _split(1), _split_sym, on_weights=True,
                   ranks=((2, 4),)),
        OpInstance("Transpose", "Transpose", 1, _transpose, _transpose_sym, on_weights=True,
                   ranks=((2,),)),
        OpInstance("EnlargeKernel", "EnlargeKernel", 2, _enlarge, _enlarge_sym,
                   weight_args=True, on_weights=True, ranks=R44),
        OpInstance("IdentityKernelLike", "IdentityKernelLike", 1, _identity_kernel,
                   weight_args=True, on_weights=True, ranks=((4,),)),
        OpInstance("IdentityMatrixLike", "IdentityMatrixLike", 1, _identity_matrix,
                   weight_args=True, on_weights=True, ranks=((2,),)),
        OpInstance("OnesLike", "OnesLike", 1, _unary_any, weight_args=True, on_weights=True,
                   ranks=((2, 4),)),
        OpInstance("BatchNormalization", "BatchNormalization", 1, _bn(channels), fixed=BN,
                   ranks=((4,),)),
        OpInstance("BatchNormFoldKernel", "BatchNormFoldKernel", 1, _bn_kernel(channels),
                   fixed=("bn_scale", "bn_var"), weight_args=True, on_weights=True,
                   ranks=((4,),)),
        OpInstance("BatchNormFoldBias", "BatchNormFoldBias", 0, lambda args: {},
                   _bn_bias_sym, fixed=BN, weight_args=True, on_weights=True),
    ]


def matmul3d_inputs() -> list[InputSpec]:
    """The `matmul3d` preset's inputs: rank-3 runtime `z`, `v` (2×2×4; 1×3×8 in the second shape
    set) and the 4×4 weights `a`, `b` (8×8)."""
    return [
        InputSpec("z", (2, 2, 4), "tensor", (1, 3, 8)),
        InputSpec("v", (2, 2, 4), "tensor", (1, 3, 8)),
        InputSpec("a", (4, 4), "weight", (8, 8)),
        InputSpec("b", (4, 4), "weight", (8, 8)),
    ]


def matmul3d_instances() -> list[OpInstance]:
    """The `matmul3d` preset's ops: MatMul of a rank-3 activation by a 2-D weight (and of weights),
    Add, Relu, Concat on the last axis of rank-3 tensors and on both axes of weights, Split on the
    last axis of rank-3 tensors, Transpose of weights."""
    return [
        OpInstance("MatMul", "MatMul", 2, _matmul_3d, _matmul_3d_sym, on_weights=True,
                   ranks=((2, 3), (2,))),
        OpInstance("Add", "Add", 2, _same_shape, on_weights=True, commutative=True,
                   same_shape=True),
        OpInstance("Relu", "Relu", 1, _unary_any, ranks=((2, 3),)),
        OpInstance("Concat.0", "Concat", 2, _concat(0, (2,)), _concat_sym, on_weights=True,
                   ranks=((2,), (2,))),
        OpInstance("Concat.1", "Concat", 2, _concat(1, (2,)), _concat_sym, on_weights=True,
                   ranks=((2,), (2,))),
        OpInstance("Concat.2", "Concat", 2, _concat(2, (3,)), _concat_sym, on_weights=True,
                   ranks=((3,), (3,))),
        OpInstance("Split.2", "Split", 1, _split(2, (3,)), _split_sym, on_weights=True,
                   ranks=((3,),)),
        OpInstance("Transpose", "Transpose", 1, _transpose, _transpose_sym, on_weights=True,
                   ranks=((2,),)),
    ]


# Named universes selected by naming them in `ops` (`superopt generate --ops matmul3d`): the
# default universe's inputs are all 2-D or 4-D, so its MatMul rules fix Concat/Split axes for
# rank 2; this one proves them for rank-3 activations times 2-D weights (BERT, NASRNN), where
# the merged MatMul splits on axis 2. Kept out of the default run, whose size it would grow.
PRESETS: dict[str, Callable[[], tuple[list[InputSpec], list[OpInstance]]]] = {
    "matmul3d": lambda: (matmul3d_inputs(), matmul3d_instances()),
}


def default_universe(ops: Sequence[str] | None = None, max_outputs: int = 2) -> Universe:
    """The default inputs and instances, optionally restricted to the registry ops in `ops`.

    A preset name in `ops` (see `PRESETS`, e.g. "matmul3d") selects that preset's inputs and
    instances instead; registry op names beside it restrict the preset's instances.

    Raises UsageError naming an op the generator does not know.
    """
    wanted = None if ops is None else [o.strip() for o in ops if o.strip()]
    presets = [o for o in wanted or () if o in PRESETS]
    if len(presets) > 1:
        raise UsageError(f"--ops names more than one preset: {', '.join(presets)}")
    if presets:
        inputs, instances = PRESETS[presets[0]]()
        wanted = [o for o in wanted if o not in PRESETS] or None
    else:
        inputs, instances = default_inputs(), default_instances()
    known = sorted({i.op for i in instances})
    if ops is not None and not wanted and not presets:
        raise UsageError("--ops names no op")
    if wanted is not None:
        unknown = [o for o in wanted if o not in known]
        if unknown:
            where = f"the {presets[0]} preset" if presets else "the generator"
            raise UsageError(f"unknown op {unknown[0]!r} for --ops; {where} knows: "
                             f"{', '.join(known)}"
                             + ("" if presets else f" (presets: {', '.join(PRESETS)})"))
        instances = [i for i in instances if i.op in set(wanted)]
    settings: dict = {"ops": sorted({i.op for i in instances})}
    if presets:
        settings["preset"] = presets[0]
    return Universe(inputs, instances, max_outputs, settings)
