"""What ONNX Runtime fuses or removes by itself at ORT_ENABLE_ALL, so a cost model charges the
graph ORT really runs.

A rewrite that performs a fusion ORT already performs at session creation wins nothing end to
end: shufflenet's 56 BN folds measured 1.00-1.03x on the CPU while a cost model that charged
every BatchNormalization predicted -23% (benchmarks/results/cpu-families.md). `ort_fusions`
finds, in a superopt `Graph`, the groups ORT's graph transformers collapse, and says for each
node whether its cost is *absorbed* (it costs nothing on top of its group) or *stood in for*
(its group costs what the fused node costs). The measured cost model (`measured.py`) sums the
nodes that remain, each charged as its stand-in.

What is modelled (ORT 1.2x/1.3x, `onnxruntime/core/optimizer/`; level 1 = basic, 2 = extended,
both on at ENABLE_ALL; each entry checked on a small model in tests/test_ort_fusions.py):

(ORT transformer, level 1 = basic or 2 = extended: group -> what the group is charged)

- CommonSubexpressionElimination (1): nodes computing the same op with the same attributes on
  the same inputs run once (`common_subexpressions`, applied before everything else: NASNet's
  duplicate Relus and pools). On every provider.
- EliminateIdentity, NoopElimination (1): Identity; x+0, x-0, x*1, x/1 with a one-element
  constant 0 or 1 that does not broadcast x, x computed by a node (not a graph input) ->
  nothing (ORT 1.31 keeps a per-channel vector of zeros or ones).
- TransposeOptimizer (1): a Transpose of a Transpose (its sole user) -> nothing when the perms
  cancel, else one Transpose.
- ConvBNFusion, ConvMulFusion, ConvAddFusion (1): a Conv with a constant kernel, then
  BatchNormalization / a per-channel constant Mul / Add, each the sole user -> the Conv with a
  bias.
- ConvActivationFusion, ConvAddActivationFusion (2), MatMulAddFusion, GemmActivationFusion (2):
  Conv then Relu/Sigmoid/Tanh/Clip/HardSigmoid, Conv+Add(+Relu), MatMul+Add (Gemm), Gemm+Relu
  -> the producer (the ops' `fuses_into` / `fuses_after` hints).
- MatMulScaleFusion (2): a scalar constant Mul/Div on a MatMul's input or output -> the MatMul
  (FusedMatMul's alpha).
- MatmulTransposeFusion (2): a Transpose swapping the last two axes into a MatMul -> the MatMul
  (FusedMatMul's trans flags).
- GeluFusion, BiasGeluFusion (2): x/sqrt2 -> Erf -> +1 -> *x -> *0.5 (either Mul order), and a
  bias Add before a Gelu -> one element-wise pass (the Erf).
- QuickGeluFusion (2): x * Sigmoid(x) (SiLU), or x * Sigmoid(alpha * x) -> one element-wise
  pass (the Sigmoid).
- LayerNormFusion, SimplifiedLayerNormFusion (2): ReduceMean-Sub-Pow-ReduceMean-Add-Sqrt-Div
  (-Mul-Add), and RMSNorm's Pow-ReduceMean-Add-Sqrt-Div(-Mul) -> one LayerNormalization over
  the chain's input (ORT 1.31 leaves the Sqrt-Reciprocal-Mul form of RMSNorm unfused).
- SkipLayerNormFusion (2): an Add of two activations whose sole user is a LayerNormalization
  -> the LayerNormalization.
- ReshapeFusion (1): Reshape/Flatten/Squeeze/Unsqueeze whose sole user is a Reshape -> nothing.

Not modelled: the NCHWc layout transformer (level 3: it changes every Conv alike, so it ranks
candidates the same), attention fusions (the zoo's BERT does not match ORT's pattern), and
anything on other execution providers; on CUDA only the hint-based fusions apply.
A node that is a graph output, or whose value has other users, never fuses.

Example:
    >>> f = ort_fusions(graph, "cpu")                    # doctest: +SKIP
    >>> f.absorbed[bn_node]
    'ConvBNFusion'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from superopt.core.ir import Graph, Node, Value
from superopt.core.ops import ELEMENTWISE, get_op


@dataclass
class Fusions:
    """`absorbed`: node -> the ORT transformer that removes it or runs it inside another
    node's kernel; `stand_in`: node -> the node whose cost stands for its whole fused group."""

    absorbed: dict[Node, str] = field(default_factory=dict)
    stand_in: dict[Node, Node] = field(default_factory=dict)

    def charged(self, node: Node) -> Node | None:
        """The node to cost in place of `node` (None: it costs nothing)."""
        if node in self.absorbed:
            return None
        return self.stand_in.get(node, node)


