"""The graph IR shared by every stage: immutable, hash-consed values and nodes.

A `Value` is a graph input, a constant (an initializer, hashed by the digest of its content) or
output *i* of a `Node`. Nodes are **hash-consed**: constructing a node whose structure (op,
attributes, inputs, names) equals an existing live node returns that same object, so equal
structure means the same object, and a node's hash is computed once from its inputs' hashes
(Merkle style). A `Graph` is a tuple of named outputs plus the model-level metadata that ONNX
export needs; its hash is the hash of its outputs, so the search can dedupe every candidate
graph at no extra cost.

Node names are part of a node's identity so that imported models round-trip with their names.
Nodes built by rewrites get names derived from their structure (`derived_name`), so the same
rewrite reached by two paths yields the same node, and the search's dedupe still works.

Example:
    >>> x = Value.input("x", TensorType(1, (2, 4)))
    >>> r = Node.make("Relu", {}, [x]).outputs[0]
    >>> r.type.shape
    (2, 4)
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import helper

from superopt.core.ops import get_op
from superopt.core.types import Shape, TensorType, array_digest


class Value:
    """A tensor in the graph: `kind` is "input", "const" or "output" (output *index* of *node*).

    Values are immutable. Input and constant values are hash-consed like nodes; node outputs
    are created once by their node.
    """

    __slots__ = (
        "__weakref__",
        "_hash",
        "_weight",
        "array",
        "digest",
        "index",
        "kind",
        "name",
        "node",
        "type",
    )

    _cache: weakref.WeakValueDictionary[tuple, Value] = weakref.WeakValueDictionary()

    kind: str
    name: str
    type: TensorType
    node: Node | None
    index: int
    array: np.ndarray | None
    digest: str | None

    def __init__(self) -> None:  # use the factory methods
        raise TypeError("use Value.input / Value.const")

    @classmethod
    def _new(cls, key: tuple, **fields: Any) -> Value:
        hit = cls._cache.get(key) if key is not None else None
        if hit is not None:
            return hit
        v = object.__new__(cls)
        for k in _VALUE_FIELDS:
            object.__setattr__(v, k, fields.get(k))
        object.__setattr__(v, "_hash", hash(key))
        object.__setattr__(v, "_weight", fields.get("kind") == "const")
        if key is not None:
            cls._cache[key] = v
        return v

    @classmethod
    def input(cls, name: str, type: TensorType) -> Value:
        """A graph input (a runtime tensor)."""
        return cls._new(("input", name, type), kind="input", name=name, type=type, index=0)

    @classmethod
    def const(cls, array: np.ndarray, name: str | None = None) -> Value:
        """A constant (weight). Without a name, one is derived from the content digest."""
        array = np.asarray(array)
        digest = array_digest(array)
        if name is None:
            name = f"so_const_{digest[:12]}"
        elem = helper.np_dtype_to_tensor_dtype(array.dtype)
        ty = TensorType(elem, tuple(int(d) for d in array.shape))
        array.flags.writeable = False
        return cls._new(("const", name, digest), kind="const", name=name, type=ty, index=0,
                        array=array, digest=digest)

    @property
    def is_const(self) -> bool:
        """A constant literal (an initializer or a folded array)."""
        return self.kind == "const"

    @property
    def is_weight(self) -> bool:
        """Known before the model runs: a constant, or an output of a registry node whose
        inputs are all weights (a concatenated or scaled kernel a rewrite made, a constant
        subexpression of the model). The exporter folds these; a rule's "weight" variable
        binds to any of them, so rewrites compose (a kernel scaled by one rule is merged by
        the next). Decided once, when the value is made."""
        return self._weight

    @property
    def shape(self) -> Shape | None:
        return self.type.shape

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Value is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        if self.kind == "output":
            return f"<{self.name}: {self.type} = {self.node.op}#{self.index}>"
        return f"<{self.kind} {self.name}: {self.type}>"


_VALUE_FIELDS = ("kind", "name", "type", "node", "index", "array", "digest")


def _freeze(v: Any) -> Any:
    """Attribute values as hashable, comparable data (lists -> tuples, arrays -> bytes)."""
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return ("ndarray", str(v.dtype), v.shape, v.tobytes())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


def derived_name(op: str, attrs: tuple, inputs: tuple) -> str:
    """A stable node name for nodes made by rewrites: the same structure, the same name."""
    h = hashlib.blake2b(digest_size=6)
    h.update(op.encode())
    h.update(repr(attrs).encode())
    for v in inputs:
        h.update(b"-" if v is None else v.name.encode())
    return f"so_{op}_{h.hexdigest()}"


class Node:
    """One operator application. Immutable and hash-consed.

    `op` is a registry op name, or `"Opaque"` for an ONNX node the registry does not model (its
    NodeProto bytes and output types are in its attributes and it round-trips unchanged).
    `inputs` may contain None for an omitted optional ONNX input.
    """

    __slots__ = (
        "__weakref__",
        "_attr_map",
        "_hash",
        "attrs",
        "inputs",
        "name",
        "op",
        "outputs",
    )

    _cache: weakref.WeakValueDictionary[tuple, Node] = weakref.WeakValueDictionary()

    op: str
    attrs: tuple[tuple[str, Any], ...]
    inputs: tuple[Value | None, ...]
    name: str
    outputs: tuple[Value, ...]

    def __init__(self) -> None:
        raise TypeError("use Node.make")

    @classmethod
    def make(cls, op: str, attrs: Mapping[str, Any] | Iterable[tuple[str, Any]],
             inputs: Sequence[Value | None], *, name: str | None = None,
             output_names: Sequence[str] | None = None,
             output_types: Sequence[TensorType] | None = None,
             inferred_types: Sequence[TensorType] | None = None) -> Node:
        """Build (or find) the node. Output types come from the registry's shape inference
        unless given (opaque nodes carry theirs). `inferred_types` are the types inference
        would give, known to the caller (a node rebuilt on inputs of unchanged types): they
        spare the inference and, unlike `output_types`, are not part of the node's identity."""
        attrs_t = tuple(sorted((k, _freeze(v)) for k, v in dict(attrs).items()))
        inputs_t = tuple(inputs)
        if name is None:
            name = derived_name(op, attrs_t, inputs_t)
        # Given output types (opaque nodes) are part of the identity: a second shape
        # inference may know more about the same node.
        key = (op, attrs_t, inputs_t, name, tuple(output_names) if output_names else None,
               tuple(output_types) if output_types is not None else None)
        hit = cls._cache.get(key)
        if hit is not None:
            return hit
        if output_types is None and inferred_types is not None:
            output_types = inferred_types
        elif output_types is None:
            output_types = get_op(op).infer(dict(attrs_t), [v.type if v else None
                                                            for v in inputs_t])
        if output_names is None:
            output_names = [f"{name}_out{i}" if len(output_types) > 1 else f"{name}_out"
                            for i in range(len(output_types))]
        if len(output_names) != len(output_types):
            raise ValueError(f"{op} node {name}: {len(output_names)} output names for "
                             f"{len(output_types)} outputs")
        n = object.__new__(cls)
        object.__setattr__(n, "op", op)
        object.__setattr__(n, "attrs", attrs_t)
        object.__setattr__(n, "inputs", inputs_t)
        object.__setattr__(n, "name", name)
        object.__setattr__(n, "_hash", hash(key))
        object.__setattr__(n, "_attr_map", dict(attrs_t))
        weight = op != "Opaque" and all(v is None or v._weight for v in inputs_t)
        outs = []
        for i, (oname, oty) in enumerate(zip(output_names, output_types)):
            v = object.__new__(Value)
            for k, val in (("kind", "output"), ("name", oname), ("type", oty), ("node", n),
                           ("index", i), ("array", None), ("digest", None),
                           ("_hash", hash((n._hash, i))), ("_weight", weight)):
                object.__setattr__(v, k, val)
            outs.append(v)
        object.__setattr__(n, "outputs", tuple(outs))
        cls._cache[key] = n
        return n

    def attr(self, key: str, default: Any = None) -> Any:
        return self._attr_map.get(key, default)

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self._attr_map)

    @property
    def is_opaque(self) -> bool:
        return self.op == "Opaque"

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Node is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        ins = ", ".join("-" if v is None else v.name for v in self.inputs)
        return f"<{self.op} {self.name}({ins})>"


