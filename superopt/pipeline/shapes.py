"""Symbolic dims: the sizes a run optimizes for, and the sizes it checks at.

A model whose inputs have symbolic dims (`batch`, `seq`, or dims with no name at all) is
optimized as it is: the graph keeps its symbols through the search (a rule is proved for every
size of every dim, so a rewrite holds for every value of the symbols) and the written model
declares the same symbols. Only what needs numbers gets numbers:

- the cost model costs each graph at the *representative* sizes
  (`superopt.cost_model.symbolic.AtSizes`);
- the gate times the original and the candidates at them;
- the numerical check runs at them **and** at a second, different set of sizes: both must pass.

Representative sizes (`choose_sizes`), unless `shape_hints` (`--shape-hint`) say otherwise:

- a *batch-like* symbol (its name contains "batch", or is N or B, or it is the first dim of
  some input) -> `BATCH` (1); second set `SECOND_BATCH` (2);
- every other symbol (sequence lengths, image sizes, ...) -> `SEQUENCE` (128); second set
  `SECOND_SEQUENCE` (7: small and odd, so a result that holds only at a round size shows);
- a dim with no name is a symbol of its own (`?input:axis`), sized by the same rules.

A second-set size equal to the representative one (after a hint) moves to the next size up, so
the two sets always differ.

Example:
    >>> choose_sizes({"input_ids": ("batch", "seq")}).shapes
    {'input_ids': (1, 128)}
    >>> choose_sizes({"input_ids": ("batch", "seq")}, {"input_ids": (2, "?")}).second.shapes
    {'input_ids': (3, 7)}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx

from superopt.core.errors import ShapeError
from superopt.core.types import Dim, TensorType

BATCH = 1
SEQUENCE = 128
SECOND_BATCH = 2
SECOND_SEQUENCE = 7

#: a hint's placeholder for "this dim: the default size" (`--shape-hint input_ids:4,?`)
PLACEHOLDERS = ("?", "_", "")

#: shape_hints: input name (None: the only input) -> its dims (ints at symbolic positions,
#: placeholders or the symbol's own name elsewhere), or a symbol's name -> its size
ShapeHints = Mapping[str | None, "Sequence[int | str | None] | int"]


@dataclass(frozen=True)
class Sizes:
    """Sizes for the symbols of a model's inputs: `sizes` (symbol -> int) and `shapes` (input
    name -> its concrete shape, for the inputs that have a symbol); `second` is the check's
    second set (None inside a second set itself)."""

    sizes: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    second: Sizes | None = None
    hinted: frozenset[str] = frozenset()
    # the sized types of the model's values by name (from loading it at these sizes)
    known: dict[str, TensorType] = field(default_factory=dict, compare=False, repr=False)

    @property
    def overrides(self) -> dict[str, object]:
        """`superopt.runtime.random_feeds` overrides: every symbolic input's whole shape."""
        return dict(self.shapes)

    def describe(self) -> str:
        """E.g. "batch=1, seq=128" (named symbols first)."""
        named = sorted((s for s in self.sizes if not s.startswith("?")), key=str.lower)
        unnamed = sorted(s for s in self.sizes if s.startswith("?"))
        return ", ".join(f"{s}={self.sizes[s]}" for s in named + unnamed)

    def shapes_text(self) -> str:
        """E.g. "input_ids 1×128"."""
        return ", ".join(f"{n} {'×'.join(map(str, s))}" for n, s in self.shapes.items())


def is_batch_like(symbol: str, axes: Sequence[int]) -> bool:
    """The naming heuristic: "batch" in the name, the name N or B, or axis 0 of some input."""
    low = symbol.lower()
    return "batch" in low or symbol in ("N", "B") or 0 in axes


def choose_sizes(inputs: Mapping[str, Sequence[Dim] | None],
                 hints: ShapeHints | None = None) -> Sizes | None:
    """The representative sizes of the symbols in `inputs` (input name -> its dims, symbols as
    strings), with `hints` applied, and the second set; None when every input is static.

    Raises `ShapeError` (one line) for a hint that names no input or symbol, has another rank,
    gives a size below 1, contradicts a fixed dim, or gives one symbol two sizes.
    """
    axes: dict[str, list[int]] = {}
    for dims in inputs.values():
        for axis, d in enumerate(dims or ()):
            if not isinstance(d, int):
                axes.setdefault(str(d), []).append(axis)
    hinted = _apply_hints(inputs, axes, dict(hints or {}))
    if not axes:
        return None
    batch = {s for s, a in axes.items() if is_batch_like(s, a)}
    first = {s: hinted.get(s, BATCH if s in batch else SEQUENCE) for s in axes}
    second = {}
    for s, size in first.items():
        other = SECOND_BATCH if s in batch else SECOND_SEQUENCE
        second[s] = other if other != size else other + 1
    return Sizes(first, _shapes(inputs, first),
                 Sizes(second, _shapes(inputs, second)), frozenset(hinted))


