"""The rule generator: enumerate small operator graphs, fingerprint them, propose and prune
candidate rules (TASO's method; see DESIGN.md "Generator").

    >>> result = generate(max_ops=2, ops=["MatMul", "Add"], workers=1)    # doctest: +SKIP
    >>> result.stages["candidates written"]                                 # doctest: +SKIP

`generate` returns unverified rules; `superopt generate` then proves them with the verifier.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from superopt.core.errors import UsageError
from superopt.core.rules import Rule
from superopt.generator.candidates import Decoder, fingerprint_groups, propose_group
from superopt.generator.enumeration import Enumerator, enumerate_graphs
from superopt.generator.opset import Universe, default_universe
from superopt.generator.prune import (
    Checker,
    is_decomposable,
    is_supergraph,
    renaming_key,
    specializations,
)

__all__ = ["generate", "GenerateResult", "estimate_graphs", "candidate_rule"]

# Decoded nodes after which the decoder starts afresh (about 1 KB each).
DECODER_NODE_LIMIT = 400_000
# Wall seconds per enumerated graph and worker, all stages included, as measured at depth 3
# on the 2-core development machine (shared with other jobs): an estimate, not a promise.
SECONDS_PER_GRAPH = 60e-6


@dataclass
class GenerateResult:
    """Rules (unverified), counts per stage, and file metadata (settings, time, memory)."""

    rules: list[Rule]
    stages: dict[str, int]
    meta: dict
    complete: bool = True
    enumeration_counts: dict[str, int] = field(default_factory=dict)


def estimate_graphs(universe: Universe, max_ops: int, max_weight_ops: int = 0) -> int:
    """Estimated number of graphs of up to `max_ops` runtime nodes and `max_weight_ops` free
    weight-only nodes (extrapolated from depth 1 and 2, which enumerate in about a second; the
    growth factor falls slowly with depth). With free weight-only nodes, the depth-1 run is
    repeated with them and the ratio taken as the factor they multiply the count by."""
    runs = [enumerate_graphs(universe, k, workers=1) for k in range(1, min(max_ops, 2) + 1)]
    if max_weight_ops:
        runs.append(enumerate_graphs(universe, 1, workers=1, max_weight_ops=max_weight_ops))
    if not all(r.complete for r in runs):
        raise KeyboardInterrupt  # Ctrl-C while estimating: nothing to write yet
    g1 = runs[0].counts.graphs
    factor = runs[-1].counts.graphs / max(g1, 1) if max_weight_ops else 1.0
    if max_ops == 1:
        return int(g1 * factor)
    g2 = runs[1].counts.graphs
    total, level, growth = g2, g2 - g1, (g2 - g1) / max(g1, 1)
    for _ in range(3, max_ops + 1):
        growth *= 0.85
        level = level * growth
        total += level
    return int(total * factor)


def estimate_seconds(n_graphs: int, workers: int) -> float:
    return n_graphs * SECONDS_PER_GRAPH / max(workers, 1)


def _kernel_conditions(names: Sequence[str], universe: Universe) -> list[str]:
    # A rule found over 3x3 kernels holds for 3x3 kernels: the pads in its patterns say so.
    out = []
    for name in sorted(names):
        spec = next(s for s in universe.inputs if s.name == name)
        if spec.kind == "weight" and len(spec.shape) == 4:
            out.append(f"shape(?{name})[2:] == ({spec.shape[2]}, {spec.shape[3]})")
    return out


def candidate_rule(c, universe: Universe, settings: dict) -> Rule:
    """The Rule for a candidate: variable kinds, example shapes and classes from the inputs.

    Each variable's class is the rank of its input (the verifier proves the rule at exactly
    that rank, with symbolic dims; the matcher applies it only there)."""
    specs = {s.name: s for s in universe.inputs}
    names = sorted(c.src.variables)
    return Rule.make(
        c.src.patterns, c.dst.patterns,
        {n: {"kind": specs[n].kind, "rank": len(specs[n].shape)} for n in names},
        conditions=tuple(_kernel_conditions(names, universe)),
        example={n: specs[n].shape for n in names},
        provenance={**settings, "fingerprint": f"{c.src.fp & (2**64 - 1):016x}"},
        proof={"result": "unverified"})


def generate(max_ops: int = 3, ops: Sequence[str] | None = None, workers: int = 0,
             seed: int = 0, max_outputs: int = 2,
             progress: Callable[[str, int, int], None] | None = None,
             universe: Universe | None = None, max_weight_ops: int = 0) -> GenerateResult:
    """Enumerate graphs of up to `max_ops` runtime operators (and `max_weight_ops` weight-only
    ones beyond those: `superopt.generator.enumeration`), fingerprint, propose, prune and check.

    `universe` replaces the default inputs and instances (and `ops`), e.g. the configurations
    of given models (`superopt.generator.from_model.model_universe`). `progress(stage, done,
    total)` is called as work finishes. Ctrl-C during the enumeration keeps what finished (the
    result says `complete=False`). Raises UsageError for bad settings.
    """
    check_budgets(max_ops, max_weight_ops)
    if universe is None:
        universe = default_universe(ops, max_outputs)
    workers = workers or os.cpu_count() or 1
    settings, rule_provenance = run_settings(universe, max_ops, seed, max_outputs,
                                             max_weight_ops)
    t0 = time.time()
    stages: dict[str, int] = {}

    def tick(stage: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(stage, done, total)) if progress else None

    enum = enumerate_graphs(universe, max_ops, seed, workers, tick("enumerate"),
                            max_weight_ops=max_weight_ops)
    t_enum = time.time() - t0
    stages["graphs enumerated"] = enum.counts.graphs
    stages["graphs fingerprinted"] = len(enum.fps)
    groups = fingerprint_groups(enum.fps)
    stages["fingerprint groups"] = len(groups)
    stages["graphs in groups"] = int(sum(len(g) for g in groups))

    extra: dict[str, int] = {}
    counts = ProposeCounts()

    def tick_group(gi: int) -> None:
        if progress and gi % 2000 == 0:
            progress("propose", gi, len(groups))

    proposed = list(propose_renamed(groups, enum.fps, enum.graphs, universe, seed, max_ops,
                                    extra, counts, tick_group, max_weight_ops))
    unique = [c for _, _, _, c in proposed if c is not None]
    stages["candidate pairs"] = counts.pairs
    stages["after weight-only pruning"] = counts.tensor
    stages["after renaming pruning"] = len(proposed)
    stages["after common-supergraph pruning"] = len(unique)
    unique = prune_specializations(unique, universe)
    stages["after specialization pruning"] = len(unique)
    kept = prune_common_subgraphs(unique, universe, seed, progress)
    stages["after common-subgraph pruning"] = len(kept)
    rules, false_matches = check_candidates(kept, universe, seed, rule_provenance, progress)
    stages["false matches (float64 check)"] = false_matches
    stages["candidates written"] = len(rules)
    for k, v in extra.items():
        stages[f"skipped: {k.replace('_', ' ')}"] = v
    usage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    meta = run_meta(settings, workers, stages, enum.counts.as_dict(), universe,
                    {"enumerate": round(t_enum, 1), "total": round(time.time() - t0, 1)},
                    round((usage_self + usage_children) / 1024, 1))
    if not enum.complete:
        meta["partial"] = (f"interrupted: {enum.roots_done} of {enum.roots_total} enumeration "
                           "subtrees finished")
    return GenerateResult(rules, stages, meta, enum.complete, enum.counts.as_dict())


@dataclass
class ProposeCounts:
    """Candidate pairs proposed, and those with a runtime variable (weight-only pruning)."""

    pairs: int = 0
    tensor: int = 0


def propose_renamed(groups, fps, rows, universe: Universe, seed: int, max_ops: int,
                    extra: dict[str, int], counts: ProposeCounts,
                    after_group: Callable[[int], None] | None = None,
                    max_weight_ops: int = 0):
    """The pairing and the first pruning stages, shared by the single-process and the Ray
    paths: for each fingerprint group (in order), its candidate pairs with a runtime variable,
    the first of each renaming class only. Yields (group index, j: the pair's place among the
    group's pairs, renaming key, the detached candidate, or None when it is pruned as a common
    supergraph or a decomposable multi-output pair)."""
    kinds = {s.name: s.kind for s in universe.inputs}
    seen: set[str] = set()
    decoder = Decoder(Enumerator(universe, seed, max_ops, max_weight_ops))
    for gi, idx in enumerate(groups):
        for j, c in enumerate(propose_group(idx, fps, rows, decoder, extra)):
            counts.pairs += 1
            if not any(kinds[v] == "tensor" for v in c.src.variables):
                continue
            counts.tensor += 1
            key = renaming_key(*c.texts(), kinds)
            if key in seen:
                continue
            seen.add(key)
            dropped = is_supergraph(c, decoder.enum) or is_decomposable(c)
            yield gi, j, key, None if dropped else c.detached()
        if len(decoder.enum.n_inst) > DECODER_NODE_LIMIT:
            # Bound memory on big runs: the candidates kept no longer need the decoder's ids.
            decoder = Decoder(Enumerator(universe, seed, max_ops, max_weight_ops))
        if after_group is not None:
            after_group(gi)


def check_budgets(max_ops: int, max_weight_ops: int) -> None:
    """UsageError unless the node budgets make sense."""
    if max_ops < 1:
        raise UsageError(f"--max-ops must be at least 1, got {max_ops}")
    if max_weight_ops < 0:
        raise UsageError(f"--max-weight-ops must be 0 or more, got {max_weight_ops}")


def run_settings(universe: Universe, max_ops: int, seed: int,
                 max_outputs: int, max_weight_ops: int = 0) -> tuple[dict, dict]:
    """The run's settings (the file's `meta.settings`, less workers) and the provenance each
    rule carries (only what identifies the run; the op set and the rest are in the meta).
    A rule names `max_weight_ops` only when it is not 0, so rules of runs without free
    weight-only nodes read as before the setting existed."""
    settings = {"generator": "superopt.generator", "max_ops": max_ops,
                "max_weight_ops": max_weight_ops,
                "ops": universe.settings["ops"], "seed": seed, "max_outputs": max_outputs}
    for key in ("preset", "from", "configurations"):
        if key in universe.settings:
            settings[key] = universe.settings[key]
    rule_provenance = {k: settings[k] for k in ("generator", "max_ops", "seed", "preset", "from")
                       if k in settings}
    if max_weight_ops:
        rule_provenance["max_weight_ops"] = max_weight_ops
    return settings, rule_provenance


def run_meta(settings: dict, workers: int, stages: dict[str, int], enumeration: dict[str, int],
             universe: Universe, seconds: dict[str, float], peak_memory_mb: float) -> dict:
    """The rules file's `meta` for a generation run."""
    return {
        "settings": {**settings, "workers": workers},
        "stages": stages,
        "enumeration": enumeration,
        "seconds": seconds,
        "peak_memory_mb": peak_memory_mb,
        "versions": {"python": platform.python_version(), "numpy": np.__version__},
        "inputs": {s.name: {"shape": list(s.shape), "kind": s.kind} for s in universe.inputs},
    }


