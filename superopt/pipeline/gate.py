"""The end-to-end A/B gate: is a candidate model really faster than the original?

A sum of per-op costs ranks candidates; only whole-model timings decide. Timing noise on the
development machines reaches 13% between two runs of the *same* model, and on CUDA a session can
stay 50% slower than the next because of the cuDNN algorithms it picked at its first run
(`anchors.md`). So `compare_models`

- creates several fresh sessions per model and cycles over them across rounds,
- interleaves the models within each round, rotating which goes first,
- takes the best of N runs within a round (the least disturbed run) and the median across
  rounds (robust to a disturbed round or a stuck session),
- and lets a candidate win only by a margin larger than the noise it measured.

Example:
    >>> result = compare_models(original, [rewritten], "cpu")   # doctest: +SKIP
    >>> result.best_index, f"{result.speedup:.2f}x"              # doctest: +SKIP
    (0, '1.31x')
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from superopt.runtime import (
    ModelLike,
    Runner,
    make_session,
    random_feeds,
    resolve_device,
)

# Bounds on the adaptive number of runs per round: at least one; many more than a few hundred
# only stretch a round over more drift without sharpening its minimum.
MIN_RUNS_PER_ROUND = 1
MAX_RUNS_PER_ROUND = 500


@dataclass(frozen=True)
class ModelTiming:
    """One model's timings in an A/B comparison (seconds).

    `rounds_s` holds the best run of each round, in round order; `median_s` is their median and
    `spread` is (p90 - p10) / median of them, the relative noise between rounds (the same
    measure as `superopt.runtime.Timing.spread`).
    """

    median_s: float
    spread: float
    rounds_s: list[float] = field(repr=False)

    @classmethod
    def from_rounds(cls, rounds_s: Sequence[float]) -> ModelTiming:
        values = np.asarray(rounds_s, dtype=np.float64)
        median = float(np.median(values))
        p10, p90 = np.percentile(values, [10, 90])
        spread = float((p90 - p10) / median) if median > 0 else 0.0
        return cls(median_s=median, spread=spread, rounds_s=list(rounds_s))


@dataclass(frozen=True)
class ABResult:
    """The outcome of `compare_models`.

    `ratios[i]` is baseline median / candidate i's median (above 1: the candidate is faster);
    `margins[i]` is how far above 1 it had to be to win; `best_index` is the winning candidate
    with the highest ratio, or None when none beat the baseline beyond the noise.
    """

    device: str
    baseline: ModelTiming
    candidates: list[ModelTiming]
    ratios: list[float]
    margins: list[float]
    best_index: int | None
    rounds: int
    runs_per_round: int
    sessions: int
    elapsed_s: float

    @property
    def wins(self) -> list[bool]:
        """For each candidate, whether it beat the baseline beyond its margin."""
        return [ratio > 1.0 + margin for ratio, margin in zip(self.ratios, self.margins)]

    @property
    def speedup(self) -> float:
        """The winner's speedup over the baseline (1.0 when nothing won)."""
        return 1.0 if self.best_index is None else self.ratios[self.best_index]

    def summary(self) -> str:
        """A few lines for humans: every model's median and spread, and the verdict."""
        lines = [
            (
                f"A/B on {self.device}: {self.rounds} rounds x {self.runs_per_round} runs, "
                f"{self.sessions} sessions per model, {self.elapsed_s:.1f} s"
            ),
            f"  baseline     {_ms(self.baseline.median_s)}  spread {self.baseline.spread:.1%}",
        ]
        for i, (timing, ratio, margin, won) in enumerate(
            zip(self.candidates, self.ratios, self.margins, self.wins)
        ):
            verdict = "faster" if won else "not faster beyond noise"
            lines.append(
                f"  candidate {i:<2} {_ms(timing.median_s)}  spread {timing.spread:.1%}  "
                f"{ratio:.3f}x (needs > {1 + margin:.3f}x): {verdict}"
            )
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def compare_models(
    baseline: ModelLike,
    candidates: Sequence[ModelLike],
    device: str,
    *,
    rounds: int = 9,
    runs_per_round: int | None = None,
    sessions: int | None = None,
    level: str = "all",
    feeds: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    min_margin: float = 0.01,
    budget_s: float = 4.0,
    warmup_s: float | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> ABResult:
    """Time `baseline` and each candidate end to end, interleaved; say which (if any) is faster.

    Method (anchors.md: on real models it kept self-comparisons on the 2-core machines within
    0.99-1.02; under heavy load from other processes medians can still drift apart by tens of
    percent, which the margin below then absorbs):
    - `sessions` fresh sessions per model (default 2 on the CPU, 3 on CUDA), each run once
      untimed to warm up; round r uses session (r // number of models) mod `sessions`, so every
      session meets every position in the order;
    - in each of `rounds` rounds every model runs `runs_per_round` times back to back and keeps
      its fastest run; the order of the models rotates every round (with two models: alternates);
    - a model's time is the median of its per-round values; its spread is (p90 - p10) / median
      of them.

    Decision rule: candidate i wins only if ``ratio = baseline_median / candidate_median`` exceeds
    ``1 + margin`` with ``margin = max(min_margin, hypot(baseline.spread, candidate.spread))``.
    Why this spread: the noise that fools a gate is not only round-to-round jitter (which a
    median of nine would shrink three-fold) but also offsets that persist for a whole session
    or for seconds of load from other processes; the per-round spread contains both, since rounds
    cycle over sessions and over time. On the loaded 2-core development machine, 45 comparisons
    of a model with itself (90 one-sided chances) gave no false win with this rule, against 2-3
    with the interquartile range or half the p10-p90 range; the price is that gains below the
    noise (about 3-5% there, 3-8% on an H100) are not claimed. The spreads are combined in
    quadrature as independent noise, and `min_margin` (1%) covers what no spread can see, such
    as drift shared by all rounds. A missed gain costs little; writing a model that is not
    faster breaks superopt's promise.

    Before the rounds, every session runs once, then all keep running for `warmup_s` seconds
    (default 1 s on CUDA, where clocks ramp up, 0.1 s on the CPU). `runs_per_round` None
    picks it from a few timed runs so that warm-up and rounds take about `budget_s` seconds
    (building the sessions comes on top; at least one run per round: very slow models overrun
    it).
    Inputs are `feeds` or `random_feeds(baseline, seed)`, the same for every model. `progress`,
    if given, is called as progress(done, total) after each model's block of runs.

    Example:
        >>> result = compare_models(model, [faster_model], "cpu", budget_s=2)  # doctest: +SKIP
        >>> result.best_index, round(result.ratios[0], 2)                       # doctest: +SKIP
        (0, 1.8)
    """
    start = time.perf_counter()
    if not candidates:
        raise ValueError("compare_models needs at least one candidate")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    if runs_per_round is not None and runs_per_round < 1:
        raise ValueError("runs_per_round must be at least 1")
    resolved = resolve_device(device)
    n_sessions = sessions if sessions is not None else (3 if resolved == "cuda" else 2)
    if n_sessions < 1:
        raise ValueError("sessions must be at least 1")
    models = [baseline, *candidates]
    feeds = feeds if feeds is not None else random_feeds(baseline, seed)

    runners = [
        [
            Runner(make_session(model, resolved, level=level, threads=threads), feeds)
            for _ in range(n_sessions)
        ]
        for model in models
    ]
    for model_runners in runners:
        for runner in model_runners:
            runner.run()  # allocations and, on CUDA, the cuDNN algorithm search
    per_round, runs_per_round = time_rounds(runners, resolved, rounds=rounds,
                                            runs_per_round=runs_per_round, budget_s=budget_s,
                                            warmup_s=warmup_s, progress=progress)
    timings = [ModelTiming.from_rounds(values) for values in per_round]
    base, cands = timings[0], timings[1:]
    ratios, margins, best = decide(base, cands, min_margin)
    return ABResult(
        device=resolved,
        baseline=base,
        candidates=cands,
        ratios=ratios,
        margins=margins,
        best_index=best,
        rounds=rounds,
        runs_per_round=runs_per_round,
        sessions=n_sessions,
        elapsed_s=time.perf_counter() - start,
    )


def decide(
    baseline: ModelTiming, candidates: Sequence[ModelTiming], min_margin: float = 0.01
) -> tuple[list[float], list[float], int | None]:
    """The decision rule of `compare_models`: (ratios, margins, index of the best winner or None).

    Example:
        >>> base = ModelTiming.from_rounds([10e-3] * 9)
        >>> decide(base, [ModelTiming.from_rounds([5e-3] * 9)])
        ([2.0], [0.01], 0)
    """
    ratios = [
        baseline.median_s / cand.median_s if cand.median_s > 0 else math.inf for cand in candidates
    ]
    margins = [noise_margin(baseline, cand, min_margin) for cand in candidates]
    winners = [i for i, (ratio, margin) in enumerate(zip(ratios, margins)) if ratio > 1 + margin]
    best = max(winners, key=lambda i: ratios[i]) if winners else None
    return ratios, margins, best


def noise_margin(a: ModelTiming, b: ModelTiming, min_margin: float = 0.01) -> float:
    """How far from 1 the ratio of two timings must be to count: the larger of `min_margin`
    and their spreads combined in quadrature (see `compare_models` for why)."""
    return max(min_margin, math.hypot(a.spread, b.spread))


def time_rounds(runners: Sequence[Sequence[Runner]], device: str, *, rounds: int,
                runs_per_round: int | None = None, budget_s: float = 4.0,
                warmup_s: float | None = None,
                progress: Callable[[int, int], None] | None = None
                ) -> tuple[list[list[float]], int]:
    """The measuring part of `compare_models`, for any group of models: each entry of `runners`
    is one model's sessions (already run once). Returns each model's best run per round, in
    round order, and the runs per round used.

    Warm-up for `warmup_s` (default 1 s on CUDA, where clocks ramp up, 0.1 s on the CPU); then
    `rounds` rounds in which the order of the models rotates and round r uses session
    (r // models) mod sessions; each model keeps its best of `runs_per_round` runs (None: fitted
    so that warm-up and rounds take about `budget_s`). The garbage collector is off while
    timing: a collection inside one run would be charged to one model.
    """
    measuring_since = time.perf_counter()
    # A GPU ramps its clocks up over a fraction of a second (on an H100 the first rounds ran
    # 30% slower without this, and the spread that caused made margins of 30-40%); a CPU core
    # leaves its idle state.
    if warmup_s is None:
        warmup_s = 1.0 if device == "cuda" else 0.1
    warm_until = time.perf_counter() + warmup_s
    while time.perf_counter() < warm_until:
        for model_runners in runners:
            for runner in model_runners:
                runner.run()
    if runs_per_round is None:
        # Rounds cost the mean run, not the best one: estimate with the mean of a few.
        estimate = sum(float(np.mean(model_runners[0].times(3))) for model_runners in runners)
        remaining = budget_s - (time.perf_counter() - measuring_since)
        runs_per_round = _runs_per_round(remaining, rounds, estimate)
    n, n_sessions = len(runners), len(runners[0])
    per_round: list[list[float]] = [[] for _ in runners]
    total, done = rounds * n, 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            session_index = (r // n) % n_sessions
            shift = r % n
            for m in [*range(shift, n), *range(shift)]:
                per_round[m].append(runners[m][session_index].best_of(runs_per_round))
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        if was_enabled:
            gc.enable()
    return per_round, runs_per_round


def _runs_per_round(remaining_s: float, rounds: int, seconds_per_round_run: float) -> int:
    """How many runs per model and round fit `remaining_s` seconds."""
    if seconds_per_round_run <= 0:
        return MAX_RUNS_PER_ROUND
    fit = int(max(remaining_s, 0.0) / (rounds * seconds_per_round_run))
    return max(MIN_RUNS_PER_ROUND, min(MAX_RUNS_PER_ROUND, fit))
