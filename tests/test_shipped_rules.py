"""The shipped rule database: enough proved rules, and each one checked independently of the
verifier and of superopt's numpy semantics — both sides written by `rules show --onnx`'s code and
run in ONNX Runtime, at the rule's example shapes and at fresh (larger) shapes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from superopt.core.rules import load_rules
from superopt.face.commands.rules import write_onnx_pair
from superopt.generator.opset import default_inputs, matmul3d_inputs

SEED = 20261126
# Fresh shapes: the generator's second shape set (8 channels, 3×8 / 8×8 matrices, 7×7 images).
FRESH = {spec.name: spec.alt_shape for spec in [*default_inputs(), *matmul3d_inputs()]}


@pytest.fixture(scope="module")
def proved():
    return load_rules().proved()


def test_database_holds_at_least_500_distinct_proved_rules(proved):
    assert len(proved) >= 500
    assert len({r.id for r in proved}) == len(proved)
    # rules that differ only in a class (a rank) are different rules
    texts = {(tuple(map(str, r.src)), tuple(map(str, r.dst)), tuple(sorted(r.classes().items())))
             for r in proved}
    assert len(texts) == len(proved)


def _session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run_pair(rule, folder, shapes, dtype, rng):
    write_onnx_pair(rule, folder, seed=SEED, shapes=shapes, dtype=dtype)
    src, dst = _session(folder / "src.onnx"), _session(folder / "dst.onnx")
    feeds = {}
    for i in onnx.load(str(folder / "src.onnx")).graph.input:
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        arr = rng.standard_normal(dims)
        if i.name.startswith("bn_var"):
            arr = np.abs(arr) + 0.5  # a variance
        feeds[i.name] = arr.astype(dtype)
    names = {i.name for i in dst.get_inputs()}
    a = src.run(None, feeds)
    b = dst.run(None, {k: v for k, v in feeds.items() if k in names})
    return a, b


def test_every_proved_rule_agrees_in_onnx_runtime_at_example_and_fresh_shapes(proved, tmp_path):
    """float64 where ORT's CPU provider has double kernels, float32 (looser) where it has not
    (e.g. Conv). Seed printed for reproduction."""
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    failures, fresh_checked = [], set()
    for i, rule in enumerate(proved):
        shape_sets = [("example", dict(rule.example))]
        # generator input names only: a hand-written rule may use the same name at another rank
        if all(v in FRESH and len(FRESH[v]) == len(shape) for v, shape in rule.example.items()):
            shape_sets.append(("fresh", {v: FRESH[v] for v in rule.example}))
            fresh_checked.add(rule.id)
        for label, shapes in shape_sets:
            folder = tmp_path / f"r{i}-{label}"
            folder.mkdir()
            try:
                a, b = _run_pair(rule, folder, shapes, "float64", rng)
                rtol, atol = 1e-9, 1e-9
            except Exception:  # noqa: BLE001 - no double kernel for some op: use float32
                a, b = _run_pair(rule, folder, shapes, "float32", rng)
                rtol, atol = 1e-4, 1e-4
            for x, y in zip(a, b):
                scale = max(1.0, float(np.abs(x).max(initial=0.0)))
                if x.shape != y.shape or not np.allclose(x, y, rtol=rtol, atol=atol * scale):
                    failures.append(f"{rule.id} at {label} shapes: {rule.src} => {rule.dst}")
                    break
    assert not failures, failures[:10]
    # every rule of the default-set and matmul3d runs is checked at the fresh shapes too (the
    # hand-written and --from rules use their own input names; they are checked at their own)
    generated = {r.id for r in proved if not r.name and "from" not in r.provenance}
    assert generated and generated <= fresh_checked, sorted(generated - fresh_checked)[:10]
