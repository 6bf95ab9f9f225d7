"""NASNet-A (mobile-style, shortened), cells as in TF-slim's `nasnet_utils`, BN folded.

Input `input` 1x3x224x224, output `logits` 1x1000. Layout:

  stem Conv 3x3/2 (32)                         112x112
  reduction cell  (F = 44)                     -> 56x56, 4F channels
  2 normal cells  (F = 44)                     56x56, 6F channels
  reduction cell  (F = 88)                     -> 28x28, 4F channels
  2 normal cells  (F = 88)                     28x28, 6F channels
  Relu, GlobalAveragePool, Flatten, Gemm

Each cell first brings its two inputs to F channels: `cur` (previous cell's output) via
Relu + 1x1 Conv and `prev` (the cell before that) via Relu + 1x1 Conv, stride 2 when `prev` is at
twice the resolution (a simplification of slim's factorized reduction). A separable op
`sepKxK` is applied twice, as in slim: Relu, depthwise KxK Conv (group = F), pointwise 1x1 Conv,
Relu, depthwise KxK, pointwise 1x1 (stride only on the first depthwise). Pools are 3x3 with pad 1
(average pools exclude the padding). Five blocks each Add two branches:

  normal (h0 = cur, h1 = prev):  sep5(h0)+sep3(h1), sep5(h1)+sep3(h1), avg(h0)+h1,
                                 avg(h1)+avg(h1), sep3(h0)+h0; Concat [h1, b0..b4] -> 6F
  reduction (stride 2 on h0/h1): b0 = sep5(h0)+sep7(h1), b1 = max(h0)+sep7(h1),
                                 b2 = avg(h0)+sep5(h1), b3 = b1+avg(b0), b4 = sep3(b0)+max(h0);
                                 Concat [b1, b2, b3, b4] -> 4F

Totals: 133 Conv, 73 Relu, 30 Add, 6 Concat, 16 AveragePool, 4 MaxPool, GAP, Flatten, Gemm
(265 nodes). Weights use He init where the input is rectified, so activations stay O(1).
"""

from __future__ import annotations

import onnx

from superopt.zoo._builder import LINEAR_GAIN, GraphBuilder


