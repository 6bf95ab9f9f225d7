"""Generation that follows the models: a universe built from the op configurations of ONNX files.

`superopt generate --from MODEL.onnx ...` enumerates over what the given models use instead of
TASO's fixed set: each registry op node contributes its *configuration* (op, attributes, the
ranks of its runtime inputs, which inputs are weights, the element type). From those:

- inputs: two small runtime tensors per runtime rank seen (ranks 2-3; one 4-D tensor, two when
  an element-wise op adds two 4-D activations, as residual blocks do), 2-D weights when a
  MatMul/Gemm reads one, a kernel per Conv kernel size and grouping seen (and a Conv bias when
  a Conv has one), a scalar and a bias vector when element-wise ops read such constants, and
  BatchNormalization's parameters;
- instances: the registry's instances of every op seen (all presets, so rank-3 MatMuls come
  with the `matmul3d` ones), Conv instances at the strides, pads and groups the models use
  (the registry's own Conv instance only knows stride 1 and "same" pads), and instances of the
  models' unary ops that the registry gives no enumeration instance (Sigmoid, Clip, Erf, ...)
  with the attributes the models use.

Configurations are reported (`configurations`), so a user sees what the database will cover.
Ops the registry does not model are skipped (they stay opaque in the optimizer, and no rule
could match them anyway).

Example:
    >>> universe, configs, facts = model_universe(["resnet50.onnx"])  # doctest: +SKIP
    >>> sorted(universe.settings["ops"])                               # doctest: +SKIP
    ['Add', 'Conv', 'Gemm', 'MaxPool', 'Relu']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superopt.core.errors import UsageError
from superopt.core.generator_spec import Arg, OpInstance, SymShape
from superopt.core.ops import all_ops, get_op
from superopt.core.registry import WEIGHT_ONLY
from superopt.generator.opset import InputSpec, Universe

#: ops the enumeration handles specially (data movement and weight helpers come with the
#: registry's instances, not from the models)
_ALWAYS = ("Concat", "Split")


@dataclass(frozen=True)
class OpConfig:
    """One op configuration of a model: op, non-default attributes, runtime input ranks (None
    for a weight input) and element type."""

    op: str
    attrs: tuple[tuple[str, Any], ...]
    ranks: tuple[int | None, ...]
    elem_type: int
    kernel: tuple[int, int] | None = None  # a Conv's kernel size

    def text(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in self.attrs
                          + ((("kernel", self.kernel),) if self.kernel else ()))
        ins = ", ".join("weight" if r is None else f"rank {r}" for r in self.ranks)
        return f"{self.op}[{attrs}]({ins})" if attrs else f"{self.op}({ins})"


def _hashable(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_hashable(x) for x in v)
    return v


def model_configs(paths: Sequence[str | Path]) -> tuple[list[OpConfig], dict[str, Any]]:
    """The registry op configurations of the models (each once, in first-seen order) and the
    facts the universe needs about their constants: kernel shapes, biases, scalars."""
    from superopt.core.onnx_io import load

    configs: dict[OpConfig, None] = {}
    facts: dict[str, Any] = {"kernels": set(), "conv_bias": False, "scalar": False,
                             "vector": False, "add4": False, "self_concat": False}
    for path in paths:
        graph = load(path)
        for node in graph.nodes:
            if node.is_opaque:
                continue
            op = get_op(node.op)
            if op.has(WEIGHT_ONLY):
                continue
            attrs = tuple(sorted((k, _hashable(v)) for k, v in node.attr_dict.items()
                                 if k not in op.defaults or op.defaults[k] != v))
            ins = [v for v in node.inputs if v is not None]
            ranks = tuple(None if v.is_weight else v.type.rank for v in ins)
            if any(r is not None and r > 4 for r in ranks):
                continue
            kernel = None
            if node.op == "Conv" and len(ins) >= 2 and ins[1].type.shape is not None:
                w = ins[1].type.shape
                kernel = (int(w[2]), int(w[3]))
                facts["kernels"].add(kernel + (dict(attrs).get("group", 1) != 1,))
                facts["conv_bias"] |= len(ins) > 2
            configs[OpConfig(node.op, attrs, ranks, ins[0].type.elem_type, kernel)] = None
            for v, r in zip(ins, ranks):
                if r is None and node.op in ("Add", "Sub", "Mul", "Div"):
                    facts["scalar"] |= v.type.rank == 0
                    facts["vector"] |= v.type.rank == 1
            if node.op in ("Add", "Mul", "Sub") and ranks.count(4) == 2:
                facts["add4"] = True
            if node.op == "Concat" and len(set(ins)) < len(ins):
                facts["self_concat"] = True
    return list(configs), facts


# ---------------------------------------------------------------------------------------------
# the universe


def _inputs(configs: list[OpConfig], facts: dict[str, Any]) -> list[InputSpec]:
    runtime_ranks = {r for c in configs for r in c.ranks if r is not None}
    ops = {c.op for c in configs}
    out: list[InputSpec] = []
    if 2 in runtime_ranks:
        out += [InputSpec("x", (2, 4), "tensor", (3, 8)), InputSpec("y", (2, 4), "tensor", (3, 8))]
    if 3 in runtime_ranks:
        out += [InputSpec("z", (2, 2, 4), "tensor", (1, 3, 8)),
                InputSpec("v", (2, 2, 4), "tensor", (1, 3, 8))]
    if 4 in runtime_ranks:
        out.append(InputSpec("t", (2, 4, 5, 5), "tensor", (1, 8, 7, 7)))
        if facts["add4"]:
            out.append(InputSpec("u", (2, 4, 5, 5), "tensor", (1, 8, 7, 7)))
    if ops & {"MatMul", "Gemm"}:
        out += [InputSpec("a", (4, 4), "weight", (8, 8)), InputSpec("b", (4, 4), "weight", (8, 8))]
    # two kernels of each size and grouping, so that Convs reading one tensor can merge
    names = {(3, 3, False): ["k", "j"], (3, 3, True): ["kg", "jg"]}
    for kh, kw, grouped in sorted(facts["kernels"]):
        tag = f"{'g' if grouped else ''}{kh}{kw}"
        for name in names.get((kh, kw, grouped), [f"k{tag}", f"j{tag}"]):
            shape = (4, 1 if grouped else 4, kh, kw)
            alt = (8, 2 if grouped else 8, kh, kw)
            out.append(InputSpec(name, shape, "weight", alt))
    if facts["conv_bias"]:  # two, so that merged Convs concatenate two biases
        out += [InputSpec("cb", (4,), "weight", (8,)), InputSpec("db", (4,), "weight", (8,))]
    if facts["scalar"]:
        out.append(InputSpec("c", (), "weight", ()))
    if facts["vector"]:
        out.append(InputSpec("bv", (4,), "weight", (8,)))
    if "BatchNormalization" in ops:
        out += [InputSpec(f"bn_{p}", (4,), "weight", (8,), positive=(p == "var"), role="param")
                for p in ("scale", "bias", "mean", "var")]
    return out


@dataclass(frozen=True)
class _ConvApplies:
    """A Conv at one configuration of the models: applies to a kernel whose size fits its pads
    and whose grouping matches (grouped: the kernel's input channels are the input's / g).
    A class, not a closure, so that the universe pickles to worker processes."""

    attrs: tuple[tuple[str, Any], ...]
    grouped: bool
    bias: bool
    kernel: tuple[int, int] | None

    def __call__(self, args: Sequence[Arg]) -> dict | None:
        x, w = args[0].shape, args[1].shape
        if not args[1].weight or args[0].weight or len(x) != 4 or len(w) != 4:
            return None
        if self.kernel is not None and tuple(w[2:]) != self.kernel:
            return None  # the models use these pads and strides with this kernel size
        g = x[1] // w[1] if w[1] and x[1] % w[1] == 0 else 0
        if not g or (g != 1) != self.grouped or w[0] % g:
            return None
        if self.bias and (len(args) < 3 or args[2].shape != (w[0],)):
            return None
        attrs = dict(self.attrs)
        pads = attrs.get("pads", (0, 0, 0, 0))
        dil = attrs.get("dilations", (1, 1))
        for k in (0, 1):
            if x[2 + k] + pads[k] + pads[k + 2] < (w[2 + k] - 1) * dil[k] + 1:
                return None
        out = {k: v for k, v in attrs.items() if k in ("pads", "strides", "dilations")}
        if g != 1:
            out["group"] = g  # depthwise/grouped: the group count this universe's shapes give
        return out


def _conv_sym(args: Sequence[Arg], a: dict) -> list[SymShape]:
    # spatial sizes only matter to a Split along them, which the enumeration never makes
    x, w = args[0].sym, args[1].sym
    return [(x[0], w[0], x[2], x[3])]


def _conv_instance(attrs: dict[str, Any], bias: bool,
                   kernel: tuple[int, int] | None) -> OpInstance:
    kept = tuple(sorted((k, v) for k, v in attrs.items()
                        if k in ("dilations", "pads", "strides")))
    label = "Conv" + ("+b" if bias else "") + f"[{kernel}]" + \
        "".join(f"[{k}={v}]" for k, v in kept) + \
        ("[grouped]" if int(attrs.get("group", 1)) != 1 else "")
    return OpInstance(label, "Conv", 3 if bias else 2,
                      _ConvApplies(kept, int(attrs.get("group", 1)) != 1, bias, kernel),
                      _conv_sym,
                      ranks=((4,), (4,), (1,)) if bias else ((4,), (4,)), presets=("from",))


@dataclass(frozen=True)
class _UnaryApplies:
    attrs: tuple[tuple[str, Any], ...]
    rank: int

    def __call__(self, args: Sequence[Arg]) -> dict | None:
        return dict(self.attrs) if len(args[0].shape) == self.rank else None


def _unary_instance(op: str, attrs: dict[str, Any], rank: int) -> OpInstance:
    items = tuple(sorted(attrs.items()))
    label = op + "".join(f"[{k}={v}]" for k, v in items)
    return OpInstance(label, op, 1, _UnaryApplies(items, rank), ranks=((rank,),),
                      presets=("from",))


def _concat_vectors(args: Sequence[Arg]) -> dict | None:
    """Two 1-D weights end to end: the biases of merged Convs (the registry's Concat
    instances join 2-D and 4-D tensors only)."""
    return {"axis": 0} if all(a.weight and len(a.shape) == 1 for a in args) else None


def _concat_vectors_sym(args: Sequence[Arg], attrs: dict) -> list[SymShape]:
    return [(args[0].sym[0] + args[1].sym[0],)]


def _elementwise(op: str, attrs: dict[str, Any], rank: int) -> bool:
    """Whether `op` with these attributes keeps its input's shape at the universe's shapes (an
    activation such as Sigmoid, Clip or Gelu, or a Softmax): a Reshape, Slice or reduction
    written for the model's sizes does not apply to the enumeration's small tensors."""
    from superopt.core.types import TensorType

    d = get_op(op)
    if d.arity != (1, 1):
        return False
    small = {2: (2, 4), 3: (2, 2, 4), 4: (2, 4, 5, 5)}[rank]
    for shape in (small, tuple(300 + d for d in small)):  # a Slice keeps small shapes only
        try:
            out = d.infer({**d.defaults, **attrs}, [TensorType(1, shape)])
        except Exception:  # noqa: BLE001 - any refusal means: not at these shapes
            return False
        if len(out) != 1 or tuple(out[0].shape) != shape:
            return False
    return True


def model_universe(paths: Sequence[str | Path], ops: Sequence[str] | None = None,
                   max_outputs: int = 2) -> tuple[Universe, list[OpConfig], dict[str, Any]]:
    """The universe of the models' op configurations (optionally restricted to `ops`), the
    configurations, and the facts `keep_for_models` needs.

    Raises UsageError when the models hold no op the generator can enumerate."""
    configs, facts = model_configs(paths)
    if ops is not None:
        wanted = set(ops) | set(_ALWAYS)
        configs = [c for c in configs if c.op in wanted]
    seen_ops = {c.op for c in configs}
    instances: list[OpInstance] = []
    labels: set[str] = set()

    def add(inst: OpInstance) -> None:
        if inst.label + repr(inst.ranks) not in labels:
            labels.add(inst.label + repr(inst.ranks))
            instances.append(inst)

    for op in all_ops():
        if op.name in seen_ops or (op.name in _ALWAYS and seen_ops):
            for inst in op.generator:
                if op.name == "Conv":
                    continue  # the models' own configurations below
                add(inst)
        if op.has(WEIGHT_ONLY) and op.name in ("EnlargeKernel", "BatchNormFoldKernel",
                                               "BatchNormFoldBias"):
            if ("Conv" in seen_ops and op.name == "EnlargeKernel") or \
                    ("BatchNormalization" in seen_ops and op.name != "EnlargeKernel"):
                for inst in op.generator:
                    add(inst)
    if facts["conv_bias"] and "Conv" in seen_ops:
        add(OpInstance("Concat.vectors", "Concat", 2, _concat_vectors, _concat_vectors_sym,
                       on_weights=True, ranks=((1,), (1,)), presets=("from",)))
    with_instances = {i.op for i in instances}
    for c in configs:
        a = dict(c.attrs)
        if c.op == "Conv":
            add(_conv_instance(a, len(c.ranks) > 2, c.kernel))
        elif (c.op not in with_instances and len(c.ranks) == 1 and c.ranks[0] is not None
              and 2 <= c.ranks[0] <= 4 and _elementwise(c.op, a, c.ranks[0])):
            add(_unary_instance(c.op, a, c.ranks[0]))
    if not instances:
        raise UsageError("the models hold no op the generator can enumerate "
                         "(ops it knows: " + ", ".join(sorted({i.op for op in all_ops()
                                                                  for i in op.generator})) + ")")
    inputs = _inputs(configs, facts)
    settings = {"ops": sorted({i.op for i in instances}),
                "from": [Path(p).name for p in paths],
                "configurations": len(configs)}
    return Universe(inputs, instances, max_outputs, settings), configs, facts
