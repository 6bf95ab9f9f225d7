"""Region-by-region search for graphs too large to search whole within the time limit.

The topologically ordered nodes are cut into overlapping windows of `window` nodes (each window
starts `window - overlap` nodes after the previous one). For each window in turn, the
backtracking search runs with every node outside the window frozen: a match is allowed only if
each node it covers is in the window or was created by a rewrite in this region. The best graph
of a region is kept and the next window starts from it, so improvements accumulate. Each region
gets an equal share of the remaining time and expansion budget, and regions with no site of any
rule are skipped at no cost. Rewrites across a window border are found by the overlap. The
result's stop reason is the limit that cut a window short ("time limit", else "budget"), and
"queue empty" only when every window emptied its queue.

A window's search runs on the whole graph (only its matches are restricted), so its steps'
graphs before and after are whole graphs, and the windows' paths join into one path from the
input to the best graph: the result looks like a whole-graph search's, with each step and
iteration carrying its region number and iterations numbered on across the windows.

Example:
    >>> limits = SearchLimits(time_limit_s=30)
    >>> result = search_regions(bert_graph, rules, cost, limits)  # doctest: +SKIP
    >>> result.stats.regions                                      # doctest: +SKIP
    14
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from superopt.core.costing import CostModel
from superopt.core.ir import Graph, Node
from superopt.core.rules import Rule
from superopt.search.backtrack import (
    Candidate,
    Iteration,
    SearchLimits,
    SearchProgress,
    SearchResult,
    SearchStats,
    Step,
    StopReason,
    search,
)
from superopt.search.match import Match, RuleIndex, find_matches, nodes_by_op

#: graphs with more nodes than this are searched region by region by `search_auto`
REGION_THRESHOLD = 150
DEFAULT_WINDOW = 60
DEFAULT_OVERLAP = 20


def windows(graph: Graph, window: int = DEFAULT_WINDOW,
            overlap: int = DEFAULT_OVERLAP) -> list[frozenset[str]]:
    """Node-name windows over the topological order (overlapping by `overlap` nodes)."""
    if window < 2 or not 0 <= overlap < window:
        raise ValueError("need window >= 2 and 0 <= overlap < window")
    names = [n.name for n in graph.nodes]
    out, stride = [], window - overlap
    for start in range(0, max(len(names) - overlap, 1), stride):
        out.append(frozenset(names[start:start + window]))
    return out


def search_regions(graph: Graph, rules: Iterable[Rule] | RuleIndex, cost_model: CostModel,
                   limits: SearchLimits | None = None, *, window: int = DEFAULT_WINDOW,
                   overlap: int = DEFAULT_OVERLAP,
                   progress: SearchProgress | None = None) -> SearchResult:
    """Search window by window (see the module doc); steps carry their region number."""
    limits = limits or SearchLimits()
    index = rules if isinstance(rules, RuleIndex) else RuleIndex(rules)
    start = time.perf_counter()
    regions = windows(graph, window, overlap)
    original_names = frozenset(n.name for n in graph.nodes)
    stats = SearchStats(regions=len(regions))
    stats.initial_cost = cost_model.graph_cost(graph)
    current = graph
    steps: list[Step] = []
    iterations: list[Iteration] = []
    stop = StopReason.EXHAUSTED
    budget_left = limits.budget
    cut: set[StopReason] = set()  # why each window's search stopped
    for i, region in enumerate(regions):
        remaining = limits.time_limit_s - (time.perf_counter() - start)
        if remaining <= 0 or budget_left <= 0:
            stop = StopReason.TIME_LIMIT if remaining <= 0 else StopReason.BUDGET
            break
        frozen = original_names - region

        def inside(m: Match, frozen: frozenset[str] = frozen) -> bool:
            return not any(n in frozen for n in m.matched_names)

        def may_root(n: Node, frozen: frozenset[str] = frozen) -> bool:
            return n.name not in frozen  # a match rooted outside the window is never inside

        if not _has_site(current, index, inside, may_root):
            continue
        share = len(regions) - i
        sub = replace(limits, time_limit_s=max(remaining / share, 1e-3),
                      budget=max(1, budget_left // share), keep_candidates=1)
        offset = time.perf_counter() - start
        result = search(current, index, cost_model, sub, match_filter=inside, region=i)
        cut.add(result.stop_reason)
        stats.merge(result.stats)
        budget_left -= result.stats.expansions
        steps.extend(_continuing(current, result.steps))
        done = len(iterations)
        iterations.extend(replace(it, index=done + it.index, elapsed_s=offset + it.elapsed_s)
                          for it in result.iterations)
        current = result.best
        if progress is not None:
            progress(i + 1, len(regions), result.best_cost)
    if stop is StopReason.EXHAUSTED:
        # every window was searched, but one cut short by its share of the time or budget
        # did not empty its queue: the search as a whole stopped on that limit
        for reason in (StopReason.TIME_LIMIT, StopReason.BUDGET):
            if reason in cut:
                stop = reason
                break
    stats.best_cost = cost_model.graph_cost(current)
    stats.elapsed_s = time.perf_counter() - start
    return SearchResult(current, steps, stats, stop, [Candidate(stats.best_cost, current, steps)],
                        iterations)


def _continuing(current: Graph, path: list[Step]) -> list[Step]:
    """A window's path, checked to start from the graph the previous windows ended on."""
    if path and path[0].before != current:
        raise RuntimeError("region search: a window's path does not start from the current "
                           "graph")  # an internal error: windows always search `current`
    return path


def _has_site(graph: Graph, index: RuleIndex, inside, may_root) -> bool:
    """Whether a rule matches inside the window: matched only at the window's roots (cheap,
    and a rule's first 50 matches are not all spent outside the window)."""
    by_op = nodes_by_op(graph, may_root)
    return any(inside(m) for r in index.candidates(by_op)
               for m in find_matches(graph, r, by_op=by_op, limit=50))


def search_auto(graph: Graph, rules: Iterable[Rule] | RuleIndex, cost_model: CostModel,
                limits: SearchLimits | None = None, *, threshold: int = REGION_THRESHOLD,
                progress: SearchProgress | None = None) -> SearchResult:
    """Whole-graph search for small graphs, region by region above `threshold` nodes."""
    if len(graph.nodes) > threshold:
        return search_regions(graph, rules, cost_model, limits, progress=progress)
    return search(graph, rules, cost_model, limits, progress=progress)
