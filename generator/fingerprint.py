"""Fingerprints: a hash of a tensor's value that float rounding does not break.

Two graphs that compute the same function give, on the same random float64 inputs, outputs that
differ only by rounding (1e-15 relative). The fingerprint rounds every element to about six
significant digits *relative to the tensor's scale* (its largest magnitude) and hashes the
rounded integers with the shape and the scale (itself rounded), so such outputs hash alike while
unrelated ones almost never do. Equal fingerprints only *propose* a rule; the numeric check and
the verifier decide.

Example:
    >>> a = np.array([0.1, 0.2]) * 3
    >>> tensor_hash(a) == tensor_hash(np.array([0.3, 0.6000000000000001]))
    True
"""

from __future__ import annotations

import hashlib

import numpy as np

DIGITS = 6  # significant digits kept, relative to the tensor's largest magnitude


def tensor_hash(value: np.ndarray) -> int:
    """A signed 64-bit fingerprint of one tensor (shape, scale and rounded elements).

    A tensor holding NaN or infinity gets a hash of its own bytes, so it only matches itself.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(repr(value.shape).encode())
    scale = float(np.max(np.abs(value))) if value.size else 0.0
    if not np.isfinite(scale):
        h.update(b"nonfinite")
        h.update(np.ascontiguousarray(value).tobytes())
    elif scale == 0.0:
        h.update(b"zero")
    else:
        h.update(f"{scale:.{DIGITS - 1}e}".encode())
        rounded = np.rint(value * (10.0 ** DIGITS / scale)).astype(np.int64)
        h.update(rounded.tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def outputs_hash(output_hashes: list[int]) -> int:
    """The fingerprint of a graph: its outputs' fingerprints as a multiset (order-free)."""
    h = hashlib.blake2b(digest_size=8)
    for x in sorted(output_hashes):
        h.update(x.to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little", signed=True)