@dataclass(frozen=True, eq=False)
class ModelMeta:
    """What ONNX export needs besides the computation, kept verbatim from import."""

    ir_version: int = 8
    opset_imports: tuple[tuple[str, int], ...] = (("", 17),)
    producer_name: str = "superopt"
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    graph_name: str = "graph"
    graph_doc_string: str = ""
    metadata_props: tuple[tuple[str, str], ...] = ()
    # Serialized ValueInfoProto of graph inputs/outputs and intermediate values, by name.
    input_infos: Mapping[str, bytes] = field(default_factory=dict)
    output_infos: Mapping[str, bytes] = field(default_factory=dict)
    value_infos: tuple[tuple[str, bytes], ...] = ()
    # Serialized FunctionProto (model-local functions used by opaque nodes).
    functions: tuple[bytes, ...] = ()
    # Initializer order of the original model, so an unchanged model exports identically.
    initializer_order: tuple[str, ...] = ()
    # Names of the nodes the model came with. Export folds constant-only nodes made by rewrites
    # but keeps these: ORT folds them itself with its own kernels, so round trips stay exact.
    source_nodes: frozenset[str] = frozenset()

    def opset(self, domain: str = "") -> int | None:
        for d, v in self.opset_imports:
            if d in (domain, "ai.onnx" if domain == "" else domain):
                return v
        return None


