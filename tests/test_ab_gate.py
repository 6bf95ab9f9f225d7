"""The end-to-end gate: the A/A-calibrated decision on synthetic timing series (fixed seeds,
printed on failure), the sequential loop with a fake timer and clock, and one real comparison
whose gain is far beyond any noise (no assertion on absolute speed)."""

from __future__ import annotations

import math

import conftest
import numpy as np
import onnx
import pytest

from superopt.pipeline import gate
from superopt.pipeline.gate import (
    STOP_BUDGET,
    STOP_FUTILE,
    STOP_WIN,
    compare_models,
    decide,
    look_schedule,
    slot_statistics,
    t_quantile,
    t_sf,
)

SIZE = 256


def matmul_chain(n: int, size: int = SIZE) -> onnx.ModelProto:
    return conftest.matmul_chain(n, size)


# ---------------------------------------------------------------------------------------------
# Student's t without scipy


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.01, 5, 3.3649), (0.025, 10, 2.2281), (0.05, 1, 6.3138), (0.001, 15, 3.7328),
    (0.01, 100000, 2.3264)])
def test_t_quantiles_match_the_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-4)
    assert t_sf(expected, df) == pytest.approx(p, rel=2e-3)


def test_t_tails_are_symmetric_and_monotone():
    assert t_sf(0.0, 7) == pytest.approx(0.5)
    assert t_sf(-2.0, 7) == pytest.approx(1 - t_sf(2.0, 7))
    assert t_sf(math.inf, 3) == 0.0 and t_sf(-math.inf, 3) == 1.0
    values = [t_sf(t, 9) for t in np.linspace(-5, 5, 41)]
    assert all(a > b for a, b in zip(values, values[1:]))


# ---------------------------------------------------------------------------------------------
# synthetic series: three copies' per-round log times, slots with lifelong offsets


def synthetic(seed: int, *, slots: int = 6, passes: int = 4, gain: float = 0.0,
              session_sd: float = 0.02, round_sd: float = 0.05, heavy: bool = False):
    """Per-round log times of A, A′ and C (C faster by `gain`, a log ratio): every copy has a
    lifelong offset per slot, every round shares a drift, and each run has its own noise
    (Student-t with 3 degrees of freedom when `heavy`: preemptions)."""
    rng = np.random.default_rng(seed)
    rounds = slots * passes
    slot_of = np.arange(rounds) % slots
    offsets = rng.normal(0, session_sd, (3, slots))
    drift = rng.normal(0, 0.1, rounds)

    def noise():
        return (rng.standard_t(3, rounds) if heavy else rng.normal(0, 1, rounds)) * round_sd

    a = offsets[0][slot_of] + drift + noise()
    twin = offsets[1][slot_of] + drift + noise()
    c = offsets[2][slot_of] + drift + noise() - gain
    return a, twin, c, slot_of


@pytest.mark.parametrize("heavy", [False, True])
def test_a_copy_of_the_original_wins_at_most_alpha_of_the_time(heavy):
    # 2,000 self-comparisons, seeds 0..1999, each looked at as one of 3 looks (level alpha/3):
    # the share of false wins must stay under alpha / 3 plus sampling slack.
    trials = 2000
    wins = [seed for seed in range(trials)
            if decide(*synthetic(seed, heavy=heavy)[:2], [synthetic(seed, heavy=heavy)[2]],
                      synthetic(seed, heavy=heavy)[3]).best_index is not None]
    print(f"heavy={heavy}: false wins at seeds {wins}")
    assert len(wins) / trials <= gate.DEFAULT_ALPHA / gate.DEFAULT_LOOKS + 0.004


def test_identical_series_never_win():
    a, twin, _, slots = synthetic(3)
    decision = decide(a, a, [a], slots)
    assert decision.won == [False] and decision.stats[0].gain == 0.0
    assert decision.stats[0].p >= 0.5


def test_a_clear_gain_wins_and_a_loss_does_not():
    for seed in range(20):
        a, twin, c, slots = synthetic(seed, gain=math.log(1.2))
        decision = decide(a, twin, [c, c + 0.3], slots)  # the second: 10% slower
        print(f"seed {seed}: {decision.stats[0]}")
        assert decision.won == [True, False] and decision.best_index == 0
        assert decision.stats[0].ratio == pytest.approx(1.2, rel=0.06)


def test_the_largest_winning_gain_is_chosen():
    a, twin, c, slots = synthetic(7, gain=math.log(1.2))
    decision = decide(a, twin, [c, c - math.log(1.25)], slots)
    assert decision.won == [True, True] and decision.best_index == 1


