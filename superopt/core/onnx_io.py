"""The ONNX boundary: `load` (ONNX -> Graph), `to_onnx` (Graph -> ONNX) and `save`.

Import keeps everything export needs to reproduce the model: names, doc strings, metadata, opset
imports, value_info, functions, initializer order. Nodes the registry does not model become
opaque nodes carrying their NodeProto, so a model never fails to load because one op is unknown.
What exporters write around weights and shapes is simplified on the way in: `Constant` nodes
become constants, `Identity` of a weight becomes the weight, and integer shape computations
(Shape -> Gather -> Unsqueeze -> Concat ...) are folded when the shapes they read are static.
Export folds every remaining constant-only subexpression with numpy, so the written model never
computes on weights at run time.

Example:
    >>> g = load("model.onnx", input_shapes={"input": (1, 3, 224, 224)})  # doctest: +SKIP
    >>> save(g, "copy.onnx")                                               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import (
    AttributeProto,
    GraphProto,
    ModelProto,
    NodeProto,
    TensorProto,
    helper,
    numpy_helper,
)

from superopt.core.atomic import atomic_write, check_output_path
from superopt.core.errors import ModelError, ShapeError
from superopt.core.ir import Graph, ModelMeta, Node, Value
from superopt.core.ops import BY_ONNX_TYPE, WEIGHT_ONLY, get_op
from superopt.core.types import TensorType

MIN_OPSET = 13
TWO_GB = 2**31 - 1
# Integer shape computations on constants are folded at import whatever the op; float work on
# weights is left for export, where registry ops fold with numpy semantics.
_FOLD_SIZE_LIMIT = 1 << 16

InputShapes = Mapping[str, Sequence[int | str]]


# ---------------------------------------------------------------------------------------------
# reading


def read_model(source: str | os.PathLike | ModelProto | bytes) -> tuple[ModelProto, str | None]:
    """The ModelProto with external data loaded, and the folder it came from (or None)."""
    if isinstance(source, (ModelProto, bytes)):
        model = source if isinstance(source, ModelProto) else _parse(source, "<bytes>")
        for t in _all_tensors(model):
            if t.data_location == TensorProto.EXTERNAL:
                _check_external_location(t, None)  # no folder: reading it would use the cwd
        return model, None
    path = Path(source)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an ONNX file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    model = _parse(data, str(path))
    external = [t for t in _all_tensors(model) if t.data_location == TensorProto.EXTERNAL]
    for t in external:
        _check_external_location(t, path)
    for t in external:
        try:
            onnx.external_data_helper.load_external_data_for_tensor(t, str(path.parent))
        except Exception as e:  # OSError, ValueError, onnx's ValidationError ...
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{path}: cannot load the external data of tensor {t.name!r} "
                             f"({reason[:200]})") from None
    return model, str(path.parent)


def _all_tensors(model: ModelProto) -> Iterable[TensorProto]:
    """Every TensorProto of a model: initializers, sparse initializers and tensor attributes,
    in the main graph, in subgraphs and in functions."""
    def of_graph(g: GraphProto) -> Iterable[TensorProto]:
        yield from g.initializer
        for s in g.sparse_initializer:
            yield from (s.values, s.indices)
        yield from of_nodes(g.node)

    def of_nodes(nodes: Iterable[NodeProto]) -> Iterable[TensorProto]:
        for n in nodes:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield from (a.sparse_tensor.values, a.sparse_tensor.indices)
                for s in a.sparse_tensors:
                    yield from (s.values, s.indices)
                if a.HasField("g"):
                    yield from of_graph(a.g)
                for sg in a.graphs:
                    yield from of_graph(sg)

    yield from of_graph(model.graph)
    for f in model.functions:
        yield from of_nodes(f.node)


def _check_external_location(t: TensorProto, model_path: Path | None) -> None:
    """External data must be a file inside the model's folder (symlinks resolved): a model must
    never make superopt read /etc/passwd or a file next to the user's home."""
    where = str(model_path) if model_path is not None else "model"
    location = next((e.value for e in t.external_data if e.key == "location"), "")
    if model_path is None:
        raise ModelError(f"{where}: tensor {t.name!r} keeps its data in an external data file "
                         f"({location!r}), but the model was given without its folder; "
                         "load it from its path")
    if not location:
        raise ModelError(f"{where}: tensor {t.name!r} is marked as external data but names "
                         "no file")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or \
            re.match(r"^[A-Za-z]:", location):
        raise ModelError(f"{where}: tensor {t.name!r} keeps its data at an absolute path "
                         f"({location!r}); external data must be inside the model's folder")
    folder = os.path.realpath(model_path.parent)
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, target]) != folder:
        how = "" if os.path.normpath(os.path.join(folder, location)) == target else \
            ", through a symbolic link,"
        raise ModelError(f"{where}: tensor {t.name!r} keeps its data in {location!r}, which "
                         f"leads{how} outside the model's folder (external data must stay "
                         "inside it)")
    if not os.path.exists(target):
        raise ModelError(f"{where}: tensor {t.name!r} keeps its data in {location!r}: "
                         "no such file next to the model")
    if not os.path.isfile(target):
        raise ModelError(f"{where}: tensor {t.name!r} keeps its data in {location!r}, which is "
                         "not a regular file")


def _parse(data: bytes, where: str) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"{where}: not a valid ONNX model (truncated or corrupt protobuf: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not model.HasField("graph") or model.ir_version == 0 or (
            not model.graph.node and not model.graph.output):
        raise ModelError(f"{where}: not an ONNX model (no graph or IR version found)")
    return model


