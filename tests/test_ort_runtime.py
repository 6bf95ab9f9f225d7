"""Behaviour of the ONNX Runtime adapter: devices, sessions, inputs, timings."""

from __future__ import annotations

import subprocess
import sys

import conftest
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from superopt import runtime as rt
from superopt.core.errors import DeviceError, ModelError, ShapeError

CUDA_WORKS, CUDA_REASON = rt.cuda_probe()


def make_model(nodes, inputs, outputs, initializers=(), ir_version: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir_version
    )


def matmul_chain(n: int, size: int = 64) -> onnx.ModelProto:
    """y = x @ W0 @ W1 ... with constant weights and a symbolic batch dim."""
    return conftest.matmul_chain(n, size, batch="batch")


# -- devices ---------------------------------------------------------------------------------


def test_cpu_is_always_cpu():
    assert rt.resolve_device("cpu") == "cpu"


def test_auto_follows_the_probe():
    assert rt.resolve_device("auto") == ("cuda" if CUDA_WORKS else "cpu")


@pytest.mark.skipif(CUDA_WORKS, reason="CUDA works on this machine")
def test_cuda_where_it_does_not_work_is_one_clear_line():
    with pytest.raises(DeviceError) as info:
        rt.resolve_device("cuda")
    message = str(info.value)
    assert "CUDA" in message and "\n" not in message
    assert CUDA_REASON in message


@pytest.mark.skipif(not CUDA_WORKS, reason=f"no CUDA here: {CUDA_REASON}")
def test_cuda_where_it_works():
    assert rt.resolve_device("cuda") == "cuda"
    assert rt.make_session(matmul_chain(1), "cuda").get_providers()[0] == "CUDAExecutionProvider"


def test_unknown_device_is_refused():
    with pytest.raises(DeviceError, match="unknown device"):
        rt.resolve_device("tpu")


def test_probe_runs_once_per_process():
    assert rt.cuda_probe() is rt.cuda_probe()


def test_device_name_and_fingerprint():
    assert "cores" in rt.device_name("cpu")
    parts = rt.runtime_fingerprint("cpu")
    assert parts["provider"] == "CPUExecutionProvider"
    assert parts["device"] == rt.device_name("cpu")
    assert parts["ort"]


# -- sessions --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_sessions_at_every_level_run_on_the_cpu_provider_only(level):
    session = rt.make_session(matmul_chain(2), "cpu", level=level, threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="optimization level"):
        rt.make_session(matmul_chain(1), "cpu", level="max")


def test_sessions_from_bytes_and_paths(tmp_path):
    model = matmul_chain(1)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    for source in (model.SerializeToString(), path, str(path)):
        assert rt.make_session(source, "cpu").get_inputs()[0].name == "x"


def test_a_newer_ir_version_than_ort_accepts_is_retried():
    model = matmul_chain(1)
    model.ir_version = 99  # newer onnx releases write IR versions older runtimes refuse
    assert rt.make_session(model, "cpu").get_outputs()[0].name == "y"


def test_a_broken_model_is_a_model_error():
    with pytest.raises(ModelError, match="cannot load"):
        rt.make_session(b"not an onnx model", "cpu")


# -- inputs ----------------------------------------------------------------------------------


