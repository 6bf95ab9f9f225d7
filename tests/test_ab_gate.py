"""Behaviour of the end-to-end A/B gate (no assertions on absolute speed)."""

from __future__ import annotations

import conftest
import numpy as np
import onnx
import pytest

from superopt.pipeline.gate import compare_models, decide
from superopt.runtime import Timing

SIZE = 256


def matmul_chain(n: int, size: int = SIZE) -> onnx.ModelProto:
    return conftest.matmul_chain(n, size)


def check_consistent(result, n_candidates: int) -> None:
    assert len(result.candidates) == len(result.ratios) == len(result.margins) == n_candidates
    for timing in (result.baseline, *result.candidates):
        assert len(timing.samples) == result.rounds
        assert timing.median_s > 0 and timing.spread >= 0
        assert timing.min_s <= timing.median_s <= timing.max_s
    for cand, ratio, margin in zip(result.candidates, result.ratios, result.margins):
        assert ratio == pytest.approx(result.baseline.median_s / cand.median_s)
        assert margin >= 0.01
    if result.best_index is None:
        assert not any(result.wins) and result.speedup == 1.0
    else:
        assert result.wins[result.best_index]
        assert result.speedup == max(r for r, w in zip(result.ratios, result.wins) if w)
    assert result.runs_per_round >= 1 and result.elapsed_s > 0
    assert "baseline" in result.summary()


def test_a_model_never_beats_itself():
    model = matmul_chain(4)
    result = compare_models(model, [model], "cpu", budget_s=1.5)
    check_consistent(result, 1)
    assert result.best_index is None
    assert result.sessions == 2 and result.device == "cpu"


def test_less_work_wins():
    result = compare_models(matmul_chain(8), [matmul_chain(1)], "cpu", budget_s=1.5)
    check_consistent(result, 1)
    assert result.best_index == 0
    assert result.ratios[0] > 1 + result.margins[0]


def test_the_fastest_winner_is_chosen_and_progress_is_reported():
    calls = []
    result = compare_models(
        matmul_chain(8),
        [matmul_chain(4), matmul_chain(1)],
        "cpu",
        rounds=5,
        runs_per_round=3,
        sessions=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    check_consistent(result, 2)
    assert result.runs_per_round == 3 and result.sessions == 1 and result.rounds == 5
    assert result.best_index == 1
    assert calls == [(i, 15) for i in range(1, 16)]


def test_the_decision_rule():
    def timing(median_ms: float, spread: float) -> Timing:
        # Nine rounds whose p10..p90 span is about `spread` of the median.
        values = median_ms * 1e-3 * (1 + spread * np.linspace(-0.625, 0.625, 9))
        return Timing.from_samples(values.tolist())

    base = timing(10, 0.0)
    ratios, margins, best = decide(base, [timing(9.95, 0.0), timing(9.0, 0.0)])
    assert margins == [0.01, 0.01] and best == 1  # 0.5% faster is within the 1% floor
    ratios, margins, best = decide(base, [timing(9.0, 0.3)])
    assert (
        ratios[0] == pytest.approx(10 / 9)
        and margins[0] == pytest.approx(0.3, rel=0.05)
        and best is None
    )  # 11% faster, 30% noise
    ratios, margins, best = decide(timing(10, 0.06), [timing(8.0, 0.08)])
    assert ratios[0] == pytest.approx(1.25) and margins[0] == pytest.approx(0.1, rel=0.05)
    assert best == 0  # 25% faster, 10% noise


def test_bad_arguments_are_refused():
    model = matmul_chain(1, size=4)
    with pytest.raises(ValueError, match="candidate"):
        compare_models(model, [], "cpu")
    with pytest.raises(ValueError, match="rounds"):
        compare_models(model, [model], "cpu", rounds=0)
