"""Enumerate every graph of up to k runtime operators (plus w weight-only ones), once each,
and fingerprint it.

A graph is a set of nodes closed under inputs (hash-consing makes "the same op on the same
inputs twice" impossible). Each graph is produced exactly once by *canonical augmentation*: a
node may be added only if it becomes the graph's largest sink (a node whose outputs nothing in
the graph reads) under a fixed structural order, so every graph has one parent (itself minus its
largest sink) and one path from the empty graph. The subtrees below the one-node graphs are
independent, which is how the work splits over worker processes.

The budgets: a node whose arguments are all weights computes a weight (Concat of two kernels,
EnlargeKernel, the BatchNorm folds), which the exporter folds away, so it is not a runtime op. A
graph may hold at most `max_ops` runtime nodes and `max_ops + max_weight_ops` nodes in all: the
first `max_weight_ops` weight-only nodes are free, further ones take a runtime node's place
(with `max_weight_ops = 0` the limit is the plain node count of earlier versions). The free
nodes are for weights that runtime nodes read, so a graph of more than `max_ops` nodes may have
a weight-only sink (a node whose outputs nothing reads) only while one more runtime node and
one more node still fit (it is then not recorded, only extended): without that, the allowance
would mostly buy graphs with a stray folded weight beside them. These conditions hold for a
graph whenever they hold for it plus its largest sink, so the canonical augmentation still
reaches each graph once.

Speed comes from doing per graph only what that graph needs: node values are computed once per
(op instance, argument tensors) and cached, a leaf graph that would be disconnected is dropped
before its new node is evaluated, and a graph is shipped back as a few packed integers (no
Python objects), which the parent decodes only for graphs whose fingerprint matched another's.

Pruned on the way (counted): graphs that recompute a value the graph already holds (a node
whose output equals, by fingerprint, another node's output other than its own arguments), graphs
with an all-zero output, extensions of graphs that reproduce an input (T(T(x)) = x), graphs
with more than `max_outputs` outputs, graphs whose outputs are all weights (rules on weights
alone are useless: the exporter folds them; beyond `max_ops` nodes, any weight output; both
counted as `weight_only`), and disconnected graphs of three or more nodes
(they are sums of smaller graphs; two independent nodes are kept as multi-output targets).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from superopt.core.generator_spec import Arg, SymShape
from superopt.core.ops import get_op
from superopt.generator.fingerprint import outputs_hash, tensor_hash
from superopt.generator.opset import Universe

INPUT_LIMIT = 64  # packed graphs name inputs by one byte below this
NO_ARG = 255


@dataclass
class Counts:
    """What one enumeration saw (summed over workers)."""

    graphs: int = 0  # distinct graphs within the budgets (every canonical augmentation accepted)
    fingerprinted: int = 0  # graphs kept and fingerprinted
    duplicate_tensor: int = 0  # pruned: recompute a value the graph already has
    disconnected: int = 0
    weight_only: int = 0  # outputs all weights (beyond max_ops nodes: any output a weight)
    too_many_outputs: int = 0
    invalid: int = 0  # applications that failed to evaluate
    zero_output: int = 0  # pruned: an output is all zeros
    input_copy: int = 0  # not extended: a node reproduces an input (recorded, not extended)

    def add(self, other: Counts) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class TaskOutput:
    """One subtree's graphs: fingerprints and packed node lists (row j = node j, -1 = none)."""

    fps: np.ndarray
    graphs: np.ndarray
    counts: Counts = field(default_factory=Counts)


