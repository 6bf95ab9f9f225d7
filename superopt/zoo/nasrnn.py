"""NasRNN: the recurrent cell found by neural architecture search (Zoph & Le, 2017), unrolled.

Written as in TASO's `nasrnn` benchmark: hidden size 512, batch 1, 8 time steps. The input
`x` (8x1x512) is cut into per-step 1x1x512 slices by one Split on axis 0; the initial state
`h0` (1x1x512) is an initializer, as in TASO. Every step t computes, with separate weights per
step and per branch (each a 512x512 initializer):

  t_i = MatMul(x_t, Wx_i) + MatMul(h, Wh_i)          for i = 0..7
  m0 = Relu(t0) + Sigmoid(t3)        m1 = Sigmoid(t1) + Tanh(t2)
  m2 = Sigmoid(t4) * Tanh(t5)        m3 = Sigmoid(t6) * Relu(t7)
  m4 = Sigmoid(m1) + Tanh(m2)        m5 = Tanh(m0) * Tanh(m3)
  m6 = Tanh(m4) * Tanh(m5)           h  = Tanh(m6)

so each step has 8 MatMuls sharing x_t and 8 sharing h: the pattern TASO merges into one wide
MatMul. Output `hidden` is the final state, 1x1x512. Per step: 16 MatMul, 11 Add, 4 Mul,
2 Relu, 5 Sigmoid, 8 Tanh (46 nodes); with the Split, 369 nodes in all.
"""

from __future__ import annotations

import math

import onnx

from superopt.zoo._builder import GraphBuilder

HIDDEN = 512
STEPS = 8


def _act(gb: GraphBuilder, op: str, v: str, name: str) -> str:
    """Add a unary activation node."""
    return gb.node(op, [v], name)


def nasrnn(seed: int = 0) -> onnx.ModelProto:
    """NasRNN unrolled over 8 steps, input x 8x1x512, output the final hidden state 1x1x512."""
    gb = GraphBuilder("nasrnn", seed)
    x = gb.add_input("x", [STEPS, 1, HIDDEN])
    xs = gb.multi_node("Split", [x], "split_x", outputs=[f"x.{t}" for t in range(STEPS)], axis=0)
    h = gb.normal("h0", (1, 1, HIDDEN), 1.0)
    std = 1.0 / math.sqrt(HIDDEN)
    for t, xt in enumerate(xs):
        s = f"step{t}"
        terms = []
        for i in range(8):
            wx = gb.normal(f"{s}.t{i}.wx", (HIDDEN, HIDDEN), std)
            wh = gb.normal(f"{s}.t{i}.wh", (HIDDEN, HIDDEN), std)
            a = gb.node("MatMul", [xt, wx], f"{s}.t{i}.matmul_x")
            b = gb.node("MatMul", [h, wh], f"{s}.t{i}.matmul_h")
            terms.append(gb.add(a, b, f"{s}.t{i}.add"))

        r0 = _act(gb, "Relu", terms[0], f"{s}.t0.relu")
        g1 = _act(gb, "Sigmoid", terms[1], f"{s}.t1.sigmoid")
        n2 = _act(gb, "Tanh", terms[2], f"{s}.t2.tanh")
        g3 = _act(gb, "Sigmoid", terms[3], f"{s}.t3.sigmoid")
        g4 = _act(gb, "Sigmoid", terms[4], f"{s}.t4.sigmoid")
        n5 = _act(gb, "Tanh", terms[5], f"{s}.t5.tanh")
        g6 = _act(gb, "Sigmoid", terms[6], f"{s}.t6.sigmoid")
        r7 = _act(gb, "Relu", terms[7], f"{s}.t7.relu")
        m0 = gb.add(r0, g3, f"{s}.m0")
        m1 = gb.add(g1, n2, f"{s}.m1")
        m2 = gb.node("Mul", [g4, n5], f"{s}.m2")
        m3 = gb.node("Mul", [g6, r7], f"{s}.m3")
        m4 = gb.add(
            _act(gb, "Sigmoid", m1, f"{s}.m1.sigmoid"),
            _act(gb, "Tanh", m2, f"{s}.m2.tanh"),
            f"{s}.m4",
        )
        m5 = gb.node(
            "Mul",
            [_act(gb, "Tanh", m0, f"{s}.m0.tanh"), _act(gb, "Tanh", m3, f"{s}.m3.tanh")],
            f"{s}.m5",
        )
        m6 = gb.node(
            "Mul",
            [_act(gb, "Tanh", m4, f"{s}.m4.tanh"), _act(gb, "Tanh", m5, f"{s}.m5.tanh")],
            f"{s}.m6",
        )
        out = "hidden" if t == STEPS - 1 else f"{s}.h"
        h = gb.node("Tanh", [m6], f"{s}.h", outputs=[out])
    gb.add_output("hidden", [1, 1, HIDDEN])
    return gb.build("NasRNN (Zoph & Le 2017) cell unrolled over 8 steps, hidden 512")
