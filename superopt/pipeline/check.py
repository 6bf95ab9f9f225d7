"""The numerical check: the original and the result on valid random inputs through ONNX Runtime.

Inputs come from each input's valid values (`superopt.runtime.input_domains` of the original:
indices within the table they index, positive values where the model takes a log, a root, a
reciprocal or a quotient), drawn by `superopt.runtime.random_feeds`. When the original's
outputs are not finite on N(0, 1) inputs, the next distributions of `DISTRIBUTIONS` are tried
(uniform(0.5, 1.5), then small integers) and the one with the most finite outputs is used.

A model with symbolic input dims is checked at every set of sizes the caller gives (`shapes`:
the pipeline's representative sizes and a second, different set, `superopt.pipeline.shapes`),
`n` input sets at each; every one must pass.

Both models run on ORT's CPU provider. Output by output, NaN and Inf must sit at the same
positions in both (Inf with the same sign), and values finite in both must agree within
rtol/atol, which follow the output's element type (`DEFAULT_TOLERANCES`) unless the caller
sets them. Values beyond that bound are held once more to the original's own rounding noise:
the original is run again on the same inputs with ORT's graph optimizations disabled, and a
value passes when its difference is within atol + rtol·|original| plus `NOISE_FACTOR` times the
largest difference ORT's optimizations alone make in that output. Why: in a float32 sum the
rounding error scales with the terms, not the result, so where activations grow large (a
CNN with random weights reaches 1e12 in its logits) a logit that cancels to near zero carries an
error far above rtol·|value|. On torchvision's Inception-v3 with random weights, ORT's own
fusions move the logits by up to 8e5 and fail the plain bound on 1-4 values, while ten merged
Convs moved them by 5e5; with ORT's optimizations off, both models agree to the bit. A wrong
rewrite moves values by their own size, orders of magnitude beyond that noise. The record
counts the values that passed only by the allowance and the noise of each such output. The
allowance widens the dtype defaults only: tolerances the caller sets (`--rtol/--atol`) are held
exactly.

bfloat16 tensors, which numpy and ORT's Python API cannot exchange directly, are fed through
`superopt.runtime.run_session` and read back through a Cast to float32 appended to each
bfloat16 output of both models (exact: every bfloat16 is a float32), compared with bfloat16's
tolerances. The record (`CheckResult`) counts the mismatched NaN/Inf positions and keeps the
largest errors over finite values only (None when no finite value was compared): a NaN never
reads as an error of 0.

The check fails safe: when it cannot compare (an input whose valid values are unknown, an output
the original leaves NaN/Inf everywhere under every distribution, an original that fails on the
inputs drawn for it), `check_result` raises `CheckError` and nothing is written. An unchanged
original that ORT cannot run at all (e.g. a custom-domain op) is reported as skipped.

Example:
    >>> numerical_check("in.onnx", onnx.load("out.onnx")).passed   # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from superopt.core.errors import CheckError, ModelError

DEFAULT_CHECK_N = 3
#: a value beyond atol + rtol·|original| still passes within this many times the original's own
#: rounding noise (ORT's graph optimizations on versus off, same inputs): the rewrite's
#: reordering adds to ORT's, so one times would leave no margin (see the module doc)
NOISE_FACTOR = 2.0

#: (rtol, atol) by output element type; integer and boolean outputs must be equal.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-3),
    "bfloat16": (1e-2, 1e-3),
}

_NOTHING_WRITTEN = "nothing was written"
_NO_CHECK_HINT = "nothing was written (--no-check writes without the check)"


def tolerance_for(dtype: np.dtype | str, rtol: float | None = None,
                  atol: float | None = None) -> tuple[float, float]:
    """(rtol, atol) for outputs of `dtype`: the caller's where given, else the dtype's default.

    Example:
        >>> tolerance_for("float16")
        (0.01, 0.001)
        >>> tolerance_for("float16", rtol=1e-3)
        (0.001, 0.001)
    """
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name in DEFAULT_TOLERANCES:
        default = DEFAULT_TOLERANCES[name]
    elif name.startswith(("int", "uint", "bool")):
        default = (0.0, 0.0)
    else:
        default = DEFAULT_TOLERANCES["float32"]
    return (default[0] if rtol is None else rtol, default[1] if atol is None else atol)


@dataclass
class Comparison:
    """One output of the original (`expected`) against the result (`actual`)."""

    compared: int  # positions finite in both
    nonfinite: int  # positions NaN or Inf in the original
    nan_mismatches: int  # positions NaN in one model only
    inf_mismatches: int  # positions Inf in one model and not the same Inf in the other (no NaN)
    beyond_tolerance: int  # positions finite in both and farther apart than the tolerance
    max_abs_error: float | None  # over positions finite in both; None when there are none
    max_rel_error: float | None

    @property
    def passed(self) -> bool:
        return not (self.nan_mismatches or self.inf_mismatches or self.beyond_tolerance)

    def failure(self, output: str, rtol: float, atol: float) -> str:
        """What differs, in one line ("" when nothing does)."""
        parts = []
        if self.nan_mismatches:
            parts.append(f"NaN at {self.nan_mismatches} position(s) in one model only")
        if self.inf_mismatches:
            parts.append(f"Inf at {self.inf_mismatches} position(s) not matched by the same Inf")
        if self.beyond_tolerance:
            parts.append(f"{self.beyond_tolerance} finite value(s) beyond rtol {rtol:g}, atol "
                         f"{atol:g} (max abs error {self.max_abs_error:.3g})")
        return f"output {output!r}: " + "; ".join(parts) if parts else ""


def compare_arrays(expected: np.ndarray, actual: np.ndarray, rtol: float,
                   atol: float) -> Comparison:
    """Compare two arrays of one shape: NaN/Inf patterns exactly, finite values within
    |actual - expected| <= atol + rtol * |expected|.

    Example:
        >>> c = compare_arrays(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), 1e-4, 1e-5)
        >>> c.passed, c.nan_mismatches, c.max_abs_error
        (False, 1, 0.0)
    """
    a = np.asarray(expected).astype(np.float64, copy=False)
    b = np.asarray(actual).astype(np.float64, copy=False)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    both = finite_a & finite_b
    inf_mismatch = ~nan_a & ~nan_b & ~both & (a != b)
    compared = int(np.count_nonzero(both))
    max_abs = max_rel = None
    beyond = 0
    if compared:
        want, diff = a[both], np.abs(a[both] - b[both])
        max_abs = float(diff.max())
        max_rel = float((diff / np.maximum(np.abs(want), 1e-12)).max())
        beyond = int(np.count_nonzero(diff > atol + rtol * np.abs(want)))
    return Comparison(compared=compared, nonfinite=int(np.count_nonzero(~finite_a)),
                      nan_mismatches=int(np.count_nonzero(nan_a != nan_b)),
                      inf_mismatches=int(np.count_nonzero(inf_mismatch)),
                      beyond_tolerance=beyond, max_abs_error=max_abs, max_rel_error=max_rel)


@dataclass
class CheckResult:
    """The numerical check: original vs result through ORT on the CPU provider.

    `rtol`/`atol` are the tolerances of float32 outputs (or the caller's); `tolerances` has
    those used for each output element type. The errors are over values finite in both models
    (None when no finite value was compared); NaN/Inf positions are counted, never folded in.
    """

    passed: bool
    n: int
    rtol: float
    atol: float
    max_abs_error: float | None
    max_rel_error: float | None
    skipped: bool = False
    note: str = ""  # why the check was skipped, when it was
    compared: int = 0  # output values finite in both models, compared within tolerance
    nonfinite: int = 0  # output values NaN or Inf in the original (their positions must match)
    nan_mismatches: int = 0
    inf_mismatches: int = 0
    beyond_tolerance: int = 0
    failure: str = ""  # the first difference, one line (empty when passed)
    # values beyond atol + rtol·|original| that passed within the original's rounding noise,
    # and that noise for each output where it was measured (largest |ORT all - ORT off|)
    within_noise: int = 0
    rounding_noise: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, dict[str, float]] = field(default_factory=dict)
    distributions: list[str] = field(default_factory=list)  # per input set, as drawn
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> its valid values
    # the input shapes checked at, one {input: dims} per set of sizes (models with symbolic
    # dims are checked at two sets; empty for a model checked at its static shapes only)
    shapes: list[dict[str, list[int]]] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items()}

    def summary(self) -> str:
        """One line: what was compared and the largest error, NaN/Inf positions counted."""
        if self.skipped:
            return f"skipped ({self.note})"
        verdict = "passed" if self.passed else "FAILED"
        if self.max_abs_error is None:
            errors = "no finite value compared"
        else:
            errors = (f"max abs error {self.max_abs_error:.2g}, max rel error "
                      f"{self.max_rel_error:.2g} over {self.compared} finite values")
        nonfinite = (f"; {self.nonfinite} NaN/Inf positions, {self.nan_mismatches} NaN and "
                     f"{self.inf_mismatches} Inf mismatched" if self.nonfinite
                     or self.nan_mismatches or self.inf_mismatches else "")
        at = f" at {len(self.shapes)} input shapes" if len(self.shapes) > 1 else ""
        return f"{verdict} on {self.n} random inputs{at} ({errors}{nonfinite}){self.noise_note()}"

    def noise_note(self) -> str:
        """"; N value(s) within 2x the original's own rounding noise (...)": the values that
        passed only by the noise allowance; "" when none did."""
        if not self.within_noise:
            return ""
        worst = max(self.rounding_noise.items(), key=lambda kv: kv[1])
        return (f"; {self.within_noise} value(s) within {NOISE_FACTOR:g}x the original's own "
                f"rounding noise (ORT's graph optimizations alone move output {worst[0]!r} by "
                f"up to {worst[1]:.2g})")


def check_result(original: str | os.PathLike | onnx.ModelProto | None, result: onnx.ModelProto,
                 *, baseline: onnx.ModelProto, changed: bool, n: int = DEFAULT_CHECK_N,
                 rtol: float | None = None, atol: float | None = None,
                 shapes: Sequence[Mapping[str, object]] | None = None,
                 progress: Callable[[int], None] | None = None) -> CheckResult:
    """The check phase: `numerical_check`, raising `CheckError` when the result differs or
    cannot be checked.

    `baseline` (the original as exported) stands in for `original` when that cannot load;
    `changed` False means `result` is the original passed through: if ORT cannot run it there is
    nothing to compare and nothing was rewritten, so the check is skipped with a note.
    """
    try:
        outcome = numerical_check(original, result, n=n, rtol=rtol, atol=atol,
                                  baseline_fallback=baseline, shapes=shapes, progress=progress)
    except ModelError as e:
        if changed:
            raise
        f32 = tolerance_for("float32", rtol, atol)
        return CheckResult(True, 0, f32[0], f32[1], None, None, skipped=True,
                           note=f"not run: {str(e).splitlines()[0][:200]}")
    if not outcome.passed:
        raise CheckError(f"the optimized model differs from the original: {outcome.failure}; "
                         f"{_NOTHING_WRITTEN}")
    return outcome


def numerical_check(original: str | os.PathLike | onnx.ModelProto | None,
                    result: onnx.ModelProto, *, n: int = DEFAULT_CHECK_N,
                    rtol: float | None = None, atol: float | None = None,
                    baseline_fallback: onnx.ModelProto | None = None, seed: int = 0,
                    shapes: Sequence[Mapping[str, object]] | None = None,
                    progress: Callable[[int], None] | None = None) -> CheckResult:
    """Run original and result on `n` sets of valid random inputs (seeds seed..seed+n-1, shapes
    from the result) through ORT's CPU provider and compare every output (see the module doc).
    `shapes`: the `random_feeds` overrides of each set of sizes to check at (`n` input sets at
    each; None: the inputs' declared shapes, symbolic dims 1).

    Raises `ModelError` when ORT cannot load the original, and `CheckError` when the result does
    not load or run, an output is missing or has another shape, or the check cannot compare.

    Example:
        >>> numerical_check("in.onnx", onnx.load("out.onnx")).passed   # doctest: +SKIP
        True
    """
    from superopt.runtime import (
        DISTRIBUTIONS,
        error_line,
        input_domains,
        make_session,
        random_feeds,
        run_session,
    )

    ref_model = original if original is not None else baseline_fallback
    try:
        ref = make_session(_float_outputs(ref_model), "cpu", level="all")
    except ModelError:
        if baseline_fallback is None:
            raise
        ref_model = baseline_fallback
        ref = make_session(_float_outputs(ref_model), "cpu", level="all")
    out_dtypes = _bf16_outputs(result)
    try:
        out = make_session(_float_outputs(result), "cpu", level="all")
    except ModelError as e:
        raise CheckError(f"the optimized model does not load in ONNX Runtime ({e}); "
                         f"{_NOTHING_WRITTEN}") from None
    sets = list(shapes) if shapes else [None]
    # The original's uses of its inputs say which values are valid.
    domains = input_domains(ref_model, sets[0])
    for name in (i.name for i in out.get_inputs()):
        domain = domains.get(name)
        if domain is not None and not domain.known:
            raise CheckError(f"cannot check the result: the valid values of input {name!r} are "
                             f"unknown ({domain.why}); {_NO_CHECK_HINT}")
    names = [o.name for o in out.get_outputs()]
    ref_names = [o.name for o in ref.get_outputs()]
    for name in names:
        if name not in ref_names:
            raise CheckError(f"output {name!r} is missing from the original; {_NOTHING_WRITTEN}")
    ref_inputs = {i.name for i in ref.get_inputs()}
    # tolerances the caller set are the bound, held exactly (`--rtol 0 --atol 0` asks for
    # bit-equal outputs); the rounding-noise allowance widens only the dtype defaults
    allowance = rtol is None and atol is None
    # the original without ORT's graph optimizations (made when first needed) and its outputs
    # on the input set last asked about: one run per input set, whichever outputs need it
    unoptimized: dict = {"session": None, "feeds": None, "outputs": None}

    def rounding_noise(feeds: dict, name: str, a: np.ndarray) -> float:
        """The largest difference ORT's graph optimizations make in output `name` of the
        original on `feeds` (0 when it cannot tell)."""
        if unoptimized["feeds"] is not feeds:
            try:
                if unoptimized["session"] is None:
                    unoptimized["session"] = make_session(_float_outputs(ref_model), "cpu",
                                                          level="disable")
                outputs = run_session(unoptimized["session"],
                                      {x: y for x, y in feeds.items() if x in ref_inputs})
            except Exception:  # noqa: BLE001 - no noise figure: the plain bound stands
                return 0.0
            unoptimized.update(feeds=feeds, outputs=dict(zip(ref_names, outputs)))
        plain = np.asarray(unoptimized["outputs"][name]).astype(np.float64)
        ref_a = a.astype(np.float64)
        finite = np.isfinite(plain) & np.isfinite(ref_a)
        return float(np.abs(plain[finite] - ref_a[finite]).max()) if finite.any() else 0.0

    f32 = tolerance_for("float32", rtol, atol)
    record = CheckResult(True, n * len(sets), f32[0], f32[1], None, None,
                         inputs={k: d.describe() for k, d in domains.items()})
    ever_finite = dict.fromkeys(names, False)
    at = ""  # " at input_ids 2×7": where the inputs were drawn, when there are several sets

    def run_original(feeds: dict) -> dict:
        try:
            outputs = run_session(ref, {a: b for a, b in feeds.items() if a in ref_inputs})
        except Exception as e:  # noqa: BLE001 (ORT raises plain Exceptions)
            hint = ("; if it runs only at some sizes of its symbolic dims, fix them with "
                    "--overwrite-input-shape") if at else ""
            raise CheckError(f"cannot check the result: the original model fails on the inputs "
                             f"drawn for it{at} ({error_line(e)}){hint}; {_NO_CHECK_HINT}"
                             ) from None
        return dict(zip(ref_names, outputs))

    done = 0
    for overrides in sets:
        first = {}
        if len(sets) > 1:
            at = " at " + ", ".join(f"{a} {'×'.join(map(str, d))}"
                                    for a, d in (overrides or {}).items()
                                    if not isinstance(d, int))
        for k in range(n):
            feeds, want, distribution = _draw_valid_inputs(
                DISTRIBUTIONS, names, run_original,
                lambda dist, s=seed + k, o=overrides: random_feeds(
                    result, seed=s, overrides=o, distribution=dist, domains=domains))
            record.distributions.append(distribution)
            if not first:
                first = {a: list(np.shape(b)) for a, b in feeds.items()}
                if len(sets) > 1:
                    record.shapes.append(first)
            try:
                got = dict(zip(names, run_session(out, feeds)))
            except Exception as e:  # noqa: BLE001 (ORT raises plain Exceptions)
                raise CheckError(f"the optimized model fails on valid inputs{at} "
                                 f"({error_line(e)}); {_NOTHING_WRITTEN}") from None
            for name in names:
                a, b = np.asarray(want[name]), np.asarray(got[name])
                if a.shape != b.shape:
                    raise CheckError(f"output {name!r} has shape {b.shape}, the original "
                                     f"{a.shape}{at}; {_NOTHING_WRITTEN}")
                dtype = out_dtypes.get(name, b.dtype.name)
                o_rtol, o_atol = tolerance_for(dtype, rtol, atol)
                record.tolerances[dtype] = {"rtol": o_rtol, "atol": o_atol}
                if a.size == 0:
                    ever_finite[name] = True  # nothing to compare, nothing hidden either
                    continue
                c = compare_arrays(a, b, o_rtol, o_atol)
                if allowance and c.beyond_tolerance and a.dtype.kind == "f" \
                        and not (c.nan_mismatches or c.inf_mismatches):
                    noise = rounding_noise(feeds, name, a)
                    if noise > 0:
                        record.rounding_noise[name] = max(record.rounding_noise.get(name, 0.0),
                                                          noise)
                        loose = compare_arrays(a, b, o_rtol, o_atol + NOISE_FACTOR * noise)
                        record.within_noise += c.beyond_tolerance - loose.beyond_tolerance
                        c = loose
                ever_finite[name] = ever_finite[name] or c.compared > 0
                _accumulate(record, c)
                if not c.passed and record.passed:
                    record.passed = False
                    noise = record.rounding_noise.get(name)
                    record.failure = c.failure(name, o_rtol, o_atol) + (
                        f", beyond {NOISE_FACTOR:g}x the original's own rounding noise "
                        f"({noise:.2g})" if noise and c.beyond_tolerance else "") + at
            done += 1
            if progress is not None:
                progress(done)
    if record.passed:
        for name, finite in ever_finite.items():
            if not finite:
                raise CheckError(
                    f"cannot check the result: output {name!r} of the original is NaN or Inf "
                    f"everywhere on every input distribution tried ({', '.join(DISTRIBUTIONS)}); "
                    f"{_NO_CHECK_HINT}")
    return record


def _bf16_outputs(model: str | os.PathLike | onnx.ModelProto | None) -> dict[str, str]:
    """{output name: "bfloat16"} for the model's bfloat16 graph outputs."""
    if model is None:
        return {}
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(
        os.fspath(model), load_external_data=False)
    return {o.name: "bfloat16" for o in proto.graph.output
            if o.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16}


def _float_outputs(model: str | os.PathLike | onnx.ModelProto | None):
    """The model with a Cast to float32 after each bfloat16 graph output (ORT's Python API
    cannot return bfloat16 arrays); the model itself when it has none. The output keeps its
    name: the value the model computes is renamed."""
    if model is None or not _bf16_outputs(model):
        return model
    proto = onnx.ModelProto()
    proto.CopyFrom(model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model)))
    g = proto.graph
    used = {n for node in g.node for n in list(node.input) + list(node.output)}
    used |= {v.name for v in list(g.input) + list(g.output)} | {t.name for t in g.initializer}
    inputs = {v.name for v in g.input}
    for out in g.output:
        if out.type.tensor_type.elem_type != onnx.TensorProto.BFLOAT16 or out.name in inputs:
            continue
        inner, i = f"{out.name}_bf16", 0
        while inner in used:
            i += 1
            inner = f"{out.name}_bf16_{i}"
        used.add(inner)
        for node in g.node:  # the value the model computes takes the new name
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if x == out.name else x for x in node.input]
        g.node.append(onnx.helper.make_node("Cast", [inner], [out.name],
                                            to=onnx.TensorProto.FLOAT, name=f"{inner}_cast"))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    del g.value_info[:]  # they may name the renamed values under their old types
    return proto


