"""The end-to-end gate: is a candidate model really faster than the original, beyond the noise
this machine shows now?

A sum of per-op costs ranks candidates; only whole-model timings decide. Timing noise on the
development machines reaches 13% between two runs of the *same* model, and two sets of fresh
sessions of one model stay a few percent apart for their whole life (`anchors.md`,
docs/gate.md). So the gate calibrates itself with an A/A control: it times the original twice,
as two independent sets of fresh sessions (A and A′), alongside the candidates, and a candidate
wins only when its gain over the original is larger than what A/A′ shows, at a stated
confidence (one-sided, `alpha` = 1% by default, for the whole sequential procedure).

Measuring (`superopt.runtime.SessionRounds`): `sessions` slots, each holding one fresh session
of every model (A, A′, C1, ...); round r uses slot r mod `sessions`; within a round the models
run in a random order, each `runs_per_round` times back to back, keeping its fastest run.

The test (`slot_statistics`, `decide`), for each candidate C, on log times:

- per round r, ``g_r = (log A_r + log A′_r) / 2 - log C_r`` (C's gain over the original's two
  copies) and ``h_r = log A_r - log A′_r`` (the A/A′ control); both are *paired* within the
  round, so drift and load that last longer than a round cancel;
- per slot j, their medians over the slot's rounds, ``g_j`` and ``h_j`` (robust to a disturbed
  round). The slot is the unit of independence: sessions differ by a lifelong offset, so rounds
  of one slot are not independent draws, but slots are;
- under H0 (C is the original again) A, A′ and C are exchangeable copies, so with a per-copy
  slot-level variance tau², ``g_j ~ N(0, 1.5 tau²)`` and ``h_j ~ N(0, 2 tau²)``, uncorrelated
  (cov = (var A - var A′)/2 = 0). tau² is estimated from both: ``sum h_j² / 2`` (S degrees of
  freedom, the control's mean is 0 under H0) plus ``sum (g_j - mean g)² / 1.5`` (S - 1), so
  ``t = mean(g) / sqrt(1.5 tau² / S)`` is Student-t with 2S - 1 degrees of freedom;
- sequential: the test is looked at `looks` times at most (3 by default: at a third, two thirds
  and the end of the planned rounds, or earlier when the budget runs out), each look at level
  ``alpha / (looks x candidates)`` (Bonferroni over looks and candidates), so the chance of any
  false win over the whole procedure is at most `alpha`. The gate stops at the first look where
  the best candidate wins or every candidate is clearly not faster (its upper confidence bound
  is below `min_gain`), else at the last;
- a minimum effect on top: the estimated gain must also exceed `min_gain` (1%) and the A/A′
  disagreement of this very run, |mean h|: a gain smaller than the machine's own A/A′ offset
  is not claimed even when significant.

Example:
    >>> result = compare_models(original, [rewritten], "cpu")   # doctest: +SKIP
    >>> result.best_index, f"{result.speedup:.2f}x"              # doctest: +SKIP
    (0, '1.31x')
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from superopt.runtime import ModelLike, SessionRounds, Timing

#: the default false-win rate of the whole sequential procedure (one-sided)
DEFAULT_ALPHA = 0.01
#: the default number of looks at the data (Bonferroni over looks)
DEFAULT_LOOKS = 3
#: the default budget of one comparison, seconds (sessions, warm-up and rounds)
DEFAULT_BUDGET_S = 6.0
#: gains below this are never claimed (the floor of the minimum effect)
DEFAULT_MIN_GAIN = 0.01
#: one model's block of runs in a round lasts about this long: many short rounds
ROUND_BLOCK_S = 0.02
#: each model runs at least this often per round, the fastest run kept: a run that another
#: process preempted rarely coincides with a second one
MIN_RUNS_PER_ROUND = 2
#: slots (sessions per model) are added until building them has used this share of the budget
BUILD_SHARE = 0.4
#: ... but never fewer than this many (the test has 2 x slots - 1 degrees of freedom)
MIN_SLOTS = 3
#: at least this many rounds per slot before the first look
MIN_PASSES_FIRST_LOOK = 2
#: the sessions' weights held at once stay under this many bytes (the slot count shrinks)
SESSION_BYTES_CAP = 3e9

#: the stop reasons of a comparison
STOP_WIN = "a candidate won"
STOP_FUTILE = "no candidate can win"
STOP_PLANNED = "planned rounds done"
STOP_BUDGET = "budget spent"


# ---------------------------------------------------------------------------------------------
# Student's t, numpy-free of scipy


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom.

    Example:
        >>> round(t_sf(0.0, 5), 6), round(t_sf(3.365, 5), 4)
        (0.5, 0.01)
    """
    if math.isnan(t):
        return 1.0
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T > t) = `p` (0 < p < 1), by bisection on `t_sf`.

    Example:
        >>> round(t_quantile(0.01, 5), 3)
        3.365
    """
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p > 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class SlotStatistics:
    """The A/A-calibrated test of one candidate at one look (see the module doc).

    `gain` is the estimated log speedup over the original (mean over slots of the per-slot
    median of ``(log A + log A′)/2 - log C``), `control` the mean over slots of the A/A′ log
    ratio, `se` the standard error of `gain` under H0, `t` = gain / se with `df` degrees of
    freedom, `p` the one-sided p-value P(T >= t).
    """

    gain: float
    control: float
    se: float
    t: float
    df: int
    p: float
    slots: int

    @property
    def ratio(self) -> float:
        """The estimated speedup, original / candidate (above 1: the candidate is faster)."""
        return math.exp(self.gain)

    @property
    def control_ratio(self) -> float:
        """A / A′: how far apart two copies of the original measured in this run."""
        return math.exp(self.control)


def slot_statistics(log_a: Sequence[float], log_twin: Sequence[float],
                    log_c: Sequence[float], slots: Sequence[int]) -> SlotStatistics:
    """The test statistic of one candidate from per-round log times of A, A′ and C and each
    round's slot (at least two slots with rounds).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b, c = (rng.normal(0, 0.02, 12) for _ in range(3))
        >>> s = slot_statistics(a, b, c - 0.2, [r % 4 for r in range(12)])
        >>> round(s.gain, 1), s.df, s.p < 1e-4
        (0.2, 7, True)
    """
    la, lt, lc = (np.asarray(v, dtype=np.float64) for v in (log_a, log_twin, log_c))
    slot_ids = np.asarray(slots)
    g_round = 0.5 * (la + lt) - lc
    h_round = la - lt
    present = [j for j in np.unique(slot_ids)]
    if len(present) < 2:
        raise ValueError("the A/A-calibrated test needs rounds in at least two slots")
    g = np.array([np.median(g_round[slot_ids == j]) for j in present])
    h = np.array([np.median(h_round[slot_ids == j]) for j in present])
    s = len(present)
    gain, control = float(np.mean(g)), float(np.mean(h))
    df = 2 * s - 1
    tau2 = (float(np.sum(h * h)) / 2.0 + float(np.sum((g - gain) ** 2)) / 1.5) / df
    se = math.sqrt(1.5 * tau2 / s)
    if se > 0:
        t = gain / se
    else:
        t = math.inf if gain > 0 else (-math.inf if gain < 0 else 0.0)
    return SlotStatistics(gain=gain, control=control, se=se, t=t, df=df,
                          p=t_sf(t, df), slots=s)


@dataclass(frozen=True)
class Decision:
    """The verdict on each candidate at one look: `won`, `futile` (its upper confidence bound
    is below what a win needs), the gain `needed` to win (log), and the best winner."""

    stats: list[SlotStatistics]
    level: float  # the per-look, per-candidate significance level
    won: list[bool]
    futile: list[bool]
    needed: list[float]
    best_index: int | None

    @property
    def settled(self) -> bool:
        """Whether looking further cannot change the outcome much: the best candidate won, or
        no candidate can."""
        return self.best_index is not None or all(self.futile)


def decide(log_a: Sequence[float], log_twin: Sequence[float],
           log_cands: Sequence[Sequence[float]], slots: Sequence[int], *,
           alpha: float = DEFAULT_ALPHA, looks: int = DEFAULT_LOOKS,
           min_gain: float = DEFAULT_MIN_GAIN) -> Decision:
    """The gate's decision at one look, from per-round log times (see the module doc).

    Candidate i wins when its one-sided p-value is at most ``alpha / (looks x candidates)`` and
    its estimated gain exceeds both ``log(1 + min_gain)`` and the A/A′ disagreement |control|;
    of the winners, the one with the largest gain is best. It is futile when even the upper
    confidence bound of its gain (at the same level) is below ``log(1 + min_gain)``.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> a, b, c = (rng.normal(0, 0.02, 16) for _ in range(3))
        >>> slots = [r % 4 for r in range(16)]
        >>> decide(a, b, [c - 0.2, c + 0.1], slots).won
        [True, False]
    """
    if not log_cands:
        raise ValueError("decide needs at least one candidate")
    level = alpha / (max(1, looks) * len(log_cands))
    stats = [slot_statistics(log_a, log_twin, c, slots) for c in log_cands]
    floor = math.log1p(min_gain)
    df = stats[0].df
    critical = t_quantile(level, df)
    won, futile, needed = [], [], []
    for s in stats:
        need = max(floor, abs(s.control), critical * s.se)
        needed.append(need)
        won.append(s.p <= level and s.gain > floor and s.gain > abs(s.control))
        futile.append(s.gain + critical * s.se < floor)
    winners = [i for i, w in enumerate(won) if w]
    best = max(winners, key=lambda i: stats[i].gain) if winners else None
    return Decision(stats=stats, level=level, won=won, futile=futile, needed=needed,
                    best_index=best)


def noise_margin(a: Timing, b: Timing, min_margin: float = 0.01) -> float:
    """How far from 1 the ratio of two unpaired timings must be to count: the larger of
    `min_margin` and their spreads combined in quadrature. `superopt bench` marks its ratios
    with it; the gate itself decides by the A/A-calibrated test (`decide`)."""
    return max(min_margin, math.hypot(a.spread, b.spread))


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass(frozen=True)
class ABResult:
    """The outcome of `compare_models`.

    `baseline` and `twin` are the original's two copies (A and A′), `candidates` each
    candidate's per-round timings. `ratios[i]` is candidate i's estimated speedup over the
    original (paired, per slot; above 1: faster), `margins[i]` how far above 1 it had to be to
    win at the last look, `p_values[i]` its one-sided p-value there, `wins[i]` whether it won;
    `best_index` is the winner with the largest gain, or None. `control_ratio` is A / A′ at the
    last look: the noise the machine showed in this run. `stop` says why the gate stopped.
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
    twin: Timing | None = None
    p_values: list[float] = field(default_factory=list)
    won: list[bool] = field(default_factory=list)
    control_ratio: float = 1.0
    alpha: float = DEFAULT_ALPHA
    looks: int = 0
    looks_planned: int = DEFAULT_LOOKS
    level: float = DEFAULT_ALPHA
    stop: str = ""
    budget_s: float = DEFAULT_BUDGET_S
    min_gain: float = DEFAULT_MIN_GAIN
    df: int = 0

    @property
    def wins(self) -> list[bool]:
        """For each candidate, whether it won."""
        return list(self.won)

    @property
    def speedup(self) -> float:
        """The winner's estimated speedup over the original (1.0 when nothing won)."""
        return 1.0 if self.best_index is None else self.ratios[self.best_index]

    def to_json(self) -> dict:
        """The report's `latency.gate` object (docs/report-schema.md)."""
        return {
            "method": "A/A-calibrated sequential test",
            "alpha": self.alpha, "looks": self.looks, "looks_planned": self.looks_planned,
            "level_per_look": self.level, "stop": self.stop, "budget_s": self.budget_s,
            "elapsed_s": round(self.elapsed_s, 3), "rounds": self.rounds,
            "runs_per_round": self.runs_per_round, "sessions": self.sessions,
            "control_ratio": self.control_ratio, "min_gain": self.min_gain,
            "twin": ({"median_s": self.twin.median_s, "spread": self.twin.spread}
                     if self.twin is not None else None),
            "candidates": [
                {"ratio": r, "needs": 1.0 + m, "p_value": p, "won": w,
                 "median_s": c.median_s, "spread": c.spread}
                for r, m, p, w, c in zip(self.ratios, self.margins, self.p_values, self.won,
                                         self.candidates)],
            "best_index": self.best_index,
        }

    def summary(self) -> str:
        """A few lines for humans: the method, every model's median and spread, the verdict."""
        lines = [
            (f"A/A-calibrated gate on {self.device}: {self.rounds} rounds x "
             f"{self.runs_per_round} runs, {self.sessions} sessions per model, "
             f"{self.elapsed_s:.1f} s of a {self.budget_s:g} s budget, {self.looks} of "
             f"{self.looks_planned} looks ({self.stop}); one-sided alpha {self.alpha:g} "
             f"overall, {self.level:.2g} per look and candidate"),
            f"  original A   {_ms(self.baseline.median_s)}  spread {self.baseline.spread:.1%}",
        ]
        if self.twin is not None:
            lines.append(f"  original A'  {_ms(self.twin.median_s)}  spread "
                         f"{self.twin.spread:.1%}  A/A' {self.control_ratio:.3f}x "
                         f"(the noise now)")
        for i, (timing, ratio, margin, won) in enumerate(
            zip(self.candidates, self.ratios, self.margins, self.won)
        ):
            verdict = "faster" if won else "not faster beyond the noise"
            p = f"p {self.p_values[i]:.2g}, " if i < len(self.p_values) else ""
            lines.append(
                f"  candidate {i:<2} {_ms(timing.median_s)}  spread {timing.spread:.1%}  "
                f"{ratio:.3f}x ({p}needs > {1 + margin:.3f}x): {verdict}"
            )
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def default_sessions(models: Sequence[ModelLike], device: str) -> int:
    """Slots (sessions per model) for a comparison: 8, fewer for big models so that every
    session's weights together stay under `SESSION_BYTES_CAP`, and at least 3."""
    biggest = max(_model_bytes(m) for m in models)
    fit = int(SESSION_BYTES_CAP / max(1, biggest * len(models)))
    return max(3, min(8, fit))


