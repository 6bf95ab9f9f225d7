"""The op registry's mechanism: `OpDef` (everything superopt knows about one operator),
`register`, and the lookups.

The entries themselves live in `superopt.core.ops`, the catalog: one module per op family, and
its `__init__` registers them all. Stages import their lookups (`get_op`, `all_ops`, `ops_with`)
from the catalog, which guarantees every op is registered; this module imports nothing but the
tensor types, so it sits below the ops and the IR.

An entry holds the ONNX mapping (`from_onnx` / `to_onnx`), shape inference (`infer`), numpy
reference semantics (`compute`), properties read by the generator and verifier (`props`), the
analytic cost hints (`cost`), the fusion hints the measured cost model reads (`fuses_into`,
`fuses_after`), the op's Z3 semantics (`z3`: the exact element-wise encoding for bounded checks
and the lowering into the axiom language, written against the context / algebra object the
verifier passes in, so the core never imports z3), the axioms about the op (`axioms`, plain
data: see `superopt.core.axiom_spec`) and the op instances the rule generator may apply
(`generator`, see `superopt.core.generator_spec`). Asking for an op that has no entry is a loud
`KeyError`; an op without `z3` makes every rule using it "unknown" (MissingSemantics), never a
silent pass.

Example:
    >>> from superopt.core.ops import get_op
    >>> get_op("Relu").compute({}, [np.array([-1.0, 2.0])])[0].tolist()
    [0.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import NodeProto, TensorProto

from superopt.core.types import TensorType

if TYPE_CHECKING:  # plain data the entries carry (leaf modules)
    from superopt.core.axiom_spec import Axiom
    from superopt.core.generator_spec import OpInstance

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


@dataclass(frozen=True)
class Z3Semantics:
    """An op's meaning for the verifier, written against objects the verifier passes in.

    - `bounded(ctx, attrs, inputs) -> outputs`: the exact element-wise encoding over numpy object
      arrays of Z3 reals (Relu as `ctx.ite(x > 0, x, 0)`, Conv as sums of products, ...), for
      bounded checks. `ctx` is the verifier's bounded context (`real`, `to_real`, `each`, `ite`,
      `fn`, `inv_sqrt`, `constrain`). Many ops reuse their numpy `compute`, which works on
      object arrays.
    - `lower(A, attrs, args, ranks, op) -> outputs`: the op in the axiom language of the
      verifier's algebra `A` (uninterpreted functions), for axiomatic proofs.
    """

    bounded: Callable[[Any, Attrs, list], list]
    lower: Callable[..., list]


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
    # Element-wise ops ORT runs inside this op's kernel when they are the only user of its
    # output (the measured cost model costs the group as this op alone) ...
    fuses_into: frozenset[str] = frozenset()
    # ... and, after a fused op of the key's type, the ops it also takes into the group
    # (Conv: Add then Relu).
    fuses_after: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The verifier's view: exact and axiomatic semantics (None: rules using the op stay
    # "unknown"), and the axioms about the op.
    z3: Z3Semantics | None = None
    axioms: Sequence[Axiom] = ()
    # The op instances the rule generator may apply, each naming the presets it belongs to.
    generator: Sequence[OpInstance] = ()

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
    """Add an op; registering one name twice is an error, and so is an instance or axiom that
    is filed under it but names another op."""
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name} registered twice")
    for inst in op.generator:
        if inst.op != op.name:
            raise ValueError(f"op {op.name}: generator instance {inst.label} applies {inst.op}")
    for ax in op.axioms:
        if op.name not in ax.ops:
            raise ValueError(f"op {op.name}: axiom {ax.name} does not mention it")
    REGISTRY[op.name] = op
    if op.onnx_type:
        BY_ONNX_TYPE[op.onnx_type] = op
    return op


def get_op(name: str) -> OpDef:
    """The registry entry for `name` (KeyError naming the known ops if absent)."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none (import superopt.core.ops, the catalog)"
        raise KeyError(f"unknown op {name!r}; known ops: {known}") from None


def all_ops() -> list[OpDef]:
    """Every registered op, in registration order (the catalog's order)."""
    return list(REGISTRY.values())