def _default_opset(model: ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 0


def _upgrade_opset(model: ModelProto, where: str) -> ModelProto:
    version = _default_opset(model)
    if version >= MIN_OPSET or version == 0:
        return model
    try:
        from onnx import version_converter

        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter raises many types
        # Its messages start with a C++ source location; the user needs the adapter's words.
        reason = re.sub(r"^\S+\.(h|cc|cpp):\d+:\s*", "", str(e).splitlines()[0]) if str(e) \
            else type(e).__name__
        raise ModelError(f"{where}: opset {version} is below {MIN_OPSET} and the ONNX version "
                         f"converter cannot upgrade it ({reason[:160]})") from None
    # The converter passes ops removed in later opsets (e.g. Upsample) through unchanged.
    for node in converted.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, MIN_OPSET, "")
        except onnx.defs.SchemaError:
            continue  # unknown ops stay opaque
        if schema.deprecated:
            raise ModelError(f"{where}: opset {version} is below {MIN_OPSET} and cannot be "
                             f"upgraded: it uses {node.op_type} (node {node.name or '?'}), which "
                             f"opset {MIN_OPSET} no longer has")
    _fix_conversion(converted, version)
    return converted


# Why convert, and not keep the model's opset: registry ops, rules and their proofs speak opset
# 13+ ONNX, and export writes that; keeping opset 11 would need every op definition to know each
# old opset's meaning. So models are converted, and the converter's known gaps (measured in ONNX
# Runtime, tests/test_opset_semantics.py) are patched after it:
#  * Hardmax before 13 coerced its input to 2-D at `axis` (like Softmax and LogSoftmax, whose
#    adapters do write Flatten -> op -> Reshape); the converter has no adapter for Hardmax and
#    keeps `axis`, which at 13 means one axis. It becomes Flatten -> Hardmax -> Reshape here.
#  * Resize 10 (and Upsample 7/9, which become Resize) had no coordinate mode: ONNX Runtime uses
#    `asymmetric`, and for `nearest` takes the floor on axes that grow and the ceiling on axes
#    that shrink. The converter leaves the opset-11 defaults (half_pixel, round_prefer_floor).
#    The attributes are set here; a nearest Resize whose scales shrink some axes and grow others,
#    or whose scales are only known at run time, becomes two Resize nodes (floor, then ceil).
# Everything else that changed meaning before 13 (Softmax, LogSoftmax, Split, Reduce*, Clip,
# Pad, Slice, TopK, Squeeze/Unsqueeze, ...) the converter gets right; the tests check each.


class _Fresh:
    """Names not used yet: `base` if free, else `base_1`, `base_2`, ...; taken once given."""

    def __init__(self, used: Iterable[str]) -> None:
        self.used = set(used)

    def __call__(self, base: str) -> str:
        base = base.replace("\x00", "") or "superopt"
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


def _fix_conversion(model: ModelProto, version: int) -> None:
    """Patch what the version converter gets wrong (see above); `version` is the model's own."""
    used: set[str] = set()
    _graph_names(model.graph, used, set())
    fresh = _Fresh(used)
    ranks: dict[str, int] = {}
    if any(n.op_type == "Hardmax" for n in _all_nodes(model.graph)):
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False)
            for g in _all_graphs(inferred.graph):
                for vi in list(g.input) + list(g.value_info) + list(g.output):
                    t = vi.type.tensor_type
                    if vi.type.HasField("tensor_type") and t.HasField("shape"):
                        ranks[vi.name] = len(t.shape.dim)
        except Exception:
            pass  # ranks unknown: every Hardmax is rewritten, which is always right
    _fix_graph(model.graph, version, ranks, fresh, {})


def _all_graphs(g: GraphProto) -> Iterable[GraphProto]:
    yield g
    for n in g.node:
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _all_graphs(sg)


def _all_nodes(g: GraphProto) -> Iterable[NodeProto]:
    for sg in _all_graphs(g):
        yield from sg.node


def _fix_graph(g: GraphProto, version: int, ranks: Mapping[str, int], fresh: _Fresh,
               outer_consts: Mapping[str, TensorProto | NodeProto]) -> None:
    consts = dict(outer_consts)  # what constant values are made of; arrays made on demand
    consts.update((t.name, t) for t in g.initializer)
    nodes: list[NodeProto] = []
    for n in g.node:
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _fix_graph(sg, version, ranks, fresh, consts)
        if n.domain not in ("", "ai.onnx"):
            nodes.append(n)
            continue
        if n.op_type == "Constant" and n.output:
            consts[n.output[0]] = n
        if n.op_type == "Hardmax":
            nodes.extend(_hardmax_from_2d(n, ranks, fresh))
        elif n.op_type == "Resize" and version < 11:
            nodes.extend(_resize_from_10(n, consts, fresh))
        else:
            nodes.append(n)
    if len(nodes) != len(g.node):
        del g.node[:]
        g.node.extend(nodes)


def _set_attrs(n: NodeProto, **attrs) -> None:
    keep = [a for a in n.attribute if a.name not in attrs]
    del n.attribute[:]
    n.attribute.extend(keep)
    n.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())


def _hardmax_from_2d(n: NodeProto, ranks: Mapping[str, int], fresh: _Fresh) -> list[NodeProto]:
    """Hardmax before opset 13 (coerced to 2-D at `axis`, default 1) as opset 13 nodes."""
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    axis = int(a.get("axis", 1))
    rank = ranks.get(n.input[0])
    if axis == -1 or (rank is not None and axis in (rank - 1, -1)):
        _set_attrs(n, axis=-1)  # one axis, the last: the same in both meanings
        return [n]
    x, y = n.input[0], n.output[0]
    base = n.name or "hardmax"
    shape, flat, hard = fresh(f"{y}_shape"), fresh(f"{y}_2d"), fresh(f"{y}_hardmax")
    inner = NodeProto()
    inner.CopyFrom(n)
    del inner.input[:]
    inner.input.append(flat)
    del inner.output[:]
    inner.output.append(hard)
    _set_attrs(inner, axis=-1)
    return [helper.make_node("Shape", [x], [shape], name=fresh(f"{base}_shape")),
            helper.make_node("Flatten", [x], [flat], name=fresh(f"{base}_flatten"), axis=axis),
            inner,
            helper.make_node("Reshape", [hard, shape], [y], name=fresh(f"{base}_reshape"))]


