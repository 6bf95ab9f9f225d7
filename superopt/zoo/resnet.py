"""ResNet-50 and ResNeXt-50 (32x4d), torchvision layout, BatchNorm folded into Conv biases.

Stem: Conv 7x7/2 (64) + Relu, MaxPool 3x3/2. Four stages of bottleneck blocks (3, 4, 6, 3),
each block: 1x1 conv + Relu, 3x3 conv (stride on the 3x3, "v1.5"; grouped for ResNeXt) + Relu,
1x1 conv; the first block of a stage has a 1x1 projection shortcut; Add then Relu.
Head: GlobalAveragePool, Flatten, Gemm -> `logits` (1x1000). Input `input` is 1x3x224x224.
Totals: 53 Conv, 49 Relu, 16 Add, 1 MaxPool, 1 GlobalAveragePool, 1 Flatten, 1 Gemm.
"""

from __future__ import annotations

import onnx

from superopt.zoo._builder import LINEAR_GAIN, GraphBuilder

STAGES = (3, 4, 6, 3)
PLANES = (64, 128, 256, 512)
EXPANSION = 4
#: Gain of each block's last conv (a folded BN with small gamma), so 16 residual Adds keep the
#: activations O(1) instead of doubling their second moment at every block.
RESIDUAL_GAIN = 0.5


def _resnet(name: str, seed: int, groups: int, width_per_group: int, doc: str) -> onnx.ModelProto:
    """Build a bottleneck ResNet/ResNeXt with the given cardinality and group width."""
    gb = GraphBuilder(name, seed)
    x = gb.add_input("input", [1, 3, 224, 224])
    x = gb.conv(x, "conv1", 3, 64, 7, stride=2, pad=3, gain=LINEAR_GAIN, relu=True)
    x = gb.max_pool(x, "maxpool", 3, 2, pad=1)
    cin = 64
    for stage, (blocks, planes) in enumerate(zip(STAGES, PLANES, strict=True), start=1):
        width = planes * width_per_group // 64 * groups
        cout = planes * EXPANSION
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            stride = 2 if (i == 0 and stage > 1) else 1
            y = gb.conv(x, f"{p}.conv1", cin, width, 1, relu=True)
            y = gb.conv(y, f"{p}.conv2", width, width, 3, stride=stride, group=groups, relu=True)
            y = gb.conv(y, f"{p}.conv3", width, cout, 1, gain=RESIDUAL_GAIN)
            shortcut = x
            if i == 0:
                shortcut = gb.conv(x, f"{p}.downsample", cin, cout, 1, stride=stride)
            s = gb.add(y, shortcut, f"{p}.add")
            x = gb.relu(s, f"{p}.relu")
            cin = cout
    gb.classifier(x, "", cin, 1000)
    gb.add_output("logits", [1, 1000])
    return gb.build(doc)


def resnet50(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 (bottleneck blocks 3-4-6-3), input 1x3x224x224, output logits 1x1000."""
    return _resnet(
        "resnet50",
        seed,
        groups=1,
        width_per_group=64,
        doc="ResNet-50, BatchNorm folded into Conv biases",
    )


def resnext50(seed: int = 0) -> onnx.ModelProto:
    """ResNeXt-50 32x4d (grouped 3x3 convs, group=32), input 1x3x224x224, logits 1x1000."""
    return _resnet(
        "resnext50",
        seed,
        groups=32,
        width_per_group=4,
        doc="ResNeXt-50 32x4d, BatchNorm folded into Conv biases",
    )
