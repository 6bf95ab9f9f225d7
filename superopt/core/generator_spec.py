"""What an op declares for the rule generator: the instances the enumeration may apply.

TASO enumerates graphs over a few input tensors and operator *instances*: an op with its
attributes chosen for the arguments it is applied to (a Conv gets "same" pads for its kernel, a
Split cuts where a Concat joined). Each instance says, for the shapes of its arguments, whether
it applies and with which attributes, and how the symbolic sizes of its outputs follow from its
inputs' (so a Split can be written as `split=(dim(?a,0), dim(?b,0))` in a rule). Each names the
generator presets it belongs to ("default", "matmul3d"); the generator (`superopt.generator.opset`)
collects them from the registry in the catalog's order. Plain data: this module imports nothing.

Example:
    >>> inst = OpInstance("Relu", "Relu", 1, nonscalar, presets=("default",))
    >>> inst.attrs([Arg((2, 4), ((("x", 0),), (("x", 1),)), False)])
    {}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

# A symbolic dim is a sum of atoms; an atom is (input name, axis).
Atom = tuple[str, int]
SymDim = tuple[Atom, ...]
SymShape = tuple[SymDim, ...]


@dataclass(frozen=True)
class Arg:
    """What an instance sees of one argument: its shape, symbolic dims, and whether it is a
    weight (computed from weights only)."""

    shape: tuple[int, ...]
    sym: SymShape
    weight: bool


# attrs(args) -> the registry attributes (non-default only), or None if the instance does not
# apply to arguments of these shapes.
AttrsFn = Callable[[Sequence[Arg]], "dict | None"]
# sym(args, attrs) -> symbolic shape of each output.
SymFn = Callable[[Sequence[Arg], dict], "list[SymShape]"]


def first_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    """One output shaped like the first argument."""
    return [args[0].sym]


def nonscalar(args: Sequence[Arg]) -> dict | None:
    """Applies (with no attributes) to any argument but a scalar."""
    return {} if args[0].shape != () else None


@dataclass(frozen=True)
class OpInstance:
    """An op applied with attributes chosen from its arguments' shapes.

    `op` is the registry op; `arity` counts the free arguments, taken from the enumeration's
    tensors; `fixed` names "param" inputs appended after them (BatchNormalization's scale, bias,
    mean and var). `weight_args` says the free arguments must be weights (helper ops);
    `on_weights` whether the instance may apply when every free argument is a weight (algebra
    TASO does on weights: concatenating kernels, adding matrices); `commutative` lets the
    enumeration keep one argument order. `presets` names the generator presets that apply it.
    """

    label: str
    op: str
    arity: int
    attrs: AttrsFn
    sym: SymFn = first_sym
    fixed: tuple[str, ...] = ()
    weight_args: bool = False
    on_weights: bool = False
    commutative: bool = False
    # Ranks each free argument may have (a fast pre-filter); `same_shape` pairs equal shapes.
    ranks: tuple[tuple[int, ...], ...] = ()
    same_shape: bool = False
    presets: tuple[str, ...] = ("default",)