def _resize_from_10(n: NodeProto, consts: Mapping[str, TensorProto | NodeProto],
                    fresh: _Fresh) -> list[NodeProto]:
    """A Resize the converter made from Resize 10 or Upsample: ONNX Runtime's meaning of those
    (asymmetric coordinates; nearest: floor on growing axes, ceiling on shrinking ones)."""
    a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode != "nearest":
        _set_attrs(n, coordinate_transformation_mode="asymmetric")
        return [n]
    scales_name = n.input[2] if len(n.input) > 2 else ""
    scales = None
    source = consts.get(scales_name) if scales_name else None
    if isinstance(source, NodeProto):
        scales = _constant_node_value(source)
    elif isinstance(source, TensorProto):
        scales = numpy_helper.to_array(source)
    if scales is not None and (np.all(scales >= 1) or np.all(scales <= 1)):
        _set_attrs(n, coordinate_transformation_mode="asymmetric",
                   nearest_mode="floor" if np.all(scales >= 1) else "ceil")
        return [n]
    if not scales_name:
        _set_attrs(n, coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return [n]
    # Both directions (or unknown until run time): grow with floor, then shrink with ceiling.
    # Nearest resizing works axis by axis, so the two steps give exactly the one-step result.
    base = n.name or "resize"
    x, roi, y = n.input[0], n.input[1], n.output[0]
    up, down = fresh(f"{scales_name}_up"), fresh(f"{scales_name}_down")
    pre: list[NodeProto] = []
    if scales is not None:
        pre.append(helper.make_node("Constant", [], [up], name=fresh(f"{base}_scales_up"),
                                    value=numpy_helper.from_array(
                                        np.where(scales > 1, scales, 1).astype(scales.dtype))))
        pre.append(helper.make_node("Constant", [], [down], name=fresh(f"{base}_scales_down"),
                                    value=numpy_helper.from_array(
                                        np.where(scales < 1, scales, 1).astype(scales.dtype))))
    else:
        one = fresh(f"{scales_name}_one")
        pre.append(helper.make_node("Constant", [], [one], name=fresh(f"{base}_one"),
                                    value=numpy_helper.from_array(np.array(1, np.float32))))
        pre.append(helper.make_node("Max", [scales_name, one], [up], name=fresh(f"{base}_up")))
        pre.append(helper.make_node("Min", [scales_name, one], [down],
                                    name=fresh(f"{base}_down")))
    grown = fresh(f"{y}_grown")
    first = NodeProto()
    first.CopyFrom(n)
    del first.input[:]
    first.input.extend([x, roi, up])
    del first.output[:]
    first.output.append(grown)
    _set_attrs(first, coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    second = NodeProto()
    second.CopyFrom(n)
    second.name = fresh(f"{base}_shrink")
    del second.input[:]
    second.input.extend([grown, roi, down])
    _set_attrs(second, coordinate_transformation_mode="asymmetric", nearest_mode="ceil")
    return pre + [first, second]


def _apply_input_shapes(model: ModelProto, shapes: InputShapes, where: str) -> dict[str, int]:
    """Set the inputs' shapes; returns the symbols the override fixed (dim_param -> size)."""
    fixed: dict[str, int] = {}
    inits = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in inits}
    if len(shapes) == 1 and None in shapes and len(inputs) == 1:
        shapes = {next(iter(inputs)): shapes[None]}
    for name, shape in shapes.items():
        if name not in inputs:
            raise ShapeError(f"{where}: input shape given for {name!r}, but the model's inputs "
                             f"are {', '.join(inputs) or '(none)'}")
        t = inputs[name].type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) != len(shape):
            raise ShapeError(f"{where}: input {name!r} has rank {len(t.shape.dim)}, "
                             f"the override {tuple(shape)} has rank {len(shape)}")
        for i, d in enumerate(shape):
            if isinstance(d, int) and d <= 0:
                raise ShapeError(f"{where}: input {name!r} dim {i} must be positive, got {d}")
            if t.HasField("shape"):
                old = t.shape.dim[i]
                if old.HasField("dim_value") and isinstance(d, int) and old.dim_value != d:
                    raise ShapeError(f"{where}: input {name!r} dim {i} is fixed at "
                                     f"{old.dim_value} in the model; the override says {d}")
                if old.HasField("dim_param") and old.dim_param and isinstance(d, int):
                    if fixed.get(old.dim_param, d) != d:
                        raise ShapeError(f"{where}: the override gives dim {old.dim_param!r} "
                                         f"two sizes, {fixed[old.dim_param]} and {d}")
                    fixed[old.dim_param] = d
        del t.shape.dim[:]
        for d in shape:
            dim = t.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = str(d)
    return fixed


def _restate_shapes(graph: Graph, fixed: Mapping[str, int]) -> Graph:
    """After an input-shape override, the graph outputs and value_info the file declared are
    restated from the shapes that follow from the fixed inputs (the graph's types: ONNX's
    inference and the registry's): each dim with a size there, or whose symbol the override
    fixed, gets that size. So an exported model never declares a fixed input's symbol, nor a
    symbol ONNX's inference of the dynamic model made up; a dim that stays unknown
    (data-dependent) keeps its symbol."""
    meta = graph.meta
    types = {v.name: v.type for v in graph.inputs}
    types.update((o.name, o.type) for n in graph.nodes for o in n.outputs if o.name)
    types.update((name, v.type) for name, v in graph.outputs)

    def restated(blob: bytes, name: str) -> bytes:
        vi = onnx.ValueInfoProto()
        vi.ParseFromString(blob)
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            return blob
        t = types.get(name)
        shape = t.shape if t is not None and t.shape is not None and \
            len(t.shape) == len(tt.shape.dim) else None
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                continue
            size = shape[i] if shape is not None and isinstance(shape[i], int) else \
                fixed.get(d.dim_param) if d.HasField("dim_param") else None
            if size is not None:
                d.Clear()
                d.dim_value = size
        return vi.SerializeToString()

    new = dataclasses.replace(
        meta, output_infos={k: restated(b, k) for k, b in meta.output_infos.items()},
        value_infos=tuple((k, restated(b, k)) for k, b in meta.value_infos))
    return Graph(graph.inputs, graph.outputs, new)


