"""Inception-v3 (torchvision layout, no auxiliary head), BatchNorm folded into Conv biases.

Input `input` 1x3x299x299, output `logits` 1x1000. Every "BasicConv2d" is Conv (+bias) + Relu.
Stem: 3x3/2 (32), 3x3 (32), 3x3 pad 1 (64), MaxPool 3x3/2, 1x1 (80), 3x3 (192), MaxPool 3x3/2.
Then Mixed_5b/5c/5d (Inception A: 1x1, 1x1->5x5, 1x1->3x3->3x3, AvgPool->1x1), Mixed_6a
(B: grid reduction 35->17), Mixed_6b..6e (C: factorized 1x7/7x1 convs), Mixed_7a (D: grid
reduction 17->8) and Mixed_7b/7c (E: expanded 1x3/3x1 branches, themselves concatenated).
Each block ends with a Concat on channels; head is GlobalAveragePool, Flatten, Gemm.
Totals: 94 Conv, 94 Relu, 15 Concat, 9 AveragePool, 4 MaxPool, GAP, Flatten, Gemm.
"""

from __future__ import annotations

import onnx

from superopt.zoo._builder import LINEAR_GAIN, GraphBuilder


class _Inception:
    """Stateful helper that threads a GraphBuilder through the Inception blocks."""

    def __init__(self, gb: GraphBuilder) -> None:
        self.gb = gb

    def conv(
        self,
        x: str,
        name: str,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        pad: int | tuple[int, int] = 0,
    ) -> str:
        """BasicConv2d: Conv + Relu (torchvision uses no padding unless given)."""
        return self.gb.conv(x, name, cin, cout, kernel, stride=stride, pad=pad, relu=True)

    def avg3(self, x: str, name: str) -> str:
        """3x3 stride-1 pad-1 average pool (count_include_pad, as torch's F.avg_pool2d)."""
        return self.gb.avg_pool(x, name, 3, 1, pad=1, count_include_pad=True)

    def block_a(self, x: str, p: str, cin: int, pool_features: int) -> tuple[str, int]:
        """InceptionA: 64 + 64 + 96 + pool_features channels at 35x35."""
        b1 = self.conv(x, f"{p}.branch1x1", cin, 64, 1)
        b5 = self.conv(x, f"{p}.branch5x5_1", cin, 48, 1)
        b5 = self.conv(b5, f"{p}.branch5x5_2", 48, 64, 5, pad=2)
        b3 = self.conv(x, f"{p}.branch3x3dbl_1", cin, 64, 1)
        b3 = self.conv(b3, f"{p}.branch3x3dbl_2", 64, 96, 3, pad=1)
        b3 = self.conv(b3, f"{p}.branch3x3dbl_3", 96, 96, 3, pad=1)
        bp = self.avg3(x, f"{p}.branch_pool.avgpool")
        bp = self.conv(bp, f"{p}.branch_pool", cin, pool_features, 1)
        return self.gb.concat([b1, b5, b3, bp], f"{p}.concat"), 224 + pool_features

    def block_b(self, x: str, p: str, cin: int) -> tuple[str, int]:
        """InceptionB (grid reduction 35 -> 17): 384 + 96 + cin channels."""
        b3 = self.conv(x, f"{p}.branch3x3", cin, 384, 3, stride=2)
        bd = self.conv(x, f"{p}.branch3x3dbl_1", cin, 64, 1)
        bd = self.conv(bd, f"{p}.branch3x3dbl_2", 64, 96, 3, pad=1)
        bd = self.conv(bd, f"{p}.branch3x3dbl_3", 96, 96, 3, stride=2)
        bp = self.gb.max_pool(x, f"{p}.branch_pool.maxpool", 3, 2)
        return self.gb.concat([b3, bd, bp], f"{p}.concat"), 384 + 96 + cin

    def block_c(self, x: str, p: str, cin: int, c7: int) -> tuple[str, int]:
        """InceptionC (17x17, factorized 7x7): 4 x 192 = 768 channels."""
        b1 = self.conv(x, f"{p}.branch1x1", cin, 192, 1)
        b7 = self.conv(x, f"{p}.branch7x7_1", cin, c7, 1)
        b7 = self.conv(b7, f"{p}.branch7x7_2", c7, c7, (1, 7), pad=(0, 3))
        b7 = self.conv(b7, f"{p}.branch7x7_3", c7, 192, (7, 1), pad=(3, 0))
        bd = self.conv(x, f"{p}.branch7x7dbl_1", cin, c7, 1)
        bd = self.conv(bd, f"{p}.branch7x7dbl_2", c7, c7, (7, 1), pad=(3, 0))
        bd = self.conv(bd, f"{p}.branch7x7dbl_3", c7, c7, (1, 7), pad=(0, 3))
        bd = self.conv(bd, f"{p}.branch7x7dbl_4", c7, c7, (7, 1), pad=(3, 0))
        bd = self.conv(bd, f"{p}.branch7x7dbl_5", c7, 192, (1, 7), pad=(0, 3))
        bp = self.avg3(x, f"{p}.branch_pool.avgpool")
        bp = self.conv(bp, f"{p}.branch_pool", cin, 192, 1)
        return self.gb.concat([b1, b7, bd, bp], f"{p}.concat"), 768

    def block_d(self, x: str, p: str, cin: int) -> tuple[str, int]:
        """InceptionD (grid reduction 17 -> 8): 320 + 192 + cin channels."""
        b3 = self.conv(x, f"{p}.branch3x3_1", cin, 192, 1)
        b3 = self.conv(b3, f"{p}.branch3x3_2", 192, 320, 3, stride=2)
        b7 = self.conv(x, f"{p}.branch7x7x3_1", cin, 192, 1)
        b7 = self.conv(b7, f"{p}.branch7x7x3_2", 192, 192, (1, 7), pad=(0, 3))
        b7 = self.conv(b7, f"{p}.branch7x7x3_3", 192, 192, (7, 1), pad=(3, 0))
        b7 = self.conv(b7, f"{p}.branch7x7x3_4", 192, 192, 3, stride=2)
        bp = self.gb.max_pool(x, f"{p}.branch_pool.maxpool", 3, 2)
        return self.gb.concat([b3, b7, bp], f"{p}.concat"), 320 + 192 + cin

    def block_e(self, x: str, p: str, cin: int) -> tuple[str, int]:
        """InceptionE (8x8, expanded filter bank): 320 + 768 + 768 + 192 = 2048 channels."""
        b1 = self.conv(x, f"{p}.branch1x1", cin, 320, 1)
        b3 = self.conv(x, f"{p}.branch3x3_1", cin, 384, 1)
        b3a = self.conv(b3, f"{p}.branch3x3_2a", 384, 384, (1, 3), pad=(0, 1))
        b3b = self.conv(b3, f"{p}.branch3x3_2b", 384, 384, (3, 1), pad=(1, 0))
        b3 = self.gb.concat([b3a, b3b], f"{p}.branch3x3.concat")
        bd = self.conv(x, f"{p}.branch3x3dbl_1", cin, 448, 1)
        bd = self.conv(bd, f"{p}.branch3x3dbl_2", 448, 384, 3, pad=1)
        bda = self.conv(bd, f"{p}.branch3x3dbl_3a", 384, 384, (1, 3), pad=(0, 1))
        bdb = self.conv(bd, f"{p}.branch3x3dbl_3b", 384, 384, (3, 1), pad=(1, 0))
        bd = self.gb.concat([bda, bdb], f"{p}.branch3x3dbl.concat")
        bp = self.avg3(x, f"{p}.branch_pool.avgpool")
        bp = self.conv(bp, f"{p}.branch_pool", cin, 192, 1)
        return self.gb.concat([b1, b3, bd, bp], f"{p}.concat"), 2048


