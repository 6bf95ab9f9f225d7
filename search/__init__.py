"""Rule matching on a Graph and TASO's cost-guided backtracking search."""

from superopt.search.backtrack import SearchLimits, SearchResult, SearchStats, Step, search
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

__all__ = ["Applied", "Match", "Refused", "RuleIndex", "SearchLimits", "SearchResult",
           "SearchStats", "Step", "apply_match", "explain", "find_matches", "search",
           "search_auto", "search_regions"]