def _check_structure(graph: GraphProto, where: str) -> list[NodeProto]:
    """Nodes in a topological order; one clear error for duplicate names or cycles."""
    producer: dict[str, str] = {}
    for v in graph.input:
        producer.setdefault(v.name, "graph input")
    for t in graph.initializer:
        producer[t.name] = "initializer"
    for n in graph.node:
        for o in n.output:
            if not o:
                continue
            if o in producer and producer[o] not in ("graph input", "initializer"):
                raise ModelError(f"{where}: duplicate value name {o!r} (produced by "
                                 f"{producer[o]} and node {n.name or n.op_type})")
            if o in producer:
                raise ModelError(f"{where}: duplicate value name {o!r} (node "
                                 f"{n.name or n.op_type} overwrites a graph input or initializer)")
            producer[o] = f"node {n.name or n.op_type}"
    # Kahn's algorithm over explicit and implicit (subgraph) inputs.
    deps = [set(i for i in _node_reads(n) if i and producer.get(i, "").startswith("node"))
            for n in graph.node]
    out_of = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    waiting = [len({out_of[d] for d in ds}) for ds in deps]
    users: dict[int, list[int]] = {}
    for i, ds in enumerate(deps):
        for j in {out_of[d] for d in ds}:
            users.setdefault(j, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):
        stuck = next(graph.node[i] for i, w in enumerate(waiting) if w > 0)
        raise ModelError(f"{where}: the graph has a cycle (through node "
                         f"{stuck.name or stuck.op_type})")
    for n in graph.node:
        for i in n.input:
            if i and i not in producer:
                raise ModelError(f"{where}: node {n.name or n.op_type} reads {i!r}, which "
                                 "nothing produces")
    order.sort()  # keep the file's order where it is already topological
    ok, seen = True, set(k for k, p in producer.items() if not p.startswith("node"))
    for i in order:
        if any(r and r not in seen and producer.get(r, "").startswith("node")
               for r in _node_reads(graph.node[i])):
            ok = False
            break
        seen.update(graph.node[i].output)
    if ok:
        return list(graph.node)
    # Re-run Kahn in order to get a valid topological order.
    waiting = [len({out_of[d] for d in ds}) for ds in deps]
    import heapq

    heap = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(heap, u)
    return [graph.node[i] for i in order]


