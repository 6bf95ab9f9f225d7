"""Tensor types: the leaf every other core module builds on (it imports nothing from superopt).

A `TensorType` is an element type (the ONNX `TensorProto` enum) and a shape whose dims are
concrete sizes or named symbols (`Dim`); `array_digest` names a constant by its content.

Example:
    >>> t = TensorType(FLOAT, (2, "n"))
    >>> str(t), t.rank, t.is_static
    ('float[2×n]', 2, False)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

Dim = int | str  # a concrete size, or a named symbol for a dynamic dim
Shape = tuple[Dim, ...]

FLOAT = TensorProto.FLOAT


@dataclass(frozen=True)
class TensorType:
    """Element type (ONNX TensorProto enum) and shape (None when the rank is unknown)."""

    elem_type: int
    shape: Shape | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))

    def numel(self) -> int:
        """Number of elements; symbolic dims count as 1 (a lower bound for costing)."""
        n = 1
        for d in self.shape or ():
            n *= d if isinstance(d, int) else 1
        return n

    def __str__(self) -> str:
        dt = helper.tensor_dtype_to_string(self.elem_type).replace("TensorProto.", "").lower()
        dims = "?" if self.shape is None else "×".join(str(d) for d in self.shape)
        return f"{dt}[{dims}]"


def array_digest(array: np.ndarray) -> str:
    """Content digest of a constant: dtype, shape and bytes (blake2b, 16 bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(array.dtype).encode())
    h.update(repr(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()