def _serialized(model: ModelLike) -> ModelLike:
    """A ModelProto as bytes (under protobuf's 2 GiB limit), anything else as it is."""
    if isinstance(model, onnx.ModelProto) and model.ByteSize() < 2**31 - 1:
        return model.SerializeToString()
    return model


def _model_bytes(model: ModelLike) -> int:
    if isinstance(model, bytes):
        return len(model)
    if isinstance(model, (str, os.PathLike)):
        try:
            return os.path.getsize(model)
        except OSError:
            return 0
    return model.ByteSize()


def look_schedule(passes: int, looks: int, first: int = MIN_PASSES_FIRST_LOOK) -> list[int]:
    """The passes (rounds per slot) after which the gate looks: `looks` points spread evenly
    up to `passes`, the first at `first` passes or more, no two equal.

    Example:
        >>> look_schedule(12, 3), look_schedule(3, 3), look_schedule(1, 3)
        ([4, 8, 12], [2, 3], [2])
    """
    passes = max(passes, first)
    points = sorted({max(first, math.ceil(passes * (i + 1) / looks)) for i in range(looks)})
    return points


RoundsFactory = Callable[..., SessionRounds]


def compare_models(
    baseline: ModelLike,
    candidates: Sequence[ModelLike],
    device: str,
    *,
    budget_s: float = DEFAULT_BUDGET_S,
    alpha: float = DEFAULT_ALPHA,
    looks: int = DEFAULT_LOOKS,
    min_gain: float = DEFAULT_MIN_GAIN,
    sessions: int | None = None,
    runs_per_round: int | None = None,
    level: str = "all",
    feeds: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    warmup_s: float | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    rounds_factory: RoundsFactory = SessionRounds,
    clock: Callable[[], float] = time.perf_counter,
) -> ABResult:
    """Time the original twice (A, A′) and each candidate end to end, interleaved, and say which
    candidate (if any) is faster than the A/A′ noise allows at one-sided level `alpha`.

    `budget_s` bounds the whole comparison (sessions, warm-up, rounds): the rounds are planned
    to fit what is left after the sessions are built, and the gate stops at the first look
    that settles the question or once the budget is spent; it always does at least
    `MIN_PASSES_FIRST_LOOK` rounds per slot, so a model whose rounds do not fit the budget
    overruns it. `sessions` None picks `default_sessions`; `runs_per_round` None fits it so
    that one model's block takes about `ROUND_BLOCK_S`. Inputs are `feeds` or
    `random_feeds(baseline, seed)`, the same for every model. `progress(done, planned)` is
    called after every round. `rounds_factory` and `clock` are the timer and the clock (tests
    pass fakes).

    Example:
        >>> result = compare_models(model, [faster_model], "cpu", budget_s=3)  # doctest: +SKIP
        >>> result.best_index, round(result.ratios[0], 2), result.stop          # doctest: +SKIP
        (0, 1.8, 'a candidate won')
    """
    if not candidates:
        raise ValueError("compare_models needs at least one candidate")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    if looks < 1:
        raise ValueError("looks must be at least 1")
    if sessions is not None and sessions < 2:
        raise ValueError("the A/A-calibrated gate needs at least 2 sessions per model")
    if budget_s <= 0:
        raise ValueError("the gate budget must be positive")
    start = clock()
    # Serialized once: every slot builds a session of each model from the same bytes.
    baseline = _serialized(baseline)
    models = [baseline, baseline, *(_serialized(c) for c in candidates)]
    most = sessions if sessions is not None else default_sessions(models, device)
    if runs_per_round is not None and runs_per_round < 1:
        raise ValueError("runs_per_round must be at least 1")
    timer = rounds_factory(models, device, level=level, feeds=feeds, threads=threads, seed=seed)
    # Slots one at a time: with `sessions` None, stop adding once building has taken
    # BUILD_SHARE of the budget (big models under load), keeping at least MIN_SLOTS.
    while timer.sessions < most:
        slot_start = clock()
        timer.add_slot()
        spent, slot_s = clock() - start, clock() - slot_start
        if (sessions is None and timer.sessions >= MIN_SLOTS
                and spent + slot_s > BUILD_SHARE * budget_s):
            break
    n_sessions = timer.sessions
    timer.warm_up(warmup_s)
    if runs_per_round is not None:
        timer.runs_per_round = runs_per_round
        pass_start = clock()  # estimate from one pass, which the test then uses like any other
        timer.run(n_sessions)
        round_s = (clock() - pass_start) / n_sessions
    else:
        round_s = timer.fit_runs_per_round(ROUND_BLOCK_S, least=MIN_RUNS_PER_ROUND)
    remaining = budget_s - (clock() - start)
    planned_passes = max(MIN_PASSES_FIRST_LOOK,
                         int(remaining / max(round_s * n_sessions, 1e-9)))
    schedule = look_schedule(planned_passes, looks)
    planned_rounds = schedule[-1] * n_sessions

    decision: Decision | None = None
    done_looks = 0
    stop = STOP_PLANNED
    for look_at in schedule:
        out_of_time = False
        while timer.rounds < look_at * n_sessions:
            timer.run(1)
            if progress is not None:
                progress(timer.rounds, planned_rounds)
            # Out of time: look now, at the end of a pass (every slot has as many rounds).
            if (timer.rounds % n_sessions == 0
                    and timer.rounds >= MIN_PASSES_FIRST_LOOK * n_sessions
                    and clock() - start >= budget_s):
                out_of_time = True
                break
        done_looks += 1
        decision = _decide_on(timer, len(candidates), alpha=alpha, looks=looks,
                              min_gain=min_gain)
        if decision.best_index is not None:
            stop = STOP_WIN
            break
        if all(decision.futile):
            stop = STOP_FUTILE
            break
        if out_of_time or (look_at != schedule[-1] and clock() - start >= budget_s):
            stop = STOP_BUDGET
            break
    assert decision is not None
    return _result(timer, decision, device=timer.device, elapsed_s=clock() - start,
                   alpha=alpha, looks=done_looks, looks_planned=looks, stop=stop,
                   budget_s=budget_s, min_gain=min_gain, sessions=n_sessions)


def _decide_on(timer: SessionRounds, n_candidates: int, **kw) -> Decision:
    logs = [np.log(np.asarray(t, dtype=np.float64)) for t in timer.times]
    return decide(logs[0], logs[1], logs[2:2 + n_candidates], timer.slots, **kw)


def _result(timer: SessionRounds, decision: Decision, *, device: str, elapsed_s: float,
            alpha: float, looks: int, looks_planned: int, stop: str, budget_s: float,
            min_gain: float, sessions: int) -> ABResult:
    timings = [Timing.from_samples(t) for t in timer.times]
    stats = decision.stats
    return ABResult(
        device=device, baseline=timings[0], twin=timings[1], candidates=timings[2:],
        ratios=[s.ratio for s in stats], margins=[math.expm1(n) for n in decision.needed],
        best_index=decision.best_index, rounds=timer.rounds,
        runs_per_round=timer.runs_per_round, sessions=sessions, elapsed_s=elapsed_s,
        p_values=[s.p for s in stats], won=list(decision.won),
        control_ratio=stats[0].control_ratio, alpha=alpha, looks=looks,
        looks_planned=looks_planned, level=decision.level, stop=stop, budget_s=budget_s,
        min_gain=min_gain, df=stats[0].df)
