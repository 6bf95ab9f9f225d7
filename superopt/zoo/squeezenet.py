"""SqueezeNet 1.1 (torchvision layout).

Input `input` 1x3x224x224, output `logits` 1x1000. conv1 3x3/2 (64) + Relu, MaxPool 3x3/2
(ceil mode), Fire2, Fire3, MaxPool, Fire4, Fire5, MaxPool, Fire6..Fire9, then the classifier:
1x1 conv to 1000 classes + Relu, GlobalAveragePool, Flatten. A Fire module is squeeze 1x1 + Relu
feeding expand 1x1 + Relu and expand 3x3 + Relu (two convs on the same input), Concat axis 1.
Totals: 26 Conv, 26 Relu, 8 Concat, 3 MaxPool, 1 GlobalAveragePool, 1 Flatten.
"""

from __future__ import annotations

import onnx

from superopt.zoo._builder import LINEAR_GAIN, GraphBuilder

# (name, squeeze, expand1x1, expand3x3); a None entry is a MaxPool 3x3/2 (ceil mode).
_LAYOUT: tuple[tuple[str, int, int, int] | None, ...] = (
    None,
    ("fire2", 16, 64, 64),
    ("fire3", 16, 64, 64),
    None,
    ("fire4", 32, 128, 128),
    ("fire5", 32, 128, 128),
    None,
    ("fire6", 48, 192, 192),
    ("fire7", 48, 192, 192),
    ("fire8", 64, 256, 256),
    ("fire9", 64, 256, 256),
)


def squeezenet(seed: int = 0) -> onnx.ModelProto:
    """SqueezeNet 1.1, input 1x3x224x224, output logits 1x1000."""
    gb = GraphBuilder("squeezenet", seed)
    x = gb.add_input("input", [1, 3, 224, 224])
    x = gb.conv(x, "conv1", 3, 64, 3, stride=2, pad=0, gain=LINEAR_GAIN, relu=True)
    c = 64
    pools = 0
    for entry in _LAYOUT:
        if entry is None:
            pools += 1
            x = gb.max_pool(x, f"maxpool{pools}", 3, 2, ceil_mode=True)
            continue
        name, sq, e1, e3 = entry
        s = gb.conv(x, f"{name}.squeeze", c, sq, 1, relu=True)
        a = gb.conv(s, f"{name}.expand1x1", sq, e1, 1, relu=True)
        b = gb.conv(s, f"{name}.expand3x3", sq, e3, 3, pad=1, relu=True)
        x = gb.concat([a, b], f"{name}.concat")
        c = e1 + e3
    x = gb.conv(x, "classifier.conv", c, 1000, 1, relu=True)
    g = gb.node("GlobalAveragePool", [x], "classifier.avgpool")
    gb.node("Flatten", [g], "classifier.flatten", outputs=["logits"], axis=1)
    gb.add_output("logits", [1, 1000])
    return gb.build("SqueezeNet 1.1")
