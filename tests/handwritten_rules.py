"""Small hand-written rules shared by the matching, search and optimize tests, so those tests
do not depend on the generated database. Each is a known identity (and is proved by the
verifier's tests); the proof record here only lets the optimizer use them (from a file, it is
re-proved first: superopt.pipeline.trust)."""

from __future__ import annotations

from superopt.core.rules import Rule

PROVED = {"result": "proved"}

# Each variable with its class: the rank the rule is proved (and matched) at.
ASSOC = Rule.make(
    ["(MatMul (MatMul ?x ?a) ?b)"],
    ["(MatMul ?x (MatMul ?a ?b))"],
    {"x": {"kind": "tensor", "rank": 2}, "a": {"kind": "weight", "rank": 2},
     "b": {"kind": "weight", "rank": 2}},
    name="matmul-assoc",
    proof=PROVED,
)

# The same identity for a rank-3 activation (rows of a batch, e.g. embeddings times weights):
# a rule says where it is true, so each rank is a rule of its own.
ASSOC3 = Rule.make(
    ["(MatMul (MatMul ?x ?a) ?b)"],
    ["(MatMul ?x (MatMul ?a ?b))"],
    {"x": {"kind": "tensor", "rank": 3}, "a": {"kind": "weight", "rank": 2},
     "b": {"kind": "weight", "rank": 2}},
    name="matmul-assoc-3d",
    proof=PROVED,
)

# The seed's example: a 3×3 and a 1×1 Conv on one input become one Conv on the 1×1 kernel
# enlarged to 3×3 and concatenated, then Split.
_SPLIT = "Split.{i}[axis=1, split=(dim(?w1,0), dim(?w2,0))]"
MERGE_CONV = Rule.make(
    ["(Conv[pads=(1, 1, 1, 1)] ?x ?w1)", "(Conv ?x ?w2)"],
    [
        f"({_SPLIT.format(i=i)} (Conv[pads=(1, 1, 1, 1)] ?x "
        "(Concat[axis=0] ?w1 (EnlargeKernel ?w2 ?w1))))"
        for i in range(2)
    ],
    {"x": "tensor", "w1": "weight", "w2": "weight"},
    conditions=("dim(?w1, 2) == 3", "dim(?w1, 3) == 3", "dim(?w2, 2) == 1", "dim(?w2, 3) == 1"),
    example={"x": (2, 4, 5, 5), "w1": (4, 4, 3, 3), "w2": (4, 4, 1, 1)},  # classes: ranks 4
    name="merge-conv3x3-conv1x1",
    proof=PROVED,
)
