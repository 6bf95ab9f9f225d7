"""The end-to-end A/B gate: is a candidate model really faster than the original?

A sum of per-op costs ranks candidates; only whole-model timings decide. Timing noise on the
development machines reaches 13% between two runs of the *same* model, and on CUDA a session can
stay 50% slower than the next because of the cuDNN algorithms it picked at its first run
(`anchors.md`). So `compare_models` measures with the runtime adapter's interleaved loop
(`superopt.runtime.time_interleaved`), which

- creates several fresh sessions per model and cycles over them across rounds,
- interleaves the models within each round, rotating which goes first,
- takes the best of N runs within a round (the least disturbed run) and the median across
  rounds (robust to a disturbed round or a stuck session),

and this module adds only the decision: per-round timings -> ratio, noise margin, verdict. A
candidate wins only by a margin larger than the noise it measured (`decide`, `noise_margin`).

Example:
    >>> result = compare_models(original, [rewritten], "cpu")   # doctest: +SKIP
    >>> result.best_index, f"{result.speedup:.2f}x"              # doctest: +SKIP
    (0, '1.31x')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from superopt.runtime import ModelLike, Timing, time_interleaved


@dataclass(frozen=True)
class ABResult:
    """The outcome of `compare_models`.

    `ratios[i]` is baseline median / candidate i's median (above 1: the candidate is faster);
    `margins[i]` is how far above 1 it had to be to win; `best_index` is the winning candidate
    with the highest ratio, or None when none beat the baseline beyond the noise.
    """

    device: str
    baseline: Timing
    candidates: list[Timing]
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

    Method: `superopt.runtime.time_interleaved` with the same arguments (anchors.md: on real
    models it kept self-comparisons on the 2-core machines within 0.99-1.02; under heavy load
    from other processes medians can still drift apart by tens of percent, which the margin
    below then absorbs):
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
    if not candidates:
        raise ValueError("compare_models needs at least one candidate")
    timed = time_interleaved(
        [baseline, *candidates],
        device,
        level=level,
        rounds=rounds,
        runs_per_round=runs_per_round,
        sessions=sessions,
        budget_s=budget_s,
        warmup_s=warmup_s,
        feeds=feeds,
        threads=threads,
        seed=seed,
        progress=progress,
    )
    base, *cands = timed.timings
    ratios, margins, best = decide(base, cands, min_margin)
    return ABResult(
        device=timed.device,
        baseline=base,
        candidates=cands,
        ratios=ratios,
        margins=margins,
        best_index=best,
        rounds=timed.rounds,
        runs_per_round=timed.runs_per_round,
        sessions=timed.sessions,
        elapsed_s=timed.elapsed_s,
    )


def decide(
    baseline: Timing, candidates: Sequence[Timing], min_margin: float = 0.01
) -> tuple[list[float], list[float], int | None]:
    """The decision rule of `compare_models`: (ratios, margins, index of the best winner or None).

    Example:
        >>> base = Timing.from_samples([10e-3] * 9)
        >>> decide(base, [Timing.from_samples([5e-3] * 9)])
        ([2.0], [0.01], 0)
    """
    ratios = [
        baseline.median_s / cand.median_s if cand.median_s > 0 else math.inf for cand in candidates
    ]
    margins = [noise_margin(baseline, cand, min_margin) for cand in candidates]
    winners = [i for i, (ratio, margin) in enumerate(zip(ratios, margins)) if ratio > 1 + margin]
    best = max(winners, key=lambda i: ratios[i]) if winners else None
    return ratios, margins, best


def noise_margin(a: Timing, b: Timing, min_margin: float = 0.01) -> float:
    """How far from 1 the ratio of two timings must be to count: the larger of `min_margin`
    and their spreads combined in quadrature (see `compare_models` for why)."""
    return max(min_margin, math.hypot(a.spread, b.spread))
