"""Window geometry of 2-D convolutions and pools (NCHW): effective kernel sizes under
dilation, output sizes, and ONNX auto_pad resolved to explicit pads. Shared by the Conv and
pool definitions, their bounded Z3 encodings and the TASO rule import."""

from __future__ import annotations

from collections.abc import Sequence

from superopt.core.ops.common import sym
from superopt.core.types import Dim


def explicit_pads(auto_pad: str, in_hw: Sequence[int], k_eff: Sequence[int],
                  strides: Sequence[int]) -> tuple[int, ...] | None:
    """ONNX auto_pad resolved to explicit (top, left, bottom, right) pads; None if dims unknown."""
    if auto_pad in ("", "NOTSET", "VALID"):
        return (0, 0, 0, 0)
    if not all(isinstance(d, int) for d in in_hw):
        return None
    begin, end = [], []
    for d, k, s in zip(in_hw, k_eff, strides):
        out = -(-d // s)
        total = max((out - 1) * s + k - d, 0)
        small, big = total // 2, total - total // 2
        begin.append(big if auto_pad == "SAME_LOWER" else small)
        end.append(small if auto_pad == "SAME_LOWER" else big)
    return tuple(begin + end)


def out_dim(d: Dim, k_eff: int, s: int, pb: int, pe: int, ceil: int = 0) -> Dim:
    """Output size of a window of effective size `k_eff`, stride `s` and pads `pb`/`pe` over a
    dim of size `d` (a symbol stays a symbol)."""
    if not isinstance(d, int):
        return sym(d, f"->k{k_eff}s{s}")
    span = d + pb + pe - k_eff
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= d + pb:
        out -= 1  # the last window would start in the end padding only
    if out < 1:
        raise ValueError(f"window {k_eff} larger than padded input {d + pb + pe}")
    return out


def k_eff(k: Sequence[int], dil: Sequence[int]) -> list[int]:
    """Effective kernel sizes under dilation."""
    return [(kk - 1) * dd + 1 for kk, dd in zip(k, dil)]
