"""From fingerprint groups to candidate rules: decode graphs into patterns and orient pairs.

Graphs whose fingerprints are equal compute (on the random inputs) the same outputs. In each
group the cheapest graph is the target, and every other graph whose variables include the
target's becomes a candidate `(src, dst)` rewriting it into the target (pairs between two
non-targets follow by composition, so they are not listed). "Cheaper" compares, in order: heavy
runtime ops (Conv, MatMul, Gemm), runtime ops of any kind, all ops (weight-only work is nearly
free because the exporter folds it), then Gemm nodes (the plain MatMul is preferred), then the
text length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from superopt.core.pattern import DimOf, Pattern, PNode, PVar
from superopt.generator.enumeration import Enumerator

HEAVY_OPS = frozenset({"Conv", "MatMul", "Gemm"})


@dataclass
class GraphInfo:
    """One decoded graph: outputs in fingerprint order, as patterns over input variables."""

    fp: int
    outputs: list[int]  # tensor ids in the decoding Enumerator
    patterns: list[Pattern]
    variables: frozenset[str]
    cost: tuple
    n_nodes: int
    nodes: list[int]


def _attr_value(v):
    if isinstance(v, tuple) and v and isinstance(v[0], tuple):  # Split atoms
        return tuple(DimOf(name, axis) for name, axis in v)
    return v


class Decoder:
    """Turns packed graphs into patterns (memoized per tensor)."""

    def __init__(self, enum: Enumerator) -> None:
        self.enum = enum
        self.memo: dict[int, Pattern] = {}

    def pattern(self, tid: int) -> Pattern:
        p = self.memo.get(tid)
        if p is not None:
            return p
        e = self.enum
        nid = e.t_node[tid]
        if nid < 0:
            p = PVar(e.u.inputs[tid].name)
        else:
            inst = e.n_inst[nid]
            attrs = tuple(sorted((k, _attr_value(v)) for k, v in e.n_pattrs[nid].items()))
            args = tuple(self.pattern(a) for a in e.n_args[nid] + e.fixed[inst])
            p = PNode(e.u.instances[inst].op, attrs, args, e.t_out[tid])
        self.memo[tid] = p
        return p

    def decode(self, fp: int, row: np.ndarray) -> GraphInfo:
        e = self.enum
        if row[0] <= -2:  # zero-node graph: an input is the output
            tid = int(-2 - row[0])
            return GraphInfo(fp, [tid], [PVar(e.u.inputs[tid].name)],
                             frozenset({e.u.inputs[tid].name}), (0, 0, 0, 0, 0), 0, [])
        nodes = e.unpack(row)
        outs = sorted(e.outputs(nodes), key=lambda t: e.t_hash[t])
        patterns = [self.pattern(t) for t in outs]
        variables: set[str] = set()
        for p in patterns:
            variables |= p.variables()
        heavy = runtime = gemm = 0
        for n in nodes:
            op = e.u.instances[e.n_inst[n]].op
            gemm += op == "Gemm"
            if not e.t_weight[e.n_outs[n][0]]:
                runtime += 1
                heavy += op in HEAVY_OPS
        text = sum(len(str(p)) for p in patterns)
        return GraphInfo(fp, outs, patterns, frozenset(variables),
                         (heavy, runtime, len(nodes), gemm, text), len(nodes), nodes)


@dataclass
class Candidate:
    """A proposed rule: `src` may be rewritten into `dst` (same fingerprint)."""

    src: GraphInfo
    dst: GraphInfo

    def detached(self) -> Candidate:
        """The same candidate without ids into the decoder (patterns and fingerprints only)."""
        def strip(g: GraphInfo) -> GraphInfo:
            return GraphInfo(g.fp, [], g.patterns, g.variables, g.cost, g.n_nodes, [])
        return Candidate(strip(self.src), strip(self.dst))

    def texts(self) -> tuple[list[str], list[str]]:
        return [str(p) for p in self.src.patterns], [str(p) for p in self.dst.patterns]


def fingerprint_groups(fps: np.ndarray) -> list[np.ndarray]:
    """Indices of graphs sharing a fingerprint, for every fingerprint shared by >= 2 graphs."""
    order = np.argsort(fps, kind="stable")
    sorted_fps = fps[order]
    if len(sorted_fps) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, sorted_fps[1:] != sorted_fps[:-1]])
    ends = np.r_[starts[1:], len(sorted_fps)]
    return [order[s:e] for s, e in zip(starts, ends) if e - s >= 2]


def propose_group(idx: np.ndarray, fps: np.ndarray, graphs: np.ndarray, decoder: Decoder,
                  counts: dict[str, int], max_scan: int = 64) -> list[Candidate]:
    """Orient one group into candidates (member -> cheapest member it can be rewritten to).

    Counts graphs that fail to replay (`decode_failed`) and members with no cheaper graph over
    a subset of their variables (`no_target`).
    """
    out: list[Candidate] = []
    infos = []
    for i in idx:
        try:
            infos.append(decoder.decode(int(fps[i]), graphs[i]))
        except ValueError:
            counts["decode_failed"] = counts.get("decode_failed", 0) + 1
    # Ties broken by text, so the result does not depend on the order workers finished in.
    infos.sort(key=lambda g: (g.cost, [str(p) for p in g.patterns]))
    for j in range(1, len(infos)):
        m = infos[j]
        target = next((r for r in infos[:min(j, max_scan)]
                       if r.variables <= m.variables and len(r.outputs) == len(m.outputs)),
                      None)
        if target is None:
            counts["no_target"] = counts.get("no_target", 0) + 1
            continue
        out.append(Candidate(m, target))
    return out