class _Ctx:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.users = graph.users
        self.outputs = set(graph.output_values)
        self.f = Fusions()
        self.fold_root: dict[Node, Node] = {}  # BN / Mul / Add folded into a Conv -> the Conv

    def sole_user(self, v: Value | None) -> Node | None:
        """The one node reading `v` (once), if `v` is not a graph output; else None."""
        if v is None or v in self.outputs:
            return None
        us = self.users.get(v, ())
        return us[0][0] if len(us) == 1 and not us[0][0].is_opaque else None

    def is_const(self, v: Value | None) -> bool:
        return v is not None and v.is_weight  # known before the run: ORT folds it

    def free(self, node: Node) -> bool:
        return node not in self.f.absorbed

    def absorb(self, nodes: Iterable[Node], why: str) -> None:
        for n in nodes:
            self.f.absorbed.setdefault(n, why)

    def producer(self, v: Value | None, *ops: str) -> Node | None:
        if v is None or v.node is None or v.node.is_opaque or not self.free(v.node):
            return None
        return v.node if not ops or v.node.op in ops else None


def _array(v: Value | None) -> np.ndarray | None:
    return v.array if v is not None and v.is_const and v.array is not None else None


def _numel(v: Value) -> int | None:
    shape = v.type.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(np.prod(shape, dtype=np.int64))


def _scalar(v: Value | None, ctx: _Ctx) -> bool:
    return v is not None and ctx.is_const(v) and _numel(v) == 1


def _operands(node: Node, ctx: _Ctx) -> tuple[int, Value, Value] | None:
    """(index of the constant operand, runtime operand, constant operand) of a binary op with
    exactly one constant input."""
    if len(node.inputs) != 2 or any(v is None for v in node.inputs):
        return None
    a, b = node.inputs
    if ctx.is_const(b) and not ctx.is_const(a):
        return 1, a, b
    if ctx.is_const(a) and not ctx.is_const(b):
        return 0, b, a
    return None


def ort_fusions(graph: Graph, device: str = "cpu") -> Fusions:
    """The groups ORT fuses in `graph` at ORT_ENABLE_ALL on `device` (see the module doc)."""
    ctx = _Ctx(graph)
    if device == "cpu":
        _noops(ctx)
        _transpose_pairs(ctx)
        _conv_folds(ctx)
        _layer_norms(ctx)
        _gelus(ctx)
        _quick_gelus(ctx)
        _skip_layer_norms(ctx)
    _hinted(ctx)  # the ops' own fusion hints: activations and bias adds into their producer
    if device == "cpu":
        _matmul_scale_and_transpose(ctx)
        _reshape_chains(ctx)
    return ctx.f


