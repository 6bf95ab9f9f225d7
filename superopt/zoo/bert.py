"""BERT-base encoder stack (12 layers, hidden 768, 12 heads, FFN 3072, seq 128, batch 1).

Input `hidden` is float32 1x128x768: the embeddings are taken as already computed (no token ids,
no Gather, no attention mask), as in TASO's BERT benchmark. Output `last_hidden_state` 1x128x768.
Each layer is written the way the PyTorch exporter writes it:

  q/k/v = MatMul(x, W[768x768]) + b            three MatMuls sharing the input x
  Reshape(q|k|v, [1,128,12,64]); Transpose q,v perm (0,2,1,3), k perm (0,2,3,1)
  scores = MatMul(q, k^T) / sqrt(64); probs = Softmax(scores, axis=-1)
  ctx = Transpose(MatMul(probs, v), (0,2,1,3)); Reshape(ctx, [1,128,768])
  x = LayerNormalization(MatMul(ctx, Wo) + bo + x)
  h = MatMul(x, W1[768x3072]) + b1; h = (h * (Erf(h / sqrt 2) + 1)) * 0.5
  x = LayerNormalization(MatMul(h, W2[3072x768]) + b2 + x)

Scalar constants and the two Reshape shape tensors are shared int64/float initializers.
Per layer: 8 MatMul, 9 Add, 4 Reshape, 4 Transpose, 2 Div, 1 Softmax, 1 Erf, 2 Mul,
2 LayerNormalization = 33 nodes; 396 in all. Weights are N(0, 0.02^2) (BERT's init range).
"""

from __future__ import annotations

import math

import onnx

from superopt.zoo._builder import GraphBuilder

LAYERS = 12
HIDDEN = 768
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
FFN = 3072
SEQ = 128
INIT_RANGE = 0.02


def _linear(gb: GraphBuilder, x: str, name: str, fan_in: int, fan_out: int) -> str:
    """MatMul by a (fan_in x fan_out) initializer, then Add of the bias."""
    w = gb.normal(f"{name}.weight", (fan_in, fan_out), INIT_RANGE)
    b = gb.normal(f"{name}.bias", (fan_out,), INIT_RANGE)
    y = gb.node("MatMul", [x, w], f"{name}.matmul")
    return gb.node("Add", [y, b], f"{name}.add")


def _layer_norm(gb: GraphBuilder, x: str, name: str, output: str | None = None) -> str:
    """LayerNormalization over the last axis with learned scale/bias (perturbed around 1/0)."""
    scale = gb.normal(f"{name}.weight", (HIDDEN,), 0.1, mean=1.0)
    bias = gb.normal(f"{name}.bias", (HIDDEN,), 0.1)
    return gb.node(
        "LayerNormalization",
        [x, scale, bias],
        name,
        outputs=[output or name],
        axis=-1,
        epsilon=1e-12,
    )


def bert(seed: int = 0) -> onnx.ModelProto:
    """BERT-base encoder (embeddings precomputed), input hidden 1x128x768."""
    gb = GraphBuilder("bert", seed)
    x = gb.add_input("hidden", [1, SEQ, HIDDEN])
    heads_shape = gb.int64s("const.shape_heads", [1, SEQ, HEADS, HEAD_DIM])
    hidden_shape = gb.int64s("const.shape_hidden", [1, SEQ, HIDDEN])
    sqrt_d = gb.scalar("const.sqrt_head_dim", math.sqrt(HEAD_DIM))
    sqrt_2 = gb.scalar("const.sqrt2", math.sqrt(2.0))
    one = gb.scalar("const.one", 1.0)
    half = gb.scalar("const.half", 0.5)
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        a = f"{p}.attention"
        heads = {}
        for proj, perm in (("query", [0, 2, 1, 3]), ("key", [0, 2, 3, 1]), ("value", [0, 2, 1, 3])):
            t = _linear(gb, x, f"{a}.{proj}", HIDDEN, HIDDEN)
            t = gb.node("Reshape", [t, heads_shape], f"{a}.{proj}.reshape")
            heads[proj] = gb.node("Transpose", [t], f"{a}.{proj}.transpose", perm=perm)
        s = gb.node("MatMul", [heads["query"], heads["key"]], f"{a}.scores")
        s = gb.node("Div", [s, sqrt_d], f"{a}.scale")
        s = gb.node("Softmax", [s], f"{a}.softmax", axis=-1)
        c = gb.node("MatMul", [s, heads["value"]], f"{a}.context")
        c = gb.node("Transpose", [c], f"{a}.context.transpose", perm=[0, 2, 1, 3])
        c = gb.node("Reshape", [c, hidden_shape], f"{a}.context.reshape")
        o = _linear(gb, c, f"{a}.output.dense", HIDDEN, HIDDEN)
        o = gb.node("Add", [o, x], f"{a}.output.residual")
        x = _layer_norm(gb, o, f"{a}.output.LayerNorm")

        h = _linear(gb, x, f"{p}.intermediate.dense", HIDDEN, FFN)
        g = gb.node("Div", [h, sqrt_2], f"{p}.intermediate.gelu.div")
        g = gb.node("Erf", [g], f"{p}.intermediate.gelu.erf")
        g = gb.node("Add", [g, one], f"{p}.intermediate.gelu.add")
        g = gb.node("Mul", [h, g], f"{p}.intermediate.gelu.mul")
        g = gb.node("Mul", [g, half], f"{p}.intermediate.gelu.mul_half")
        o = _linear(gb, g, f"{p}.output.dense", FFN, HIDDEN)
        o = gb.node("Add", [o, x], f"{p}.output.residual")
        last = i == LAYERS - 1
        x = _layer_norm(gb, o, f"{p}.output.LayerNorm", "last_hidden_state" if last else None)
    gb.add_output("last_hidden_state", [1, SEQ, HIDDEN])
    return gb.build("BERT-base encoder, 12 layers, seq 128, embeddings precomputed")
