"""The ONNX Runtime adapter: devices, sessions, inputs and timings, in one place.

Everything here works on plain `onnx.ModelProto`s (or serialized bytes, or a path), independent
of superopt's IR, so the cost model, the end-to-end A/B gate and the benchmarks share one way of
building sessions and timing them:

- devices: `resolve_device`, `cuda_probe`, `device_name`, `runtime_fingerprint`;
- sessions and inputs: `make_session`, `input_domains` (the values each input may take: indices
  within the table they index, positive values where the model takes a log or a root),
  `random_feeds` (draws within them, for every caller), `Runner` (one session bound to fixed
  inputs, timing one run at a time);
- timings, all summarized as one record, `Timing` (median, spread, samples):
  `time_model` times one model's back-to-back runs (the cost model's one-node timings,
  `session_fixed_cost`); `time_interleaved` times several models against each other in
  rotating rounds (the A/B gate, which only adds its decision rule, and `superopt bench`).

Measuring conventions (figures in `anchors.md`):
- a session run has a fixed cost (about 17.5 µs on CUDA, a few µs on the CPU) that one-node
  timings must subtract: `session_fixed_cost`;
- on CUDA inputs live on the device and outputs are bound there (IO binding), so host/device
  copies are not timed; on the CPU IO binding is used too, because it halves the per-run
  overhead of `session.run` (about 4 µs instead of 8 µs on the 2-core development machines);
- timings are repeated and summarized by their median; `Timing.spread` says how noisy they were.

Example:
    >>> device = resolve_device("auto")              # "cuda" only where CUDA really runs
    >>> t = time_model(model, device, repeats=20)     # doctest: +SKIP
    >>> t.median_s, t.spread                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from superopt.core.errors import DeviceError, ModelError, ShapeError, UsageError

ModelLike = onnx.ModelProto | bytes | str | os.PathLike

DEVICES = ("auto", "cpu", "cuda")

LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

PROVIDERS: dict[str, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# Serialized protobufs are limited to 2 GiB; bigger models go through a file with external data.
_PROTOBUF_LIMIT = 2**31 - 1
# IR 8 / opset 17 loads in every onnxruntime this project supports (>= 1.17); newer onnx versions
# default to an IR version that older runtimes refuse, so tiny helper models pin theirs.
_TINY_IR_VERSION = 8
_TINY_OPSET = 17

_probe_lock = threading.Lock()
_cuda_probe: tuple[bool, str] | None = None  # (works, reason when it does not)
_fixed_costs: dict[str, float] = {}


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """Turn a user's device choice ("auto", "cpu", "cuda") into the one used: "cpu" or "cuda".

    "auto" picks CUDA only where a probe session really runs on the CUDAExecutionProvider
    (`ort.get_available_providers()` lists it even where its libraries cannot load). "cuda"
    where CUDA does not work raises `DeviceError` with the reason in one line. The probe runs
    once per process.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    works, reason = cuda_probe()
    if works:
        return "cuda"
    if device == "cuda":
        raise DeviceError(f"CUDA was requested but does not work here: {reason} (use --device cpu)")
    return "cpu"


def cuda_probe() -> tuple[bool, str]:
    """Whether ONNX Runtime really runs on CUDA here, and if not, why (cached per process).

    Example:
        >>> works, reason = cuda_probe()
    """
    global _cuda_probe
    with _probe_lock:
        if _cuda_probe is None:
            _cuda_probe = _probe_cuda()
        return _cuda_probe


def _probe_cuda() -> tuple[bool, str]:
    if PROVIDERS["cuda"] not in ort.get_available_providers():
        return (
            False,
            f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)",
        )
    # The CUDA provider reports missing libraries on the native stderr/stdout, bypassing both
    # Python and the session's log level; capture it, so that "auto" stays quiet on CPU-only
    # machines and "cuda" can say in one line what was missing.
    with _captured_native_output() as captured:
        try:
            if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: load the pip CUDA libraries
                with contextlib.suppress(Exception):
                    ort.preload_dlls()
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(
                _identity_model().SerializeToString(),
                options,
                providers=[PROVIDERS["cuda"], PROVIDERS["cpu"]],
            )
            if session.get_providers()[0] != PROVIDERS["cuda"]:
                ok, error = False, None
            else:
                out = session.run(None, {"x": np.ones(1, np.float32)})[0]
                ok, error = bool(out[0] == 1.0), None
        # ORT's errors derive from Exception directly, and a broken driver can fail anywhere.
        except Exception as exc:  # noqa: BLE001
            ok, error = False, exc
    if ok:
        return True, ""
    if error is not None:
        return False, _first_line(str(error))
    return False, _native_reason(captured.text)


@dataclass
class _Captured:
    text: str = ""


@contextlib.contextmanager
def _captured_native_output() -> Iterator[_Captured]:
    """Redirect file descriptors 1 and 2 to a temporary file; the text is readable afterwards."""
    captured = _Captured()
    try:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sink = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed in the finally below)
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable descriptors (embedded interpreters): run without capturing
        yield captured
        return
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield captured
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sink.seek(0)
        captured.text = sink.read().decode("utf-8", "replace")
        sink.close()