def _subgraph_free_names(g: GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes."""
    defined = {v.name for v in g.input} | {t.name for t in g.initializer}
    free: set[str] = set()
    for n in g.node:
        for r in _node_reads(n):
            if r and r not in defined:
                free.add(r)
        defined.update(n.output)
    free.update(o.name for o in g.output if o.name and o.name not in defined)
    return free


def _node_reads(n: NodeProto) -> list[str]:
    names = list(n.input)
    for a in n.attribute:
        if a.type == AttributeProto.GRAPH:
            names.extend(sorted(_subgraph_free_names(a.g)))
        elif a.type == AttributeProto.GRAPHS:
            for g in a.graphs:
                names.extend(sorted(_subgraph_free_names(g)))
    return names


def _type_of(vi_type: onnx.TypeProto, name: str) -> TensorType:
    if not vi_type.HasField("tensor_type"):
        return TensorType(0, None)
    tt = vi_type.tensor_type
    if not tt.HasField("shape"):
        return TensorType(tt.elem_type, None)
    dims: list[int | str] = []
    for i, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(f"?{name}:{i}")
    return TensorType(tt.elem_type, tuple(dims))


def _constant_node_value(node: NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(v)
        if a.name == "value_float":
            return np.array(v, np.float32)
        if a.name == "value_floats":
            return np.array(v, np.float32)
        if a.name == "value_int":
            return np.array(v, np.int64)
        if a.name == "value_ints":
            return np.array(v, np.int64)
    return None  # sparse or string constants stay opaque


def _fold_foreign(node: NodeProto, arrays: list[np.ndarray | None]) -> list[np.ndarray] | None:
    """Evaluate a non-registry node on constant inputs with ONNX's reference evaluator."""
    try:
        from onnx.reference import ReferenceEvaluator

        feeds = {n: a for n, a in zip(node.input, arrays) if n}
        return [np.asarray(r) for r in ReferenceEvaluator(node).run(None, feeds)]
    except Exception:
        return None


_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout"}


def load(source: str | os.PathLike | ModelProto | bytes,
         input_shapes: InputShapes | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) into a Graph.

    `input_shapes` overrides input shapes (`{"input": (1, 3, 224, 224)}`; the key may be None
    when the model has one input); the graph outputs and value_info then declare the shapes
    that follow, so an exported model never keeps a fixed input's symbol. Without it symbolic
    dims stay symbolic, and export writes the declarations of the file as they were. Raises a
    `superopt.core.errors.SuperoptError` subclass with one clear line for anything wrong with
    the file.
    """
    where = str(source) if isinstance(source, (str, os.PathLike)) else "model"
    model, _ = read_model(source)
    model = _upgrade_opset(model, where)
    fixed = None
    if input_shapes:
        model = _copy(model)
        fixed = _apply_input_shapes(model, input_shapes, where)
    nodes = _check_structure(model.graph, where)
    inferred, non_tensor = _infer_types(model, where, strict=bool(input_shapes))
    graph = _build_graph(model, nodes, inferred, where, non_tensor)
    if _needs_second_inference(graph):
        graph = _reinfer(graph, where)
    if fixed is not None:  # the declared outputs and value_info follow the fixed inputs
        graph = _restate_shapes(graph, fixed)
    return graph


def _needs_second_inference(graph: Graph) -> bool:
    """Static inputs but some opaque output still of unknown shape: ONNX's inference stopped
    at a shape chain that import has since folded (exporters without constant folding)."""
    if not all(v.type.is_static for v in graph.inputs):
        return False
    return any(n.is_opaque and not all(o.type.is_static for o in n.outputs if o.name)
               for n in graph.nodes)


def _reinfer(graph: Graph, where: str) -> Graph:
    """Shape inference again on the graph as exported (shape chains now initializers)."""
    model = to_onnx(graph)
    try:
        nodes = _check_structure(model.graph, where)
        inferred, non_tensor = _infer_types(model, where, strict=False)
        again = _build_graph(model, nodes, inferred, where, non_tensor)
    except (ModelError, ShapeError):
        return graph
    return Graph(again.inputs, again.outputs, graph.meta)


def _non_tensor_names(model: ModelProto) -> set[str]:
    """Values of a sequence, optional or map type: registry ops never model them."""
    g = model.graph
    return {vi.name for vi in list(g.input) + list(g.value_info) + list(g.output)
            if vi.type.WhichOneof("value") not in (None, "tensor_type")}


def _copy(model: ModelProto) -> ModelProto:
    m = ModelProto()
    m.CopyFrom(model)
    return m


def _infer_types(model: ModelProto, where: str,
                 strict: bool) -> tuple[dict[str, TensorType], set[str]]:
    """Types of every value ONNX shape inference can find (data propagation on), and the names
    of values that are not tensors (sequences, optionals, maps)."""
    types: dict[str, TensorType] = {}
    try:
        if model.ByteSize() > TWO_GB:
            raise ValueError("too large for in-memory shape inference")
        inf = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=strict,
                                                data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        if strict:
            raise ShapeError(f"{where}: the input shapes do not fit the model "
                             f"({str(e).splitlines()[0][:200]})") from None
        inf = model
    except (ValueError, RuntimeError):
        inf = _infer_without_weights(model)
    g = inf.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types[vi.name] = _type_of(vi.type, vi.name)
    if any(_unrelated(t) for t in types.values()):
        types.update(_symbolic_types(model, types))
    return types, _non_tensor_names(inf)


def _unrelated(t: TensorType) -> bool:
    """Whether ONNX's inference gave t a dim it could not relate to the inputs' (`unk__3`,
    or no name at all): a Reshape to a shape computed at run time, as the torchscript exporter
    writes every attention head split."""
    return t.shape is not None and any(
        isinstance(d, str) and (d.startswith(("unk__", "?"))) for d in t.shape)


def _symbolic_types(model: ModelProto, types: dict[str, TensorType]) -> dict[str, TensorType]:
    """Better types where ONNX's inference left unrelated dims: ONNX Runtime's symbolic shape
    inference follows Shape -> Gather -> Concat -> Reshape with the symbols themselves, so
    torchscript RoBERTa's FFN input is (batch, seq, 512), not (unk__5, unk__6, 512), and
    costs size it right. Only a type of the same element type and rank, with no unrelated dim
    left, replaces one that had such a dim; nothing when that inference fails."""
    if model.ByteSize() > TWO_GB:
        return {}
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        # `SymbolicShapeInference.infer_shapes`'s own loop, without its last step: where some
        # shape stays unknown it saves the model as sym_shape_infer_temp.onnx (and its
        # weights) into the working directory and raises. What it did infer is all we take.
        sym = SymbolicShapeInference(2**31 - 1, True, False, 0)  # int_max, auto_merge, ...
        sym._preprocess(model)
        while sym.run_:
            sym._infer_impl()
        sym._update_output_from_vi()
        inf = sym.out_mp_
    except Exception:  # noqa: BLE001 - an optional refinement: keep ONNX's types
        return {}
    better: dict[str, TensorType] = {}
    for vi in list(inf.graph.value_info) + list(inf.graph.output):
        old = types.get(vi.name)
        if old is None or not _unrelated(old):
            continue
        new = _type_of(vi.type, vi.name)
        if new.elem_type == old.elem_type and new.shape is not None and \
                len(new.shape) == len(old.shape) and not _unrelated(new):
            better[vi.name] = new
    return better


def _infer_without_weights(model: ModelProto) -> ModelProto:
    """Shape inference for a >2 GB model: large initializers replaced by typed inputs."""
    m = ModelProto()
    m.CopyFrom(model)
    keep = []
    for t in m.graph.initializer:
        if t.ByteSize() > _FOLD_SIZE_LIMIT:
            m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
        else:
            keep.append(t)
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    try:
        return onnx.shape_inference.infer_shapes(m, check_type=False, data_prop=True)
    except Exception:
        return model


def _build_graph(model: ModelProto, nodes: list[NodeProto], types: dict[str, TensorType],
                 where: str, non_tensor: set[str] = frozenset()) -> Graph:
    g = model.graph
    opset = _default_opset(model) or MIN_OPSET
    values: dict[str, Value] = {}
    inits = {t.name for t in g.initializer}
    for t in g.initializer:
        values[t.name] = Value.const(numpy_helper.to_array(t), name=t.name)
    inputs = []
    for vi in g.input:
        if vi.name in inits:
            continue
        v = Value.input(vi.name, _type_of(vi.type, vi.name))
        values[vi.name] = v
        inputs.append(v)

    for node in nodes:
        _import_node(node, values, types, opset, model, non_tensor)

    outputs = []
    for vi in g.output:
        if vi.name not in values:
            raise ModelError(f"{where}: graph output {vi.name!r} is never produced")
        outputs.append((vi.name, values[vi.name]))
    meta = ModelMeta(
        ir_version=model.ir_version,
        opset_imports=tuple((o.domain, o.version) for o in model.opset_import),
        producer_name=model.producer_name, producer_version=model.producer_version,
        domain=model.domain, model_version=model.model_version, doc_string=model.doc_string,
        graph_name=g.name, graph_doc_string=g.doc_string,
        metadata_props=tuple((p.key, p.value) for p in model.metadata_props),
        input_infos={vi.name: vi.SerializeToString() for vi in g.input if vi.name not in inits},
        output_infos={vi.name: vi.SerializeToString() for vi in g.output},
        value_infos=tuple((vi.name, vi.SerializeToString()) for vi in g.value_info),
        functions=tuple(f.SerializeToString() for f in model.functions),
        initializer_order=tuple(t.name for t in g.initializer),
        source_nodes=frozenset(n.name for n in g.node if n.name),
    )
    return Graph(inputs, outputs, meta)


def _import_node(node: NodeProto, values: dict[str, Value], types: dict[str, TensorType],
                 opset: int, model: ModelProto, non_tensor: set[str] = frozenset()) -> None:
    ins = [values[n] if n else None for n in node.input]
    default_domain = node.domain in ("", "ai.onnx")
    if default_domain and node.op_type == "Constant":
        arr = _constant_node_value(node)
        if arr is not None:
            values[node.output[0]] = Value.const(arr, name=node.output[0])
            return
    if default_domain and node.op_type == "Identity" and ins and ins[0] is not None \
            and ins[0].is_const:
        values[node.output[0]] = Value.const(ins[0].array, name=node.output[0])
        return
    folded = _try_fold_at_import(node, ins, default_domain)
    if folded is not None:
        for name, arr in zip(node.output, folded):
            if name:
                values[name] = Value.const(arr, name=name)
        return

    op = BY_ONNX_TYPE.get(node.op_type) if default_domain else None
    if any(n in non_tensor for n in list(node.input) + list(node.output)):
        op = None  # e.g. Identity of a sequence: registry ops compute on tensors only
    if op is not None and op.from_onnx is not None:
        in_types = [v.type if v is not None else None for v in ins]

        def const(i: int) -> np.ndarray | None:
            return ins[i].array if i < len(ins) and ins[i] is not None and ins[i].is_const \
                else None

        try:
            mapped = op.from_onnx(node, in_types, const, opset)
            if mapped is not None:
                attrs, keep = mapped
                attrs = op.canonical_attrs(attrs)
                n = Node.make(op.name, attrs, [ins[i] for i in keep], name=node.name,
                              output_names=list(node.output))
                for o in n.outputs:
                    values[o.name] = o
                return
        except (ValueError, IndexError, TypeError, KeyError, AttributeError):
            pass  # shapes the registry cannot handle: keep the node opaque
    _import_opaque(node, ins, values, types)


def _try_fold_at_import(node: NodeProto, ins: list[Value | None],
                        default_domain: bool) -> list[np.ndarray] | None:
    """Fold Shape of a static shape, and integer computations on constants."""
    if not default_domain or node.op_type in _NEVER_FOLD or any(
            a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type == "Shape" and ins and ins[0] is not None and ins[0].type.is_static:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        shape = np.array(ins[0].type.shape, np.int64)
        return [shape[a.get("start", 0):a.get("end", None)]]
    if node.op_type == "Size" and ins and ins[0] is not None and ins[0].type.is_static:
        return [np.array(ins[0].type.numel(), np.int64)]
    present = [v for v in ins if v is not None]
    if not present or not all(v.is_const for v in present):
        return None
    if any(v.array.size > _FOLD_SIZE_LIMIT for v in present):
        return None
    # Only shape-like (integer/bool) work is folded here; float work on weights is exported
    # folded by numpy semantics, so an untouched model keeps its float nodes as they were.
    if any(np.issubdtype(v.array.dtype, np.floating) for v in present) and \
            node.op_type not in ("Shape", "Size", "ConstantOfShape", "Cast"):
        return None
    out = _fold_foreign(node, [v.array if v is not None else None for v in ins])
    if out is None or any(o.dtype.kind == "f" and node.op_type != "ConstantOfShape"
                          for o in out):
        return None
    if any(o.size > _FOLD_SIZE_LIMIT for o in out):
        return None
    return out


def _import_opaque(node: NodeProto, ins: list[Value | None], values: dict[str, Value],
                   types: dict[str, TensorType]) -> None:
    implicit: list[str] = []
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            implicit += sorted(_subgraph_free_names(a.g))
        elif a.type == AttributeProto.GRAPHS:
            for sg in a.graphs:
                implicit += sorted(_subgraph_free_names(sg))
    implicit = [n for n in dict.fromkeys(implicit) if n in values]
    attrs = {"proto": node.SerializeToString(), "op_type": node.op_type,
             "domain": node.domain, "n_explicit": len(ins), "implicit": tuple(implicit)}
    out_types = [types.get(o, TensorType(0, None)) for o in node.output]
    n = Node.make("Opaque", attrs, ins + [values[i] for i in implicit], name=node.name,
                  output_names=list(node.output), output_types=out_types)
    for o in n.outputs:
        if o.name:
            values[o.name] = o


# ---------------------------------------------------------------------------------------------
# writing


def fold_constants(graph: Graph) -> Graph:
    """Replace registry nodes whose inputs are all constants by their value (numpy).

    Nodes the imported model already had are kept (see `ModelMeta.source_nodes`); those made by
    rewrites, and weight-only helpers, are folded, so the written model never computes on
    weights that superopt introduced. A folded node reading a kept node's output gets that
    value computed for it (the kept node stays for its own readers)."""
    mapping: dict[Value, Value] = {}
    # the arrays of kept source nodes' outputs, computed only where a folded node reads one
    # (a rule bound a computed weight, say the model's own Mul of two initializers)
    computed: dict[Value, np.ndarray] = {}

    def outputs_of(node: Node, arrays: list[np.ndarray]) -> list[np.ndarray]:
        outs = get_op(node.op).compute(node.attr_dict, arrays)
        return [np.asarray(a).astype(o.type.numpy_dtype, copy=False) if o.type.elem_type
                else np.asarray(a) for o, a in zip(node.outputs, outs)]

    def array_of(v: Value) -> np.ndarray:
        v = mapping.get(v, v)
        if v.is_const:
            return v.array
        if v not in computed:
            node = v.node
            assert node is not None and v.is_weight
            arrays = [array_of(u) for u in node.inputs if u is not None]
            computed.update(zip(node.outputs, outputs_of(node, arrays)))
        return computed[v]

    keep = graph.meta.source_nodes
    for node in graph.nodes:
        if node.is_opaque or not node.outputs[0].is_weight:
            continue
        if node.name in keep and not get_op(node.op).has(WEIGHT_ONLY):
            continue
        arrays = [array_of(v) for v in node.inputs if v is not None]
        for o, arr in zip(node.outputs, outputs_of(node, arrays)):
            mapping[o] = Value.const(arr, name=o.name)
    return graph.replace_values(mapping) if mapping else graph


def to_onnx(graph: Graph) -> ModelProto:
    """Export a Graph as an ONNX ModelProto (constant-only subexpressions folded).

    Every name export makes up (a Reshape target, Split sizes, an Identity for an output) comes
    from one allocator that knows every name the graph uses, subgraphs included, so a made-up
    name never collides with the model's own (see `_ExportNames`).
    """
    graph = fold_constants(graph)
    meta = graph.meta
    opset = meta.opset("") or MIN_OPSET
    nodes = list(graph.nodes)
    consts = graph.constants()
    order = {n: i for i, n in enumerate(meta.initializer_order)}
    consts.sort(key=lambda v: order.get(v.name, len(order)))
    opaque: dict[Node, NodeProto] = {}
    for node in nodes:
        if node.is_opaque:
            p = NodeProto()
            p.ParseFromString(node.attr("proto"))
            opaque[node] = p
    names = _ExportNames(graph, nodes, consts, opaque)
    name_of = names.value

    node_protos: list[NodeProto] = []
    extra_inits: list[TensorProto] = []
    for node in nodes:
        outs = [name_of(o) for o in node.outputs]
        if node.is_opaque:
            p = opaque[node]
            p.name = names.node(node)
            n_explicit = node.attr("n_explicit")
            del p.input[:]
            p.input.extend(name_of(v) for v in node.inputs[:n_explicit])
            del p.output[:]
            p.output.extend(outs)
            # A subgraph reads outer values by name: where the value now has another name,
            # the subgraph reads the new one (the allocator keeps names defined inside
            # subgraphs away from outer values, so the new name is never shadowed there).
            renamed = {old: name_of(v) for old, v in zip(node.attr("implicit"),
                                                         node.inputs[n_explicit:])
                       if name_of(v) != old}
            if renamed:
                for a in p.attribute:
                    for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                        _rename_free_reads(sg, renamed)
            node_protos.append(p)
            continue
        op = get_op(node.op)
        if op.has(WEIGHT_ONLY) or op.to_onnx is None:
            raise ModelError(f"cannot export {node.op} node {node.name}: it computes on "
                             "runtime tensors, but it is a weight-only helper")
        protos, inits = names.emit(op, node, [name_of(v) for v in node.inputs], outs, opset)
        node_protos.extend(protos)
        extra_inits.extend(inits)

    initializers = [numpy_helper.from_array(np.asarray(v.array), name_of(v)) for v in consts]
    initializers += extra_inits

    # Graph outputs that share a value with another output, or that are graph inputs, get an
    # Identity node (the allocator reserved their names).
    done: set[str] = set()
    for name, v in graph.outputs:
        if name_of(v) != name and name not in done:
            done.add(name)
            node_protos.append(helper.make_node("Identity", [name_of(v)], [name],
                                                name=names.fresh(f"{name}_output")))

    g = helper.make_graph(node_protos, meta.graph_name,
                          [_input_info(v, meta) for v in graph.inputs],
                          [_output_info(name, v, meta) for name, v in graph.outputs],
                          initializers, doc_string=meta.graph_doc_string or None)
    # Value infos of the original file, only for values that still carry their own name (a
    # renamed value must not pick up the type of the value whose name it took).
    live = {o.name for n in nodes for o in n.outputs if o.name and name_of(o) == o.name}
    for name, blob in meta.value_infos:
        if name in live:
            vi = onnx.ValueInfoProto()
            vi.ParseFromString(blob)
            g.value_info.append(vi)
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid(d, v) for d, v in meta.opset_imports])
    model.producer_name = meta.producer_name
    model.producer_version = meta.producer_version
    model.domain = meta.domain
    model.model_version = meta.model_version
    model.doc_string = meta.doc_string
    model.ir_version = meta.ir_version
    for k, v in meta.metadata_props:
        model.metadata_props.add(key=k, value=v)
    for blob in meta.functions:
        f = onnx.FunctionProto()
        f.ParseFromString(blob)
        model.functions.append(f)
    return model


# Stand-ins for a node's own input and output names while an op's to_onnx runs: what it returns
# is then told apart from the names it made up, even when a made-up name equals a real one.
_IN_MARK, _OUT_MARK = "\x00superopt-in:", "\x00superopt-out:"


class _ExportNames:
    """The one place export takes names from.

    Value names: graph inputs and graph output names are fixed; every other value keeps its own
    name unless another value already holds it (two constants named alike after a rewrite, an
    output name given to a new value while the old one is still used) or a subgraph defines it
    (ONNX names are unique across nested scopes); then it gets `name_1`, `name_2`, ...
    Node names: kept, later duplicates renamed. Names an op's `to_onnx` makes up (`r_shape`,
    `s_split`, extra nodes) and the names of the Identity nodes export adds are fresh: they
    avoid every name used anywhere in the graph, inputs, outputs, initializers, node outputs,
    node names and all names in the subgraphs of opaque If/Loop/Scan nodes.
    """

    def __init__(self, graph: Graph, nodes: list[Node], consts: list[Value],
                 opaque: Mapping[Node, NodeProto]) -> None:
        internal: set[str] = set()  # names defined inside subgraphs
        used: set[str] = {name for name, _ in graph.outputs}
        for v in list(graph.inputs) + consts:
            used.add(v.name)
        for n in nodes:
            used.add(n.name)
            used.update(o.name for o in n.outputs)
        for p in opaque.values():
            used.add(p.name)
            for a in p.attribute:
                for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    _graph_names(sg, used, internal)
        used.discard("")
        self.fresh = _Fresh(used)
        self._values: dict[Value, str] = {}
        self._nodes: dict[Node, str] = {}
        owner: dict[str, object] = {}
        alias = object()  # an output name that an Identity node will define

        def claim(v: Value, name: str) -> bool:
            if not name or name in owner or name in internal:
                return False
            owner[name] = v
            self._values[v] = name
            return True

        for v in graph.inputs:
            owner[v.name] = v
            self._values[v] = v.name
        for name, v in graph.outputs:
            if v in self._values or v.kind == "input" or not claim(v, name):
                owner.setdefault(name, alias)
        for n in nodes:  # a value a subgraph reads under its own name keeps that name
            if n.is_opaque:
                for old, v in zip(n.attr("implicit"), n.inputs[n.attr("n_explicit"):]):
                    if v not in self._values and v.name == old:
                        claim(v, old)
        for v in consts + [o for n in nodes for o in n.outputs]:
            if v in self._values or not v.name:
                continue
            if not claim(v, v.name):
                name = self.fresh(v.name)
                owner[name] = v
                self._values[v] = name
        seen: set[str] = set()
        for n in nodes:
            name = n.name
            if name and name in seen:
                name = self.fresh(name)
            seen.add(name)
            self._nodes[n] = name

    def value(self, v: Value | None) -> str:
        if v is None:
            return ""
        return self._values.get(v, v.name)

    def node(self, n: Node) -> str:
        return self._nodes.get(n, n.name)

    def emit(self, op, node: Node, ins: list[str], outs: list[str],
             opset: int) -> tuple[list[NodeProto], list[TensorProto]]:
        """The op's to_onnx, with every name it made up replaced by a fresh one."""
        real = {f"{_IN_MARK}{i}": n for i, n in enumerate(ins) if n}
        real.update({f"{_OUT_MARK}{i}": n for i, n in enumerate(outs) if n})
        marked_in = [f"{_IN_MARK}{i}" if n else "" for i, n in enumerate(ins)]
        marked_out = [f"{_OUT_MARK}{i}" if n else "" for i, n in enumerate(outs)]
        own = self.node(node)
        protos, inits = op.to_onnx(node.attr_dict, marked_in, marked_out, own, opset)
        made: dict[str, str] = {}

        def fix(name: str) -> str:
            if not name:
                return name
            if name in real:
                return real[name]
            if name not in made:
                made[name] = self.fresh(name)
            return made[name]

        protos, inits = list(protos), list(inits)
        for t in inits:
            t.name = fix(t.name)
        seen_own = False
        for p in protos:
            for i, x in enumerate(p.input):
                p.input[i] = fix(x)
            for i, x in enumerate(p.output):
                p.output[i] = fix(x)
            if p.name == own and not seen_own:
                seen_own = True
            elif p.name:
                p.name = self.fresh(p.name)
        return protos, inits


