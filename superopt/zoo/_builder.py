"""A small helper for writing ONNX graphs by hand with unique, meaningful names.

`GraphBuilder` collects nodes, initializers, inputs and outputs, draws random weights from one
`np.random.default_rng(seed)` in construction order (so a model is a pure function of its seed),
and refuses duplicate node or tensor names so every name in a zoo model means something.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
PRODUCER = "superopt.zoo"

#: He gain for weights whose input comes straight out of a Relu.
RELU_GAIN = math.sqrt(2.0)
#: Gain for weights whose input is not rectified.
LINEAR_GAIN = 1.0

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
}


class GraphBuilder:
    """Accumulates an ONNX graph; node output tensors are named after their node."""

    def __init__(self, name: str, seed: int = 0) -> None:
        """Start an empty graph called `name` whose random weights come from `seed`."""
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._tensor_names: set[str] = set()
        self._node_names: set[str] = set()

    # ----------------------------------------------------------------------------- names
    def _claim_tensor(self, name: str) -> str:
        if not name:
            raise ValueError("tensor names must be non-empty")
        if name in self._tensor_names:
            raise ValueError(f"duplicate tensor name {name!r} in {self.name}")
        self._tensor_names.add(name)
        return name

    # ------------------------------------------------------------------------ interface
    def add_input(self, name: str, shape: Sequence[int], dtype: int = TensorProto.FLOAT) -> str:
        """Declare a graph input with a fixed shape and return its name."""
        self._claim_tensor(name)
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def add_output(self, name: str, shape: Sequence[int], dtype: int = TensorProto.FLOAT) -> str:
        """Declare an (already produced) tensor as a graph output with a fixed shape."""
        if name not in self._tensor_names:
            raise ValueError(f"output {name!r} is not produced by any node")
        self.outputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    # ----------------------------------------------------------------------- constants
    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add `array` (float32 or int64) as a named initializer and return its name."""
        array = np.asarray(array)
        if array.dtype not in _NP_TO_ONNX:
            raise TypeError(f"unsupported initializer dtype {array.dtype} for {name!r}")
        self._claim_tensor(name)
        self.initializers.append(numpy_helper.from_array(array, name=name))
        return name

    def normal(self, name: str, shape: Sequence[int], std: float, mean: float = 0.0) -> str:
        """Add a float32 initializer drawn from N(mean, std^2) and return its name."""
        data = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        data *= np.float32(std)
        if mean:
            data += np.float32(mean)
        return self.initializer(name, data)

    def scalar(self, name: str, value: float) -> str:
        """Add a float32 scalar initializer (rank 0) and return its name."""
        return self.initializer(name, np.array(value, dtype=np.float32))

    def int64s(self, name: str, values: Sequence[int]) -> str:
        """Add a 1-D int64 initializer (e.g. a Reshape shape) and return its name."""
        return self.initializer(name, np.array(list(values), dtype=np.int64))

    # --------------------------------------------------------------------------- nodes
    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        name: str,
        *,
        outputs: Sequence[str] | None = None,
        **attrs: Any,
    ) -> str:
        """Add a single-output node named `name`; its output is `name` unless `outputs` says."""
        outs = self.multi_node(op_type, inputs, name, outputs=outputs or [name], **attrs)
        return outs[0]

    def multi_node(
        self,
        op_type: str,
        inputs: Sequence[str],
        name: str,
        *,
        outputs: Sequence[str],
        **attrs: Any,
    ) -> list[str]:
        """Add a node with the given explicit output names and return them."""
        if name in self._node_names:
            raise ValueError(f"duplicate node name {name!r} in {self.name}")
        self._node_names.add(name)
        for out in outputs:
            self._claim_tensor(out)
        self.nodes.append(
            helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs)
        )
        return list(outputs)

    # ------------------------------------------------------------------- conv helpers
    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        *,
        stride: int = 1,
        pad: int | tuple[int, int] | None = None,
        group: int = 1,
        gain: float = RELU_GAIN,
        relu: bool = False,
        output: str | None = None,
    ) -> str:
        """Conv with bias (BatchNorm already folded), optionally followed by `<name>.relu`.

        `pad` defaults to "same" padding for odd kernels (k // 2 on each side); a tuple is
        (pad_h, pad_w). Weights are N(0, (gain / sqrt(fan_in))^2), biases small N(0, 0.01^2).
        """
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if pad is None:
            ph, pw = kh // 2, kw // 2
        else:
            ph, pw = (pad, pad) if isinstance(pad, int) else pad
        if cin % group or cout % group:
            raise ValueError(f"{name}: channels {cin}->{cout} not divisible by group {group}")
        fan_in = (cin // group) * kh * kw
        w = self.normal(f"{name}.weight", (cout, cin // group, kh, kw), gain / math.sqrt(fan_in))
        b = self.normal(f"{name}.bias", (cout,), 0.01)
        conv_out = output if (output is not None and not relu) else name
        y = self.node(
            "Conv",
            [x, w, b],
            name,
            outputs=[conv_out],
            kernel_shape=[kh, kw],
            strides=[stride, stride],
            pads=[ph, pw, ph, pw],
            dilations=[1, 1],
            group=group,
        )
        if relu:
            y = self.node("Relu", [y], f"{name}.relu", outputs=[output or f"{name}.relu"])
        return y

    def relu(self, x: str, name: str) -> str:
        """Add a Relu node."""
        return self.node("Relu", [x], name)

    def add(self, a: str, b: str, name: str) -> str:
        """Add an elementwise Add node."""
        return self.node("Add", [a, b], name)

    def concat(self, xs: Sequence[str], name: str, axis: int = 1) -> str:
        """Concatenate tensors (channels by default)."""
        return self.node("Concat", list(xs), name, axis=axis)

    def max_pool(
        self, x: str, name: str, kernel: int, stride: int, pad: int = 0, ceil_mode: bool = False
    ) -> str:
        """Square MaxPool."""
        return self.node(
            "MaxPool",
            [x],
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            ceil_mode=int(ceil_mode),
        )

    def avg_pool(
        self,
        x: str,
        name: str,
        kernel: int,
        stride: int,
        pad: int = 0,
        count_include_pad: bool = True,
    ) -> str:
        """Square AveragePool."""
        return self.node(
            "AveragePool",
            [x],
            name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            count_include_pad=int(count_include_pad),
        )

    def classifier(
        self, x: str, prefix: str, channels: int, classes: int, output: str = "logits"
    ) -> str:
        """GlobalAveragePool -> Flatten -> Gemm(transB=1), as PyTorch exports `fc`."""
        g = self.node("GlobalAveragePool", [x], f"{prefix}avgpool")
        f = self.node("Flatten", [g], f"{prefix}flatten", axis=1)
        w = self.normal(f"{prefix}fc.weight", (classes, channels), 1.0 / math.sqrt(channels))
        b = self.normal(f"{prefix}fc.bias", (classes,), 0.01)
        return self.node(
            "Gemm", [f, w, b], f"{prefix}fc", outputs=[output], alpha=1.0, beta=1.0, transB=1
        )

    # --------------------------------------------------------------------------- model
    def build(self, doc: str = "") -> onnx.ModelProto:
        """Assemble the ModelProto (opset 17, IR version 8)."""
        graph = helper.make_graph(
            self.nodes,
            self.name,
            self.inputs,
            self.outputs,
            initializer=self.initializers,
            doc_string=doc,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=PRODUCER,
            doc_string=doc,
        )
        return model
