"""Which rule families win on the CPU at ORT_ENABLE_ALL, measured end to end.

For each family the search can produce, an original model (a zoo model or a shared export, read
in place) and a candidate with that family applied are timed against each other in one long
interleaved run (`superopt.runtime.time_interleaved`: fresh sessions per variant, rotating
order, best of N runs per round, median over rounds), together with a second, independent copy
of the original (A'). The report gives, per family:

- ratio = original median / candidate median (above 1: the candidate is faster);
- A/A = original median / A' median: the noise this machine shows in the same run;
- the node counts of the three models after ORT's own ENABLE_ALL optimizations (the graph ORT
  really runs), which say whether ORT already performs the rewrite itself.

Candidates come from the search where it reaches the family (NasRNN's MatMul merges, the
shufflenet BN folds: `superopt.optimize` with the analytic cost model and the gate off) and are
built by hand with onnx.helper otherwise (QKV merges, conv merges, per-channel folds, transpose
cancellation, reassociation of the attention scale, algebraic no-ops); each candidate is checked
against its original on random inputs before it is timed.

Usage (record timings under the shared lock, one timing run at a time on this machine):

    flock /tmp/superopt-timing.lock .venv/bin/python benchmarks/cpu_families.py \
        --out benchmarks/results/cpu-families.md [--only NAME ...] [--rounds 30] \
        [--sessions 3] [--budget 20] [--note "what else ran"]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "models"


# ---------------------------------------------------------------------------------------------
# graph surgery helpers (plain onnx; the models are read in place and changed in memory only)


class Editor:
    """Initializers by name (Identity-of-initializer chains resolved), users, fresh names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.alias = {n.output[0]: n.input[0] for n in self.g.node
                      if n.op_type == "Identity" and n.input[0] in self.inits}
        self.consts = {n.output[0]: n for n in self.g.node if n.op_type == "Constant"}
        self.counter = 0

    def array(self, name: str) -> np.ndarray | None:
        name = self.alias.get(name, name)
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.consts:
            for a in self.consts[name].attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def users(self) -> dict[str, list[onnx.NodeProto]]:
        out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                out[i].append(n)
        return out

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"_fam_{stem}_{self.counter}"

    def add_init(self, array: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def opset(self) -> int:
        return next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))

    def split(self, x: str, sizes: list[int], axis: int, outputs: list[str]) -> onnx.NodeProto:
        if self.opset() >= 13:
            s = self.add_init(np.array(sizes, np.int64), "split")
            return helper.make_node("Split", [x, s], outputs, axis=axis, name=self.fresh("split"))
        return helper.make_node("Split", [x], outputs, axis=axis, split=sizes,
                                name=self.fresh("split"))

    def replace_nodes(self, remove: set[int], insert_at: dict[int, list[onnx.NodeProto]]
                      ) -> None:
        """Drop the nodes at indices `remove`; put `insert_at[i]` before node i (topological:
        i is the first removed node of the group, whose inputs are already computed)."""
        nodes = list(self.g.node)
        new = []
        for i, n in enumerate(nodes):
            new.extend(insert_at.get(i, []))
            if i not in remove:
                new.append(n)
        del self.g.node[:]
        self.g.node.extend(new)


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def merge_shared_matmuls(model: onnx.ModelProto, min_group: int = 2) -> tuple[onnx.ModelProto, int]:
    """MatMuls reading the same activation with 2-D constant weights -> one MatMul on the
    concatenated weights (+ one Add on the concatenated biases when every member is followed by
    its only user, an Add of a 1-D constant bias) and a Split on the last axis."""
    m = copy(model)
    ed = Editor(m)
    users = ed.users()
    groups: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(m.graph.node):
        if n.op_type == "MatMul":
            w = ed.array(n.input[1])
            if w is not None and w.ndim == 2 and w.dtype == np.float32:
                groups[n.input[0]].append(i)
    nodes = list(m.graph.node)
    remove: set[int] = set()
    insert: dict[int, list[onnx.NodeProto]] = {}
    merged = 0
    index = {id(n): i for i, n in enumerate(nodes)}
    for x, members in groups.items():
        if len(members) < min_group:
            continue
        ws = [ed.array(nodes[i].input[1]) for i in members]
        if len({w.shape[0] for w in ws}) != 1:
            continue
        biases, adds = [], []
        for i in members:
            us = users.get(nodes[i].output[0], [])
            if len(us) == 1 and us[0].op_type == "Add":
                other = [a for a in us[0].input if a != nodes[i].output[0]]
                b = ed.array(other[0]) if len(other) == 1 else None
                if b is not None and b.ndim == 1 and b.shape[0] == ws[len(adds)].shape[1]:
                    biases.append(b)
                    adds.append(us[0])
                    continue
            break
        with_bias = len(adds) == len(members)
        sizes = [int(w.shape[1]) for w in ws]
        wname = ed.add_init(np.concatenate(ws, axis=1), "w")
        mm_out = ed.fresh("mm")
        new = [helper.make_node("MatMul", [x, wname], [mm_out], name=ed.fresh("matmul"))]
        src = mm_out
        if with_bias:
            bname = ed.add_init(np.concatenate(biases), "b")
            add_out = ed.fresh("add")
            new.append(helper.make_node("Add", [mm_out, bname], [add_out], name=ed.fresh("add")))
            src = add_out
            outs = [a.output[0] for a in adds]
            remove.update(index[id(a)] for a in adds)
        else:
            outs = [nodes[i].output[0] for i in members]
        new.append(ed.split(src, sizes, -1, outs))
        remove.update(members)
        insert[members[0]] = new
        merged += len(members)
    ed.replace_nodes(remove, insert)
    return m, merged