def test_random_feeds_follow_declared_types_and_shapes():
    value = helper.make_tensor_value_info
    inputs = [
        value("f16", TensorProto.FLOAT16, [2, 3]),
        value("f32", TensorProto.FLOAT, ["batch", 4]),
        value("f64", TensorProto.DOUBLE, [None, 2]),
        value("ids", TensorProto.INT64, ["batch", "seq"]),
        value("i32", TensorProto.INT32, [5]),
        value("mask", TensorProto.BOOL, [3]),
        value("w", TensorProto.FLOAT, [2]),  # an initializer listed as input (IR < 4 style)
    ]
    nodes = [helper.make_node("Identity", [i.name], [f"{i.name}_out"]) for i in inputs]
    outputs = [value(f"{i.name}_out", i.type.tensor_type.elem_type, None) for i in inputs]
    weight = numpy_helper.from_array(np.ones(2, np.float32), "w")
    model = make_model(nodes, inputs, outputs, [weight])

    feeds = rt.random_feeds(model, seed=3, overrides={"seq": 7, "f32": (8, 4)})
    assert set(feeds) == {"f16", "f32", "f64", "ids", "i32", "mask"}
    assert feeds["f16"].dtype == np.float16 and feeds["f16"].shape == (2, 3)
    assert feeds["f32"].dtype == np.float32 and feeds["f32"].shape == (8, 4)
    assert feeds["f64"].dtype == np.float64 and feeds["f64"].shape == (1, 2)
    assert feeds["ids"].dtype == np.int64 and feeds["ids"].shape == (1, 7)
    assert feeds["mask"].dtype == np.bool_
    for name in ("ids", "i32"):
        assert 0 <= feeds[name].min() and feeds[name].max() < 100
    again = rt.random_feeds(model, seed=3, overrides={"seq": 7, "f32": (8, 4)})
    assert all(np.array_equal(feeds[name], again[name]) for name in feeds)
    # The feeds are accepted by ONNX Runtime as they are.
    rt.make_session(model, "cpu").run(None, feeds)


def test_integer_range_can_be_set():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [1000])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1000])
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], [x], [y])
    feeds = rt.random_feeds(model, int_range=(3, 5))
    assert set(np.unique(feeds["x"]).tolist()) <= {3, 4}


@pytest.mark.parametrize(
    "override, match",
    [((8, 64, 1), "has 3 dims"), ((8, 5), "fixes it at 64"), ((-1, 64), "negative")],
)
def test_overrides_that_do_not_fit_are_shape_errors(override, match):
    with pytest.raises(ShapeError, match=match):
        rt.random_feeds(matmul_chain(1), overrides={"x": override})


def test_an_input_without_shape_needs_an_override():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], [x], [y])
    with pytest.raises(ShapeError, match="no declared shape"):
        rt.random_feeds(model)
    assert rt.random_feeds(model, overrides={"x": (2, 3)})["x"].shape == (2, 3)


# -- timing ----------------------------------------------------------------------------------


def test_runner_computes_what_session_run_computes():
    model = matmul_chain(3)
    feeds = rt.random_feeds(model, seed=1, overrides={"x": (4, 64)})
    session = rt.make_session(model, "cpu")
    runner = rt.Runner(session, feeds)
    assert runner.run() > 0
    expected = session.run(None, feeds)[0]
    np.testing.assert_allclose(runner.outputs()[0], expected, rtol=1e-6)


def test_runner_names_a_missing_input():
    with pytest.raises(ShapeError, match="'x'"):
        rt.Runner(rt.make_session(matmul_chain(1), "cpu"), {})


def test_time_model_summaries_are_consistent():
    timing = rt.time_model(matmul_chain(4), "cpu", warmup=2, repeats=15)
    assert len(timing.samples) == 15
    assert all(sample > 0 for sample in timing.samples)
    assert 0 < timing.min_s <= timing.median_s <= timing.max_s
    assert timing.spread >= 0


def test_time_model_fits_the_repeats_to_a_target():
    model = matmul_chain(1)
    # A target far beyond the bound: capped at `repeats`; a target of zero: at `min_repeats`.
    capped = rt.time_model(model, "cpu", warmup=1, repeats=7, target_s=1e6, min_repeats=3)
    floored = rt.time_model(model, "cpu", warmup=1, repeats=7, target_s=0.0, min_repeats=3)
    assert (len(capped.samples), len(floored.samples)) == (7, 3)


def test_timing_summarizes_samples():
    timing = rt.Timing.from_samples([3.0, 1.0, 2.0])
    assert (timing.median_s, timing.min_s, timing.max_s) == (2.0, 1.0, 3.0)
    assert timing.samples == [3.0, 1.0, 2.0]  # in the order measured
    assert timing.spread == pytest.approx((2.8 - 1.2) / 2.0)
    with pytest.raises(ValueError, match="no timing samples"):
        rt.Timing.from_samples([])


def relu_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    return make_model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])