class Enumerator:
    """Tensors, nodes and caches of one process. Tensor and node ids are local to it; graphs
    leave it packed (see `pack`), so any Enumerator built from the same universe and seed can
    decode them.
    """

    def __init__(self, universe: Universe, seed: int, max_ops: int,
                 max_weight_ops: int = 0) -> None:
        self.u = universe
        self.seed = seed
        self.max_ops = max_ops  # runtime nodes
        self.max_weight_ops = max_weight_ops  # weight-only nodes beyond those, free
        self.width = max_ops + max_weight_ops  # the most nodes a graph holds (packed row length)
        if len(universe.inputs) > INPUT_LIMIT:
            raise ValueError(f"at most {INPUT_LIMIT} inputs")
        rng = np.random.default_rng(seed)
        # tensors
        self.t_ord: list[int] = []
        self.t_shape: list[tuple] = []
        self.t_sym: list[SymShape] = []
        self.t_weight: list[bool] = []
        self.t_val: list[np.ndarray | None] = []
        self.t_hash: list[int | None] = []
        self.t_node: list[int] = []
        self.t_out: list[int] = []
        for i, spec in enumerate(universe.inputs):
            value = spec.sample(rng)
            self._add_tensor(i, spec.shape, tuple(((spec.name, ax),) for ax in
                                                   range(len(spec.shape))),
                             spec.kind == "weight", -1, i)
            self.t_val[i] = value
            self.t_hash[i] = tensor_hash(value)
        self.input_values = list(self.t_val)
        self.input_hashes = set(self.t_hash)
        self.free = [i for i, s in enumerate(universe.inputs) if s.role == "free"]
        params = {s.name: i for i, s in enumerate(universe.inputs)}
        self.fixed = [tuple(params[n] for n in inst.fixed) for inst in universe.instances]
        self.ops = [get_op(inst.op) for inst in universe.instances]
        # nodes
        self.n_inst: list[int] = []
        self.n_args: list[tuple[int, ...]] = []
        self.n_ord: list[int] = []
        self.n_outs: list[tuple[int, ...]] = []
        self.n_attrs: list[dict] = []  # registry attributes (canonical)
        self.n_pattrs: list[dict] = []  # pattern attributes (non-default; Split as atoms)
        self.n_touch: list[frozenset] = []
        self.n_prods: list[frozenset] = []
        self.n_weight: list[bool] = []  # the node computes weights only (known before evaluation)
        self.cache: dict[tuple, int] = {}
        self.counts = Counts()
        self.level1 = self._level1()

    # -- tensors and nodes -------------------------------------------------------------------

    def _add_tensor(self, ord_: int, shape: tuple, sym: SymShape, weight: bool, node: int,
                    out: int) -> int:
        self.t_ord.append(ord_)
        self.t_shape.append(shape)
        self.t_sym.append(sym)
        self.t_weight.append(weight)
        self.t_val.append(None)
        self.t_hash.append(None)
        self.t_node.append(node)
        self.t_out.append(out)
        return len(self.t_ord) - 1

    def _size(self, atom: tuple[str, int]) -> int:
        return self.u.inputs[self.u.input_index(atom[0])].shape[atom[1]]

    def node(self, inst_idx: int, args: tuple[int, ...]) -> int:
        """The node applying instance `inst_idx` to tensors `args`, or -1 if it does not apply.
        Cheap: no value is computed here (see `evaluate`)."""
        key = (inst_idx, args)
        nid = self.cache.get(key)
        if nid is not None:
            return nid
        nid = self._make_node(inst_idx, args)
        self.cache[key] = nid
        return nid

    def _make_node(self, inst_idx: int, args: tuple[int, ...]) -> int:
        inst = self.u.instances[inst_idx]
        weights = [self.t_weight[a] for a in args]
        if inst.weight_args and not all(weights):
            return -1
        if args and not inst.on_weights and all(weights):
            return -1
        if inst.commutative and self.t_ord[args[0]] > self.t_ord[args[1]]:
            return -1
        infos = [Arg(self.t_shape[a], self.t_sym[a], self.t_weight[a]) for a in args]
        pattrs = inst.attrs(infos)
        if pattrs is None:
            return -1
        syms = inst.sym(infos, pattrs)
        attrs = dict(pattrs)
        if inst.op == "Split":
            attrs["split"] = tuple(self._size(a) for a in pattrs["split"])
        attrs = self.ops[inst_idx].canonical_attrs(attrs)
        nid = len(self.n_inst)
        ord_ = hash((inst_idx,) + tuple(self.t_ord[a] for a in args))
        all_args = args + self.fixed[inst_idx]
        weight = all(self.t_weight[a] for a in all_args)
        outs = tuple(self._add_tensor(hash((ord_, i)), tuple(sum(self._size(a) for a in d)
                                                            for d in sym), sym, weight, nid, i)
                     for i, sym in enumerate(syms))
        self.n_inst.append(inst_idx)
        self.n_args.append(args)
        self.n_ord.append(ord_)
        self.n_outs.append(outs)
        self.n_attrs.append(attrs)
        self.n_pattrs.append(pattrs)
        self.n_touch.append(frozenset(all_args + outs))
        self.n_prods.append(frozenset(self.t_node[a] for a in args if self.t_node[a] >= 0))
        self.n_weight.append(weight)
        return nid

    def value(self, tid: int) -> np.ndarray:
        """A tensor's value (computed on demand; leaf values are dropped after hashing)."""
        v = self.t_val[tid]
        if v is None:
            self.evaluate(self.t_node[tid])
            v = self.t_val[tid]
        return v

    def evaluate(self, nid: int) -> bool:
        """Compute a node's outputs and their fingerprints; False if the op fails on them."""
        outs = self.n_outs[nid]
        if self.t_hash[outs[0]] is not None and self.t_val[outs[0]] is not None:
            return True
        inst = self.n_inst[nid]
        ins = [self.value(a) for a in self.n_args[nid] + self.fixed[inst]]
        try:
            with np.errstate(all="ignore"):
                vals = self.ops[inst].compute(self.n_attrs[nid], ins)
        except (ValueError, IndexError, ZeroDivisionError):
            return False
        for t, v in zip(outs, vals):
            self.t_val[t] = v
            if self.t_hash[t] is None:
                self.t_hash[t] = tensor_hash(v)
        return True

    def _special(self, outs: tuple[int, ...]) -> str | None:
        """"zero" if an output is all zeros (x - x: rewriting to it needs no rule and computing
        on it is waste); "input" if an output equals an input (T(T(x)) = x: worth recording
        as a graph, but every extension of it has a cheaper twin that reads the input)."""
        for t in outs:
            if not self.t_val[t].any():
                return "zero"
        for t in outs:
            if self.t_hash[t] in self.input_hashes:
                return "input"
        return None

    def _drop_values(self, nid: int) -> None:
        for t in self.n_outs[nid]:
            self.t_val[t] = None

    # -- enumeration --------------------------------------------------------------------------

    def _level1(self) -> list[int]:
        """Every valid node over inputs only, in a fixed order (the roots of the subtrees)."""
        out = []
        for ii, inst in enumerate(self.u.instances):
            for args in itertools.product(self.free, repeat=inst.arity):
                nid = self.node(ii, tuple(args))
                if nid >= 0:
                    out.append(nid)
        return out

    def _extensions(self, gtensors: list[int]) -> Iterator[int]:
        """Candidate nodes for the next step: input-only nodes and nodes reading >=1 graph
        tensor (valid ones only; duplicates across argument positions are not produced)."""
        yield from self.level1
        avail = self.free + gtensors
        gset = set(gtensors)
        by_rank: dict[int, list[int]] = {}
        by_shape: dict[tuple, list[int]] = {}
        for t in avail:
            by_rank.setdefault(len(self.t_shape[t]), []).append(t)
            by_shape.setdefault(self.t_shape[t], []).append(t)
        node = self.node
        for ii, inst in enumerate(self.u.instances):
            ranks = inst.ranks
            if inst.arity == 1:
                for g in gtensors:
                    if not ranks or len(self.t_shape[g]) in ranks[0]:
                        n = node(ii, (g,))
                        if n >= 0:
                            yield n
            elif inst.arity == 2:
                if inst.same_shape or not ranks:
                    for g in gtensors:
                        for o in by_shape[self.t_shape[g]]:
                            n = node(ii, (g, o))
                            if n >= 0:
                                yield n
                            if o not in gset:
                                n = node(ii, (o, g))
                                if n >= 0:
                                    yield n
                    continue
                for g in gtensors:
                    r = len(self.t_shape[g])
                    if r in ranks[0]:
                        for rr in ranks[1]:
                            for o in by_rank.get(rr, ()):
                                n = node(ii, (g, o))
                                if n >= 0:
                                    yield n
                    if r in ranks[1]:
                        for rr in ranks[0]:
                            for o in by_rank.get(rr, ()):
                                if o not in gset:
                                    n = node(ii, (o, g))
                                    if n >= 0:
                                        yield n
            elif inst.arity >= 3:
                pools = [[t for r in (ranks[p] if ranks else by_rank) for t in by_rank.get(r, ())]
                         for p in range(inst.arity)]
                for args in itertools.product(*pools):
                    if gset.intersection(args):
                        n = node(ii, args)
                        if n >= 0:
                            yield n

    def _components(self, nodes: list[int]) -> list[set]:
        comps: list[set] = []
        for n in nodes:
            touch = set(self.n_touch[n])
            keep = []
            for c in comps:
                if c.isdisjoint(touch):
                    keep.append(c)
                else:
                    touch |= c
            comps = keep + [touch]
        return comps

    def pack(self, nodes: list[int]) -> list[int]:
        """Nodes as ints: instance << 24 | three argument bytes (input index, or 64 + 4 * graph
        position + output index; 255 = none)."""
        pos = {n: j for j, n in enumerate(nodes)}
        row = []
        for n in nodes:
            codes = []
            for a in self.n_args[n]:
                p = self.t_node[a]
                codes.append(a if p < 0 else INPUT_LIMIT + 4 * pos[p] + self.t_out[a])
            codes += [NO_ARG] * (3 - len(codes))
            row.append(self.n_inst[n] << 24 | codes[0] << 16 | codes[1] << 8 | codes[2])
        return row + [-1] * (self.width - len(row))

    def unpack(self, row) -> list[int]:
        """Node ids (evaluated) of a packed graph; raises ValueError if it does not replay."""
        nodes: list[int] = []
        for code in row:
            code = int(code)
            if code < 0:
                break
            inst = code >> 24
            args = []
            for c in ((code >> 16) & 255, (code >> 8) & 255, code & 255):
                if c == NO_ARG:
                    break
                args.append(c if c < INPUT_LIMIT else
                            self.n_outs[nodes[(c - INPUT_LIMIT) // 4]][(c - INPUT_LIMIT) % 4])
            args = args[:self.u.instances[inst].arity]
            nid = self.node(inst, tuple(args))
            if nid < 0 or not self.evaluate(nid):
                raise ValueError(f"packed graph {list(row)} does not replay")
            nodes.append(nid)
        return nodes

    def outputs(self, nodes: list[int]) -> list[int]:
        """The graph's outputs: node outputs that no node of the graph reads."""
        read = {a for n in nodes for a in self.n_args[n]}
        return [t for n in nodes for t in self.n_outs[n] if t not in read]

    def run_subtree(self, root_index: int, sink: Callable[[int, list[int]], None]) -> None:
        """Enumerate every graph whose canonical path starts at `level1[root_index]`."""
        root = self.level1[root_index]
        if not self.evaluate(root):
            self.counts.invalid += 1
            return
        self.counts.graphs += 1
        kind = self._special(self.n_outs[root])
        if kind == "zero":
            self.counts.zero_output += 1
            return
        self._record([root], sink)
        if kind == "input":
            self.counts.input_copy += 1
            return
        self._dfs([root], {root}, [root], {t: self.t_hash[t] for t in self.n_outs[root]}, sink,
                  0 if self.n_weight[root] else 1)

    def _record(self, nodes: list[int], sink, connected: bool | None = None) -> None:
        outs = self.outputs(nodes)
        if len(outs) > self.u.max_outputs:
            self.counts.too_many_outputs += 1
            return
        if all(self.t_weight[t] for t in outs) or (
                len(nodes) > self.max_ops and any(self.t_weight[t] for t in outs)):
            # (a graph beyond max_ops nodes is kept only for the weights its runtime nodes
            # read: one with a weight output is a stepping stone, not a rule's side)
            self.counts.weight_only += 1
            return
        if connected is None:
            # Two independent one-op nodes stay: they are the target of multi-output rules such
            # as Split(Relu(Concat(x, y))) => (Relu x, Relu y).
            connected = len(nodes) == 2 or len(self._components(nodes)) == 1
        if not connected:
            self.counts.disconnected += 1
            return
        self.counts.fingerprinted += 1
        sink(outputs_hash([self.t_hash[t] for t in outs]), self.pack(nodes))

    def _dfs(self, nodes: list[int], in_graph: set, sinks: list[int],
             produced: dict[int, int], sink: Callable[[int, list[int]], None],
             runtime: int) -> None:
        depth = len(nodes)
        if depth >= self.width or runtime >= self.max_ops:
            return  # no node fits (see `leaf` below)
        comps = None  # components of `nodes`, computed for the first leaf candidate
        gtensors = [t for n in nodes for t in self.n_outs[n]]
        produced_hashes = set(produced.values())
        n_ord = self.n_ord
        for n in self._extensions(gtensors):
            if n in in_graph:
                continue
            prods = self.n_prods[n]
            o = n_ord[n]
            if any(n_ord[s] > o for s in sinks if s not in prods):
                continue  # not the largest sink: this graph is reached from another parent
            weight = self.n_weight[n]
            r = runtime if weight else runtime + 1
            if r > self.max_ops:
                continue
            if (depth + 1 > self.max_ops and (r == self.max_ops or depth + 1 == self.width)
                    and (weight or any(self.n_weight[s] for s in sinks if s not in prods))):
                continue  # uses the free weight-only nodes, and one is an output for good
            self.counts.graphs += 1
            # A leaf: no node can follow (all nodes used, or the runtime budget spent, after
            # which a node would be a weight-only output for good). Decided per node, as its
            # weight flag is known before evaluation.
            leaf = depth + 1 == self.width or r == self.max_ops
            if leaf and depth >= 2:  # (two-node graphs may be disconnected: see _record)
                if comps is None:
                    comps = self._components(nodes)
                touch = self.n_touch[n]
                if any(c.isdisjoint(touch) for c in comps):
                    self.counts.disconnected += 1
                    continue
            if not self.evaluate(n):
                self.counts.invalid += 1
                continue
            outs = self.n_outs[n]
            if produced_hashes:
                arg_hashes = {self.t_hash[a] for a in self.n_args[n]}
                if any(self.t_hash[t] in produced_hashes and self.t_hash[t] not in arg_hashes
                       for t in outs):
                    self.counts.duplicate_tensor += 1
                    continue
            child = nodes + [n]
            kind = self._special(outs)
            if kind == "zero":
                self.counts.zero_output += 1
                continue
            if leaf:
                self._record(child, sink, connected=True)
                self._drop_values(n)
                continue
            self._record(child, sink)
            if kind == "input":
                self.counts.input_copy += 1
                continue
            new_produced = dict(produced)
            for t in outs:
                new_produced[t] = self.t_hash[t]
            in_graph.add(n)
            self._dfs(child, in_graph, [s for s in sinks if s not in prods] + [n], new_produced,
                      sink, r)
            in_graph.discard(n)


# ---------------------------------------------------------------------------------------------
# running it, in parallel

_WORKER: dict = {}


def _worker_setup(universe: Universe, seed: int, max_ops: int, max_weight_ops: int = 0) -> None:
    _WORKER["enum"] = Enumerator(universe, seed, max_ops, max_weight_ops)


def _pool_worker_setup(universe: Universe, seed: int, max_ops: int,
                       max_weight_ops: int) -> None:
    # Ctrl-C is the parent's to handle (it keeps what finished and stops the pool); a worker
    # that caught it too would print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits the CLI's SIGTERM handler (superopt.core.atomic), which only
    # notes the signal inside a critical section and otherwise raises KeyboardInterrupt into
    # whatever the worker waits on; the pool stops its workers with SIGTERM when it closes
    # (even after a normal run), and a worker that survived it hung `make rules` in the pool's
    # join. A worker just dies on SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _worker_setup(universe, seed, max_ops, max_weight_ops)


def _run_root(root_index: int) -> TaskOutput:
    enum: Enumerator = _WORKER["enum"]
    fps = array("q")
    rows = array("q")

    def sink(fp: int, row: list[int]) -> None:
        fps.append(fp)
        rows.extend(row)

    before = Counts(**enum.counts.as_dict())
    enum.run_subtree(root_index, sink)
    delta = Counts(**{k: v - getattr(before, k) for k, v in enum.counts.as_dict().items()})
    if len(enum.cache) > 1_000_000:
        # Bound a worker's memory: start its caches afresh (ids are local, rows are packed).
        _worker_setup(enum.u, enum.seed, enum.max_ops, enum.max_weight_ops)
    return TaskOutput(np.frombuffer(fps, dtype=np.int64).copy(),
                      np.frombuffer(rows, dtype=np.int64).reshape(-1, enum.width).copy(),
                      delta)


def run_root_here(universe: Universe, seed: int, max_ops: int, root_index: int,
                  max_weight_ops: int = 0) -> TaskOutput:
    """One subtree (the graphs whose canonical path starts at `level1[root_index]`) in this
    process, for schedulers other than the pool (the Ray engine, `generator/distributed.py`).
    The process keeps its Enumerator, and so its value cache, between calls with the same
    settings."""
    key = (repr(universe.settings), universe.max_outputs, seed, max_ops, max_weight_ops)
    if _WORKER.get("key") != key or "enum" not in _WORKER:
        _worker_setup(universe, seed, max_ops, max_weight_ops)
        _WORKER["key"] = key
    return _run_root(root_index)


def _run_indexed(root_index: int) -> tuple[int, TaskOutput]:
    return root_index, _run_root(root_index)


def zero_node_graphs(enum: Enumerator) -> tuple[np.ndarray, np.ndarray]:
    """The zero-node graphs (one runtime input as the output): fingerprints and packed rows
    (row `[-2 - input index, -1, ...]`), in input order."""
    zfps, zrows = [], []
    for i, spec in enumerate(enum.u.inputs):
        if spec.role == "free" and spec.kind == "tensor":
            zfps.append(outputs_hash([enum.t_hash[i]]))
            zrows.append([-2 - i] + [-1] * (enum.width - 1))
    return (np.array(zfps, dtype=np.int64),
            np.array(zrows, dtype=np.int64).reshape(-1, enum.width))


@dataclass
class Enumeration:
    """All fingerprinted graphs of one run: `fps[i]` is the fingerprint of packed `graphs[i]`.
    `complete` is False when the run was interrupted (what finished is kept)."""

    fps: np.ndarray
    graphs: np.ndarray
    counts: Counts
    roots_done: int
    roots_total: int
    complete: bool = True


def enumerate_graphs(universe: Universe, max_ops: int, seed: int = 0, workers: int = 0,
                     progress: Callable[[int, int], None] | None = None,
                     max_weight_ops: int = 0) -> Enumeration:
    """Enumerate and fingerprint every graph over `universe` of up to max_ops runtime nodes and up
    to max_weight_ops weight-only nodes beyond those (see the module's docstring). Rows of
    `graphs` are `max_ops + max_weight_ops` wide.

    Input-only graphs with one tensor input as output (zero nodes) are included, so a rule may
    rewrite to a bare variable. Ctrl-C stops early and returns what finished (complete=False).

    >>> e = enumerate_graphs(default_universe(["Relu", "Add"]), 2)     # doctest: +SKIP
    """
    workers = workers or os.cpu_count() or 1
    main = Enumerator(universe, seed, max_ops, max_weight_ops)
    n_roots = len(main.level1)
    fps_parts, graph_parts = [], []
    counts = Counts()
    zfps, zrows = zero_node_graphs(main)
    fps_parts.append(zfps)
    graph_parts.append(zrows)
    done = 0
    complete = True

    by_root: dict[int, TaskOutput] = {}

    def collect(root: int, out: TaskOutput) -> None:
        nonlocal done
        by_root[root] = out
        counts.add(out.counts)
        done += 1
        if progress:
            progress(done, n_roots)

    order = list(range(n_roots))
    try:
        if workers <= 1:
            _WORKER["enum"] = main
            for r in order:
                collect(r, _run_root(r))
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers, initializer=_pool_worker_setup,
                          initargs=(universe, seed, max_ops, max_weight_ops)) as pool:
                try:
                    for r, out in pool.imap_unordered(_run_indexed, order, chunksize=1):
                        collect(r, out)
                except KeyboardInterrupt:
                    pool.terminate()
                    raise
    except KeyboardInterrupt:
        complete = False
    # In root order, so the arrays do not depend on which worker finished first.
    for r in sorted(by_root):
        fps_parts.append(by_root[r].fps)
        graph_parts.append(by_root[r].graphs)
    return Enumeration(np.concatenate(fps_parts), np.concatenate(graph_parts), counts, done,
                       n_roots, complete)
