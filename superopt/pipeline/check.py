"""The numerical check: the original and the result on random inputs through ONNX Runtime.

Both models run on ORT's CPU provider (deterministic fp32) on `n` random inputs; every output
must agree within rtol/atol. `check_result` is the pipeline's check phase: a failure raises
`CheckError` (so nothing is written), and an unchanged original that ORT cannot run (e.g. a
custom-domain op) is reported as skipped rather than failed.

Example:
    >>> numerical_check("in.onnx", onnx.load("out.onnx")).passed   # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from superopt.core.errors import CheckError, ModelError

DEFAULT_CHECK_N = 3


@dataclass
class CheckResult:
    """The numerical check: original vs result through ORT on the CPU provider."""

    passed: bool
    n: int
    rtol: float
    atol: float
    max_abs_error: float
    max_rel_error: float
    skipped: bool = False
    note: str = ""  # why the check was skipped, when it was

    def to_json(self) -> dict:
        return dict(self.__dict__)


def check_result(original: str | os.PathLike | onnx.ModelProto | None, result: onnx.ModelProto,
                 *, baseline: onnx.ModelProto, changed: bool, n: int = DEFAULT_CHECK_N,
                 rtol: float = 1e-4, atol: float = 1e-5,
                 progress: Callable[[int], None] | None = None) -> CheckResult:
    """The check phase: `numerical_check`, raising `CheckError` when the result differs.

    `baseline` (the original as exported) stands in for `original` when that cannot load;
    `changed` False means `result` is the original passed through: if ORT cannot run it there is
    nothing to compare and nothing was rewritten, so the check is skipped with a note.
    """
    try:
        outcome = numerical_check(original, result, n=n, rtol=rtol, atol=atol,
                                  baseline_fallback=baseline, progress=progress)
    except ModelError as e:
        if changed:
            raise
        return CheckResult(True, 0, rtol, atol, 0.0, 0.0, skipped=True,
                           note=f"not run: {str(e).splitlines()[0][:200]}")
    if not outcome.passed:
        raise CheckError(
            f"the optimized model differs from the original (max abs error "
            f"{outcome.max_abs_error:.3g}, max rel error {outcome.max_rel_error:.3g}"
            f", rtol {rtol}, atol {atol}); nothing was written")
    return outcome


def numerical_check(original: str | os.PathLike | onnx.ModelProto | None,
                    result: onnx.ModelProto, *, n: int = DEFAULT_CHECK_N, rtol: float = 1e-4,
                    atol: float = 1e-5, baseline_fallback: onnx.ModelProto | None = None,
                    seed: int = 0, progress: Callable[[int], None] | None = None
                    ) -> CheckResult:
    """Run original and result on `n` random inputs (seeds seed..seed+n-1, shapes from the
    result) through ORT's CPU provider; compare every output within rtol/atol.

    Example:
        >>> numerical_check("in.onnx", onnx.load("out.onnx")).passed   # doctest: +SKIP
        True
    """
    from superopt.runtime import make_session, random_feeds

    ref_model = original if original is not None else baseline_fallback
    try:
        ref = make_session(ref_model, "cpu", level="all")
    except ModelError:
        if baseline_fallback is None:
            raise
        ref = make_session(baseline_fallback, "cpu", level="all")
    try:
        out = make_session(result, "cpu", level="all")
    except ModelError as e:
        raise CheckError(f"the optimized model does not load in ONNX Runtime ({e}); "
                         "nothing was written") from None
    names = [o.name for o in out.get_outputs()]
    max_abs = max_rel = 0.0
    passed = True
    ref_inputs = {i.name for i in ref.get_inputs()}
    for k in range(n):
        feeds = random_feeds(result, seed=seed + k)
        want = dict(zip([o.name for o in ref.get_outputs()],
                        ref.run(None, {a: b for a, b in feeds.items() if a in ref_inputs})))
        got = dict(zip(names, out.run(None, feeds)))
        for name in names:
            if name not in want:
                raise CheckError(f"output {name!r} is missing from the original; "
                                 "nothing was written")
            a = np.asarray(want[name], dtype=np.float64)
            b = np.asarray(got[name], dtype=np.float64)
            if a.shape != b.shape:
                raise CheckError(f"output {name!r} has shape {b.shape}, the original "
                                 f"{a.shape}; nothing was written")
            if a.size == 0:
                continue
            diff = np.abs(a - b)
            max_abs = max(max_abs, float(np.nanmax(diff)))
            max_rel = max(max_rel, float(np.nanmax(diff / np.maximum(np.abs(a), 1e-12))))
            if not np.allclose(b, a, rtol=rtol, atol=atol, equal_nan=True):
                passed = False
        if progress is not None:
            progress(k + 1)
    return CheckResult(passed, n, rtol, atol, max_abs, max_rel)