def _draw_valid_inputs(distributions: Sequence[str], names: list[str],
                       run_original: Callable[[dict], dict], draw: Callable[[str], dict]
                       ) -> tuple[dict, dict, str]:
    """Feeds, the original's outputs on them and the distribution's name: the first
    distribution whose outputs are all finite, else the one with the most outputs holding some
    finite value (then the fewest NaN/Inf)."""
    best = None
    for distribution in distributions:
        feeds = draw(distribution)
        want = run_original(feeds)
        with_finite, nonfinite = 0, 0
        for name in names:
            a = np.asarray(want[name])
            if a.dtype.kind not in "fc" or a.size == 0:
                with_finite += 1
                continue
            finite = np.isfinite(a)
            with_finite += bool(finite.any())
            nonfinite += int(finite.size - np.count_nonzero(finite))
        score = (with_finite, -nonfinite)
        if best is None or score > best[0]:
            best = (score, feeds, want, distribution)
        if nonfinite == 0:
            break
    _, feeds, want, distribution = best
    return feeds, want, distribution


def _accumulate(record: CheckResult, c: Comparison) -> None:
    record.compared += c.compared
    record.nonfinite += c.nonfinite
    record.nan_mismatches += c.nan_mismatches
    record.inf_mismatches += c.inf_mismatches
    record.beyond_tolerance += c.beyond_tolerance
    if c.max_abs_error is not None:
        record.max_abs_error = max(record.max_abs_error or 0.0, c.max_abs_error)
        record.max_rel_error = max(record.max_rel_error or 0.0, c.max_rel_error or 0.0)

