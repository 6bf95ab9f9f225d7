"""Rule matching on a Graph and TASO's cost-guided backtracking search.

A search returns records (`SearchResult`): the path of `Step`s to the best graph, each with the
whole graphs before and after, one `Iteration` per expansion, and a `StopReason`.
"""

from superopt.search.backtrack import (
    Candidate,
    Iteration,
    SearchLimits,
    SearchResult,
    SearchStats,
    Step,
    StopReason,
    search,
)
from superopt.search.match import (
    Applied,
    Match,
    Refused,
    RuleIndex,
    apply_match,
    explain,
    find_matches,
)
from superopt.search.regions import search_auto, search_regions

__all__ = ["Applied", "Candidate", "Iteration", "Match", "Refused", "RuleIndex", "SearchLimits",
           "SearchResult", "SearchStats", "Step", "StopReason", "apply_match", "explain",
           "find_matches", "search", "search_auto", "search_regions"]