def common_subexpressions(graph: Graph) -> Graph:
    """`graph` with duplicate computations merged, as ORT's CommonSubexpressionElimination
    does: a node with the op, attributes and (merged) inputs of an earlier one is dropped and
    its users read the earlier node's outputs (nodes downstream are rebuilt, keeping their
    names). The same graph when there is nothing to merge."""
    seen: dict[tuple, Node] = {}
    memo: dict[Value, Value] = {}  # value of `graph` -> value of the merged graph
    changed = False
    for node in graph.nodes:
        ins = tuple(None if v is None else memo.get(v, v) for v in node.inputs)
        key = (node.op, node.attrs, ins)
        first = None if node.is_opaque else seen.get(key)
        if first is not None:
            memo.update(zip(node.outputs, first.outputs))
            changed = True
            continue
        new = node
        if ins != node.inputs:
            new = Node.make(node.op, node.attrs, ins, name=node.name,
                            output_names=[o.name for o in node.outputs],
                            output_types=[o.type for o in node.outputs] if node.is_opaque
                            else None)
            memo.update(zip(node.outputs, new.outputs))
        if not node.is_opaque:
            seen[key] = new
    if not changed:
        return graph
    return Graph(graph.inputs, [(name, memo.get(v, v)) for name, v in graph.outputs],
                 graph.meta)


def fused_nodes(graph: Graph, device: str = "cpu") -> set[Node]:
    """The nodes that cost nothing on top of their fused group."""
    return set(ort_fusions(graph, device).absorbed)


# ---------------------------------------------------------------------------------------------
# level 1


def _noops(ctx: _Ctx) -> None:
    for node in ctx.graph.nodes:
        if node.is_opaque:
            continue
        if node.op == "Identity" and node.outputs[0] not in ctx.outputs:
            ctx.absorb([node], "EliminateIdentity")
            continue
        if node.op not in ("Add", "Sub", "Mul", "Div"):
            continue
        ops = _operands(node, ctx)
        if ops is None:
            continue
        k, x, c = ops
        arr = _array(c)
        neutral = 0.0 if node.op in ("Add", "Sub") else 1.0
        if arr is None or arr.size != 1 or not np.all(arr == neutral) or \
                node.outputs[0] in ctx.outputs:
            continue
        if node.op in ("Sub", "Div") and k != 1:
            continue
        if x.type.shape != node.outputs[0].type.shape:
            continue  # the constant broadcasts x to a larger shape: not a no-op
        if x.node is None:
            continue  # ORT keeps a no-op on a graph input (checked with ORT 1.31)
        ctx.absorb([node], "NoopElimination")


def _perm(node: Node) -> tuple[int, ...]:
    return tuple(int(p) for p in node.attr("perm"))


def _transpose_pairs(ctx: _Ctx) -> None:
    for t2 in ctx.graph.nodes:
        if t2.op != "Transpose" or not ctx.free(t2):
            continue
        t1 = ctx.producer(t2.inputs[0], "Transpose")
        if t1 is None or ctx.sole_user(t1.outputs[0]) is not t2:
            continue
        p1, p2 = _perm(t1), _perm(t2)
        composed = tuple(p1[i] for i in p2)
        if composed == tuple(range(len(composed))) and t2.outputs[0] not in ctx.outputs:
            ctx.absorb([t1, t2], "TransposeOptimizer (cancelled)")
        else:
            ctx.absorb([t1], "TransposeOptimizer (merged)")


def _per_channel(c: Value, channels: int, rank: int) -> bool:
    shape = c.type.shape
    if shape is None or not all(isinstance(d, int) for d in shape) or len(shape) > rank:
        return False
    if int(np.prod(shape, dtype=np.int64)) == 1:
        return True
    return len(shape) >= 3 and shape[-3] == channels and all(
        d == 1 for i, d in enumerate(shape) if i != len(shape) - 3)