class Graph:
    """A computation: graph inputs, named outputs, and model metadata. Immutable.

    Nodes are reached from the outputs; `nodes` lists them in a topological order (inputs before
    users, stable). Two graphs with the same structure hash equal.
    """

    __slots__ = ("_hash", "_nodes", "_users", "inputs", "meta", "outputs")

    def __init__(self, inputs: Sequence[Value], outputs: Sequence[tuple[str, Value]],
                 meta: ModelMeta | None = None) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple((str(n), v) for n, v in outputs)
        self.meta = meta or ModelMeta()
        self._hash = hash((self.inputs, self.outputs))
        self._nodes: tuple[Node, ...] | None = None
        self._users: dict[Value, list[tuple[Node, int]]] | None = None

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Graph) and self._hash == other._hash
                and self.inputs == other.inputs and self.outputs == other.outputs)

    @property
    def output_values(self) -> tuple[Value, ...]:
        return tuple(v for _, v in self.outputs)

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Nodes in topological order (iterative DFS, so deep graphs do not recurse)."""
        if self._nodes is None:
            order: list[Node] = []
            state: dict[Node, int] = {}  # 1 = on stack, 2 = done
            for root in self.output_values:
                if root.node is None or state.get(root.node) == 2:
                    continue
                stack: list[tuple[Node, int]] = [(root.node, 0)]
                state[root.node] = 1
                while stack:
                    node, i = stack[-1]
                    if i < len(node.inputs):
                        stack[-1] = (node, i + 1)
                        v = node.inputs[i]
                        if v is not None and v.node is not None:
                            s = state.get(v.node)
                            if s is None:
                                state[v.node] = 1
                                stack.append((v.node, 0))
                            elif s == 1:
                                raise ValueError(f"cycle through node {v.node.name}")
                    else:
                        stack.pop()
                        state[node] = 2
                        order.append(node)
            self._nodes = tuple(order)
        return self._nodes

    @property
    def users(self) -> dict[Value, list[tuple[Node, int]]]:
        """For each value, the (node, input index) pairs that read it."""
        if self._users is None:
            users: dict[Value, list[tuple[Node, int]]] = {}
            for n in self.nodes:
                for i, v in enumerate(n.inputs):
                    if v is not None:
                        users.setdefault(v, []).append((n, i))
            self._users = users
        return self._users

    def constants(self) -> list[Value]:
        """Constant values used by the graph, in first-use order."""
        seen: dict[Value, None] = {}
        for n in self.nodes:
            for v in n.inputs:
                if v is not None and v.is_const:
                    seen.setdefault(v)
        for v in self.output_values:
            if v.is_const:
                seen.setdefault(v)
        return list(seen)

    def op_counts(self) -> dict[str, int]:
        """Count of nodes by op (opaque nodes by their ONNX op_type, prefixed by domain)."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            key = opaque_op_type(n) if n.is_opaque else n.op
            counts[key] = counts.get(key, 0) + 1
        return counts

    def replace_values(self, mapping: Mapping[Value, Value]) -> Graph:
        """A new graph with every use of each key value replaced by its mapped value.

        Only nodes downstream of a replaced value are rebuilt; the rest are shared. Rebuilt
        nodes keep their names (their structure changed, not their role), so names the user
        depends on survive rewrites.
        """
        if not mapping:
            return self
        memo: dict[Value, Value] = dict(mapping)

        def new_node(node: Node) -> Node:
            ins = tuple(None if v is None else memo.get(v, v) for v in node.inputs)
            if ins == node.inputs:
                return node
            if node.is_opaque:
                return Node.make(node.op, node.attrs, ins, name=node.name,
                                 output_names=[o.name for o in node.outputs],
                                 output_types=[o.type for o in node.outputs])
            # inputs of unchanged types give unchanged output types: no inference needed
            same = all(a is b or a.type == b.type for a, b in zip(ins, node.inputs)
                       if a is not None and b is not None)
            return Node.make(node.op, node.attrs, ins, name=node.name,
                             output_names=[o.name for o in node.outputs],
                             inferred_types=[o.type for o in node.outputs] if same else None)

        for node in self.nodes:
            if all(o in mapping for o in node.outputs):
                continue  # replaced outright: rebuilding it would overwrite its mapping
            if any(v is not None and v in memo for v in node.inputs):
                nn = new_node(node)
                if nn is not node:
                    for old, new in zip(node.outputs, nn.outputs):
                        memo.setdefault(old, new)
        outs = [(name, memo.get(v, v)) for name, v in self.outputs]
        return Graph(self.inputs, outs, self.meta)

    def with_outputs(self, outputs: Sequence[tuple[str, Value]]) -> Graph:
        return Graph(self.inputs, outputs, self.meta)

    def __repr__(self) -> str:
        return f"<Graph {len(self.nodes)} nodes, outputs {[n for n, _ in self.outputs]}>"


def opaque_op_type(node: Node) -> str:
    """The ONNX op type of an opaque node, as `domain::Op` outside the default domain."""
    domain = node.attr("domain") or ""
    op_type = node.attr("op_type")
    return op_type if domain in ("", "ai.onnx") else f"{domain}::{op_type}"