def _conv_attrs(n: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


def merge_squeezenet_expands(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """SqueezeNet's fire modules: expand1x1 (enlarged to 3x3, zero-padded) and expand3x3 read
    the same squeeze output and are concatenated after their Relus -> one Conv on the stacked
    kernels and one Relu, whose output is the concatenation (the seed's enlarge + merge)."""
    m = copy(model)
    ed = Editor(m)
    users = ed.users()
    nodes = list(m.graph.node)
    index = {id(n): i for i, n in enumerate(nodes)}
    remove: set[int] = set()
    insert: dict[int, list[onnx.NodeProto]] = {}
    merged = 0
    for cat in nodes:
        if cat.op_type != "Concat" or len(cat.input) != 2:
            continue
        relus = [next((n for n in nodes if n.output[0] == i), None) for i in cat.input]
        if any(r is None or r.op_type != "Relu" for r in relus):
            continue
        convs = [next((n for n in nodes if n.output[0] == r.input[0]), None) for r in relus]
        if any(c is None or c.op_type != "Conv" or len(c.input) != 3 for c in convs):
            continue
        if convs[0].input[0] != convs[1].input[0]:
            continue
        w1, w3 = ed.array(convs[0].input[1]), ed.array(convs[1].input[1])
        b1, b3 = ed.array(convs[0].input[2]), ed.array(convs[1].input[2])
        if w1.shape[2:] != (1, 1) or w3.shape[2:] != (3, 3):
            continue
        if any(len(users[c.output[0]]) != 1 for c in convs) or \
                any(len(users[r.output[0]]) != 1 for r in relus):
            continue
        w1e = np.zeros(w1.shape[:2] + (3, 3), np.float32)
        w1e[:, :, 1, 1] = w1[:, :, 0, 0]
        wn = ed.add_init(np.concatenate([w1e, w3]), "w")
        bn = ed.add_init(np.concatenate([b1, b3]), "b")
        conv_out = ed.fresh("conv")
        new = [helper.make_node("Conv", [convs[0].input[0], wn, bn], [conv_out],
                                name=ed.fresh("conv"), kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
               helper.make_node("Relu", [conv_out], [cat.output[0]], name=ed.fresh("relu"))]
        group = [index[id(n)] for n in (*convs, *relus, cat)]
        remove.update(group)
        insert[min(group)] = new
        merged += 2
    ed.replace_nodes(remove, insert)
    return m, merged


def merge_shared_1x1_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """1x1, stride-1, unpadded, ungrouped Convs (with bias) reading the same input -> one Conv
    on the stacked kernels and a Split on the channel axis (inception's branch heads). When
    every member's sole user is a Relu, the Relu moves before the Split (Relu commutes with it),
    so ORT can still fuse it into the Conv."""
    m = copy(model)
    ed = Editor(m)
    users = ed.users()
    groups: dict[str, list[int]] = defaultdict(list)
    nodes = list(m.graph.node)
    index = {id(n): i for i, n in enumerate(nodes)}
    for i, n in enumerate(nodes):
        if n.op_type != "Conv" or len(n.input) != 3:
            continue
        w = ed.array(n.input[1])
        a = _conv_attrs(n)
        if w is None or w.shape[2:] != (1, 1) or a.get("group", 1) != 1 or \
                any(s != 1 for s in a.get("strides", [1, 1])) or \
                any(p != 0 for p in a.get("pads", [0, 0, 0, 0])):
            continue
        groups[n.input[0]].append(i)
    remove: set[int] = set()
    insert: dict[int, list[onnx.NodeProto]] = {}
    merged = 0
    for x, members in groups.items():
        if len(members) < 2:
            continue
        ws = [ed.array(nodes[i].input[1]) for i in members]
        bs = [ed.array(nodes[i].input[2]) for i in members]
        wn = ed.add_init(np.concatenate(ws), "w")
        bn = ed.add_init(np.concatenate(bs), "b")
        out = ed.fresh("conv")
        new = [helper.make_node("Conv", [x, wn, bn], [out], name=ed.fresh("conv"),
                                kernel_shape=[1, 1])]
        relus = [users.get(nodes[i].output[0], []) for i in members]
        if all(len(r) == 1 and r[0].op_type == "Relu" for r in relus):
            act = ed.fresh("relu")
            new.append(helper.make_node("Relu", [out], [act], name=ed.fresh("relu")))
            outs = [r[0].output[0] for r in relus]
            remove.update(index[id(r[0])] for r in relus)
            out = act
        else:
            outs = [nodes[i].output[0] for i in members]
        new.append(ed.split(out, [int(w.shape[0]) for w in ws], 1, outs))
        remove.update(members)
        insert[members[0]] = new
        merged += len(members)
    ed.replace_nodes(remove, insert)
    return m, merged


def bn_to_mul_add(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Each BatchNormalization (inference) written as the per-channel Mul and Add an exporter
    emits for a frozen BN: y = x * s + t with s, t of shape [C, 1, 1]."""
    m = copy(model)
    ed = Editor(m)
    out_nodes = []
    n_done = 0
    for n in m.graph.node:
        if n.op_type != "BatchNormalization":
            out_nodes.append(n)
            continue
        scale, bias, mean, var = (ed.array(i) for i in n.input[1:5])
        eps = _conv_attrs(n).get("epsilon", 1e-5)
        s = (scale / np.sqrt(var + eps)).astype(np.float32)
        t = (bias - mean * s).astype(np.float32)
        sn = ed.add_init(s.reshape(-1, 1, 1), "scale")
        tn = ed.add_init(t.reshape(-1, 1, 1), "shift")
        mid = ed.fresh("mul")
        out_nodes += [helper.make_node("Mul", [n.input[0], sn], [mid], name=ed.fresh("mul")),
                      helper.make_node("Add", [mid, tn], [n.output[0]], name=ed.fresh("add"))]
        n_done += 1
    del m.graph.node[:]
    m.graph.node.extend(out_nodes)
    return m, n_done


def add_transpose_pairs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """After every Transpose (perm p), a Transpose by p's inverse and one by p again: what a
    transpose-cancellation rewrite removes (the candidate is then the model as exported)."""
    m = copy(model)
    ed = Editor(m)
    out_nodes, users_renamed = [], {}
    count = 0
    for n in m.graph.node:
        n.input[:] = [users_renamed.get(i, i) for i in n.input]
        out_nodes.append(n)
        if n.op_type != "Transpose":
            continue
        perm = list(_conv_attrs(n)["perm"])
        inv = list(np.argsort(perm))
        a, b = ed.fresh("t"), ed.fresh("t")
        out_nodes += [helper.make_node("Transpose", [n.output[0]], [a], perm=inv,
                                       name=ed.fresh("tinv")),
                      helper.make_node("Transpose", [a], [b], perm=perm, name=ed.fresh("t"))]
        users_renamed[n.output[0]] = b
        count += 2
    for o in m.graph.output:
        if o.name in users_renamed:
            raise ValueError("a Transpose output is a graph output")
    del m.graph.node[:]
    m.graph.node.extend(out_nodes)
    return m, count


def add_noops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """x * 1 then + 0 after every LayerNormalization: the no-ops algebraic simplification
    removes (the candidate is the model as exported)."""
    m = copy(model)
    ed = Editor(m)
    one = ed.add_init(np.array(1.0, np.float32), "one")
    zero = ed.add_init(np.array(0.0, np.float32), "zero")
    out_nodes, renamed = [], {}
    count = 0
    for n in m.graph.node:
        n.input[:] = [renamed.get(i, i) for i in n.input]
        out_nodes.append(n)
        if n.op_type != "LayerNormalization" or n.output[0] in {o.name for o in m.graph.output}:
            continue
        a, b = ed.fresh("m"), ed.fresh("a")
        out_nodes += [helper.make_node("Mul", [n.output[0], one], [a], name=ed.fresh("mul1")),
                      helper.make_node("Add", [a, zero], [b], name=ed.fresh("add0"))]
        renamed[n.output[0]] = b
        count += 2
    del m.graph.node[:]
    m.graph.node.extend(out_nodes)
    return m, count


def fold_attention_scale(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """BERT attention: Div(MatMul(Q, K^T), s) with Q = reshape/transpose(x @ Wq + bq) ->
    reassociated as (x @ (Wq / s) + bq / s) ... @ K^T: the Div over the scores goes away and
    the scale folds into the query weights."""
    m = copy(model)
    ed = Editor(m)
    users = ed.users()
    prod = {o: n for n in m.graph.node for o in n.output}
    drop = set()
    count = 0
    for n in m.graph.node:
        if n.op_type != "Div":
            continue
        s = ed.array(n.input[1])
        mm = prod.get(n.input[0])
        if s is None or s.size != 1 or mm is None or mm.op_type != "MatMul":
            continue
        chain, v = [], mm.input[0]  # walk Q back through Transpose/Reshape to its bias Add
        while v in prod and prod[v].op_type in ("Transpose", "Reshape"):
            chain.append(prod[v])
            v = prod[v].input[0]
        add = prod.get(v)
        if add is None or add.op_type != "Add" or len(users[mm.output[0]]) != 1:
            continue
        qmm = prod.get(add.input[0])
        if qmm is None or qmm.op_type != "MatMul" or ed.array(add.input[1]) is None:
            continue
        scale = float(s.reshape(()))
        qmm.input[1] = ed.add_init(ed.array(qmm.input[1]) / scale, "wq")
        add.input[1] = ed.add_init(ed.array(add.input[1]) / scale, "bq")
        for u in users[n.output[0]]:
            u.input[:] = [mm.output[0] if i == n.output[0] else i for i in u.input]
        drop.add(id(n))
        count += 1
    keep = [n for n in m.graph.node if id(n) not in drop]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    return m, count


def searched(model: onnx.ModelProto, names: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, int]:
    """The search's own candidate: `superopt.optimize` with the analytic cost model, gate off,
    the shipped rules (only those whose name starts with one of `names`, if given)."""
    from superopt import optimize
    from superopt.core.onnx_io import to_onnx
    from superopt.pipeline.optimize import select_rules

    rules = [r for r in select_rules(None)
             if not names or (r.name or "").startswith(names)]
    result = optimize(model, None, rules=rules, cost="analytic", gate=False, write=False,
                      device="cpu", check=False)
    return to_onnx(result.graph_after), len(result.steps)


def searched_family(*names: str):
    def build(model):
        cand, n = searched(model, names)
        return model, cand, n
    return build


# ---------------------------------------------------------------------------------------------
# the families


@dataclass
class Family:
    name: str
    family: str
    model: str  # zoo name or shared file stem
    how: str  # how the candidate is made
    build: Callable[[onnx.ModelProto], tuple[onnx.ModelProto, onnx.ModelProto, int]]


def _cand(fn):
    def build(model):
        cand, n = fn(model)
        return model, cand, n
    return build


def _orig_is_edited(fn):
    def build(model):
        orig, n = fn(model)
        return orig, model, n
    return build


def _bn_mul_add_vs_folded(model):
    orig, n = bn_to_mul_add(model)
    cand, _ = searched(model)
    return orig, cand, n


FAMILIES = [
    Family("matmul-merge-nasrnn", "MatMul merge (shared / concatenated input)", "nasrnn",
           "search (analytic cost, gate off)", _cand(searched)),
    Family("qkv-merge-bert", "QKV merge (MatMul + bias, shared input)", "bert", "by hand",
           _cand(merge_shared_matmuls)),
    Family("qkv-merge-roberta", "QKV merge (MatMul + bias, shared input)",
           "roberta_tiny_dynamo", "by hand", _cand(merge_shared_matmuls)),
    Family("qkv-merge-whisper", "QKV merge (MatMul, shared input)", "whisper_tiny_encoder",
           "by hand", _cand(merge_shared_matmuls)),
    Family("matmul-merge-llama", "MatMul merge (QKV and gate/up, shared input)",
           "llama_tiny_dynamo", "by hand", _cand(merge_shared_matmuls)),
    Family("conv-merge-squeezenet", "conv merge (enlarge 1x1 to 3x3 + merge)", "squeezenet",
           "by hand", _cand(merge_squeezenet_expands)),
    Family("conv-merge-inception", "conv merge (1x1 convs, shared input, + Split)",
           "inception_v3", "by hand", _cand(merge_shared_1x1_convs)),
    Family("bn-fold-shufflenet", "BN fold into Conv", "shufflenet_v2_x0_5_bn",
           "search (analytic cost, gate off)", _cand(searched)),
    Family("per-channel-fold-shufflenet", "per-channel Mul+Add fold into Conv",
           "shufflenet_v2_x0_5_bn", "by hand (BN as Mul+Add) vs the search's folds",
           _bn_mul_add_vs_folded),
    Family("duplicate-merge-nasnet", "duplicate merge (equal Relus / pools computed once)",
           "nasnet_a", "search (duplicate-merge rules, analytic cost, gate off)",
           searched_family("duplicate-merge")),
    Family("norm-scale-fold-llama", "RMSNorm weight folded into the next MatMul",
           "llama_tiny_dynamo", "search (norm-scale-fold rules, analytic cost, gate off)",
           searched_family("norm-scale-fold")),
    Family("conv-add-merge-resnet50", "conv merge along input channels (projection shortcut)",
           "resnet50", "search (conv-add-merge rules, analytic cost, gate off)",
           searched_family("conv-add-merge")),
    Family("conv-add-merge-resnext50",
           "conv merge along input channels (projection shortcut)", "resnext50",
           "search (conv-add-merge rules, analytic cost, gate off)",
           searched_family("conv-add-merge")),
    Family("transpose-cancel-bert", "transpose cancellation", "bert",
           "by hand (inverse Transpose pairs added; candidate = as exported)",
           _orig_is_edited(add_transpose_pairs)),
    Family("reassoc-scale-bert", "reassociation (attention scale into the query weights)",
           "bert", "by hand", _cand(fold_attention_scale)),
    Family("noop-simplify-bert", "algebraic simplification (x*1+0 removed)", "bert",
           "by hand (no-ops added; candidate = as exported)", _orig_is_edited(add_noops)),
]


# ---------------------------------------------------------------------------------------------
# measuring


def load_model(name: str) -> onnx.ModelProto:
    from superopt import zoo

    if name in zoo.MODELS:
        return zoo.build(name)
    return onnx.load(str(SHARED / f"{name}.onnx"))


def feeds_for(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from superopt import zoo
    from superopt.runtime import random_feeds

    try:
        return zoo.input_feeds(model)
    except ValueError:
        return random_feeds(model)


def check_same(orig: onnx.ModelProto, cand: onnx.ModelProto, feeds) -> float:
    """Max abs difference of the outputs (raises if the candidate does not run)."""
    import onnxruntime as ort

    outs = []
    for m in (orig, cand):
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, feeds))
    return max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
               if a.size else 0.0 for a, b in zip(*outs))


def ort_optimized_ops(model: onnx.ModelProto, tmp: Path) -> Counter:
    """Op counts of the graph ORT runs at ENABLE_ALL on the CPU (its saved optimized model)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = tmp / "ort_opt.onnx"
    opts.optimized_model_filepath = str(path)
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    got = onnx.load(str(path), load_external_data=False)
    return Counter(n.op_type for n in got.graph.node)


def prune_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the initializers no node reads any more (rewrites replaced them)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def predicted_ratio(orig: onnx.ModelProto, cand: onnx.ModelProto) -> float:
    """original cost / candidate cost by the measured cost model (this machine's one-node
    timings, cached; ORT's own fusions charged as `cost_model/ort_fusions.py` says)."""
    from superopt.core.onnx_io import load
    from superopt.cost_model.measured import MeasuredCost

    model = MeasuredCost("cpu")
    return model.graph_cost(load(orig)) / model.graph_cost(load(cand))


def measure(fam: Family, rounds: int, sessions: int, budget: float, tmp: Path) -> dict:
    from superopt.runtime import time_interleaved

    base = load_model(fam.model)
    t = time.perf_counter()
    orig, cand, n = fam.build(base)
    orig, cand = prune_initializers(orig), prune_initializers(cand)
    build_s = time.perf_counter() - t
    feeds = feeds_for(base)
    err = check_same(orig, cand, feeds)
    ops_o, ops_c = ort_optimized_ops(orig, tmp), ort_optimized_ops(cand, tmp)
    predicted = predicted_ratio(orig, cand)
    r = time_interleaved([orig, orig, cand], "cpu", rounds=rounds, sessions=sessions,
                         budget_s=budget, feeds=feeds)
    a, a2, c = r.timings
    return {"name": fam.name, "family": fam.family, "model": fam.model, "how": fam.how,
            "rewrites": n, "build_s": round(build_s, 1), "max_abs_err": err,
            "nodes": [len(orig.graph.node), len(cand.graph.node)],
            "ort_nodes": [sum(ops_o.values()), sum(ops_c.values())],
            "ort_ops_orig": dict(ops_o), "ort_ops_cand": dict(ops_c),
            "orig_ms": a.median_s * 1e3, "copy_ms": a2.median_s * 1e3,
            "cand_ms": c.median_s * 1e3, "spreads": [a.spread, a2.spread, c.spread],
            "ratio": a.median_s / c.median_s, "aa": a.median_s / a2.median_s,
            "predicted": predicted,
            "ci": bootstrap_ci(a.samples, c.samples), "ci_aa": bootstrap_ci(a.samples, a2.samples),
            "rounds": r.rounds, "runs_per_round": r.runs_per_round, "sessions": r.sessions,
            "rounds_ms": {"orig": [x * 1e3 for x in a.samples],
                          "copy": [x * 1e3 for x in a2.samples],
                          "cand": [x * 1e3 for x in c.samples]}}


def bootstrap_ci(a: list[float], b: list[float], n: int = 4000, seed: int = 0
                 ) -> tuple[float, float]:
    """95% interval of median(a) / median(b), resampling the rounds of each with replacement."""
    rng = np.random.default_rng(seed)
    a_, b_ = np.asarray(a), np.asarray(b)
    ra = np.median(rng.choice(a_, (n, a_.size)), axis=1)
    rb = np.median(rng.choice(b_, (n, b_.size)), axis=1)
    lo, hi = np.percentile(ra / rb, [2.5, 97.5])
    return float(lo), float(hi)


def verdict(row: dict) -> str:
    """win / loss when the ratio's 95% interval excludes 1 and the ratio is further from 1 than
    the A/A ratio (and 1%); else no change."""
    noise = max(0.01, abs(row["aa"] - 1.0))
    lo, hi = row.get("ci", (row["ratio"], row["ratio"]))
    if row["ratio"] > 1 + noise and lo > 1:
        return "win"
    if row["ratio"] < 1 - noise and hi < 1:
        return "loss"
    return "no change"


#: a predicted ratio within this of 1 is "no gain predicted"
PREDICTION_TOLERANCE = 0.01


def agrees(row: dict) -> str:
    """Whether the measured cost model's sign agrees with the end-to-end verdict: a gain
    predicted for a win, no gain predicted otherwise."""
    if "predicted" not in row:
        return "—"
    gain = row["predicted"] > 1 + PREDICTION_TOLERANCE
    return "yes" if gain == (verdict(row) == "win") else "no"


def _ci(ci) -> str:
    return "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def render(rows: list[dict], header: dict) -> str:
    runs = header.get("runs") or [header]
    lines = ["# CPU rule families at ORT_ENABLE_ALL, measured end to end", "",
             f"- device: {header['device']} ({header['provider']})",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items())]
    for run in runs:
        lines.append(f"- run {run['date']}" + (f" (commit {run['commit']})" if run.get("commit")
                                               else "") + f": `{run['command']}`; "
                     f"load: {run['load']}; other work on the machine: {run['note']}"
                     + (f"; rows: {', '.join(run['rows'])}" if run.get("rows") else ""))
    lines += [
             f"- method: original (A), a second independent copy of the original (A') and the "
             f"candidate timed in one interleaved run per family: {header['sessions']} fresh "
             f"sessions each, {header['rounds']} rounds with rotating order, best of N runs per "
             f"round (N fitted to about {header['budget']:g} s per family), median over rounds; "
             "ratio = A / candidate (above 1: the candidate is faster), A/A = A / A'. "
             "The interval after a ratio is its 95% bootstrap interval (rounds resampled). A "
             "family is a *win* (*loss*) when its ratio is above (below) 1 by more than "
             "max(1%, |A/A - 1|) and its interval excludes 1; else *no change*.",
             "", "| family | model | candidate | rewrites | nodes A → cand | nodes ORT runs A → "
             "cand | A (ms) | cand (ms) | ratio | A/A | verdict | cost model predicts | sign "
             "agrees |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['model']} | {r['how']} | | | | | | | | "
                         f"error: {r['error']} | | |")
            continue
        lines.append(
            f"| {r['family']} | {r['model']} | {r['how']} | {r['rewrites']} | "
            f"{r['nodes'][0]} → {r['nodes'][1]} | {r['ort_nodes'][0]} → {r['ort_nodes'][1]} | "
            f"{r['orig_ms']:.3f} ± {r['spreads'][0]:.0%} | {r['cand_ms']:.3f} ± "
            f"{r['spreads'][2]:.0%} | {r['ratio']:.3f}× {_ci(r.get('ci'))} | {r['aa']:.3f}× "
            f"{_ci(r.get('ci_aa'))} | {verdict(r)} | "
            + (f"{r['predicted']:.3f}× | {agrees(r)} |" if "predicted" in r else "— | — |"))
    lines += ["", "Candidates were checked against their originals on the same inputs before "
              "timing (max abs difference per row in the JSON next to this file). \"Nodes ORT "
              "runs\" counts the graph ORT saves after its ENABLE_ALL optimizations (fused and "
              "layout ops included): equal counts mean ORT already performs the rewrite itself. "
              "\"Cost model predicts\" is original cost / candidate cost by the measured cost "
              "model (`superopt.cost_model.measured`, one-node timings on this machine, ORT's "
              f"fusions charged by `cost_model/ort_fusions.py`); within {PREDICTION_TOLERANCE:.0%} "
              "of 1 counts as no gain predicted."]
    return "\n".join(lines) + "\n"


def repredict(out: Path, fams: list[Family]) -> int:
    """Recompute the `predicted` column of the recorded rows of `fams` (no end-to-end timing)."""
    data = json.loads(out.with_suffix(".json").read_text())
    by_name = {f.name: f for f in fams}
    for row in data["rows"]:
        fam = by_name.get(row["name"])
        if fam is None or "error" in row:
            continue
        orig, cand, _ = fam.build(load_model(fam.model))
        row["predicted"] = predicted_ratio(prune_initializers(orig), prune_initializers(cand))
        print(f"{row['name']}: predicted {row['predicted']:.3f}", file=sys.stderr)
    header = data["header"]
    runs = header.get("runs") or [{k: header.get(k, "") for k in ("date", "command", "load",
                                                                 "note", "commit", "rows")}]
    runs.append({"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
                 "load": "no timing", "note": "the cost model's predictions recomputed",
                 "commit": _commit(), "rows": [f.name for f in fams]})
    header["runs"] = runs
    out.write_text(render(data["rows"], header))
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


def _commit() -> str:
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    import tempfile

    import onnxruntime as ort

    from superopt.core.version import __version__
    from superopt.runtime import device_name

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", help="family names (default: all)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of rounds per family")
    p.add_argument("--out", default="benchmarks/results/cpu-families.md")
    p.add_argument("--note", default="not recorded", help="what else ran on the machine")
    p.add_argument("--list", action="store_true", help="list the families and exit")
    p.add_argument("--repredict", action="store_true",
                   help="time nothing: recompute the cost model's prediction of every recorded "
                        "row (OUT's .json) with the current cost model, and re-render")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the existing results (OUT's .json) and replace or add "
                        "the rows of this run")
    args = p.parse_args(argv)
    ort.set_default_logger_severity(3)  # no warnings about initializers a rewrite left unused
    if args.list:
        for f in FAMILIES:
            print(f"{f.name:30} {f.model:24} {f.family}")
        return 0
    fams = [f for f in FAMILIES if not args.only or f.name in args.only]
    if args.repredict:
        return repredict(Path(args.out), fams)
    load0 = os.getloadavg()[0]
    header = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "device": device_name("cpu"), "provider": "CPUExecutionProvider",
              "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                           "numpy": np.__version__, "superopt": __version__,
                           "python": platform.python_version()},
              "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
              "rounds": args.rounds, "sessions": args.sessions, "budget": args.budget,
              "note": args.note, "load": "", "commit": _commit(),
              "rows": [f.name for f in fams]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in fams:
            print(f"{f.name} ...", file=sys.stderr, flush=True)
            try:
                row = measure(f, args.rounds, args.sessions, args.budget, Path(tmp))
            except Exception as e:  # noqa: BLE001 - one family's failure is its row
                row = {"name": f.name, "family": f.family, "model": f.model, "how": f.how,
                       "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            print(json.dumps({k: v for k, v in row.items() if not k.startswith(("rounds_ms",
                  "ort_ops"))}), file=sys.stderr, flush=True)
            rows.append(row)
    header["load"] = f"1-min load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} " \
                     "at the end"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_suffix(".json")
    if args.merge and old.exists():
        before = json.loads(old.read_text())
        new = {r["name"]: r for r in rows}
        order = [f.name for f in FAMILIES]
        merged = {r["name"]: r for r in before["rows"]} | new
        rows = sorted(merged.values(), key=lambda r: order.index(r["name"])
                      if r["name"] in order else len(order))
        prior = before["header"].get("runs") or [before["header"]]
        header["runs"] = [*prior, {k: header[k] for k in ("date", "command", "load", "note",
                                                           "commit", "rows")}]
    out.write_text(render(rows, header))
    out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1)
                                        + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