def inception_v3(seed: int = 0) -> onnx.ModelProto:
    """Inception-v3, input 1x3x299x299, output logits 1x1000."""
    gb = GraphBuilder("inception_v3", seed)
    net = _Inception(gb)
    x = gb.add_input("input", [1, 3, 299, 299])
    x = gb.conv(x, "Conv2d_1a_3x3", 3, 32, 3, stride=2, pad=0, gain=LINEAR_GAIN, relu=True)
    x = net.conv(x, "Conv2d_2a_3x3", 32, 32, 3)
    x = net.conv(x, "Conv2d_2b_3x3", 32, 64, 3, pad=1)
    x = gb.max_pool(x, "maxpool1", 3, 2)
    x = net.conv(x, "Conv2d_3b_1x1", 64, 80, 1)
    x = net.conv(x, "Conv2d_4a_3x3", 80, 192, 3)
    x = gb.max_pool(x, "maxpool2", 3, 2)
    c = 192
    x, c = net.block_a(x, "Mixed_5b", c, 32)
    x, c = net.block_a(x, "Mixed_5c", c, 64)
    x, c = net.block_a(x, "Mixed_5d", c, 64)
    x, c = net.block_b(x, "Mixed_6a", c)
    x, c = net.block_c(x, "Mixed_6b", c, 128)
    x, c = net.block_c(x, "Mixed_6c", c, 160)
    x, c = net.block_c(x, "Mixed_6d", c, 160)
    x, c = net.block_c(x, "Mixed_6e", c, 192)
    x, c = net.block_d(x, "Mixed_7a", c)
    x, c = net.block_e(x, "Mixed_7b", c)
    x, c = net.block_e(x, "Mixed_7c", c)
    gb.classifier(x, "", c, 1000)
    gb.add_output("logits", [1, 1000])
    return gb.build("Inception-v3 (no aux head), BatchNorm folded into Conv biases")