def _conv_folds(ctx: _Ctx) -> None:
    for conv in ctx.graph.nodes:
        if conv.op != "Conv" or not ctx.is_const(conv.inputs[1]) or (
                len(conv.inputs) > 2 and conv.inputs[2] is not None
                and not ctx.is_const(conv.inputs[2])):
            continue
        out = conv.outputs[0]
        shape = out.type.shape
        if shape is None or not isinstance(shape[1], int):
            continue
        channels, rank = shape[1], len(shape)
        v, folded = out, []
        while True:
            u = ctx.sole_user(v)
            if u is None or not ctx.free(u):
                break
            if u.op == "BatchNormalization" and u.inputs[0] is v and all(
                    ctx.is_const(p) for p in u.inputs[1:5]):
                ctx.absorb([u], "ConvBNFusion")
            elif u.op in ("Mul", "Add"):
                ops = _operands(u, ctx)
                if ops is None or ops[1] is not v or not _per_channel(ops[2], channels, rank):
                    break
                ctx.absorb([u], "ConvMulFusion" if u.op == "Mul" else "ConvAddFusion")
            else:
                break
            folded.append(u)
            v = u.outputs[0]
        if folded:  # the folded group runs as one Conv with a bias
            ctx.f.stand_in[conv] = _with_bias(conv, channels)
            for n in folded:
                ctx.fold_root[n] = conv


def _with_bias(conv: Node, channels: int) -> Node:
    """`conv` with a constant bias (what ORT runs once it has folded a BN or Mul/Add into it)."""
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        return conv
    bias = Value.const(np.zeros(channels, np.float32), f"{conv.name}.folded_bias")
    return Node.make("Conv", conv.attrs, [conv.inputs[0], conv.inputs[1], bias],
                     name=f"{conv.name}.folded")


# ---------------------------------------------------------------------------------------------
# level 2


def _hinted(ctx: _Ctx) -> None:
    """Element-wise ops run inside their producer's kernel, by the ops' `fuses_into` and
    `fuses_after` hints (Conv+Relu, Conv+Add+Relu, MatMul+Add -> Gemm, Gemm+Relu). A producer
    already folded into a Conv (BN, per-channel Mul/Add) counts as that Conv."""
    fold_root = ctx.fold_root
    hint_root: dict[Node, Node] = {}  # node fused by a hint -> the op at its group's root
    for node in ctx.graph.nodes:
        if node.is_opaque or not ctx.free(node) or not get_op(node.op).has(ELEMENTWISE):
            continue
        for v in node.inputs:
            if v is None or v.node is None or v.node.is_opaque or ctx.sole_user(v) is not node:
                continue
            producer = v.node
            if producer in hint_root:
                root = hint_root[producer]
                allowed = get_op(root.op).fuses_after.get(producer.op, frozenset())
            elif producer in fold_root:
                root = fold_root[producer]
                allowed = get_op(root.op).fuses_into
            elif ctx.free(producer):
                root = producer
                allowed = get_op(root.op).fuses_into
            else:
                continue
            if node.op in allowed:
                hint_root[node] = root
                ctx.absorb([node], f"{root.op}+{node.op} fusion")
                break


def _matmul_scale_and_transpose(ctx: _Ctx) -> None:
    for node in ctx.graph.nodes:
        if not ctx.free(node) or node.op not in ("Mul", "Div", "Transpose"):
            continue
        if node.op == "Transpose":
            perm = _perm(node)
            n = len(perm)
            user = ctx.sole_user(node.outputs[0])
            if n >= 2 and perm == tuple(range(n - 2)) + (n - 1, n - 2) and user is not None \
                    and user.op == "MatMul" and ctx.free(user):
                ctx.absorb([node], "MatmulTransposeFusion")
            continue
        ops = _operands(node, ctx)
        if ops is None or not _scalar(ops[2], ctx) or (node.op == "Div" and ops[0] != 1):
            continue
        x = ops[1]
        mm = ctx.producer(x, "MatMul")
        user = ctx.sole_user(node.outputs[0])
        if (mm is not None and ctx.sole_user(x) is node) or (
                node.op == "Mul" and user is not None and user.op == "MatMul"
                and ctx.free(user)):
            ctx.absorb([node], "MatMulScaleFusion")


