"""The generator's universe: its input tensors and the operator instances it may apply.

TASO enumerates graphs over a small, fixed set of input tensors (runtime tensors and weights of a
few shapes) and operator *instances*: an op with its attributes chosen for the inputs it is
applied to (a Conv gets "same" pads for its kernel, a Split cuts where a Concat joined). The
instances are declared by the ops themselves (`OpDef.generator`, see
`superopt.core.generator_spec`), each naming the presets it belongs to; this module holds the
input tensors of each preset and collects its instances from the registry, in the catalog's
order (which is the enumeration's, so part of its output).

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
from superopt.core.generator_spec import OpInstance
from superopt.core.ops import all_ops

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


@dataclass
class Universe:
    """Inputs plus op instances: everything one enumeration runs over."""

    inputs: list[InputSpec]
    instances: list[OpInstance]
    max_outputs: int = 2
    settings: dict = field(default_factory=dict)

    def input_index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.inputs) if s.name == name)


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


def matmul3d_inputs() -> list[InputSpec]:
    """The `matmul3d` preset's inputs: rank-3 runtime `z`, `v` (2×2×4; 1×3×8 in the second shape
    set) and the 4×4 weights `a`, `b` (8×8)."""
    return [
        InputSpec("z", (2, 2, 4), "tensor", (1, 3, 8)),
        InputSpec("v", (2, 2, 4), "tensor", (1, 3, 8)),
        InputSpec("a", (4, 4), "weight", (8, 8)),
        InputSpec("b", (4, 4), "weight", (8, 8)),
    ]


def preset_instances(preset: str = "default") -> list[OpInstance]:
    """The op instances of a preset ("default", "matmul3d"), from the registry in the
    catalog's order."""
    return [inst for op in all_ops() for inst in op.generator if preset in inst.presets]


# Named universes selected by naming them in `ops` (`superopt generate --ops matmul3d`): the
# default universe's inputs are all 2-D or 4-D, so its MatMul rules fix Concat/Split axes for
# rank 2; this one proves them for rank-3 activations times 2-D weights (BERT, NASRNN), where
# the merged MatMul splits on axis 2. Kept out of the default run, whose size it would grow.
PRESETS: dict[str, Callable[[], tuple[list[InputSpec], list[OpInstance]]]] = {
    "matmul3d": lambda: (matmul3d_inputs(), preset_instances("matmul3d")),
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
        inputs, instances = default_inputs(), preset_instances("default")
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
