"""The op catalog: superopt's op set (TASO's, in ONNX terms, plus what real models need).

One module per op family defines its ops as `OpDef`s (`superopt.core.registry`), each carrying
everything about the op: shape inference, numpy semantics (any float dtype; the generator
evaluates in float64), the ONNX mapping for opsets 13-21, analytic cost and fusion hints, Z3
semantics, the axioms about it and the generator instances that apply it:

- `matmul`: MatMul, Gemm
- `elementwise`: Add, Sub, Mul, Div, Relu, Sigmoid, Tanh, Erf, Identity
- `conv`: Conv, MaxPool, AveragePool, GlobalAveragePool (2-D, NCHW; other ranks stay opaque)
- `movement`: Concat, Split, Transpose, Reshape, Flatten
- `weights`: EnlargeKernel, ScaleAxis0, ChannelVector, IdentityKernelLike, IdentityMatrixLike,
  OnesLike (weight-only)
- `norm`: BatchNormalization, LayerNormalization, Softmax, BatchNormFoldKernel,
  BatchNormFoldBias
- `activation`: Clip, HardSigmoid, HardSwish, Gelu, Neg, Reciprocal, Sqrt, Pow (constant
  scalar exponent)
- `reduce`: ReduceMean
- `shape`: Squeeze, Unsqueeze, Expand (constant shape), Slice (constant parameters)

with `common` (shared helpers) and `geometry` (Conv / pool window arithmetic). Importing this
package registers every op, in `FAMILIES` order, and nothing else; the lookups (`get_op`,
`all_ops`, ...) are re-exported here, so importing them from the catalog guarantees the
registry is full. The registration order is the order the rule generator applies its instances
in (and so part of its output), and the order the verifier reads axioms in.

Example:
    >>> get_op("Relu").doc
    'max(x, 0)'
"""

from __future__ import annotations

from superopt.core.ops import (
    activation,
    conv,
    elementwise,
    matmul,
    movement,
    norm,
    reduce,
    shape,
    weights,
)
from superopt.core.registry import (
    ASSOCIATIVE,
    BY_ONNX_TYPE,
    COMMUTATIVE,
    ELEMENTWISE,
    IDEMPOTENT,
    LINEAR,
    MULTI_OUTPUT,
    WEIGHT_ONLY,
    OpDef,
    all_ops,
    get_op,
    register,
)

__all__ = [
    "ASSOCIATIVE", "BY_ONNX_TYPE", "COMMUTATIVE", "ELEMENTWISE", "IDEMPOTENT", "LINEAR",
    "MULTI_OUTPUT", "WEIGHT_ONLY", "FAMILIES", "OpDef", "all_ops", "get_op",
]

# The families in registration order (see the module docstring: the generator's order).
FAMILIES = (matmul, elementwise, conv, movement, weights, norm, activation, reduce, shape)

for _family in FAMILIES:
    for _op in _family.OPS:
        register(_op)