def _native_reason(text: str) -> str:
    """The most telling line of ONNX Runtime's CUDA loading messages, without colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    match = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", text)
    needs = re.search(r"Require (cuDNN [0-9.*]+ and CUDA [0-9]+)", text)
    if match:
        needed = f" ({needs.group(1)} needed)" if needs else ""
        return f"the CUDA provider could not load {match.group(1)}{needed}"
    for line in text.splitlines():
        if "Failed to create CUDAExecutionProvider" in line:
            return (
                "the CUDAExecutionProvider could not be created (no GPU, driver or CUDA libraries)"
            )
    return "the probe session fell back to the CPU (no usable GPU or CUDA libraries)"


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def device_name(device: str) -> str:
    """A human-readable name of the device, for reports and cost-cache keys.

    Example:
        >>> device_name("cpu")  # doctest: +SKIP
        'AMD EPYC (2 cores)'
    """
    return _device_name(resolve_device(device))


@cache
def _device_name(device: str) -> str:
    if device == "cuda":
        try:
            result = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
            if names:
                return names[0]
        except (OSError, subprocess.SubprocessError):
            pass
        return "CUDA device"
    return f"{_cpu_model()} ({_cpu_count()} cores)"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "CPU"


def _cpu_count() -> int:
    # The cores this process may run on (containers and taskset limit them), not the host's.
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def runtime_fingerprint(device: str) -> dict[str, str]:
    """What a measured cost depends on besides the op: provider, device name and ORT version.

    Pass these parts into `cost_model.cache.make_key` so that costs measured on one machine or
    runtime are never reused on another.

    Example:
        >>> runtime_fingerprint("cpu")["provider"]
        'CPUExecutionProvider'
    """
    resolved = resolve_device(device)
    return {
        "provider": PROVIDERS[resolved],
        "device": device_name(resolved),
        "ort": ort.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------


#: Custom op libraries every session of this process registers (`register_custom_op_library`).
_custom_op_libraries: list[str] = []

#: What to do about an op ONNX Runtime has no kernel for (appended to the error line).
CUSTOM_LIB_HINT = "register the library that implements it with --custom-lib LIB.so"


def register_custom_op_library(path: str | os.PathLike) -> str:
    """Register a custom op library (a shared object ONNX Runtime loads with
    `SessionOptions.register_custom_ops_library`) for every session this process creates from
    now on: the gate's, the check's, the cost model's and the benchmarks' (`make_session`).

    The library is loaded once here, so a missing or unloadable file fails at once with one
    line (`UsageError`) instead of in the middle of a run. Registering a library twice is a
    no-op. Returns the absolute path registered.

    Example:
        >>> register_custom_op_library("libmy_ops.so")   # doctest: +SKIP
        '/home/me/libmy_ops.so'
    """
    given = os.fspath(path)
    absolute = os.path.abspath(os.path.expanduser(given))
    if absolute in _custom_op_libraries:
        return absolute
    if not os.path.isfile(absolute):
        what = "is a folder" if os.path.isdir(absolute) else "no such file"
        raise UsageError(f"--custom-lib {given}: {what}")
    try:
        ort.SessionOptions().register_custom_ops_library(absolute)
    except Exception as exc:  # ORT's errors derive from Exception directly
        raise UsageError(f"--custom-lib {given}: ONNX Runtime cannot load it "
                         f"({_first_line(str(exc))})") from None
    _custom_op_libraries.append(absolute)
    return absolute


def custom_op_libraries() -> tuple[str, ...]:
    """The custom op libraries registered in this process, in order."""
    return tuple(_custom_op_libraries)


# How a session's idle intra-op threads behave (`make_session(spinning=...)`):
# "on"      ONNX Runtime's default: they spin between a run's ops and for some 35 ms after a run
#           (measured on the 2-core machine), so back-to-back runs find them awake;
# "in-run"  they spin between a run's ops as with "on", and stop the moment the run returns
#           (`session.force_spinning_stop`): what a user's session does within a run, without
#           taking a core from the next session to run. Timing that interleaves many sessions
#           uses it (the gate, the bench);
# "off"     they sleep at once (`session.intra_op.allow_spinning` 0): each parallel op pays a
#           wake-up, which a user's default session does not (NasRNN's MatMul merge read 1.27x
#           this way and 1.04-1.11x in a default session alone; docs/gate.md).
SPINNING = ("on", "in-run", "off")


def make_session(
    model: ModelLike, device: str, level: str = "all", threads: int | None = None,
    *, spinning: str = "on",
) -> ort.InferenceSession:
    """Create an ONNX Runtime session for `model` on `device` at optimization `level`.

    `level` is one of "disable", "basic", "extended", "all" (ORT's GraphOptimizationLevel);
    `threads` sets the intra-op thread count (None: ORT's default, one per core); `spinning`
    is one of `SPINNING` ("on": ORT's default; "in-run": no spinning once a run returns;
    "off": idle threads sleep at once). On the CPU
    only the CPUExecutionProvider is used; on CUDA the CPU provider backs the ops CUDA lacks.
    Every custom op library registered with `register_custom_op_library` is registered in the
    session. A model ORT cannot load raises `ModelError` (for an op ORT has no kernel for, the
    line names it and says to register its library); a model with a newer IR version than this
    ORT accepts is retried once at the highest IR version it does accept.

    Example:
        >>> session = make_session(model, "cpu", level="disable")  # doctest: +SKIP
    """
    if level not in LEVELS:
        raise ValueError(f"unknown optimization level {level!r}: choose one of {', '.join(LEVELS)}")
    if spinning not in SPINNING:
        raise ValueError(f"unknown spinning {spinning!r}: choose one of {', '.join(SPINNING)}")
    resolved = resolve_device(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    # Warnings such as "some nodes were assigned to the CPU" are expected here; keep errors.
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if spinning == "off":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif spinning == "in-run":
        # With many sessions alive, the threads of the session that ran last would otherwise
        # spin on and take a core from the next one's run.
        options.add_session_config_entry("session.force_spinning_stop", "1")
    for library in _custom_op_libraries:
        options.register_custom_ops_library(library)
    providers = [PROVIDERS["cpu"]] if resolved == "cpu" else [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    try:
        return _create_session(model, options, providers)
    except ModelError:
        raise
    except Exception as exc:
        line = _first_line(str(exc))
        unknown = unregistered_op(line)
        if unknown is not None:
            domain, op_type = unknown
            raise ModelError(f"ONNX Runtime has no kernel for op {op_type} (domain "
                             f"{domain or 'ai.onnx'}): {CUSTOM_LIB_HINT}") from exc
        raise ModelError(f"ONNX Runtime cannot load the model: {line}") from exc


def unregistered_op(message: str) -> tuple[str, str] | None:
    """(domain, op type) of the op an ORT error says it does not know, else None.

    Example:
        >>> unregistered_op("Fatal error: com.example:MyOp(-1) is not a registered function/op")
        ('com.example', 'MyOp')
    """
    match = re.search(r"([\w.]*):(\w+)\(-?\d+\) is not a registered function/op", message)
    return (match.group(1), match.group(2)) if match else None


#: ONNX Runtime's type strings ("tensor(float)") -> ONNX element types.
_ORT_ELEM_TYPES = {name.lower(): value for name, value in TensorProto.DataType.items()}
_ORT_ELEM_TYPES["float"] = TensorProto.FLOAT
_ORT_ELEM_TYPES["double"] = TensorProto.DOUBLE


def infer_shapes_by_running(
    model: onnx.ModelProto,
    names: Sequence[str],
    overrides: Mapping[str, Sequence[int] | int] | None = None,
) -> dict[str, tuple[int, tuple[int | str | None, ...] | None]]:
    """The element type and shape of values `names` of `model` as ONNX Runtime finds them:
    for ops ONNX's shape inference does not know (ORT's contrib ops in `com.microsoft`, ops
    of a custom op library).

    The values become extra graph outputs of a copy of the model, loaded on the CPU provider
    without graph optimizations: ORT's own shape inference (which knows its contrib ops) gives
    what it can; where a dim is still unknown and every input shape is static, one run on
    random valid inputs (`random_feeds`) gives the rest. A dim known only from that run is
    recorded only when the inputs are static, so nothing learned at one input shape is taken
    for all. Returns `{name: (elem_type, dims)}` for the tensor values it learned anything
    about (a dim it could not learn is None; dims None: rank unknown). Raises `ModelError`
    when ORT cannot load the model (naming an op it has no kernel for).

    Example:
        >>> infer_shapes_by_running(model, ["gelu_out"])   # doctest: +SKIP
        {'gelu_out': (1, (1, 64, 128))}
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    g = probe.graph
    produced = {o for n in g.node for o in n.output if o}
    wanted = [n for n in dict.fromkeys(names) if n in produced]
    outputs = {o.name for o in g.output}
    for name in wanted:
        if name not in outputs:
            g.output.append(onnx.ValueInfoProto(name=name))
    # ORT refuses a value_info that contradicts what it infers; the probe needs none.
    del g.value_info[:]
    session = make_session(probe, "cpu", level="disable")
    found: dict[str, tuple[int, tuple[int | str | None, ...] | None]] = {}
    for arg in session.get_outputs():
        if arg.name not in wanted:
            continue
        match = re.fullmatch(r"tensor\((\w+)\)", arg.type or "")
        if match is None or match.group(1) not in _ORT_ELEM_TYPES:
            continue  # a sequence, a map or an optional: not a tensor
        # ORT says [] both for a scalar and for a shape it does not know: only a run tells.
        dims = None if not arg.shape else tuple(
            d if isinstance(d, (int, str)) and d != "" else None for d in arg.shape)
        found[arg.name] = (_ORT_ELEM_TYPES[match.group(1)], dims)
    incomplete = [n for n in wanted if n not in found or found[n][1] is None
                  or any(not isinstance(d, int) for d in found[n][1])]
    if incomplete and _static_inputs(probe, overrides or {}):
        feeds = random_feeds(probe, overrides=overrides)
        arrays = session.run(incomplete, feeds)
        for name, array in zip(incomplete, arrays):
            if isinstance(array, np.ndarray):
                elem = helper.np_dtype_to_tensor_dtype(array.dtype)
                found[name] = (elem, tuple(int(d) for d in array.shape))
    return found


def _static_inputs(model: onnx.ModelProto, overrides: Mapping[str, object]) -> bool:
    """Whether every graph input (not an initializer) has a static shape, given `overrides`."""
    constant = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in constant or value.name in overrides:
            continue
        t = value.type.tensor_type
        if not t.HasField("shape") or any(
                not d.HasField("dim_value") and d.dim_param not in overrides for d in t.shape.dim):
            return False
    return True


def _create_session(
    model: ModelLike, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    if isinstance(model, (str, os.PathLike)):
        try:
            return ort.InferenceSession(os.fspath(model), options, providers=providers)
        except Exception as exc:
            max_ir = _max_ir_version(exc)
            if max_ir is None:
                raise
            proto = onnx.load(os.fspath(model))
            proto.ir_version = max_ir
            return _create_session(proto, options, providers)
    if isinstance(model, bytes):
        try:
            return ort.InferenceSession(model, options, providers=providers)
        except Exception as exc:
            max_ir = _max_ir_version(exc)
            if max_ir is None:
                raise
            proto = onnx.ModelProto()
            proto.ParseFromString(model)
            proto.ir_version = max_ir
            return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected an onnx.ModelProto, bytes or a path, got {type(model).__name__}")
    if model.ByteSize() > _PROTOBUF_LIMIT:
        return _session_via_external_data(model, options, providers)
    return _create_session(model.SerializeToString(), options, providers)


def _max_ir_version(exc: Exception) -> int | None:
    # ORT's message: "Unsupported model IR version: 14, max supported IR version: 13".
    match = re.search(r"max supported IR version: (\d+)", str(exc))
    return int(match.group(1)) if match else None


def _session_via_external_data(
    model: onnx.ModelProto, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    # ORT reads all weights while the session is created, so the folder can go afterwards.
    with tempfile.TemporaryDirectory(prefix="superopt-") as folder:
        path = os.path.join(folder, "model.onnx")
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(copy, path, save_as_external_data=True, location="model.data")
        return ort.InferenceSession(path, options, providers=providers)


def _as_model_proto(model: ModelLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        proto = onnx.ModelProto()
        proto.ParseFromString(model)
        return proto
    # Only the graph's inputs are needed here: leave external weights on disk.
    return onnx.load(os.fspath(model), load_external_data=False)


def _identity_model() -> onnx.ModelProto:
    """A one-node model y = Identity(x) on one float: the probe and the fixed-cost reference."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _TINY_OPSET)], ir_version=_TINY_IR_VERSION
    )


# ---------------------------------------------------------------------------------------------
# Inputs: the values each input may take (`input_domains`), and random draws from them
# ---------------------------------------------------------------------------------------------

#: Input distributions, in the order the numerical check tries them until the original model's
#: outputs are finite. Floats: N(0, 1) (|N(0, 1)| + 0.1 where the model needs them positive),
#: then uniform in [0.5, 1.5), then the integers 1..3. Integers with no constraint: [0, 100)
#: ([1, 100) where they must be positive), then 1, then 1..3. Indices always stay within the
#: table they index.
DISTRIBUTIONS = ("normal", "uniform(0.5, 1.5)", "integers(1, 3)")

#: Integers with no constraint are drawn in [0, 100) (the `int_range` of `random_feeds`).
DEFAULT_INT_RANGE = (0, 100)

# How a value reached from an input relates to the input's values:
_EXACT = "exact"  # the input's values, moved or retyped (Cast, Reshape, Gather's data, ...)
_SIGNED = "signed"  # computed, but positive wherever the input is positive (Relu, Abs, x * 2)
_DERIVED = "derived"  # any other computation

# Slots holding indices into another input of the same node: op -> {slot: table slot}.
_INDEX_SLOTS: dict[tuple[str, str], dict[int, int]] = {
    ("", "Gather"): {1: 0},
    ("", "GatherElements"): {1: 0},
    ("", "GatherND"): {1: 0},
    ("", "Scatter"): {1: 0},
    ("", "ScatterElements"): {1: 0},
    ("", "ScatterND"): {1: 0},
    # ONNX Runtime's fused BERT embedding: word, segment and position ids.
    ("com.microsoft", "EmbedLayerNormalization"): {0: 2, 1: 4, 8: 3},
}
# Ops whose indices address all the table's leading axes at once (bounded by the smallest).
_ND_INDEX_OPS = {"GatherND", "ScatterND"}

# Slots whose values set a shape, an axis or a count: random values there mean nothing.
_SHAPE_SLOTS: dict[str, frozenset[int]] = {
    op: frozenset(slots) for op, slots in {
        "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Slice": {1, 2, 3, 4}, "Pad": {1, 3},
        "ConstantOfShape": {0}, "Range": {0, 1, 2}, "TopK": {1}, "Resize": {1, 2, 3},
        "Upsample": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "Split": {1}, "OneHot": {1},
        "CumSum": {1}, "Trilu": {1}, "NonMaxSuppression": {2, 3, 4}, "RoiAlign": {2},
        "MaxUnpool": {2}, "CenterCropPad": {1}, "Col2Im": {1, 2, 3}, "DFT": {1, 2},
        "STFT": {1, 2, 3}, "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1},
        "ReduceMin": {1}, "ReduceProd": {1}, "ReduceL1": {1}, "ReduceL2": {1},
        "ReduceLogSum": {1}, "ReduceLogSumExp": {1}, "ReduceSumSquare": {1},
    }.items()
}

# Slots that need positive values: logarithms, roots, reciprocals, denominators, Pow's base.
_POSITIVE_SLOTS: dict[str, frozenset[int]] = {
    "Log": frozenset({0}), "Sqrt": frozenset({0}), "Reciprocal": frozenset({0}),
    "Div": frozenset({1}), "Pow": frozenset({0}), "Mod": frozenset({1}),
}

# Ops that move or retype values (the slots whose values they move): indices and positivity
# pass through them.
_ALL = frozenset(range(64))
_MOVES: dict[str, frozenset[int]] = {
    "Identity": frozenset({0}), "Cast": frozenset({0}), "CastLike": frozenset({0}),
    "Reshape": frozenset({0}), "Unsqueeze": frozenset({0}), "Squeeze": frozenset({0}),
    "Flatten": frozenset({0}), "Transpose": frozenset({0}), "Expand": frozenset({0}),
    "Tile": frozenset({0}), "Slice": frozenset({0}), "Concat": _ALL, "Split": frozenset({0}),
    "Gather": frozenset({0}), "GatherElements": frozenset({0}), "GatherND": frozenset({0}),
    "Compress": frozenset({0}), "DepthToSpace": frozenset({0}), "SpaceToDepth": frozenset({0}),
    "ReduceMax": frozenset({0}), "ReduceMin": frozenset({0}), "Max": _ALL, "Min": _ALL,
    "Where": frozenset({1, 2}), "Dropout": frozenset({0}), "TopK": frozenset({0}),
    "MaxPool": frozenset({0}), "GlobalMaxPool": frozenset({0}), "Pad": frozenset({0}),
    "ReverseSequence": frozenset({0}), "Scatter": frozenset({0, 2}),
    "ScatterElements": frozenset({0, 2}), "ScatterND": frozenset({0, 2}),
}
# Of these, the ops whose later outputs are not values (indices, masks).
_FIRST_OUTPUT_ONLY = {"TopK", "MaxPool", "Dropout"}

# Ops whose output is positive wherever their input is, and not always otherwise: a need for
# positive values passes back through them. (Exp, Softplus, Abs, norms are positive, or nearly
# always so, whatever their input: nothing is asked of it.)
_KEEPS_POSITIVE = {
    "Relu", "Sqrt", "ReduceMean", "ReduceSum", "ReduceProd", "AveragePool", "GlobalAveragePool",
}
# Binary ops that keep positivity when every other operand is a constant of these signs.
_KEEPS_POSITIVE_WITH_CONSTANTS = {"Mul": "positive", "Div": "positive", "Add": "non-negative",
                                  "Sum": "non-negative", "Mean": "non-negative"}

# Ops whose outputs do not depend on the range of the input's values (comparisons, shapes,
# positions): nothing the input's range could break lies beyond them.
_RANGE_FREE = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or",
               "Xor", "IsNaN", "IsInf", "Shape", "Size", "Sign", "ArgMax", "ArgMin", "NonZero"}

_CONTROL_FLOW = {"If", "Loop", "Scan", "SequenceMap"}


@dataclass(frozen=True)
class InputDomain:
    """The values one graph input may take for the model to compute something meaningful.

    `kind`:
    - "real": any float;
    - "positive": floats > 0: the input reaches Log, Sqrt, Reciprocal, Pow's base or a
      denominator (Div, Mod) directly or through ops that keep positive values positive (and
      only them: Relu, reductions, products with positive constants, ...);
    - "index": integers in [low, high): the input indexes a table (Gather, GatherElements,
      GatherND, Scatter*, ORT's EmbedLayerNormalization) directly or through ops that only move
      or retype values (Cast, Reshape, Unsqueeze, ...); `high` is the table's size along the
      indexed axis (the smallest, when it indexes several);
    - "integer": integers with no constraint found (`low` 1 where they must be positive);
    - "bool";
    - "ones": all ones (`low` 1, `high` 2): an integer or boolean mask whose running count
      (CumSum) indexes a table, as Hugging Face decoders count position ids from their
      attention mask (`cumsum(attention_mask) - 1`). The count of a mask with padding can
      index anything, so only the mask with no padding is known to be valid; whether the
      model computes something on it is shown by running it (the numerical check runs the
      original on these inputs and refuses outputs that are NaN or Inf everywhere);
    - "unknown": the analysis cannot tell which values are valid (an integer that reaches a
      table through arithmetic, a shape or count input, a custom op's or a subgraph's input).

    `why` says where the constraint (or the doubt) comes from, naming the node.
    """

    name: str
    dtype: str  # numpy's name of the element type, e.g. "float32", "int64"
    kind: str
    low: int | None = None
    high: int | None = None
    why: str = ""

    @property
    def known(self) -> bool:
        """Whether the valid values are known (every kind but "unknown")."""
        return self.kind != "unknown"

    def describe(self) -> str:
        """One line for reports, e.g. "int64 in [0, 10): indexes Gather 'emb' (axis 0)"."""
        what = {
            "real": f"any {self.dtype}",
            "positive": f"{self.dtype} > 0",
            "index": f"{self.dtype} in [{self.low}, {self.high})",
            "integer": f"any {self.dtype}" if not self.low else f"{self.dtype} >= {self.low}",
            "bool": "bool",
            "ones": f"{self.dtype} all ones",
            "unknown": f"{self.dtype}, valid values unknown",
        }[self.kind]
        return f"{what}: {self.why}" if self.why else what


def input_domains(
    model: ModelLike, overrides: Mapping[str, Sequence[int] | int] | None = None
) -> dict[str, InputDomain]:
    """The valid values of every graph input that is not an initializer, from its uses.

    Each input is followed forward through the graph: through ops that only move or retype
    values (Cast, Reshape, Unsqueeze, Transpose, Concat, Gather's data, ...) its values stay
    "exact"; through ops that keep positive values positive (Relu, Abs, reductions, products
    with positive constants) they stay "signed"; through anything else they are "derived".
    Then (see `InputDomain` for the kinds):
    - exact values at a table's indices bound the input to the table's size along the axis;
      derived values there make it "unknown" (e.g. ids + 1 into a Gather);
    - exact or signed values at Log, Sqrt, Reciprocal, Pow's base (unless the exponent is a
      constant integer), Div's or Mod's denominator make it positive;
    - any value at a shape, axis or count input (Reshape's shape, Slice's starts, TopK's k, ...)
      makes it "unknown", as does an integer input reaching a custom-domain or control-flow op
      or a subgraph;
    - comparisons, Shape, ArgMax and the like end the walk: their outputs do not depend on the
      input's range;
    - an integer or boolean input whose values reach a table's indices only through a running
      count (CumSum) and the arithmetic after it is a mask (an attention mask that position ids
      are counted from): "ones", all ones, instead of "unknown".
    `overrides` resolves symbolic table sizes as in `random_feeds`.

    Example:
        >>> input_domains(model)["input_ids"].describe()        # doctest: +SKIP
        "int64 in [0, 30522): indexes Gather 'word_embeddings' (axis 0)"
    """
    proto = _as_model_proto(model)
    graph = proto.graph
    constant = {init.name for init in graph.initializer}
    constant |= {sparse.values.name for sparse in graph.sparse_initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((node, slot))
        for name in _outer_scope_names(node):
            consumers.setdefault(name, []).append((node, -1))
    facts = _GraphFacts(proto, dict(overrides or {}))
    return {
        value.name: _domain_of(value, consumers, facts)
        for value in graph.input
        if value.name not in constant
    }


class _GraphFacts:
    """Constants and static dims of a graph's values, looked up by name (shape inference only
    when a table is neither a constant nor declared)."""

    def __init__(self, proto: onnx.ModelProto, overrides: dict) -> None:
        self.proto = proto
        self.overrides = overrides
        graph = proto.graph
        self.tensors: dict[str, TensorProto] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        self.tensors[node.output[0]] = attr.t
        self.inputs = {v.name: v for v in graph.input}
        self.declared = {v.name: v for v in [*graph.value_info, *graph.output]}
        self._inferred: dict[str, onnx.ValueInfoProto] | None = None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a small constant, or None (not a constant, external or large)."""
        tensor = self.tensors.get(name)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        if int(np.prod(tensor.dims, dtype=np.int64)) > 1 << 16:
            return None
        try:
            return onnx.numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 (a tensor numpy cannot hold is simply not used)
            return None

    def dims(self, name: str) -> list[int | None] | None:
        """The value's dims (None for a symbolic or unknown one), or None if its rank is unknown."""
        if name in self.tensors:
            return [int(d) for d in self.tensors[name].dims]
        if name in self.inputs:
            try:
                return list(_input_shape(self.inputs[name], self.overrides))
            except ShapeError:
                return None
        value = self.declared.get(name) or self._infer().get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None
                for d in value.type.tensor_type.shape.dim]

    def _infer(self) -> dict[str, onnx.ValueInfoProto]:
        if self._inferred is None:
            self._inferred = {}
            if self.proto.ByteSize() < _PROTOBUF_LIMIT // 2:
                with contextlib.suppress(Exception):
                    inferred = onnx.shape_inference.infer_shapes(self.proto)
                    self._inferred = {v.name: v for v in inferred.graph.value_info}
        return self._inferred


def _outer_scope_names(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in graphs:
            defined = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                defined.update(inner.output)
            for inner in sub.node:
                names.update(n for n in inner.input if n and n not in defined)
                names.update(n for n in _outer_scope_names(inner) if n not in defined)
    return names


def _node_label(node: onnx.NodeProto) -> str:
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    return f"{op} {node.name!r}" if node.name else op


def _domain_of(
    value: onnx.ValueInfoProto,
    consumers: Mapping[str, list[tuple[onnx.NodeProto, int]]],
    facts: _GraphFacts,
) -> InputDomain:
    name = value.name
    elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
        dtype_name = dtype.name
    except Exception:  # noqa: BLE001 (no numpy type: random_feeds says so when drawing)
        return InputDomain(name, TensorProto.DataType.Name(elem) if elem else "?", "unknown",
                           why="not a numeric tensor")
    if not _drawable(dtype):  # float8 and the like: no way to draw them
        return InputDomain(name, TensorProto.DataType.Name(elem), "unknown",
                           why=f"it is {TensorProto.DataType.Name(elem)}, which cannot be drawn")
    is_float = _is_float(dtype)
    high: int | None = None
    index_why = positive_why = unknown_why = ones_why = ""
    stack: list[tuple[str, str]] = [(name, _EXACT)]
    seen = set(stack)
    counted: set[str] = set()  # values computed from a CumSum of the input (position counts)
    while stack and not unknown_why:
        current, mode = stack.pop()
        for node, slot in consumers.get(current, []):
            op, domain, label = node.op_type, node.domain or "", _node_label(node)
            if domain == "ai.onnx":
                domain = ""
            if slot < 0:
                if not is_float:
                    unknown_why = f"it is read inside a subgraph of {label}"
                    break
                continue
            table_slot = _INDEX_SLOTS.get((domain, op), {}).get(slot)
            if table_slot is not None:
                bound, where = _table_bound(node, op, table_slot, facts)
                if mode != _EXACT and current in counted and not is_float:
                    # An attention mask that position ids are counted from (Hugging Face
                    # decoders: position_ids = cumsum(attention_mask) - 1): all ones.
                    ones_why = ones_why or (f"it counts the positions that index {label} "
                                            "(CumSum): a mask, drawn as all ones (no padding)")
                    continue
                if mode != _EXACT:
                    unknown_why = f"it reaches the indices of {label} through computations"
                    if bound is not None and (high is None or bound < high):
                        high = bound  # a best guess for timings, which may still use it
                    break
                if bound is None:
                    unknown_why = f"it indexes {label}, whose table size is unknown"
                    break
                if high is None or bound < high:
                    high, index_why = bound, f"indexes {label} ({where})"
                continue
            if domain != "":
                if not is_float:
                    unknown_why = f"it reaches {label}, whose use of it is not analyzed"
                    break
                continue
            if slot in _SHAPE_SLOTS.get(op, ()):
                unknown_why = f"it is input {slot} of {label}, which sets a shape, axis or count"
                break
            if op in _CONTROL_FLOW:
                if not is_float and not (op == "If" and slot == 0):
                    unknown_why = f"it is an input of {label}, whose use of it is not analyzed"
                    break
                continue
            if (slot in _POSITIVE_SLOTS.get(op, ()) and mode != _DERIVED
                    and not _integer_exponent(node, facts)):
                positive_why = positive_why or f"reaches {label}"
            if op in _RANGE_FREE:
                continue
            next_mode = _carried_mode(node, op, slot, mode, facts)
            outputs = node.output[:1] if op in _FIRST_OUTPUT_ONLY else node.output
            if current in counted or (op == "CumSum" and slot == 0):
                counted.update(o for o in outputs if o)
            for out in outputs:
                if out and (out, next_mode) not in seen:
                    seen.add((out, next_mode))
                    stack.append((out, next_mode))
    if unknown_why:
        return InputDomain(name, dtype_name, "unknown", None, high, unknown_why)
    if ones_why:
        return InputDomain(name, dtype_name, "ones", 1, 2, ones_why)
    if dtype.kind == "b":
        return InputDomain(name, dtype_name, "bool")
    if is_float:
        if positive_why:
            return InputDomain(name, dtype_name, "positive", why=f"it {positive_why}")
        return InputDomain(name, dtype_name, "real")
    low = 1 if positive_why else 0
    if high is None:
        return InputDomain(name, dtype_name, "integer", low or None,
                           why=f"it {positive_why}" if positive_why else "")
    if high <= low:
        return InputDomain(name, dtype_name, "unknown", why=(
            f"it {index_why} and {positive_why}: no index is valid for both"))
    why = f"it {index_why}" + (f" and {positive_why}" if positive_why else "")
    return InputDomain(name, dtype_name, "index", low, high, why)


def _table_bound(
    node: onnx.NodeProto, op: str, table_slot: int, facts: _GraphFacts
) -> tuple[int | None, str]:
    """The number of valid indices into the node's table, and where that number comes from."""
    if table_slot >= len(node.input) or not node.input[table_slot]:
        return None, ""
    dims = facts.dims(node.input[table_slot])
    if not dims:
        return None, ""
    if op in _ND_INDEX_OPS:
        batch = next((a.i for a in node.attribute if a.name == "batch_dims"), 0)
        sizes = dims[batch:]
        if not sizes or any(d is None for d in sizes):
            return None, ""
        return min(sizes), f"smallest of dims {sizes}"  # type: ignore[type-var]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if axis < 0:
        axis += len(dims)
    if not 0 <= axis < len(dims) or dims[axis] is None:
        return None, ""
    return dims[axis], f"{dims[axis]} entries along axis {axis}"


def _integer_exponent(node: onnx.NodeProto, facts: _GraphFacts) -> bool:
    """Whether a Pow's exponent is a constant of integers (a negative base is then fine)."""
    if node.op_type != "Pow" or len(node.input) < 2:
        return False
    exponent = facts.constant(node.input[1])
    return exponent is not None and bool(np.all(np.mod(exponent, 1) == 0))


def _carried_mode(
    node: onnx.NodeProto, op: str, slot: int, mode: str, facts: _GraphFacts
) -> str:
    """How the node's outputs relate to the input, given how its input `slot` does."""
    if slot in _MOVES.get(op, ()):
        return mode
    if mode == _DERIVED:
        return _DERIVED
    if op in _KEEPS_POSITIVE or (op == "Pow" and slot == 0):
        return _SIGNED
    sign = _KEEPS_POSITIVE_WITH_CONSTANTS.get(op)
    if sign is not None and not (op == "Div" and slot != 0):
        others = [facts.constant(n) for i, n in enumerate(node.input) if i != slot and n]
        if others and all(c is not None for c in others):
            ok = all(bool(np.all(c > 0 if sign == "positive" else c >= 0)) for c in others)
            if ok:
                return _SIGNED
    return _DERIVED


def random_feeds(
    model: ModelLike,
    seed: int = 0,
    overrides: Mapping[str, Sequence[int] | int] | None = None,
    *,
    int_range: tuple[int, int] = DEFAULT_INT_RANGE,
    distribution: str = "normal",
    domains: Mapping[str, InputDomain] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs for every graph input that is not an initializer, each within its valid
    values (`input_domains`): the one way whole models get inputs, for the A/B gate, the
    numerical check, the benchmarks and `time_model`/`time_interleaved` (the cost model's
    one-node models come with their own feeds).

    `distribution` is one of `DISTRIBUTIONS`: "normal" (the default) draws floats from
    N(0, 1), or |N(0, 1)| + 0.1 for inputs that must be positive; "uniform(0.5, 1.5)" and
    "integers(1, 3)" are the check's retries. Indices are uniform over the table they index;
    integers with no constraint are uniform in `int_range` (default [0, 100); with "uniform"
    they are 1, with "integers" 1..3); booleans are fair coins. An input whose valid values are
    unknown gets integers in `int_range` (within a table's size where one was found): the
    numerical check refuses such inputs (`InputDomain.known`), timings can still use them.
    `domains` saves the analysis when the caller has it already (it should be the original
    model's: its uses define what is valid).
    Symbolic or unknown dimensions are 1 unless `overrides` says otherwise: map an input name
    to its whole shape (`{"input_ids": (1, 64)}`), or a symbolic dimension's name to its size
    (`{"seq": 64}`). An override that does not fit the declared shape raises `ShapeError`.

    Example:
        >>> feeds = random_feeds(model, seed=0, overrides={"batch": 1})  # doctest: +SKIP
        >>> {name: a.shape for name, a in feeds.items()}                  # doctest: +SKIP
        {'input': (1, 3, 224, 224)}
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}: one of {DISTRIBUTIONS}")
    proto = _as_model_proto(model)
    overrides = dict(overrides or {})
    if domains is None:
        domains = input_domains(proto, overrides)
    rng = np.random.default_rng(seed)
    constant = {init.name for init in proto.graph.initializer}
    constant |= {sparse.values.name for sparse in proto.graph.sparse_initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in proto.graph.input:
        if value.name in constant:
            continue
        if not value.type.HasField("tensor_type"):
            raise ModelError(f"input {value.name!r} is not a tensor; only tensor inputs can be fed")
        dtype = _numpy_dtype(value.name, value.type.tensor_type.elem_type)
        shape = _input_shape(value, overrides)
        domain = domains.get(value.name)
        feeds[value.name] = _random_array(rng, dtype, shape, domain, distribution, int_range)
    return feeds


def _numpy_dtype(name: str, elem_type: int) -> np.dtype:
    if elem_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise ModelError(
            f"input {name!r} has type {TensorProto.DataType.Name(elem_type)}; cannot feed it"
        )
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception as exc:
        raise ModelError(f"input {name!r}: no numpy type for ONNX type {elem_type}") from exc
    if not _drawable(dtype):  # float8 and the like map to types there is no drawing for
        type_name = TensorProto.DataType.Name(elem_type)
        raise ModelError(f"input {name!r} has type {type_name}; cannot draw random values for it")
    return dtype


def _is_float(dtype: np.dtype) -> bool:
    """numpy's floats, and bfloat16 (ml_dtypes' type, which numpy files under kind "V")."""
    return dtype.kind == "f" or dtype.name == "bfloat16"


def _drawable(dtype: np.dtype) -> bool:
    return dtype.kind in "iub" or _is_float(dtype)


def _input_shape(value: onnx.ValueInfoProto, overrides: Mapping[str, object]) -> tuple[int, ...]:
    name = value.name
    tensor_type = value.type.tensor_type
    declared = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
    given = overrides.get(name)
    if given is not None and not isinstance(given, int):
        shape = tuple(int(d) for d in given)  # type: ignore[union-attr]
        if declared is not None:
            _check_override(name, shape, declared)
        return shape
    if declared is None:
        raise ShapeError(f"input {name!r} has no declared shape; give its shape as an override")
    shape = []
    for dim in declared:
        if dim.HasField("dim_value"):
            shape.append(dim.dim_value)
        elif dim.HasField("dim_param") and isinstance(overrides.get(dim.dim_param), int):
            shape.append(int(overrides[dim.dim_param]))  # type: ignore[arg-type]
        else:
            shape.append(1)  # symbolic or unknown: the smallest meaningful size
    return tuple(shape)


def _check_override(name: str, shape: tuple[int, ...], declared: list) -> None:
    if len(shape) != len(declared):
        raise ShapeError(
            f"shape override for input {name!r} has {len(shape)} dims, the model declares "
            f"{len(declared)}"
        )
    for axis, (size, dim) in enumerate(zip(shape, declared)):
        if size < 0:
            raise ShapeError(f"shape override for input {name!r}: dim {axis} is negative")
        if dim.HasField("dim_value") and dim.dim_value != size:
            raise ShapeError(
                f"shape override for input {name!r}: dim {axis} is {size}, the model fixes it "
                f"at {dim.dim_value}"
            )


def _random_array(
    rng: np.random.Generator,
    dtype: np.dtype,
    shape: tuple[int, ...],
    domain: InputDomain | None,
    distribution: str,
    int_range: tuple[int, int],
) -> np.ndarray:
    kind = domain.kind if domain is not None else ""
    if _is_float(dtype):  # drawn in float64, then rounded to the dtype (bfloat16 included)
        if distribution == "uniform(0.5, 1.5)":
            return rng.uniform(0.5, 1.5, shape).astype(dtype)
        if distribution == "integers(1, 3)":
            return rng.integers(1, 4, size=shape).astype(dtype)
        if kind == "positive":
            return (np.abs(rng.standard_normal(shape)) + 0.1).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return np.ones(shape, bool) if kind == "ones" else rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    if domain is not None and domain.high is not None:  # an index (or a best guess at one)
        low, high = domain.low or 0, domain.high
        narrowed = max(low, int_range[0]), min(high, int_range[1])
        if narrowed[0] < narrowed[1]:
            low, high = narrowed
    elif distribution == "uniform(0.5, 1.5)":
        low, high = 1, 2
    elif distribution == "integers(1, 3)":
        low, high = 1, 4
    else:
        least = (domain.low or 0) if domain is not None else 0
        low, high = max(int_range[0], least), int_range[1]
    low, high = max(low, info.min), min(high, info.max + 1)
    if high <= low:
        raise ValueError(f"no {dtype.name} value in [{low}, {high})")
    return rng.integers(low, high, size=shape, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (`np.ascontiguousarray` makes a scalar 1-D)."""
    return np.require(np.asarray(array), requirements="C")


def ort_value(array: np.ndarray, device: str = "cpu") -> ort.OrtValue:
    """`array` as an OrtValue on `device` ("cpu" or "cuda"); bfloat16 arrays (ml_dtypes' type,
    which ORT's `ortvalue_from_numpy` refuses) go through their 16-bit pattern.

    The CPU value of a bfloat16 array shares its memory: keep the array alive with it.
    """
    array = _contiguous(array)
    if array.dtype.name != "bfloat16":
        if device == "cuda":
            return ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
        return ort.OrtValue.ortvalue_from_numpy(array)
    host = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16),
                                                           TensorProto.BFLOAT16)
    if device != "cuda":
        return host
    value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), TensorProto.BFLOAT16,
                                                      "cuda", 0)
    value.update_inplace(host)
    return value


def run_session(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray],
                output_names: Sequence[str] | None = None) -> list:
    """`session.run(output_names, feeds)`, bfloat16 inputs included (fed as OrtValues; see
    `ort_value`). ORT's Python API cannot hand bfloat16 outputs back as numpy arrays: cast
    them to float32 in the model (the numerical check does)."""
    if not any(np.asarray(a).dtype.name == "bfloat16" for a in feeds.values()):
        return session.run(output_names, dict(feeds))
    arrays = {k: _contiguous(a) for k, a in feeds.items()}
    values = {k: ort_value(a) for k, a in arrays.items()}
    names = list(output_names) if output_names else [o.name for o in session.get_outputs()]
    outputs = session.run_with_ort_values(names, values)
    return [o.numpy() if o.is_tensor() else o for o in outputs]


class Runner:
    """One session bound to fixed inputs, timing one run at a time.

    Inputs are bound once through IO binding (on CUDA: copied to the GPU once, outputs left
    there), so a timed run measures the session's work and its fixed per-run cost, never host
    copies. Feeds for inputs the session does not take are ignored (ORT may drop unused ones).

    Example:
        >>> runner = Runner(make_session(model, "cpu"), random_feeds(model))  # doctest: +SKIP
        >>> runner.best_of(5)                                                 # doctest: +SKIP
        0.0123
    """

    def __init__(self, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> None:
        self.session = session
        self.device = "cuda" if session.get_providers()[0] == PROVIDERS["cuda"] else "cpu"
        self._binding = session.io_binding()
        self._values: list[ort.OrtValue] = []  # keeps bound device memory alive
        for node_arg in session.get_inputs():
            if node_arg.name not in feeds:
                raise ShapeError(f"no input given for {node_arg.name!r}")
            array = _contiguous(feeds[node_arg.name])
            value = ort_value(array, self.device)
            self._values.append(value)
            self._binding.bind_ortvalue_input(node_arg.name, value)
        for node_arg in session.get_outputs():
            if self.device == "cuda":
                self._binding.bind_output(node_arg.name, "cuda", 0)
            else:
                self._binding.bind_output(node_arg.name)

    def run(self) -> float:
        """Run once; return the wall time in seconds (CUDA work included: the run synchronizes)."""
        binding, session = self._binding, self.session
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        if self.device == "cuda":
            binding.synchronize_outputs()
        return time.perf_counter() - start

    def times(self, n: int) -> list[float]:
        """Run `n` times back to back; the wall time of each run in seconds."""
        # A garbage collection inside a timed run would be charged to the model (timeit does too).
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [self.run() for _ in range(n)]
        finally:
            if was_enabled:
                gc.enable()

    def best_of(self, n: int) -> float:
        """The fastest of `n` runs, in seconds: the least noisy estimate of one run."""
        return min(self.times(max(1, n)))

    def outputs(self) -> list[np.ndarray]:
        """The outputs of the last run, copied to host memory."""
        return self._binding.copy_outputs_to_cpu()


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one model (seconds): the one timing record of superopt.

    `samples` are the raw values, in the order measured: single runs (`time_model`) or each
    round's best run (`time_interleaved`). `median_s` is their median and `spread` is
    (p90 - p10) / median of them, a relative measure of the noise.

    Example:
        >>> t = Timing.from_samples([1.0, 2.0, 3.0])
        >>> t.median_s, t.min_s, t.max_s
        (2.0, 1.0, 3.0)
    """

    median_s: float
    spread: float
    samples: list[float] = field(repr=False)

    @property
    def min_s(self) -> float:
        return min(self.samples)

    @property
    def max_s(self) -> float:
        return max(self.samples)

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Timing:
        """Summarize raw samples (at least one)."""
        if not len(samples):
            raise ValueError("no timing samples")
        values = np.asarray(samples, dtype=np.float64)
        median = float(np.median(values))
        p10, p90 = np.percentile(values, [10, 90])
        spread = float((p90 - p10) / median) if median > 0 else 0.0
        return cls(median_s=median, spread=spread, samples=[float(v) for v in values])


def time_model(
    model: ModelLike,
    device: str,
    *,
    level: str = "all",
    warmup: int = 5,
    repeats: int = 30,
    target_s: float | None = None,
    min_repeats: int = 1,
    feeds: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> Timing:
    """Time back-to-back runs of one model on `device`: `warmup` untimed runs, then timed ones.

    Without `target_s`, `repeats` runs are timed. With it, the count is fitted from the best of
    two first runs so that the timed runs take about `target_s` seconds, between `min_repeats`
    and `repeats` (the cost model's one-node timings). Inputs are `feeds` or
    `random_feeds(model, seed)`. The timings include the session's fixed per-run cost (see
    `session_fixed_cost`). To compare models with each other, use `time_interleaved`.

    Example:
        >>> t = time_model(model, "cpu", repeats=20)  # doctest: +SKIP
        >>> t.min_s <= t.median_s                      # doctest: +SKIP
        True
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    runner = Runner(
        make_session(model, device, level=level, threads=threads),
        feeds if feeds is not None else random_feeds(model, seed),
    )
    runner.times(max(0, warmup))
    n = repeats
    if target_s is not None:
        first = runner.best_of(2)
        n = int(np.clip(target_s / max(first, 1e-7), min_repeats, repeats))
    return Timing.from_samples(runner.times(n))


def session_fixed_cost(device: str) -> float:
    """The fixed cost of one session run on `device`, in seconds (measured once per process).

    It is the median run time of a one-element Identity model, timed like everything else
    (`time_model`); the cost model subtracts it from one-node timings, whose sum would
    otherwise count it once per node (anchors.md: about 17.5 µs on CUDA).

    Example:
        >>> 0 < session_fixed_cost("cpu") < 1e-3
        True
    """
    resolved = resolve_device(device)
    with _probe_lock:
        cached = _fixed_costs.get(resolved)
    if cached is not None:
        return cached
    cost = time_model(
        _identity_model(), resolved, warmup=200, repeats=2000, feeds={"x": np.ones(1, np.float32)}
    ).median_s
    with _probe_lock:
        _fixed_costs[resolved] = cost
    return cost


# ---------------------------------------------------------------------------------------------
# Interleaved timing: several models against each other
# ---------------------------------------------------------------------------------------------

# Bounds on the adaptive number of runs per round: at least one; many more than a few hundred
# only stretch a round over more drift without sharpening its minimum.
MIN_RUNS_PER_ROUND = 1
MAX_RUNS_PER_ROUND = 500


@dataclass(frozen=True)
class InterleavedResult:
    """What `time_interleaved` measured: per model a `Timing` of its per-round best runs, or
    (with `keep_going`) None and an error line; and the method used."""

    device: str
    timings: list[Timing | None]
    errors: list[str | None]
    rounds: int
    runs_per_round: int
    sessions: int
    elapsed_s: float


def time_interleaved(
    models: Sequence[ModelLike],
    device: str,
    *,
    level: str | Sequence[str] = "all",
    rounds: int = 9,
    runs_per_round: int | None = None,
    sessions: int | None = None,
    budget_s: float = 4.0,
    warmup_s: float | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    threads: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    keep_going: bool = False,
    spinning: str = "in-run",
) -> InterleavedResult:
    """Time `models` against each other on `device`, interleaved: the one measuring loop of the
    end-to-end A/B gate and of the benchmarks.

    Method (anchors.md: on real models it kept self-comparisons on the 2-core machines within
    0.99-1.02):
    - `sessions` fresh sessions per model (default 2 on the CPU, 3 on CUDA: on CUDA a session
      can stay 50% slower than the next because of the cuDNN algorithms it picked), each run
      once untimed; `level` is ORT's optimization level, one for all models or one per model;
    - every session runs until `warmup_s` seconds have passed (default 1 s on CUDA, where
      clocks ramp up, 0.1 s on the CPU);
    - in each of `rounds` rounds every model runs `runs_per_round` times back to back and keeps
      its fastest run (the least disturbed one); the order of the models rotates every round
      and round r uses session (r // models) mod `sessions`, so every session meets every
      position. `runs_per_round` None fits it from a few timed runs so that warm-up and rounds
      take about `budget_s` seconds (building the sessions comes on top; at least one run per
      round: very slow models overrun it). The garbage collector is off while timing;
    - intra-op threads spin within a run and stop when it returns (`spinning`, default
      "in-run"; see `SPINNING`): as in a user's session during a run, but no session's
      threads spin on into the next session's run;
    - a model's `Timing` holds its per-round values: their median and spread (p90 - p10) /
      median.

    Inputs are `feeds` or `random_feeds(models[0], seed)`, the same for every model.
    `progress`, if given, is called as progress(done, total) after each model's block of runs.
    A model whose sessions cannot be built or run raises; with `keep_going`, a model other than
    the first gets None and an error line instead, and the others go on (a first model that
    fails raises `ModelError`: nothing to compare with).

    Example:
        >>> r = time_interleaved([model, other], "cpu", budget_s=1)  # doctest: +SKIP
        >>> r.timings[0].median_s / r.timings[1].median_s            # doctest: +SKIP
        1.31
    """
    start = time.perf_counter()
    if not models:
        raise ValueError("time_interleaved needs at least one model")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    if runs_per_round is not None and runs_per_round < 1:
        raise ValueError("runs_per_round must be at least 1")
    levels = [level] * len(models) if isinstance(level, str) else list(level)
    if len(levels) != len(models):
        raise ValueError(f"{len(levels)} optimization levels for {len(models)} models")
    resolved = resolve_device(device)
    n_sessions = sessions if sessions is not None else (3 if resolved == "cuda" else 2)
    if n_sessions < 1:
        raise ValueError("sessions must be at least 1")
    feeds = feeds if feeds is not None else random_feeds(models[0], seed)

    runners: list[list[Runner] | None] = []
    errors: list[str | None] = []
    for i, (model, model_level) in enumerate(zip(models, levels)):
        try:
            built = [
                Runner(make_session(model, resolved, level=model_level, threads=threads,
                                    spinning=spinning), feeds)
                for _ in range(n_sessions)
            ]
            for runner in built:
                runner.run()  # allocations and, on CUDA, the cuDNN algorithm search
        # ORT raises plain Exceptions; with keep_going every failure becomes the model's error.
        except Exception as exc:
            if not keep_going:
                raise
            if i == 0:
                raise ModelError(
                    f"the model does not run in ONNX Runtime: {error_line(exc)}"
                ) from None
            runners.append(None)
            errors.append(error_line(exc))
            continue
        runners.append(built)
        errors.append(None)

    live = [i for i, model_runners in enumerate(runners) if model_runners is not None]
    per_round, runs_per_round = _time_rounds(
        [runners[i] for i in live],  # type: ignore[misc]
        resolved,
        rounds=rounds,
        runs_per_round=runs_per_round,
        budget_s=budget_s,
        warmup_s=warmup_s,
        progress=progress,
    )
    by_model = dict(zip(live, per_round))
    timings = [
        Timing.from_samples(by_model[i]) if i in by_model else None for i in range(len(models))
    ]
    return InterleavedResult(
        device=resolved,
        timings=timings,
        errors=errors,
        rounds=rounds,
        runs_per_round=runs_per_round,
        sessions=n_sessions,
        elapsed_s=time.perf_counter() - start,
    )


def _time_rounds(
    runners: Sequence[Sequence[Runner]],
    device: str,
    *,
    rounds: int,
    runs_per_round: int | None,
    budget_s: float,
    warmup_s: float | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[list[float]], int]:
    """The rounds of `time_interleaved`: each model's best run per round, in round order, and
    the runs per round used. Each entry of `runners` is one model's sessions (already run)."""
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
    # A garbage collection inside one run would be charged to one model.
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


def error_line(error: BaseException) -> str:
    """An exception in one line for a report: its first non-blank line (else its type's name),
    at most 300 characters.

    Example:
        >>> error_line(RuntimeError("[ONNXRuntimeError] : 1 : FAIL : bad\\n  details"))
        '[ONNXRuntimeError] : 1 : FAIL : bad'
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# Round by round: the sequential A/A-calibrated gate's measuring loop
# ---------------------------------------------------------------------------------------------


class SessionRounds:
    """Several models timed against each other one round at a time, so that a caller can look
    at the timings so far and stop (the end-to-end gate, `superopt.pipeline.gate`).

    The same measuring conventions as `time_interleaved`, arranged for a test whose unit of
    independence is a *slot*: slot j holds one fresh session of every model, and round r uses
    slot r mod `sessions`, so each slot's rounds are paired across models (the same slot, the
    same stretch of time) and slots are independent draws of the sessions' lifelong offsets.

    - sessions are built slot by slot (`add_slot`; `sessions` slots at construction, or as many
      as the caller adds), the models in a random order within each slot (a model built first
      is not always the first in memory), and each is run once untimed;
    - every session then runs until `warmup_s` seconds have passed (`warm_up`; default 0.1 s
      on the CPU, 1 s on CUDA, where clocks ramp up);
    - `runs_per_round` runs per model and round, the fastest kept (the least disturbed run);
      `fit_runs_per_round(block_s)` picks it so that one model's block takes about `block_s`;
    - within a round the models go in a random order (from `seed`): no model sits in a fixed
      position relative to another;
    - intra-op threads spin within a run and stop when it returns (`spinning` "in-run", the
      default here): a user's default session spins, and a session that sleeps between ops
      pays wake-ups a user's does not (NasRNN's merge: 1.27x sleeping, 1.04-1.11x in a
      default session alone, 1.05-1.12x here); with ORT's default spinning after a run, the
      session that ran last took a core from the next one and turned a 16% slower model into
      a 4% faster one with 9-24 sessions alive (docs/gate.md).

    `times[m]` is model m's list of per-round best runs (seconds), `slots` the slot of each
    round. `progress(done_rounds, planned)` may be called by the caller's loop.

    Example:
        >>> rounds = SessionRounds([model, model, other], "cpu", sessions=4)  # doctest: +SKIP
        >>> rounds.fit_runs_per_round(0.01); rounds.run(8)                     # doctest: +SKIP
        >>> len(rounds.times[0]), rounds.slots[:5]                             # doctest: +SKIP
        (8, [0, 1, 2, 3, 0])
    """

    def __init__(
        self,
        models: Sequence[ModelLike],
        device: str,
        *,
        sessions: int = 0,
        level: str = "all",
        feeds: Mapping[str, np.ndarray] | None = None,
        threads: int | None = None,
        warmup_s: float | None = None,
        seed: int = 0,
        spinning: str = "in-run",
    ) -> None:
        if not models:
            raise ValueError("SessionRounds needs at least one model")
        if sessions < 0:
            raise ValueError("sessions must not be negative")
        self.device = resolve_device(device)
        self._models = list(models)
        self._level, self._threads, self._spinning = level, threads, spinning
        self._rng = np.random.default_rng(seed)
        self._feeds = feeds if feeds is not None else random_feeds(models[0], seed)
        self.runners: list[list[Runner]] = [[] for _ in models]
        self.runs_per_round = 1
        self.times: list[list[float]] = [[] for _ in models]
        self.slots: list[int] = []
        for _ in range(sessions):
            self.add_slot()
        if sessions:
            self.warm_up(warmup_s)

    @property
    def sessions(self) -> int:
        """Slots built so far (sessions per model)."""
        return len(self.runners[0])

    def add_slot(self) -> None:
        """Build one more slot: a fresh session of every model, in a random order, each run
        once untimed (allocations and, on CUDA, the cuDNN algorithm search)."""
        for m in self._rng.permutation(len(self._models)):
            runner = Runner(make_session(self._models[m], self.device, level=self._level,
                                         threads=self._threads, spinning=self._spinning),
                            self._feeds)
            runner.run()
            self.runners[m].append(runner)

    def warm_up(self, warmup_s: float | None = None) -> None:
        """Run every session until `warmup_s` seconds have passed (default 0.1 s on the CPU,
        1 s on CUDA, where clocks ramp up)."""
        warmup_s = warmup_s if warmup_s is not None else (1.0 if self.device == "cuda" else 0.1)
        warm_until = time.perf_counter() + warmup_s
        while time.perf_counter() < warm_until:
            for model_runners in self.runners:
                for runner in model_runners:
                    runner.run()

    @property
    def rounds(self) -> int:
        """Rounds done so far."""
        return len(self.slots)

    def fit_runs_per_round(self, block_s: float, least: int = MIN_RUNS_PER_ROUND) -> float:
        """Set `runs_per_round` so that one model's block of runs takes about `block_s` seconds
        (at least `least` runs, at most `MAX_RUNS_PER_ROUND`); return the estimated seconds of
        one round (every model's block)."""
        # Rounds cost the mean run, not the best one: estimate with the mean of a few.
        means = [float(np.mean(model_runners[0].times(3))) for model_runners in self.runners]
        slowest = max(means)
        fit = int(block_s / slowest) if slowest > 0 else MAX_RUNS_PER_ROUND
        self.runs_per_round = max(least, min(MAX_RUNS_PER_ROUND, fit))
        return self.runs_per_round * sum(means)

    def run(self, rounds: int = 1) -> None:
        """Run `rounds` more rounds."""
        n = len(self.runners)
        # A garbage collection inside one run would be charged to one model.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(rounds):
                slot = self.rounds % self.sessions
                for m in self._rng.permutation(n):
                    self.times[m].append(self.runners[m][slot].best_of(self.runs_per_round))
                self.slots.append(slot)
        finally:
            if was_enabled:
                gc.enable()
