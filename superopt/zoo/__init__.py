"""Model zoo: the TASO paper's benchmark models, written directly with `onnx.helper`.

All models are batch 1, float32, opset 17, IR version 8, with fixed-shape inputs and random
weights drawn from `np.random.default_rng(seed)`, so `build(name, seed)` is deterministic.

    >>> from superopt import zoo
    >>> model = zoo.build("resnet50")
    >>> feeds = zoo.input_feeds(model)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from superopt.zoo.bert import bert
from superopt.zoo.inception import inception_v3
from superopt.zoo.nasnet import nasnet_a
from superopt.zoo.nasrnn import nasrnn
from superopt.zoo.resnet import resnet50, resnext50
from superopt.zoo.squeezenet import squeezenet

Builder = Callable[[int], onnx.ModelProto]

#: name -> (builder(seed) -> ModelProto, one-line description), in the order they are listed.
MODELS: OrderedDict[str, tuple[Builder, str]] = OrderedDict(
    [
        ("resnet50", (resnet50, "ResNet-50, bottleneck blocks 3-4-6-3, 1x3x224x224")),
        ("resnext50", (resnext50, "ResNeXt-50 32x4d, grouped 3x3 convs, 1x3x224x224")),
        ("inception_v3", (inception_v3, "Inception-v3, blocks A-E, 1x3x299x299")),
        ("squeezenet", (squeezenet, "SqueezeNet 1.1, Fire modules, 1x3x224x224")),
        ("bert", (bert, "BERT-base encoder, 12 layers, seq 128, hidden 1x128x768 input")),
        ("nasnet_a", (nasnet_a, "NASNet-A mobile-style, 2 reduction + 4 normal cells")),
        ("nasrnn", (nasrnn, "NasRNN cell (Zoph & Le) unrolled 8 steps, hidden 512")),
    ]
)

__all__ = ["MODELS", "build", "input_feeds", "list_models"]


def list_models() -> list[str]:
    """Names of the zoo models, in `MODELS` order."""
    return list(MODELS)


def build(name: str, seed: int = 0) -> onnx.ModelProto:
    """Build zoo model `name` with weights from `seed`; KeyError lists the valid names."""
    try:
        builder, _ = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; valid names: {', '.join(MODELS)}") from None
    return builder(seed)


def _vocab_size(model: onnx.ModelProto, input_name: str) -> int:
    """Vocabulary size for an int64 id input: rows of the Gather table it indexes."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == input_name:
            table = inits.get(node.input[0])
            if table is not None and table.dims:
                return int(table.dims[0])
    for prop in model.metadata_props:
        if prop.key in (f"{input_name}.vocab_size", "vocab_size"):
            return int(prop.value)
    raise ValueError(f"cannot tell the vocabulary size for int64 input {input_name!r}")


def input_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random, valid inputs for a zoo model: N(0, 1) float32; int64 ids in [0, vocab)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        ttype = vi.type.tensor_type
        shape = []
        for d in ttype.shape.dim:
            if not d.HasField("dim_value"):
                raise ValueError(f"input {vi.name!r} has a non-fixed dimension")
            shape.append(d.dim_value)
        if ttype.elem_type == TensorProto.FLOAT:
            feeds[vi.name] = rng.standard_normal(shape, dtype=np.float32)
        elif ttype.elem_type == TensorProto.INT64:
            feeds[vi.name] = rng.integers(
                0, _vocab_size(model, vi.name), size=shape, dtype=np.int64
            )
        else:
            kind = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
            raise ValueError(f"input {vi.name!r}: unsupported element type {kind}")
    return feeds
