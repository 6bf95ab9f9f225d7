"""The op registry: one `OpDef` per operator, the single place that defines it.

An entry holds the ONNX mapping (`from_onnx` / `to_onnx`), shape inference (`infer`), numpy
reference semantics (`compute`), properties read by the generator and verifier (`props`), the
analytic cost hints (`cost`), and slots the verifier fills with the op's Z3 semantics
(`z3_elementwise`, the exact element-wise encoding for bounded checks, and `z3_axioms`).
Adding an op is adding one entry (see `superopt/ops.py`); asking for an op that has no entry is a
loud `KeyError`, never a silent pass.

Example:
    >>> from superopt.core.registry import get_op
    >>> get_op("Relu").compute({}, [np.array([-1.0, 2.0])])[0].tolist()
    [0.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import NodeProto, TensorProto

from superopt.core.ir import TensorType

# Property names the generator, verifier and search read instead of re-listing ops.
ELEMENTWISE = "elementwise"
COMMUTATIVE = "commutative"
ASSOCIATIVE = "associative"
LINEAR = "linear"  # linear in each tensor input separately (MatMul, Conv in X and in W)
WEIGHT_ONLY = "weight_only"  # helper that only ever computes on constants (folded at export)
IDEMPOTENT = "idempotent"
MULTI_OUTPUT = "multi_output"

Attrs = dict[str, Any]
# from_onnx(node, input types, constant lookup by input index, opset) ->
#     (canonical attrs, indices of the ONNX inputs that stay IR inputs), or None = opaque.
FromOnnx = Callable[[NodeProto, list, Callable[[int], "np.ndarray | None"], int],
                    "tuple[Attrs, list[int]] | None"]
# to_onnx(attrs, input names, output names, node name, opset) -> (nodes, new initializers)
ToOnnx = Callable[[Attrs, list[str], list[str], str, int],
                  "tuple[list[NodeProto], list[TensorProto]]"]


@dataclass
class OpDef:
    """Everything superopt knows about one operator."""

    name: str
    infer: Callable[[Attrs, list[TensorType]], list[TensorType]]
    compute: Callable[[Attrs, list[np.ndarray]], list[np.ndarray]]
    arity: tuple[int, int]  # min, max tensor inputs (max -1 = variadic)
    onnx_type: str | None = None  # None for weight-only helpers
    defaults: Attrs = field(default_factory=dict)
    props: frozenset[str] = frozenset()
    from_onnx: FromOnnx | None = None
    to_onnx: ToOnnx | None = None
    # (flops, bytes moved) for the analytic cost model.
    cost: Callable[[Attrs, list[TensorType], list[TensorType]], tuple[float, float]] | None = None
    doc: str = ""
    # Filled by superopt.verifier.semantics: exact encoding over numpy object arrays of Z3
    # terms (bounded checks) and first-order axioms mentioning this op.
    z3_elementwise: Callable[..., list] | None = None
    z3_axioms: tuple = ()

    def n_outputs(self, attrs: Attrs) -> int:
        if self.name == "Split":
            return len(attrs["split"])
        return 1

    def canonical_attrs(self, attrs: Attrs) -> Attrs:
        """Defaults filled in, lists as tuples: the form stored on IR nodes."""
        out = dict(self.defaults)
        out.update(attrs)
        return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}

    def has(self, prop: str) -> bool:
        return prop in self.props


REGISTRY: dict[str, OpDef] = {}
BY_ONNX_TYPE: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Add an op; registering one name twice is an error."""
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name} registered twice")
    REGISTRY[op.name] = op
    if op.onnx_type:
        BY_ONNX_TYPE[op.onnx_type] = op
    return op


def get_op(name: str) -> OpDef:
    """The registry entry for `name` (KeyError naming the known ops if absent)."""
    _ensure_loaded()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(REGISTRY))}") from None


def all_ops() -> list[OpDef]:
    _ensure_loaded()
    return list(REGISTRY.values())


def ops_with(prop: str) -> frozenset[str]:
    """Names of ops carrying a property, e.g. `ops_with(ELEMENTWISE)`."""
    _ensure_loaded()
    return frozenset(n for n, o in REGISTRY.items() if prop in o.props)


def _ensure_loaded() -> None:
    if not REGISTRY:
        import superopt.core.ops  # noqa: F401  (registers every entry)


def evaluate(op: str, attrs: Attrs, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run an op's numpy reference semantics."""
    return get_op(op).compute(dict(attrs), list(inputs))
