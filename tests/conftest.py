"""Shared fixtures: zoo models built once per session, the shared real models, ORT helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from superopt import zoo

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Tests write their cost and proof caches into a session folder, never the user's cache
    (subprocesses inherit the variable). A cache folder the caller set explicitly is kept."""
    import os

    if "SUPEROPT_CACHE_DIR" in os.environ:
        yield
        return
    os.environ["SUPEROPT_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    try:
        yield
    finally:
        os.environ.pop("SUPEROPT_CACHE_DIR", None)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The folder of small real exporter models (`../shared/models`); skip where absent."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"shared models folder {SHARED_MODELS} is absent (a clone outside this setup)")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def zoo_model_path(tmp_path_factory) -> Callable[[str], Path]:
    """`zoo_model_path(name)`: the zoo model built with seed 0 and saved once per session."""
    folder = tmp_path_factory.mktemp("zoo")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = folder / f"{name}.onnx"
            onnx.save(zoo.build(name, seed=0), str(path))
            built[name] = path
        return built[name]

    return get


def run_ort(model: onnx.ModelProto, feeds: dict[str, object]) -> list:
    """Outputs of `model` in ONNX Runtime, CPU provider, graph optimizations disabled."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # 2-core CI
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in wanted})


def assert_identical(actual: list, expected: list) -> None:
    """Outputs equal bit for bit (NaN equal to NaN), sequences and optionals included."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        if isinstance(e, list):
            assert isinstance(a, list) and len(a) == len(e)
            assert_identical(a, e)
        elif e is None:
            assert a is None
        else:
            a, e = np.asarray(a), np.asarray(e)
            assert a.dtype == e.dtype and a.shape == e.shape
            assert np.array_equal(a, e, equal_nan=a.dtype.kind in "fc")


def matmul_chain(n: int, size: int = 64, batch: int | str | None = None) -> onnx.ModelProto:
    """y = x @ W0 @ ... @ W(n-1): n MatMuls of equal work on size x size constant weights;
    x is `batch` x size (default size x size; a string makes the batch dim symbolic)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(n):
        weight = (rng.standard_normal((size, size)) / size**0.5).astype(np.float32)
        weights.append(numpy_helper.from_array(weight, f"w{i}"))
        output = "y" if i == n - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [output]))
        previous = output
    rows = size if batch is None else batch
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, size])
    graph = helper.make_graph(nodes, f"chain{n}", [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