def _shapes(inputs: Mapping[str, Sequence[Dim] | None],
            sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(d if isinstance(d, int) else sizes[str(d)] for d in dims)
            for name, dims in inputs.items()
            if dims is not None and not all(isinstance(d, int) for d in dims)}


def _apply_hints(inputs: Mapping[str, Sequence[Dim] | None], axes: Mapping[str, list[int]],
                 hints: dict) -> dict[str, int]:
    """symbol -> hinted size (see `choose_sizes` for the errors)."""
    out: dict[str, int] = {}
    where: dict[str, str] = {}

    def put(symbol: str, size: object, source: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise ShapeError(f"--shape-hint {source}: {size!r} is not a size")
        if size < 1:
            raise ShapeError(f"--shape-hint {source}: sizes must be at least 1, got {size}")
        if symbol in out and out[symbol] != size:
            raise ShapeError(f"--shape-hint: {symbol} is {out[symbol]} by {where[symbol]} and "
                             f"{size} by {source}")
        out[symbol] = size
        where[symbol] = source

    if None in hints:
        if len(inputs) != 1:
            raise ShapeError("--shape-hint: give input names when the model has several inputs "
                             f"({', '.join(inputs)})")
        hints[next(iter(inputs))] = hints.pop(None)
    for key, value in hints.items():
        if key in inputs:
            dims = inputs[key]
            given = (value,) if isinstance(value, int) else tuple(value)
            if dims is None:
                raise ShapeError(f"--shape-hint {key}: the input's rank is unknown; fix its "
                                 "shape with --overwrite-input-shape")
            if len(given) != len(dims):
                raise ShapeError(f"--shape-hint {key}: {len(given)} dims given, the input has "
                                 f"{len(dims)} ({_dims_text(dims)})")
            for axis, (d, g) in enumerate(zip(dims, given)):
                if g is None or (isinstance(g, str) and (g in PLACEHOLDERS or g == str(d))):
                    continue
                if isinstance(d, int):
                    if g != d:
                        raise ShapeError(f"--shape-hint {key}: dim {axis} is fixed at {d} in "
                                         f"the model, the hint says {g}")
                    continue
                put(str(d), g, f"{key} dim {axis}")
        elif key in axes:
            put(str(key), value, str(key))
        else:
            names = ", ".join(list(inputs) + sorted(axes))
            raise ShapeError(f"--shape-hint {key}: no input or symbolic dim of that name "
                             f"(the model has {names or 'no inputs'})")
    return out


def _dims_text(dims: Sequence[Dim]) -> str:
    return "×".join(str(d) for d in dims)


def declared_inputs(model: str | os.PathLike | onnx.ModelProto) -> dict[str, tuple | None]:
    """The dims each graph input of the file declares (symbols as their names, a dim with no
    name as None); external data is not read."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(
        os.fspath(model), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    out: dict[str, tuple | None] = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            out[vi.name] = None
            continue
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                             for d in tt.shape.dim)
    return out


def fixed_symbols_note(model: str | os.PathLike | onnx.ModelProto,
                       input_shapes: Mapping[str | None, Sequence[int]]) -> str | None:
    """One warning line when `input_shapes` (`--overwrite-input-shape`) fix dims the model
    declares symbolic: the written model then takes only those shapes. None otherwise."""
    try:
        declared = declared_inputs(model)
    except Exception:  # noqa: BLE001 (the load phase reports an unreadable model itself)
        return None
    shapes = dict(input_shapes)
    if None in shapes and len(declared) == 1:
        shapes[next(iter(declared))] = shapes.pop(None)
    fixed = []
    for name, shape in shapes.items():
        dims = declared.get(name) if name is not None else None
        if dims is None or all(isinstance(d, int) for d in dims):
            continue
        was = "×".join("?" if d is None else str(d) for d in dims)
        fixed.append(f"{name} to {'×'.join(map(str, shape))} (declared {was})")
    if not fixed:
        return None
    return (f"warning: --overwrite-input-shape fixes {'; '.join(fixed)}: the written model "
            "accepts only that shape. Without it superopt keeps the symbolic dims "
            "(--shape-hint picks the sizes to optimize for)")