def _gelus(ctx: _Ctx) -> None:
    for erf in ctx.graph.nodes:
        if erf.op != "Erf" or not ctx.free(erf):
            continue
        pre = ctx.producer(erf.inputs[0], "Div", "Mul")
        if pre is None or ctx.sole_user(erf.inputs[0]) is not erf:
            continue
        ops = _operands(pre, ctx)
        if ops is None or not _scalar(ops[2], ctx):
            continue
        x = ops[1]
        add = ctx.sole_user(erf.outputs[0])
        if add is None or add.op != "Add" or _operands(add, ctx) is None:
            continue
        group, v = [pre, add], add.outputs[0]
        seen_x = seen_half = False
        for _ in range(2):  # (1 + erf) * x * 0.5, in either order
            mul = ctx.sole_user(v) if v not in ctx.outputs else None
            if mul is None or mul.op != "Mul":
                break
            other = mul.inputs[1] if mul.inputs[0] is v else mul.inputs[0]
            half = ctx.producer(other, "Mul")
            if other is x and not seen_x:
                seen_x = True
            elif _scalar(other, ctx) and not seen_half:
                seen_half = True
            elif half is not None and not seen_x and ctx.sole_user(other) is mul and \
                    x in half.inputs and any(_scalar(i, ctx) for i in half.inputs):
                group.append(half)  # (x * 0.5) * (1 + erf)
                seen_x = seen_half = True
            else:
                break
            group.append(mul)
            v = mul.outputs[0]
        if not seen_x:
            continue
        ctx.absorb(group, "GeluFusion")
        bias = ctx.producer(x, "Add")
        if bias is not None and ctx.sole_user(x) is pre:
            ops = _operands(bias, ctx)
            if ops is not None:
                ctx.absorb([bias], "BiasGeluFusion")
    for gelu in ctx.graph.nodes:  # BiasGelu before a Gelu op
        if gelu.op != "Gelu":
            continue
        bias = ctx.producer(gelu.inputs[0], "Add")
        if bias is not None and ctx.sole_user(gelu.inputs[0]) is gelu and \
                _operands(bias, ctx) is not None:
            ctx.absorb([bias], "BiasGeluFusion")


def _quick_gelus(ctx: _Ctx) -> None:
    for sig in ctx.graph.nodes:
        if sig.op != "Sigmoid" or not ctx.free(sig):
            continue
        x, group = sig.inputs[0], []
        pre = ctx.producer(x, "Mul")
        if pre is not None and ctx.sole_user(x) is sig:
            ops = _operands(pre, ctx)
            if ops is not None and _scalar(ops[2], ctx):
                x, group = ops[1], [pre]
        mul = ctx.sole_user(sig.outputs[0])
        if mul is None or mul.op != "Mul" or not ctx.free(mul) or x not in mul.inputs:
            continue
        ctx.absorb([*group, mul], "QuickGeluFusion")


def _only(ctx: _Ctx, v: Value, op: str) -> Node | None:
    u = ctx.sole_user(v)
    return u if u is not None and u.op == op and ctx.free(u) else None


def _layer_norms(ctx: _Ctx) -> None:
    """Decomposed LayerNorm and RMSNorm (SimplifiedLayerNormalization) chains: the whole chain
    costs one LayerNormalization over its input."""
    for node in ctx.graph.nodes:
        if not ctx.free(node):
            continue
        if node.op == "Sub":
            _layer_norm_from_sub(ctx, node)
        elif node.op == "Pow":
            _rms_norm_from_pow(ctx, node)


def _variance_tail(ctx: _Ctx, v: Value) -> tuple[list[Node], Node] | None:
    """ReduceMean -> Add(eps) -> Sqrt from `v` (the squares): the nodes and the Sqrt."""
    rm = _only(ctx, v, "ReduceMean")
    if rm is None:
        return None
    add = _only(ctx, rm.outputs[0], "Add")
    if add is None or _operands(add, ctx) is None:
        return None
    sq = _only(ctx, add.outputs[0], "Sqrt")
    if sq is None:
        return None
    return [rm, add, sq], sq


