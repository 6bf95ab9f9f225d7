"""TASO's cost-guided backtracking search over rule applications.

A priority queue of graphs ordered by cost: pop the cheapest, apply every rule at every match,
and enqueue each new graph (deduplicated by its hash: the IR is hash-consed, so equal graphs
hash alike at no cost) whose cost is below `alpha` times the best cost so far. `alpha` above 1
lets the search pass through slightly worse graphs on the way to better ones. The search stops
on a budget of expansions, a time limit or an empty queue, and returns the best graph found with
the sequence of rewrites (`Step`s) that produced it.

Example:
    >>> result = search(graph, rules, AnalyticCost.for_device("cpu"))   # doctest: +SKIP
    >>> result.stop_reason, len(result.steps)                           # doctest: +SKIP
    ('queue empty', 1)
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from superopt.core.costing import CostModel
from superopt.core.ir import Graph
from superopt.core.rules import Rule
from superopt.search.match import (
    Match,
    Refused,
    RuleIndex,
    apply_match,
    find_matches,
    nodes_by_op,
)

# Typed stop reasons (egg's StopReason): what ended the search.
STOP_EXHAUSTED = "queue empty"
STOP_BUDGET = "budget"
STOP_TIME = "time limit"


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
    """One rewrite applied on the way to the best graph: the raw material of a report.

    `matched_nodes` are the names of the nodes the source patterns covered in the graph before;
    `created_nodes` the names of the nodes the target created in the graph after (a drawing of
    the affected subgraph before/after starts from these). Costs are the whole graph's.
    """

    rule_id: str
    rule_name: str
    src: tuple[str, ...]
    dst: tuple[str, ...]
    matched_nodes: tuple[str, ...]
    created_nodes: tuple[str, ...]
    cost_before: float
    cost_after: float
    proof: dict = field(default_factory=dict)
    region: int | None = None

    @property
    def gain(self) -> float:
        """Estimated seconds saved by this step (negative: a step through a worse graph)."""
        return self.cost_before - self.cost_after

    def to_json(self) -> dict:
        return {"rule_id": self.rule_id, "rule_name": self.rule_name, "src": list(self.src),
                "dst": list(self.dst), "matched_nodes": list(self.matched_nodes),
                "created_nodes": list(self.created_nodes), "cost_before": self.cost_before,
                "cost_after": self.cost_after, "gain": self.gain, "proof": dict(self.proof),
                "region": self.region}


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
    initial_cost: float = 0.0
    best_cost: float = 0.0
    elapsed_s: float = 0.0
    regions: int = 0
    rule_fires: dict[str, int] = field(default_factory=dict)  # rule id -> new graphs made
    refusals: dict[str, int] = field(default_factory=dict)  # reason -> count (first 50 kinds)

    def merge(self, other: SearchStats) -> None:
        for name in ("expansions", "generated", "enqueued", "duplicates", "pruned_cost",
                     "pruned_growth", "refused"):
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
    """The best graph, the steps that lead to it, statistics and why the search stopped.

    `candidates` are the cheapest distinct graphs found, cheapest first, as (cost, graph,
    steps); `candidates[0]` is the best.
    """

    best: Graph
    steps: list[Step]
    stats: SearchStats
    stop_reason: str
    candidates: list[tuple[float, Graph, list[Step]]] = field(default_factory=list)

    @property
    def best_cost(self) -> float:
        return self.stats.best_cost


# A filter on matches (regions: only matches inside the current window).
MatchFilter = Callable[[Match], bool]
# progress(expansions done, budget, best cost)
SearchProgress = Callable[[int, int, float], None]


def search(graph: Graph, rules: Iterable[Rule] | RuleIndex, cost_model: CostModel,
           limits: SearchLimits | None = None, *, match_filter: MatchFilter | None = None,
           progress: SearchProgress | None = None, region: int | None = None) -> SearchResult:
    """TASO's backtracking search from `graph` with `rules`, ranked by `cost_model`.

    Always returns the best graph found (the input itself when nothing is cheaper).

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
    max_nodes = int(limits.max_growth * len(graph.nodes)) + limits.growth_slack

    cost0 = cost_model.graph_cost(graph)
    stats.initial_cost = stats.best_cost = cost0
    best, best_cost = graph, cost0
    # How each graph was reached: graph -> (parent graph, step); the start has no entry.
    parent: dict[Graph, tuple[Graph, Step]] = {}
    costs: dict[Graph, float] = {graph: cost0}
    tie = itertools.count()
    queue: list[tuple[float, int, Graph]] = [(cost0, next(tie), graph)]
    stop = STOP_EXHAUSTED

    while queue:
        if stats.expansions >= limits.budget:
            stop = STOP_BUDGET
            break
        if time.perf_counter() > deadline:
            stop = STOP_TIME
            break
        cost, _, g = heapq.heappop(queue)
        if cost > limits.alpha * best_cost:
            continue  # the best improved since this graph was queued
        stats.expansions += 1
        by_op = nodes_by_op(g)
        timed_out = False
        for rule in index.candidates(by_op):
            if time.perf_counter() > deadline:
                timed_out = True
                break
            for m in find_matches(g, rule, by_op=by_op, limit=limits.max_matches_per_rule):
                if match_filter is not None and not match_filter(m):
                    continue
                try:
                    applied = apply_match(g, m)
                except Refused as e:
                    stats.refused += 1
                    reason = str(e).split(":")[0]
                    if reason in stats.refusals or len(stats.refusals) < 50:
                        stats.refusals[reason] = stats.refusals.get(reason, 0) + 1
                    continue
                new = applied.graph
                stats.generated += 1
                if new in costs:
                    stats.duplicates += 1
                    continue
                if len(new.nodes) > max_nodes:
                    stats.pruned_growth += 1
                    costs[new] = float("inf")
                    continue
                new_cost = cost_model.graph_cost(new)
                costs[new] = new_cost
                stats.rule_fires[rule.id] = stats.rule_fires.get(rule.id, 0) + 1
                step = Step(rule.id, rule.name, tuple(str(p) for p in rule.src),
                            tuple(str(p) for p in rule.dst), m.matched_names,
                            applied.created_names, cost, new_cost, dict(rule.proof), region)
                parent[new] = (g, step)
                if new_cost < best_cost:
                    best, best_cost = new, new_cost
                if new_cost < limits.alpha * best_cost:
                    heapq.heappush(queue, (new_cost, next(tie), new))
                    stats.enqueued += 1
                else:
                    stats.pruned_cost += 1
        if progress is not None:
            progress(stats.expansions, limits.budget, best_cost)
        if timed_out:
            stop = STOP_TIME
            break

    stats.best_cost = best_cost
    stats.elapsed_s = time.perf_counter() - start
    ranked = sorted(((c, g) for g, c in costs.items() if c < float("inf")),
                    key=lambda cg: cg[0])
    candidates = [(c, g, _path(parent, g)) for c, g in ranked[:limits.keep_candidates]]
    return SearchResult(best, _path(parent, best), stats, stop, candidates)


def _path(parent: dict[Graph, tuple[Graph, Step]], g: Graph) -> list[Step]:
    steps: list[Step] = []
    while g in parent:
        g, step = parent[g]
        steps.append(step)
    steps.reverse()
    return steps


def apply_steps_summary(steps: Sequence[Step]) -> dict[str, int]:
    """How often each rule (by label) was applied along a path."""
    out: dict[str, int] = {}
    for s in steps:
        label = f"{s.rule_id} ({s.rule_name})" if s.rule_name else s.rule_id
        out[label] = out.get(label, 0) + 1
    return out