def unrunnable_model() -> onnx.ModelProto:
    """A node ONNX Runtime does not know: no session can be built."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example", name="mystery")
    graph = helper.make_graph([node], "broken", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example", 1)],
                             ir_version=8)


def test_time_interleaved_times_every_model_per_round():
    calls = []
    result = rt.time_interleaved([relu_model(), relu_model()], "cpu", rounds=4,
                                 runs_per_round=2, sessions=1, level=["disable", "all"],
                                 progress=lambda done, total: calls.append((done, total)))
    assert result.device == "cpu" and result.errors == [None, None]
    assert result.rounds == 4 and result.runs_per_round == 2 and result.sessions == 1
    for timing in result.timings:
        assert len(timing.samples) == 4 and timing.median_s > 0 and timing.spread >= 0
    assert calls == [(i, 8) for i in range(1, 9)]
    assert result.elapsed_s > 0


def test_time_interleaved_reports_a_model_that_cannot_run():
    relu = relu_model()
    result = rt.time_interleaved([relu, unrunnable_model(), relu], "cpu",
                                 level=["disable", "all", "all"], rounds=4, runs_per_round=2,
                                 keep_going=True)
    assert result.timings[1] is None and result.errors[1]
    assert [len(result.timings[i].samples) for i in (0, 2)] == [4, 4]
    assert result.errors[0] is None and result.errors[2] is None
    assert result.runs_per_round == 2 and result.sessions == 2
    # The first model is what the others are compared with: its failure stops everything.
    with pytest.raises(ModelError, match="does not run in ONNX Runtime"):
        rt.time_interleaved([unrunnable_model(), relu], "cpu", rounds=1, keep_going=True)
    # Without keep_going any failure raises.
    with pytest.raises(ModelError):
        rt.time_interleaved([relu, unrunnable_model()], "cpu", rounds=1)


def test_time_interleaved_refuses_bad_arguments():
    model = relu_model()
    with pytest.raises(ValueError, match="rounds"):
        rt.time_interleaved([model], "cpu", rounds=0)
    with pytest.raises(ValueError, match="runs_per_round"):
        rt.time_interleaved([model], "cpu", runs_per_round=0)
    with pytest.raises(ValueError, match="sessions"):
        rt.time_interleaved([model], "cpu", sessions=0)
    with pytest.raises(ValueError, match="levels"):
        rt.time_interleaved([model, model], "cpu", level=["all"])


def test_error_line():
    assert rt.error_line(RuntimeError("\n  first line \nsecond")) == "first line"
    assert rt.error_line(KeyError()) == "KeyError"
    assert len(rt.error_line(ValueError("x" * 1000))) == 300


def test_session_fixed_cost_is_small_positive_and_cached():
    cost = rt.session_fixed_cost("cpu")
    assert 0 < cost < 5e-3  # generous: a one-element Identity run is microseconds
    assert rt.session_fixed_cost("cpu") == cost


def test_nothing_here_imports_z3():
    code = (
        "import sys\n"
        "import superopt.runtime, superopt.cost_model.cache\n"
        "import superopt.pipeline.gate\n"
        "assert 'z3' not in sys.modules, 'z3 was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _config(session, key: str) -> str | None:
    try:
        return session.get_session_options().get_session_config_entry(key)
    except Exception:  # noqa: BLE001 - ORT raises when the entry was never set
        return None


def test_spinning_modes_set_the_session_options():
    """"on" leaves ORT's default (spin during and after a run); "in-run" stops spinning when a
    run returns (the gate's and the bench's sessions: no session spins into another's run);
    "off" makes idle threads sleep at once. Anything else is refused."""
    model = relu_model()
    stop, allow = "session.force_spinning_stop", "session.intra_op.allow_spinning"
    on = rt.make_session(model, "cpu", spinning="on")
    assert (_config(on, stop), _config(on, allow)) == (None, None)
    in_run = rt.make_session(model, "cpu", spinning="in-run")
    assert (_config(in_run, stop), _config(in_run, allow)) == ("1", None)
    off = rt.make_session(model, "cpu", spinning="off")
    assert (_config(off, stop), _config(off, allow)) == (None, "0")
    with pytest.raises(ValueError, match="spinning"):
        rt.make_session(model, "cpu", spinning="sometimes")
    rounds = rt.SessionRounds([model], "cpu", sessions=1)
    assert _config(rounds.runners[0][0].session, stop) == "1"
