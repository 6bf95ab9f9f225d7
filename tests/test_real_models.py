"""Real exporter output (../shared/models), as a new user would feed it: every model loads with
fully static shapes once its dynamic dims are fixed, optimizes without error, and the result
matches the original numerically. The analytic cost model and gate=False make the search's
choice the written one, so the rewrites themselves are what the check checks."""

from __future__ import annotations

import onnx
import pytest

import superopt

MODELS = {
    "mnasnet0_5.onnx": None,
    "shufflenet_v2_x0_5_bn.onnx": None,
    "roberta_tiny.onnx": {"input_ids": (1, 64)},
    "roberta_tiny_dynamo.onnx": None,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_export_loads_with_static_shapes(shared_models, name):
    graph = superopt.load(shared_models / name, input_shapes=MODELS[name])
    unknown = [n.name for n in graph.nodes for o in n.outputs if o.name and not o.type.is_static]
    assert unknown == []


def test_shape_chains_fold_after_a_shape_override(shared_models):
    """roberta_tiny computes Reshape targets from Shape(input_ids): with the batch and sequence
    fixed they fold, and the Reshapes become modeled nodes instead of opaque ones."""
    dynamic = superopt.load(shared_models / "roberta_tiny.onnx")
    fixed = superopt.load(shared_models / "roberta_tiny.onnx", input_shapes={"input_ids": (1, 64)})
    opaque = {g: sum(n.is_opaque for n in g.nodes) for g in (dynamic, fixed)}
    assert opaque[fixed] < opaque[dynamic]
    assert "Shape" not in fixed.op_counts()
    assert all(not n.is_opaque for n in fixed.nodes if n.op == "Reshape")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_export_optimizes_and_matches(shared_models, tmp_path, name):
    out = tmp_path / "out.onnx"
    result = superopt.optimize(shared_models / name, out, device="cpu", cost="analytic",
                               input_shapes=MODELS[name], gate=False, time_limit=20)
    assert result.check is not None and result.check.passed and not result.check.skipped
    assert out.exists()
    onnx.checker.check_model(onnx.load(str(out)))


def test_unfused_batchnorms_of_a_real_export_fold_into_their_convs(shared_models, tmp_path):
    """All 56 BatchNorms fold, after plain, depthwise (group 24/48/96) and strided convs alike:
    the shipped BN-fold family has attribute variables (`Conv[group=?g, pads=?p, strides=?s]`,
    `epsilon=?e`), proved for every value. (The exporter writes epsilon as a float32,
    9.99999974e-06; attributes compare as float32.)"""
    out = tmp_path / "out.onnx"
    result = superopt.optimize(shared_models / "shufflenet_v2_x0_5_bn.onnx", out, device="cpu",
                               cost="analytic", gate=False, time_limit=30)
    before = superopt.load(shared_models / "shufflenet_v2_x0_5_bn.onnx").op_counts()
    after = superopt.load(out).op_counts()
    assert before["BatchNormalization"] == 56
    assert after.get("BatchNormalization", 0) == 0
    assert after["Conv"] == before["Conv"]
    assert result.check.passed
