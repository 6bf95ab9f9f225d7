"""Differential fuzzing in CI (issue #15, item 7): `superopt.testing.fuzz`.

- the generator is deterministic, makes valid models and covers what it promises;
- the checks catch a planted unsound rule, including the rank class (a rule proved for a scalar
  matched at a per-channel constant), and the minimizer shrinks such a failure into a
  regression case that replays;
- every saved regression case (`tests/fuzz_regressions/*.json`) still fails while its defect
  is present, and passes once it is fixed;
- 300 fuzz cases with a fixed seed (printed in the summary): every rule match and the unguarded
  search agree with the original in ONNX Runtime. This fails while the shipped rules are
  unsound (rules proved at the ranks of one example and matched at others); the failure
  message lists the rules, grouped by cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt.core.rules import Rule
from superopt.testing import fuzz as F

REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"
CI_SEED = 0
CI_CASES = 300


def _proved(src: str, dst: str, vars: dict[str, str], **kw) -> Rule:
    rule = Rule.make([src], [dst], vars, **kw)
    return rule.with_proof({"result": "proved", "method": "planted by tests/test_fuzz.py"})


# A rule that is plainly wrong, and one that is right for a scalar ?c only (the rank class).
SWAP_SUB = _proved("(Sub ?x ?y)", "(Sub ?y ?x)", {"x": "tensor", "y": "tensor"},
                   example={"x": (2, 4), "y": (2, 4)})
# Wrong and cheaper, so the search (which only keeps cheaper graphs) takes it too.
DROP_RELU = _proved("(Relu (Sub ?x ?y))", "(Sub ?x ?y)", {"x": "tensor", "y": "tensor"},
                    example={"x": (2, 4), "y": (2, 4)})
CONV_SCALE = _proved("(Mul (Conv ?t ?k) ?c)", "(Conv ?t (Mul ?k ?c))",
                     {"t": "tensor", "k": "weight", "c": "weight"},
                     example={"t": (2, 4, 5, 5), "k": (4, 4, 1, 1), "c": ()})
# The matcher applies a rule only at its classes (the ranks its proof covers), so the rank
# defect is planted as a rule that claims no rank class (it matches any rank) while its proof
# holds at its example's ranks only: what every superopt-rules/1 rule was.
CONV_SCALE_ANY_RANK = Rule(**{**CONV_SCALE.__dict__, "ranks": {},
                              "proof": {"result": "proved", "method": "planted"}})


def _conv_mul_model(c_shape: tuple) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])
    k = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "k")
    c = numpy_helper.from_array(rng.standard_normal(c_shape).astype(np.float32), "c")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "k"], ["h"]),
                               helper.make_node("Mul", ["h", "c"], ["y"])],
                              "conv_mul", [x], [y], [k, c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {F.META_KEY: '{"dims": {"N": 2}}'})
    return model


def test_generator_is_deterministic_and_makes_valid_models():
    a, b = F.generate("7:3"), F.generate("7:3")
    assert a.model.SerializeToString() == b.model.SerializeToString()
    replayed = F.generate(None, choices=a.choices)
    assert replayed.model.SerializeToString() == a.model.SerializeToString()
    for i in range(40):
        model = F.generate(f"7:{i}").model
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == F.OPSET


def test_generator_covers_what_it_promises(proved_rules):
    seen = set()
    for i in range(200):
        seen |= F.generate(f"{CI_SEED}:{i}", rules=proved_rules).features
    for feature in ("rank0", "broadcast", "broadcast-both-ways", "shared-value",
                    "intermediate-output", "weight-as-input", "overridable-initializer",
                    "int64", "float16", "symbolic", "matmul-1d", "rule-instance",
                    "rule-instance-mutated"):
        assert feature in seen, feature


def test_comparison_treats_nan_inf_and_tolerance_by_dtype():
    a = {"y": np.array([1.0, np.nan, np.inf, 3.0], dtype=np.float32)}
    assert F.compare_outputs(a, {"y": a["y"].copy()}) is None
    near = {"y": np.array([1.00001, np.nan, np.inf, 3.0], dtype=np.float32)}
    assert F.compare_outputs(a, near) is None
    moved = {"y": np.array([1.0, 2.0, np.inf, np.nan], dtype=np.float32)}
    assert F.compare_outputs(a, moved)[0] == "nan-pattern"
    off = {"y": np.array([1.1, np.nan, np.inf, 3.0], dtype=np.float32)}
    assert F.compare_outputs(a, off)[0] == "mismatch"
    half = {"y": np.array([1.0, 2.0], dtype=np.float16)}
    assert F.compare_outputs(half, {"y": np.array([1.001, 2.0], dtype=np.float16)}) is None
    ints = {"y": np.array([1, 2], dtype=np.int64)}
    assert F.compare_outputs(ints, {"y": np.array([1, 3], dtype=np.int64)})[0] == "mismatch"
    assert F.compare_outputs(ints, {"y": np.array([1, 2], dtype=np.int32)})[0] == "dtype"


def test_a_rank_unsound_rule_is_caught_at_a_per_channel_constant():
    checker = F.Checker([CONV_SCALE_ANY_RANK], F.FuzzConfig(search=False))
    assert checker.check(_conv_mul_model(())).failures == []  # sound for a scalar
    failures = checker.check(_conv_mul_model((3, 1, 1))).failures
    assert [(f.check, f.kind, f.rule_id, f.cause) for f in failures] == \
        [("match", "mismatch", CONV_SCALE.id, "rank:per-channel")]
    assert "?c=(3,1,1) (proved at ())" in failures[0].binding
    # With its class (?c of rank 0), the rule never fires there: nothing to catch.
    assert F.Checker([CONV_SCALE], F.FuzzConfig(search=False)).check(
        _conv_mul_model((3, 1, 1))).failures == []


def test_a_planted_unsound_rule_is_caught_minimized_saved_and_replayed(tmp_path):
    rules = [SWAP_SUB, DROP_RELU]
    summary = F.fuzz(25, 3, rules=rules)
    assert summary.failed
    kinds = {(f.check, f.rule_id) for f in summary.failures}
    assert {("match", SWAP_SUB.id), ("match", DROP_RELU.id), ("search", DROP_RELU.id)} <= kinds
    first = next(f for f in summary.failures if f.check == "match" and f.rule_id == SWAP_SUB.id)
    checker = F.Checker(rules, F.FuzzConfig())
    mini = F.minimize(summary.failing_cases[first.case], first, checker, time_limit_s=30)
    assert mini is not None and mini.nodes_after <= 2
    saved = F.save_regression(tmp_path, mini, rule=SWAP_SUB, found_by={"test": True},
                              checker=checker)
    assert saved is not None and saved.with_suffix(".onnx").exists()
    replayed = F.replay_regression(saved, rules=rules)
    assert any(f.rule_id == SWAP_SUB.id for f in replayed)
    assert F.replay_regression(saved, rules=[]) == []  # no unsound rule, nothing fails


@pytest.fixture(scope="module")
def proved_rules():
    return F.load_proved_rules()


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.json")), ids=lambda p: p.stem)
def test_saved_regression_case(path, proved_rules):
    failures = F.replay_regression(path, rules=proved_rules)
    if failures:
        doc = json.loads(path.read_text())
        pytest.fail(f"{path.name} ({doc.get('defect', '')[:300]}) still fails:\n"
                    + "\n".join(f"  {f.rule_id} {f.check} {f.kind} ({f.cause}): {f.detail}"
                                 for f in failures), pytrace=False)


def test_fuzz_ci_cases(proved_rules):
    summary = F.fuzz(CI_CASES, CI_SEED, rules=proved_rules)
    print(summary.text())
    assert summary.cases == CI_CASES
    # The generator's bias works: most cases give the rules something to match.
    assert summary.cases_with_match >= CI_CASES // 2, summary.text()
    if summary.failures:
        pytest.fail(f"{len(summary.failures)} differential failures (rerun one case with "
                    f"`python -m superopt.testing.fuzz --case {CI_SEED}:INDEX`)\n"
                    + summary.text(), pytrace=False)