def prune_specializations(unique: list, universe: Universe) -> list:
    """Drop the candidates that are another candidate with two variables merged (order kept)."""
    kinds = {s.name: s.kind for s in universe.inputs}
    shapes = {s.name: s.shape for s in universe.inputs}
    implied: set[str] = set()
    for c in unique:
        implied |= specializations(*c.texts(), kinds, shapes)
    return [c for c in unique if renaming_key(*c.texts(), kinds) not in implied]


def prune_common_subgraphs(unique: list, universe: Universe, seed: int,
                           progress: Callable[[str, int, int], None] | None = None) -> list:
    """Drop the candidates that are a smaller rule in a shared context. One random stream is
    drawn in candidate order, so this stage runs in one process (its answer depends on it)."""
    checker = Checker(universe.inputs, seed)
    rng = np.random.default_rng(seed + 104729)
    kept = []
    for i, c in enumerate(unique):
        if not checker.abstracts(c, rng):
            kept.append(c)
        if progress and i % 500 == 0:
            progress("prune", i, len(unique))
    return kept


def check_candidates(kept: list, universe: Universe, seed: int, rule_provenance: dict,
                     progress: Callable[[str, int, int], None] | None = None
                     ) -> tuple[list[Rule], int]:
    """The float64 check of each candidate (independent of the others): the rules of those
    that pass, in order, and the number that failed (false matches)."""
    checker = Checker(universe.inputs, seed)
    rules: list[Rule] = []
    false_matches = 0
    for i, c in enumerate(kept):
        if progress and i % 500 == 0:
            progress("check", i, len(kept))
        if not checker.check(c.src.patterns, c.dst.patterns):
            false_matches += 1
            continue
        rules.append(candidate_rule(c, universe, rule_provenance))
    return rules, false_matches