def _affine_tail(ctx: _Ctx, v: Value) -> list[Node]:
    """Optional Mul(gamma) then Add(beta) after the normalized value."""
    out = []
    mul = _only(ctx, v, "Mul")
    if mul is not None and _operands(mul, ctx) is not None:
        out.append(mul)
        add = _only(ctx, mul.outputs[0], "Add")
        if add is not None and _operands(add, ctx) is not None:
            out.append(add)
    return out


def _stand_in_ln(ctx: _Ctx, x: Value, last: Node, group: list[Node]) -> None:
    shape = x.type.shape
    if shape is None or not shape or not isinstance(shape[-1], int):
        return
    d = shape[-1]
    gamma = Value.const(np.ones(d, np.float32), f"{last.name}.ln_scale")
    beta = Value.const(np.zeros(d, np.float32), f"{last.name}.ln_bias")
    ln = Node.make("LayerNormalization", {"axis": -1, "epsilon": 1e-5}, [x, gamma, beta],
                   name=f"{last.name}.fused_ln")
    ctx.absorb([n for n in group if n is not last], "LayerNormFusion")
    ctx.f.stand_in[last] = ln


def _layer_norm_from_sub(ctx: _Ctx, sub: Node) -> None:
    x, mean = sub.inputs
    rm = ctx.producer(mean, "ReduceMean")
    if rm is None or rm.inputs[0] is not x:
        return
    users = [u for u, _ in ctx.users.get(sub.outputs[0], ())]
    if sub.outputs[0] in ctx.outputs or len(users) != 2:
        return
    pow_ = next((u for u in users if u.op in ("Pow", "Mul")), None)
    div = next((u for u in users if u.op == "Div"), None)
    if pow_ is None or div is None or not ctx.free(pow_) or not ctx.free(div):
        return
    tail = _variance_tail(ctx, pow_.outputs[0])
    if tail is None or div.inputs != (sub.outputs[0], tail[1].outputs[0]):
        return
    if ctx.sole_user(mean) is not sub:
        return
    affine = _affine_tail(ctx, div.outputs[0])
    group = [rm, sub, pow_, *tail[0], div, *affine]
    _stand_in_ln(ctx, x, group[-1], group)


def _rms_norm_from_pow(ctx: _Ctx, pow_: Node) -> None:
    """Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div(x, .) (-> Mul(weight)). ORT 1.31 does not
    fuse the Sqrt -> Reciprocal -> Mul form (LLaMA's dynamo export): that one stays op by op."""
    x = pow_.inputs[0]
    tail = _variance_tail(ctx, pow_.outputs[0])
    if tail is None:
        return
    nodes, sq = tail
    div = _only(ctx, sq.outputs[0], "Div")
    if div is None or div.inputs[0] is not x:
        return
    group = [pow_, *nodes, div]
    scale = _only(ctx, div.outputs[0], "Mul")
    if scale is not None and _operands(scale, ctx) is not None:
        group.append(scale)
    _stand_in_ln(ctx, x, group[-1], group)


def _skip_layer_norms(ctx: _Ctx) -> None:
    for ln in ctx.graph.nodes:
        if ln.op != "LayerNormalization":
            continue
        add = ctx.producer(ln.inputs[0], "Add")
        if add is None or ctx.sole_user(ln.inputs[0]) is not ln:
            continue
        a, b = add.inputs
        if a is None or b is None or ctx.is_const(a) or ctx.is_const(b) or \
                a.type.shape != b.type.shape:
            continue
        ctx.absorb([add], "SkipLayerNormFusion")


def _reshape_chains(ctx: _Ctx) -> None:
    for node in ctx.graph.nodes:
        if node.op not in ("Reshape", "Flatten", "Squeeze", "Unsqueeze") or not ctx.free(node):
            continue
        user = ctx.sole_user(node.outputs[0])
        if user is not None and user.op == "Reshape" and ctx.free(user):
            ctx.absorb([node], "ReshapeFusion")