def _graph_names(g: GraphProto, used: set[str], defined: set[str]) -> None:
    """Add every name in a subgraph (nested ones too) to `used`, and the value names it
    defines (inputs, initializers, node outputs) to `defined`."""
    for v in g.input:
        used.add(v.name)
        defined.add(v.name)
    for t in g.initializer:
        used.add(t.name)
        defined.add(t.name)
    for s in g.sparse_initializer:
        used.add(s.values.name)
        defined.add(s.values.name)
    for v in list(g.output) + list(g.value_info):
        used.add(v.name)
    for n in g.node:
        used.add(n.name)
        used.update(n.input)
        used.update(n.output)
        defined.update(o for o in n.output if o)
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _graph_names(sg, used, defined)


def _rename_free_reads(g: GraphProto, renamed: Mapping[str, str]) -> None:
    """In a subgraph, read `renamed[old]` wherever it reads the outer-scope value `old`."""
    local = {v.name for v in g.input} | {t.name for t in g.initializer} | \
        {s.values.name for s in g.sparse_initializer}
    m = {k: v for k, v in renamed.items() if k not in local}
    for n in g.node:
        if not m:
            return
        for i, x in enumerate(n.input):
            if x in m:
                n.input[i] = m[x]
        for a in n.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _rename_free_reads(sg, m)
        for o in n.output:
            m.pop(o, None)
    for o in g.output:  # a branch may return an outer value as it is
        if o.name in m:
            o.name = m[o.name]