def test_a_gain_within_the_twin_disagreement_is_not_claimed():
    # A and A′ disagree by 8% in this run: a significant 5% gain is not claimed.
    a, twin, c, slots = synthetic(11, session_sd=0.0, round_sd=0.002)
    twin = twin - 0.08
    c = 0.5 * (a + twin) - math.log(1.05)
    stats = slot_statistics(a, twin, c, slots)
    decision = decide(a, twin, [c], slots)
    assert stats.gain == pytest.approx(math.log(1.05), abs=0.01)
    assert decision.won == [False] and decision.needed[0] >= 0.079


def test_a_clearly_slower_candidate_is_futile():
    a, twin, c, slots = synthetic(5, session_sd=0.005, round_sd=0.01)
    decision = decide(a, twin, [c + 0.3], slots)
    assert decision.futile == [True] and decision.settled and decision.best_index is None


def test_bonferroni_over_looks_and_candidates():
    a, twin, c, slots = synthetic(2)
    assert decide(a, twin, [c], slots, looks=3).level == pytest.approx(0.01 / 3)
    assert decide(a, twin, [c, c], slots, looks=3, alpha=0.02).level == pytest.approx(0.02 / 6)


def test_the_test_needs_two_slots():
    with pytest.raises(ValueError, match="two slots"):
        slot_statistics([0.0, 0.1], [0.0, 0.1], [0.0, 0.1], [0, 0])


def test_look_schedule():
    assert look_schedule(12, 3) == [4, 8, 12]
    assert look_schedule(2, 3) == [2]
    assert look_schedule(5, 1) == [5]
    assert look_schedule(7, 3) == [3, 5, 7]


# ---------------------------------------------------------------------------------------------
# the sequential loop, with a fake timer and clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRounds:
    """`SessionRounds` without ONNX Runtime: model m's time per round is `base[m]` times the
    noise of `synthetic`; every slot built costs `slot_s` and every round `round_s` on the
    clock."""

    built: list[FakeRounds] = []

    def __init__(self, models, device, *, sessions=0, level="all", feeds=None, threads=None,
                 warmup_s=None, seed=0, clock=None, base=(), slot_s=0.1, round_s=0.05,
                 noise=0.03) -> None:
        self.device, self.clock, self.base = "cpu", clock, list(base)
        self.slot_s, self.round_s, self.noise = slot_s, round_s, noise
        self.rng = np.random.default_rng(seed)
        self.offsets: list[np.ndarray] = []
        self.runs_per_round = 1
        self.times = [[] for _ in models]
        self.slots: list[int] = []
        FakeRounds.built.append(self)

    @property
    def sessions(self) -> int:
        return len(self.offsets)

    @property
    def rounds(self) -> int:
        return len(self.slots)

    def add_slot(self) -> None:
        self.offsets.append(self.rng.normal(0, 0.01, len(self.base)))
        self.clock.now += self.slot_s

    def warm_up(self, warmup_s=None) -> None:
        self.clock.now += 0.1

    def fit_runs_per_round(self, block_s, least=1) -> float:
        self.runs_per_round = least
        return self.round_s

    def run(self, rounds=1) -> None:
        for _ in range(rounds):
            slot = self.rounds % self.sessions
            drift = self.rng.normal(0, 0.1)
            for m, base in enumerate(self.base):
                log_t = (math.log(base) + self.offsets[slot][m] + drift
                         + self.rng.normal(0, self.noise))
                self.times[m].append(math.exp(log_t))
            self.slots.append(slot)
            self.clock.now += self.round_s


def fake_compare(base, *, budget_s=6.0, slot_s=0.1, round_s=0.05, sessions=None, seed=0,
                 **kw):
    """compare_models over the fake timer; `base` is A's, A′'s and each candidate's time."""
    clock = FakeClock()

    def factory(models, device, **options):
        return FakeRounds(models, device, clock=clock, base=base, slot_s=slot_s,
                          round_s=round_s, **options)

    model = matmul_chain(1, size=4)
    result = compare_models(model, [model] * (len(base) - 2), "cpu", budget_s=budget_s,
                            sessions=sessions, seed=seed, rounds_factory=factory, clock=clock,
                            **kw)
    return result, clock.now


def test_a_clear_case_stops_at_the_first_look():
    result, spent = fake_compare([10e-3, 10e-3, 6e-3], budget_s=20.0)
    assert result.best_index == 0 and result.stop == STOP_WIN
    assert result.looks == 1 < result.looks_planned
    # 8 slots of 0.1 s and 0.1 s of warm-up leave 19.1 s: 47 passes of 8 rounds of 0.05 s are
    # planned, looks after 16, 32 and 47; the first settles it and the rest is not run
    assert result.sessions == 8 and look_schedule(47, 3) == [16, 32, 47]
    assert result.rounds == 16 * 8
    assert spent < 20.0 / 2