class _NasNet:
    """Threads a GraphBuilder through the NASNet-A cells."""

    def __init__(self, gb: GraphBuilder) -> None:
        self.gb = gb

    def adjust(self, x: str, name: str, cin: int, f: int, stride: int) -> str:
        """Relu + 1x1 Conv to `f` channels (strided to halve the resolution if needed)."""
        r = self.gb.relu(x, f"{name}.relu")
        return self.gb.conv(r, f"{name}.conv", cin, f, 1, stride=stride)

    def sep(self, x: str, name: str, f: int, k: int, stride: int = 1) -> str:
        """Separable op as slim's separable_KxK_2: (Relu, depthwise KxK, pointwise 1x1) twice."""
        y = x
        for rep in (1, 2):
            y = self.gb.relu(y, f"{name}.relu{rep}")
            y = self.gb.conv(
                y, f"{name}.depthwise{rep}", f, f, k, stride=stride if rep == 1 else 1, group=f
            )
            y = self.gb.conv(y, f"{name}.pointwise{rep}", f, f, 1, gain=LINEAR_GAIN)
        return y

    def avg(self, x: str, name: str, stride: int = 1) -> str:
        """3x3 average pool, pad 1, padding excluded from the count (TF 'SAME')."""
        return self.gb.avg_pool(x, name, 3, stride, pad=1, count_include_pad=False)

    def max(self, x: str, name: str, stride: int = 1) -> str:
        """3x3 max pool, pad 1."""
        return self.gb.max_pool(x, name, 3, stride, pad=1)

    def normal_cell(
        self, p: str, cur: str, c_cur: int, prev: str, c_prev: int, f: int, prev_stride: int
    ) -> tuple[str, int]:
        """NASNet-A normal cell; returns (output, channels = 6f)."""
        h0 = self.adjust(cur, f"{p}.cur", c_cur, f, 1)
        h1 = self.adjust(prev, f"{p}.prev", c_prev, f, prev_stride)
        gb = self.gb
        b0 = gb.add(
            self.sep(h0, f"{p}.b0.sep5x5", f, 5),
            self.sep(h1, f"{p}.b0.sep3x3", f, 3),
            f"{p}.b0.add",
        )
        b1 = gb.add(
            self.sep(h1, f"{p}.b1.sep5x5", f, 5),
            self.sep(h1, f"{p}.b1.sep3x3", f, 3),
            f"{p}.b1.add",
        )
        b2 = gb.add(self.avg(h0, f"{p}.b2.avgpool"), h1, f"{p}.b2.add")
        b3 = gb.add(
            self.avg(h1, f"{p}.b3.avgpool_a"), self.avg(h1, f"{p}.b3.avgpool_b"), f"{p}.b3.add"
        )
        b4 = gb.add(self.sep(h0, f"{p}.b4.sep3x3", f, 3), h0, f"{p}.b4.add")
        return gb.concat([h1, b0, b1, b2, b3, b4], f"{p}.concat"), 6 * f

    def reduction_cell(
        self, p: str, cur: str, c_cur: int, prev: str, c_prev: int, f: int, prev_stride: int
    ) -> tuple[str, int]:
        """NASNet-A reduction cell (halves the resolution); returns (output, channels = 4f)."""
        h0 = self.adjust(cur, f"{p}.cur", c_cur, f, 1)
        h1 = self.adjust(prev, f"{p}.prev", c_prev, f, prev_stride)
        gb = self.gb
        b0 = gb.add(
            self.sep(h0, f"{p}.b0.sep5x5", f, 5, 2),
            self.sep(h1, f"{p}.b0.sep7x7", f, 7, 2),
            f"{p}.b0.add",
        )
        b1 = gb.add(
            self.max(h0, f"{p}.b1.maxpool", 2),
            self.sep(h1, f"{p}.b1.sep7x7", f, 7, 2),
            f"{p}.b1.add",
        )
        b2 = gb.add(
            self.avg(h0, f"{p}.b2.avgpool", 2),
            self.sep(h1, f"{p}.b2.sep5x5", f, 5, 2),
            f"{p}.b2.add",
        )
        b3 = gb.add(b1, self.avg(b0, f"{p}.b3.avgpool"), f"{p}.b3.add")
        b4 = gb.add(
            self.sep(b0, f"{p}.b4.sep3x3", f, 3), self.max(h0, f"{p}.b4.maxpool", 2), f"{p}.b4.add"
        )
        return gb.concat([b1, b2, b3, b4], f"{p}.concat"), 4 * f


def nasnet_a(seed: int = 0) -> onnx.ModelProto:
    """NASNet-A (2 reduction + 4 normal cells), input 1x3x224x224, output logits 1x1000."""
    gb = GraphBuilder("nasnet_a", seed)
    net = _NasNet(gb)
    x = gb.add_input("input", [1, 3, 224, 224])
    stem = gb.conv(x, "stem.conv0", 3, 32, 3, stride=2, gain=LINEAR_GAIN)
    # (kind, filters); `prev` needs a stride-2 adjust when it is at twice cur's resolution.
    plan = [
        ("reduction", 44),
        ("normal", 44),
        ("normal", 44),
        ("reduction", 88),
        ("normal", 88),
        ("normal", 88),
    ]
    cur, c_cur, prev, c_prev = stem, 32, stem, 32
    prev_stride = 1
    n_normal = n_reduction = 0
    for kind, f in plan:
        if kind == "reduction":
            out, c_out = net.reduction_cell(
                f"reduction_cell_{n_reduction}", cur, c_cur, prev, c_prev, f, prev_stride
            )
            n_reduction += 1
            next_prev_stride = 2
        else:
            out, c_out = net.normal_cell(
                f"cell_{n_normal}", cur, c_cur, prev, c_prev, f, prev_stride
            )
            n_normal += 1
            next_prev_stride = 1
        prev, c_prev, cur, c_cur = cur, c_cur, out, c_out
        prev_stride = next_prev_stride
    y = gb.relu(cur, "final.relu")
    gb.classifier(y, "final.", c_cur, 1000)
    gb.add_output("logits", [1, 1000])
    return gb.build("NASNet-A (mobile-style, 2 reduction + 4 normal cells), BN folded")