def _input_info(v: Value, meta: ModelMeta) -> onnx.ValueInfoProto:
    blob = meta.input_infos.get(v.name)
    if blob is not None:
        vi = onnx.ValueInfoProto()
        vi.ParseFromString(blob)
        return vi
    return _make_info(v.name, v.type)


def _output_info(name: str, v: Value, meta: ModelMeta) -> onnx.ValueInfoProto:
    blob = meta.output_infos.get(name)
    if blob is not None:
        vi = onnx.ValueInfoProto()
        vi.ParseFromString(blob)
        return vi
    return _make_info(name, v.type)


def _make_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    shape = None if t.shape is None else [d if isinstance(d, int) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, t.elem_type, shape)


def save(graph: Graph | ModelProto, path: str | os.PathLike, *,
         external_data: bool | None = None) -> None:
    """Write a Graph (or ModelProto) atomically; external data as `<path>.data` past 2 GB.

    The model is written to a temporary file in the target folder and renamed into place, so an
    interrupted run never leaves a half-written model.
    """
    model = to_onnx(graph) if isinstance(graph, Graph) else graph
    write_model(model, path, external_data=external_data)


def write_model(model: ModelProto, path: str | os.PathLike, *,
                external_data: bool | None = None) -> None:
    """Atomic write of a ModelProto (see `save`)."""
    path = check_output_path(path)
    if external_data is None:
        external_data = model.ByteSize() > TWO_GB if _cheap_size_ok(model) else True
    if not external_data:
        atomic_write(path, model.SerializeToString())
        return
    # The model names its data file: the data goes to a temp name first, the model is written
    # pointing at the final name, then the data is moved into place and the model renamed.
    data_name = f"{path.name}.data"
    tmp_data = path.parent / f".{data_name}.tmp"

    def write(tmp: str) -> None:
        m = _copy(model)
        onnx.external_data_helper.convert_model_to_external_data(
            m, all_tensors_to_one_file=True, location=tmp_data.name, size_threshold=1024)
        onnx.save_model(m, tmp)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = data_name
        onnx.save_model(m, tmp, save_as_external_data=False)
        os.replace(tmp_data, path.parent / data_name)

    try:
        atomic_write(path, write)
    finally:
        if tmp_data.exists():
            tmp_data.unlink()


def _cheap_size_ok(model: ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:
        return False


def value_names(graph: Graph) -> Iterable[str]:
    for v in graph.inputs:
        yield v.name
    for n in graph.nodes:
        for o in n.outputs:
            yield o.name


def model_size_bytes(model: ModelProto) -> int:
    return model.ByteSize()