def test_a_clearly_slower_candidate_stops_early():
    result, _ = fake_compare([10e-3, 10e-3, 20e-3], budget_s=20.0)
    assert result.best_index is None and result.stop == STOP_FUTILE and result.looks == 1


def test_the_budget_is_honored():
    # A candidate equal to the original never settles: the gate runs until the budget.
    for budget in (3.0, 6.0, 24.0):
        result, spent = fake_compare([10e-3, 10e-3, 10e-3], budget_s=budget, seed=1)
        print(f"budget {budget}: {result.rounds} rounds, {spent:.2f} s, {result.stop}")
        assert result.best_index is None
        # the last pass may start just before the budget runs out
        assert spent <= budget + result.sessions * 0.05 + 1e-9
        if result.stop != STOP_FUTILE:  # not settled: it used the budget
            assert spent >= budget - result.sessions * 0.05 * 2


def test_rounds_slower_than_planned_stop_at_the_budget():
    clock = FakeClock()

    class Slow(FakeRounds):
        def run(self, rounds=1) -> None:
            super().run(rounds)
            self.clock.now += 0.2 * rounds  # load: every round takes 5x the estimate

    def factory(models, device, **options):
        return Slow(models, device, clock=clock, base=[1e-2] * 3, **options)

    model = matmul_chain(1, size=4)
    result = compare_models(model, [model], "cpu", budget_s=6.0, rounds_factory=factory,
                            clock=clock)
    assert result.stop == STOP_BUDGET and result.looks < result.looks_planned
    assert clock.now <= 6.0 + result.sessions * 0.25 + 1e-9


def test_slots_stop_growing_when_building_them_eats_the_budget():
    result, _ = fake_compare([10e-3] * 3, budget_s=6.0, slot_s=1.0)
    assert result.sessions == gate.MIN_SLOTS
    result, _ = fake_compare([10e-3] * 3, budget_s=6.0, slot_s=0.01)
    assert result.sessions == gate.default_sessions([matmul_chain(1, size=4)] * 3, "cpu") == 8


def test_bigger_models_get_fewer_slots():
    big = b"\0" * int(gate.SESSION_BYTES_CAP / 12)
    assert gate.default_sessions([big] * 3, "cpu") == 4
    assert gate.default_sessions([big] * 30, "cpu") == 3


def test_the_result_reports_every_figure():
    result, _ = fake_compare([10e-3, 10e-3, 7e-3, 12e-3], budget_s=6.0)
    assert result.won == [True, False] and result.best_index == 0
    assert result.speedup == result.ratios[0] > 1.3
    doc = result.to_json()
    assert doc["candidates"][0]["won"] and not doc["candidates"][1]["won"]
    assert doc["alpha"] == 0.01 and doc["looks"] == result.looks and doc["twin"]["median_s"] > 0
    assert doc["control_ratio"] == result.control_ratio
    summary = result.summary()
    assert "A'" in summary and "alpha 0.01" in summary and "candidate 1" in summary


def test_bad_arguments_are_refused():
    model = matmul_chain(1, size=4)
    with pytest.raises(ValueError, match="candidate"):
        compare_models(model, [], "cpu")
    with pytest.raises(ValueError, match="alpha"):
        compare_models(model, [model], "cpu", alpha=0)
    with pytest.raises(ValueError, match="sessions"):
        compare_models(model, [model], "cpu", sessions=1)
    with pytest.raises(ValueError, match="budget"):
        compare_models(model, [model], "cpu", budget_s=0)


def test_the_default_budgets_agree():
    from superopt.face.cli import build_parser
    from superopt.pipeline.optimize import DEFAULT_GATE_BUDGET_S, OptimizeOptions

    assert DEFAULT_GATE_BUDGET_S == gate.DEFAULT_BUDGET_S == OptimizeOptions().gate_budget_s
    help_text = build_parser()._subparsers._group_actions[0].choices["optimize"].format_help()
    assert f"(default {DEFAULT_GATE_BUDGET_S:g};" in " ".join(help_text.split())


# ---------------------------------------------------------------------------------------------
# real ONNX Runtime: a gain far beyond any noise


def test_less_work_wins_end_to_end():
    result = compare_models(matmul_chain(8), [matmul_chain(1)], "cpu", budget_s=3.0)
    print(result.summary())
    assert result.best_index == 0 and result.won == [True]
    assert result.ratios[0] > 1 + result.margins[0]
    assert result.twin is not None and len(result.twin.samples) == result.rounds
    assert len(result.baseline.samples) == len(result.candidates[0].samples) == result.rounds
    assert result.rounds % result.sessions == 0 and result.runs_per_round >= 2
    assert "original A'" in result.summary()
