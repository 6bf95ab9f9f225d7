"""TASO's cost-guided backtracking search over rule applications.

A priority queue of graphs ordered by cost: pop the cheapest, apply every rule at every match,
and enqueue each new graph (deduplicated by its hash: the IR is hash-consed, so equal graphs
hash alike at no cost) whose cost is below `alpha` times the best cost so far. `alpha` above 1
lets the search pass through slightly worse graphs on the way to better ones. The search stops
on a budget of expansions, a time limit or an empty queue (a `StopReason`).

Matching is incremental (`_Matches`): a rewrite rebuilds only the nodes downstream of what it
replaced (the IR is immutable and hash-consed), so every node that reads a new node's output is
new too, and a match rooted at an old node covers old nodes only, which the parent graph
matched already. A child's matches of a single-pattern rule are therefore its parent's matches
whose nodes all survived plus the matches rooted at its new nodes, in the order a full match
gives. Multi-pattern rules (merges) are matched in full: their roots may mix old and new nodes.
A single-pattern rule tries as roots only the nodes whose operands fit it one level down
(`operands_fit`: an Add whose operands are a MatMul and anything, in either order), which
hundreds of rules rooted at Add would otherwise each try in turn.

A rewrite the parent graph made already is not built again at once: a child matches most of
its parent's sites again (under the same node names: a rewrite rebuilds what lies downstream
of it under their own names), and building and costing each of those graphs was most of a
search (nasrnn: about 130 graphs per expansion once merged kernels merge again, 8 ms each).
Such a rewrite is queued on the cost change it made in the parent (`match_key` ->
`_Matches.deltas`), and built, deduplicated and costed only when it is popped, then queued
again at its true cost. Rewrites far apart change the cost alike in parent and child, so the
estimate is what building gives, up to the fusions at their borders; the true cost decides
before anything is expanded, and the deferred graphs that are never popped are never built.

Like egg's `Runner`, the search keeps records rather than leaving callers to replay it: the
result holds the path that led to the best graph (one `Step` per rewrite: the rule, the nodes
it matched, the nodes it created, and the whole graphs before and after), the same for each
kept candidate, and one `Iteration` record per expansion (queue size, graphs generated, best
cost so far, elapsed time). A report draws each rewrite from its step's graphs; nothing is
matched or applied again.

Example:
    >>> result = search(graph, rules, AnalyticCost.for_device("cpu"))   # doctest: +SKIP
    >>> result.stop_reason, len(result.steps)                           # doctest: +SKIP
    (<StopReason.EXHAUSTED: 'queue empty'>, 1)
    >>> result.steps[-1].after is result.best                           # doctest: +SKIP
    True
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from superopt.core.costing import CostModel
from superopt.core.ir import Graph, Node, Value
from superopt.core.pattern import Pattern, PNode
from superopt.core.rules import Rule
from superopt.search.match import (
    Match,
    Refused,
    RuleIndex,
    apply_match,
    find_matches,
    nodes_by_op,
    operands_fit,
)


class StopReason(enum.Enum):
    """What ended a search (egg's `StopReason`); `value` is the text reports show."""

    EXHAUSTED = "queue empty"
    BUDGET = "budget"
    TIME_LIMIT = "time limit"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SearchLimits:
    """Limits of one search, with documented defaults.

    - `alpha` (1.05): enqueue a graph only if its cost < alpha × best cost so far (TASO: 1.0-1.05).
    - `budget` (300): graphs expanded (popped and rewritten) at most.
    - `time_limit_s` (30): wall-clock seconds at most; the best graph so far is returned.
    - `max_growth` (1.2) and `growth_slack` (10): a graph may have at most
      `max_growth × original nodes + growth_slack` nodes (rewrites that only grow are cut).
    - `max_matches_per_rule` (200): sites tried per rule and graph (bounds one expansion).
    - `keep_candidates` (3): how many of the cheapest distinct graphs the result keeps, for the
      end-to-end A/B gate.
    """

    alpha: float = 1.05
    budget: int = 300
    time_limit_s: float = 30.0
    max_growth: float = 1.2
    growth_slack: int = 10
    max_matches_per_rule: int = 200
    keep_candidates: int = 3

    def __post_init__(self) -> None:
        if self.alpha < 1.0:
            raise ValueError(f"alpha must be at least 1.0, got {self.alpha}")
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1, got {self.budget}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time limit must be positive, got {self.time_limit_s}")


@dataclass(frozen=True)
class Step:
    """One rewrite on the way to a graph, as the search applied it: the raw material of a report.

    `before` and `after` are the whole graphs the rewrite went from and to (in a region search
    too), `rule` the rule applied; `matched_nodes` are the names of the nodes its source patterns
    covered in `before`, `created_nodes` the names of the nodes its target created in `after`,
    and `replaced` the values of `before` the source patterns' roots matched (the values the
    rewrite replaced). Costs are the whole graph's.
    """

    rule: Rule
    matched_nodes: tuple[str, ...]
    created_nodes: tuple[str, ...]
    cost_before: float
    cost_after: float
    before: Graph = field(repr=False)
    after: Graph = field(repr=False)
    replaced: tuple[Value, ...] = field(default=(), repr=False)
    region: int | None = None

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def rule_name(self) -> str:
        return self.rule.name

    @property
    def src(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.rule.src)

    @property
    def dst(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.rule.dst)

    @property
    def proof(self) -> dict[str, Any]:
        return dict(self.rule.proof)

    @property
    def gain(self) -> float:
        """Estimated seconds saved by this step (negative: a step through a worse graph)."""
        return self.cost_before - self.cost_after

    @property
    def after_focus(self) -> tuple[str, ...]:
        """The nodes of `after` that show what the rewrite did: the created nodes or, when the
        target only reuses existing values, the nodes that read the replaced values before."""
        if self.created_nodes:
            return self.created_nodes
        users = self.before.users
        readers = {u.name for v in self.replaced for u, _ in users.get(v, ())}
        return tuple(n.name for n in self.after.nodes if n.name in readers)

    def to_json(self) -> dict:
        return {"rule_id": self.rule_id, "rule_name": self.rule_name, "src": list(self.src),
                "dst": list(self.dst), "matched_nodes": list(self.matched_nodes),
                "created_nodes": list(self.created_nodes), "cost_before": self.cost_before,
                "cost_after": self.cost_after, "gain": self.gain, "proof": self.proof,
                "region": self.region}


@dataclass(frozen=True)
class Iteration:
    """One expansion (egg's `Iteration`): a graph popped from the queue and rewritten.

    `index` counts expansions from 0 over the whole search (a region search numbers on across
    its windows); `generated` and `enqueued` are the new graphs built since the previous record
    and those of them queued: this expansion's, and the deferred rewrites built as they were
    popped before it (the last record also counts those built after it); `queue_size` is the
    queue's length after it; `best_cost` the best cost so far; `elapsed_s` seconds since the
    search started.
    """

    index: int
    cost: float
    generated: int
    enqueued: int
    queue_size: int
    best_cost: float
    elapsed_s: float
    region: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


class Candidate(NamedTuple):
    """A distinct graph the search found, with its cost and the path of steps to it."""

    cost: float
    graph: Graph
    steps: list[Step]


@dataclass
class SearchStats:
    """Counters of one search (or the sum over regions)."""

    expansions: int = 0
    generated: int = 0
    enqueued: int = 0
    duplicates: int = 0
    pruned_cost: int = 0
    pruned_growth: int = 0
    refused: int = 0
    deferred: int = 0  # candidates queued on an estimate, built only when popped
    initial_cost: float = 0.0
    best_cost: float = 0.0
    elapsed_s: float = 0.0
    regions: int = 0
    rule_fires: dict[str, int] = field(default_factory=dict)  # rule id -> new graphs made
    refusals: dict[str, int] = field(default_factory=dict)  # reason -> count (first 50 kinds)

    def merge(self, other: SearchStats) -> None:
        for name in ("expansions", "generated", "enqueued", "duplicates", "pruned_cost",
                     "pruned_growth", "refused", "deferred"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for k, v in other.rule_fires.items():
            self.rule_fires[k] = self.rule_fires.get(k, 0) + v
        for k, v in other.refusals.items():
            if k in self.refusals or len(self.refusals) < 50:
                self.refusals[k] = self.refusals.get(k, 0) + v

    def to_json(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


@dataclass
class SearchResult:
    """The best graph, the path of steps that led to it, the records and why the search stopped.

    `steps` is the path from the searched graph to `best`: each step's `before` is the previous
    step's `after` (the first's is the searched graph), and the last step's `after` is `best`.
    `candidates` are the cheapest distinct graphs found, cheapest first, each with its own path;
    `candidates[0]` is the best. `iterations` has one record per expansion.
    """

    best: Graph
    steps: list[Step]
    stats: SearchStats
    stop_reason: StopReason
    candidates: list[Candidate] = field(default_factory=list)
    iterations: list[Iteration] = field(default_factory=list)

    @property
    def best_cost(self) -> float:
        return self.stats.best_cost

    @property
    def graphs(self) -> list[Graph]:
        """The path as graphs: the searched graph, then each step's graph after."""
        if not self.steps:
            return [self.best]
        return [self.steps[0].before, *(s.after for s in self.steps)]


class _Matches:
    """The matches of each rule in one expanded graph, found from its parent's where it has
    one (see the module doc). Children keep a reference to it, so the lists are complete (all
    rules that can occur) by the time a child is expanded."""

    def __init__(self, graph: Graph, parent: _Matches | None, limit: int | None) -> None:
        self.graph = graph
        self.nodes = set(graph.nodes)
        self.by_op = nodes_by_op(graph)
        self.limit = limit
        self.found: dict[str, list[Match]] = {}
        self.parent = parent
        self.fresh_by_op: dict | None = None
        self.position: dict[Node, int] = {}
        self._fits: dict[tuple, dict[str, list[Node]]] = {}
        # what each match did to the cost here (`match_key` -> new cost - this graph's cost):
        # a child estimates the same match by it instead of building and costing the graph
        self.deltas: dict[tuple, float] = {}
        if parent is not None:
            old = parent.nodes
            self.fresh_by_op = nodes_by_op(graph, keep=lambda n: n not in old)
            self.position = {n: i for i, n in enumerate(graph.nodes)}

    def of(self, rule: Rule) -> list[Match]:
        """`find_matches(graph, rule, limit=...)`, the same list in the same order."""
        parent = self.parent
        earlier = None if parent is None else parent.found.get(rule.id, [])
        if len(rule.src) > 1:
            out = find_matches(self.graph, rule, by_op=self.by_op, limit=self.limit)
        elif earlier is None or (self.limit is not None and len(earlier) >= self.limit):
            out = find_matches(self.graph, rule, by_op=self._roots(rule.src[0], self.by_op),
                               limit=self.limit)
        else:
            assert self.fresh_by_op is not None
            kept = [m for m in earlier if all(n in self.nodes for n in m.matched_nodes)]
            new = find_matches(self.graph, rule, by_op=self._roots(rule.src[0], self.fresh_by_op),
                               limit=self.limit)
            pos = self.position
            # a full match walks the roots in graph order; a root is either old or new
            out = sorted(kept + new, key=lambda m: pos[m.matched_nodes[0]])[:self.limit]
        self.found[rule.id] = out
        return out

    def _roots(self, p: Pattern, by_op: dict[str, list[Node]]) -> dict[str, list[Node]]:
        """`by_op` cut down, for a single-pattern rule rooted at p, to the nodes whose operands
        fit p one level down (`operands_fit`), in the same order: a matcher trying the rest
        would fail at once, and hundreds of rules rooted at Add each trying every Add was most
        of a transformer's search. The lists are shared by the rules that ask alike."""
        assert isinstance(p, PNode)
        key = (id(by_op), p.op, p.operand_heads)  # the op decides whether operands swap
        hit = self._fits.get(key)
        if hit is None:
            hit = self._fits[key] = {p.op: [n for n in by_op.get(p.op, ())
                                            if operands_fit(p, n)]}
        return hit

    def done(self) -> None:
        """The expansion is over: keep only what the children need (`nodes`, `found`)."""
        self.parent = self.fresh_by_op = None
        self.position = {}
        self._fits = {}


# A filter on matches (regions: only matches inside the current window).
MatchFilter = Callable[[Match], bool]
# progress(expansions done, budget, best cost)
SearchProgress = Callable[[int, int, float], None]


def search(graph: Graph, rules: Iterable[Rule] | RuleIndex, cost_model: CostModel,
           limits: SearchLimits | None = None, *, match_filter: MatchFilter | None = None,
           progress: SearchProgress | None = None, region: int | None = None) -> SearchResult:
    """TASO's backtracking search from `graph` with `rules`, ranked by `cost_model`.

    Always returns the best graph found (the input itself when nothing is cheaper), with the
    path of steps to it and one `Iteration` per expansion.

    Example:
        >>> r = search(g, [assoc_rule], NodeCount(), SearchLimits(budget=50))  # doctest: +SKIP
        >>> r.best.op_counts()                                                # doctest: +SKIP
        {'MatMul': 2}
    """
    limits = limits or SearchLimits()
    index = rules if isinstance(rules, RuleIndex) else RuleIndex(rules)
    start = time.perf_counter()
    deadline = start + limits.time_limit_s
    stats = SearchStats()
    iterations: list[Iteration] = []
    max_nodes = int(limits.max_growth * len(graph.nodes)) + limits.growth_slack

    cost0 = cost_model.graph_cost(graph)
    stats.initial_cost = stats.best_cost = cost0
    best, best_cost = graph, cost0
    # How each graph was reached: graph -> the step that made it; the start has no entry.
    parent: dict[Graph, Step] = {}
    costs: dict[Graph, float] = {graph: cost0}
    # the matches of the graph each queued graph was made from (incremental matching)
    made_from: dict[Graph, _Matches] = {}
    tie = itertools.count()
    # entries: (cost, tie, graph, None) for a built graph, or (estimated cost, tie, None,
    # _Deferred) for a rewrite known from an ancestor, built when popped (see `_Deferred`)
    queue: list[tuple[float, int, Graph | None, _Deferred | None]] = [
        (cost0, next(tie), graph, None)]
    stop = StopReason.EXHAUSTED

    generated0 = enqueued0 = 0  # the counts at the last Iteration record

    def admit(g: Graph, cost: float, m: Match, matches: _Matches) -> float | None:
        """Build, dedupe and cost g rewritten at m (cost: g's); queue the new graph if it is
        cheap enough. Its cost, or None where it was refused, seen already or too big."""
        nonlocal best, best_cost
        try:
            applied = apply_match(g, m)
        except Refused as e:
            stats.refused += 1
            reason = str(e).split(":")[0]
            if reason in stats.refusals or len(stats.refusals) < 50:
                stats.refusals[reason] = stats.refusals.get(reason, 0) + 1
            return None
        new = applied.graph
        stats.generated += 1
        if new in costs:
            stats.duplicates += 1
            return None
        if len(new.nodes) > max_nodes:
            stats.pruned_growth += 1
            costs[new] = float("inf")
            return None
        new_cost = cost_model.graph_cost(new)
        costs[new] = new_cost
        rule = m.rule
        stats.rule_fires[rule.id] = stats.rule_fires.get(rule.id, 0) + 1
        parent[new] = Step(rule, m.matched_names, applied.created_names, cost, new_cost,
                           g, new, m.roots, region)
        if new_cost < best_cost:
            best, best_cost = new, new_cost
        if new_cost < limits.alpha * best_cost:
            heapq.heappush(queue, (new_cost, next(tie), new, None))
            made_from[new] = matches
            stats.enqueued += 1
        else:
            stats.pruned_cost += 1
        return new_cost

    while queue:
        if stats.expansions >= limits.budget:
            stop = StopReason.BUDGET
            break
        if time.perf_counter() > deadline:
            stop = StopReason.TIME_LIMIT
            break
        cost, _, g, deferred = heapq.heappop(queue)
        if cost > limits.alpha * best_cost:
            if g is not None:
                made_from.pop(g, None)
            continue  # the best improved since this graph was queued
        if deferred is not None:  # build it now; it is queued again at its true cost
            admit(deferred.graph, deferred.cost, deferred.match, deferred.matches)
            continue
        assert g is not None
        origin = made_from.pop(g, None)
        stats.expansions += 1
        matches = _Matches(g, origin, limits.max_matches_per_rule)
        known = origin.deltas if origin is not None else {}
        timed_out = False
        for rule in index.candidates(matches.by_op):
            if time.perf_counter() > deadline:
                timed_out = True
                break
            for m in matches.of(rule):
                if match_filter is not None and not match_filter(m):
                    continue
                key = match_key(m)
                delta = known.get(key)
                if delta is not None:
                    # the parent made this rewrite (of nodes of the same names) already:
                    # queue it on the parent's cost change, build it only if it is popped
                    matches.deltas[key] = delta
                    if cost + delta < limits.alpha * best_cost:
                        heapq.heappush(queue, (cost + delta, next(tie), None,
                                               _Deferred(g, cost, m, matches)))
                        stats.deferred += 1
                    else:
                        stats.pruned_cost += 1
                    continue
                new_cost = admit(g, cost, m, matches)
                if new_cost is not None:
                    matches.deltas[key] = new_cost - cost
        matches.done()
        # graphs built since the last record: this expansion's, and deferred ones popped
        iterations.append(Iteration(
            len(iterations), cost, stats.generated - generated0, stats.enqueued - enqueued0,
            len(queue), best_cost, time.perf_counter() - start, region))
        generated0, enqueued0 = stats.generated, stats.enqueued
        if progress is not None:
            progress(stats.expansions, limits.budget, best_cost)
        if timed_out:
            stop = StopReason.TIME_LIMIT
            break

    if iterations and (stats.generated, stats.enqueued) != (generated0, enqueued0):
        last = iterations[-1]
        iterations[-1] = replace(last, generated=last.generated + stats.generated - generated0,
                                 enqueued=last.enqueued + stats.enqueued - enqueued0)
    stats.best_cost = best_cost
    stats.elapsed_s = time.perf_counter() - start
    ranked = sorted(((c, g) for g, c in costs.items() if c < float("inf")),
                    key=lambda cg: cg[0])
    candidates = [Candidate(c, g, _path(parent, g)) for c, g in ranked[:limits.keep_candidates]]
    return SearchResult(best, _path(parent, best), stats, stop, candidates, iterations)


class _Deferred(NamedTuple):
    """A rewrite queued on an estimate: `match` in `graph` (of cost `cost`), whose
    `matches` its graph would be matched from."""

    graph: Graph
    cost: float
    match: Match
    matches: _Matches


def match_key(m: Match) -> tuple:
    """A match's identity across a rewrite: the rule and the names of the nodes it covers
    (a rewrite rebuilds the nodes downstream of it under their own names)."""
    return (m.rule.id, m.matched_names)


def _path(parent: dict[Graph, Step], g: Graph) -> list[Step]:
    """The steps from the searched graph to `g`, following each graph's step back."""
    steps: list[Step] = []
    while g in parent:
        step = parent[g]
        steps.append(step)
        g = step.before
    steps.reverse()
    return steps
