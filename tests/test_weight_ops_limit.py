"""Weight-only operators do not count toward `--max-ops` (issue 14): up to `max_weight_ops` of
them are free, so a rule whose target concatenates or enlarges kernels is found at the depth of
its runtime operators; every graph is still enumerated once, and `max_weight_ops=0` is the
enumeration as it was.

Fixed seeds: the enumeration's random inputs use seed 0.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from superopt.core.errors import UsageError
from superopt.generator import estimate_graphs, generate, run_settings
from superopt.generator.enumeration import Enumerator, enumerate_graphs
from superopt.generator.opset import Universe, default_inputs, default_universe, preset_instances

SEED = 0
P1 = "pads=(1, 1, 1, 1)"

# Two Convs on one input are one Conv over the concatenated kernels, split: 2 runtime ops on
# the target side (Conv, Split) and one weight-only op (the Concat of the kernels).
TWO_CONV_MERGE = (
    [f"(Conv[{P1}] ?t ?k)", f"(Conv[{P1}] ?t ?j)"],
    [f"(Split[axis=1, split=(dim(?k,0), dim(?j,0))] (Conv[{P1}] ?t (Concat[axis=0] ?k ?j)))",
     f"(Split.1[axis=1, split=(dim(?k,0), dim(?j,0))] (Conv[{P1}] ?t (Concat[axis=0] ?k ?j)))"])
# TASO's 1x1-into-3x3 merge: two weight-only ops (EnlargeKernel, Concat), four nodes in all.
ENLARGE_MERGE = (
    ["(Conv ?t ?k11)", f"(Conv[{P1}] ?t ?k)"],
    [f"(Split[axis=1, split=(dim(?k11,0), dim(?k,0))] (Conv[{P1}] ?t "
     "(Concat[axis=0] (EnlargeKernel ?k11 ?k) ?k)))",
     f"(Split.1[axis=1, split=(dim(?k11,0), dim(?k,0))] (Conv[{P1}] ?t "
     "(Concat[axis=0] (EnlargeKernel ?k11 ?k) ?k)))"])


def small_universe(inputs: list[str], labels: list[str]) -> Universe:
    """The default inputs named and the default op instances labelled (a universe small enough
    to enumerate deep in a test)."""
    specs = [s for s in default_inputs() if s.name in inputs]
    instances = [i for i in preset_instances("default") if i.label in labels]
    return Universe(specs, instances, 2, {"ops": sorted({i.op for i in instances})})


CONV_MERGE_LABELS = ["Conv", "Concat.0", "Concat.1", "Split.0", "Split.1"]


def canonical(src: list[str], dst: list[str]) -> frozenset:
    """A rule up to its orientation and the order of its outputs (the universes here have one
    variable per input, so no renaming is needed)."""
    return frozenset({tuple(sorted(zip(src, dst))), tuple(sorted(zip(dst, src)))})


def _canon(result) -> set[frozenset]:
    return {canonical([str(p) for p in r.src], [str(p) for p in r.dst]) for r in result.rules}


def test_one_free_weight_op_finds_the_two_conv_merge_at_two_runtime_ops():
    universe = small_universe(["t", "k", "j"], CONV_MERGE_LABELS)
    want = canonical(*TWO_CONV_MERGE)
    with_weight = generate(max_ops=2, workers=1, seed=SEED, universe=universe, max_weight_ops=1)
    assert want in _canon(with_weight)
    rule = next(r for r in with_weight.rules
                if canonical([str(p) for p in r.src], [str(p) for p in r.dst]) == want)
    assert rule.provenance["max_ops"] == 2 and rule.provenance["max_weight_ops"] == 1
    assert with_weight.meta["settings"]["max_weight_ops"] == 1
    # Counting the Concat as an op, the target (3 nodes) does not fit in 2.
    without = generate(max_ops=2, workers=1, seed=SEED, universe=universe, max_weight_ops=0)
    assert want not in _canon(without)
    assert "max_weight_ops" not in without.rules[0].provenance


def test_two_free_weight_ops_find_the_enlarge_merge_that_three_counted_ops_cannot():
    universe = small_universe(["t", "k", "k11"], CONV_MERGE_LABELS + ["EnlargeKernel"])
    want = canonical(*ENLARGE_MERGE)
    # 2 runtime + 2 weight-only nodes: found with two free weight-only ops ...
    assert want in _canon(generate(max_ops=2, workers=1, seed=SEED, universe=universe,
                                   max_weight_ops=2))
    # ... and not at max_ops=3 with every op counted (a 4-node graph).
    assert want not in _canon(generate(max_ops=3, workers=1, seed=SEED, universe=universe,
                                       max_weight_ops=0))


def _graph_table(enum: Enumerator, rows) -> Counter:
    """Each recorded graph (its set of node ids in `enum`) with how often it was recorded."""
    return Counter(frozenset(enum.unpack(row)) for row in rows if row[0] > -2)


@pytest.mark.parametrize("max_ops, max_weight_ops", [(2, 1), (1, 2)])
def test_every_graph_within_both_budgets_is_enumerated_once(max_ops, max_weight_ops):
    """Against the plain enumeration of max_ops + max_weight_ops nodes, filtered to the graphs
    the budgets admit: at most max_ops runtime nodes, and beyond max_ops nodes no weight
    output (the free nodes feed runtime nodes)."""
    universe = small_universe(["t", "k", "j", "k11"], CONV_MERGE_LABELS + ["EnlargeKernel",
                                                                           "Relu"])
    total = max_ops + max_weight_ops
    budgeted = enumerate_graphs(universe, max_ops, SEED, workers=1,
                                max_weight_ops=max_weight_ops)
    plain = enumerate_graphs(universe, total, SEED, workers=1)
    enum = Enumerator(universe, SEED, total)
    got = _graph_table(enum, budgeted.graphs)
    assert budgeted.graphs.shape[1] == total
    assert max(got.values()) == 1  # each graph once

    def admitted(nodes: frozenset) -> bool:
        runtime = sum(not enum.n_weight[n] for n in nodes)
        weight_out = any(enum.t_weight[t] for t in enum.outputs(list(nodes)))
        return runtime <= max_ops and (len(nodes) <= max_ops or not weight_out)

    want = Counter({g: c for g, c in _graph_table(enum, plain.graphs).items() if admitted(g)})
    assert got == want
    # the free weight-only nodes are used: some graph has more than max_ops nodes
    assert max(len(g) for g in got) == total
    # and the fingerprints are those of the same graphs
    plain_fps = Counter(int(fp) for fp, row in zip(plain.fps, plain.graphs)
                        if row[0] <= -2 or admitted(frozenset(enum.unpack(row))))
    assert Counter(int(fp) for fp in budgeted.fps) == plain_fps


# `enumerate_graphs` before max_weight_ops existed (commit 2fbb6de), with seed 0: its counts
# and a digest of the packed graphs, which max_weight_ops=0 must reproduce.
BEFORE = {
    ("matmul3d",): (3, {"graphs": 26755, "fingerprinted": 7089, "duplicate_tensor": 70,
                        "disconnected": 7467, "weight_only": 10563, "too_many_outputs": 1566,
                        "invalid": 0, "zero_output": 0, "input_copy": 6},
                    "ea1ebcac229fb3cd"),
    ("Relu", "Add"): (3, {"graphs": 2012, "fingerprinted": 357, "duplicate_tensor": 0,
                          "disconnected": 1414, "weight_only": 233, "too_many_outputs": 8,
                          "invalid": 0, "zero_output": 0, "input_copy": 0},
                      "fdaa8fe49123166d"),
}


@pytest.mark.parametrize("ops", sorted(BEFORE))
def test_zero_free_weight_ops_is_the_enumeration_as_before(ops):
    max_ops, counts, digest = BEFORE[ops]
    e = enumerate_graphs(default_universe(list(ops)), max_ops, SEED, workers=1,
                         max_weight_ops=0)
    assert e.counts.as_dict() == counts
    assert e.graphs.shape[1] == max_ops
    assert hashlib.sha256(e.graphs.tobytes()).hexdigest()[:16] == digest
    # and the default is 0
    default = enumerate_graphs(default_universe(list(ops)), max_ops, SEED, workers=1)
    assert (default.graphs == e.graphs).all() and (default.fps == e.fps).all()


def test_settings_and_bad_budgets():
    universe = default_universe(["Relu", "Add"])
    settings, provenance = run_settings(universe, 3, 0, 2, 1)
    assert settings["max_weight_ops"] == 1 and provenance["max_weight_ops"] == 1
    settings, provenance = run_settings(universe, 3, 0, 2)
    assert settings["max_weight_ops"] == 0 and "max_weight_ops" not in provenance
    with pytest.raises(UsageError, match="--max-weight-ops must be 0 or more"):
        generate(max_ops=1, ops=["Relu"], max_weight_ops=-1)
    # (Relu and Add over these inputs have no weight-only node that a runtime node can read)
    assert estimate_graphs(universe, 2, 1) == estimate_graphs(universe, 2)
    convs = default_universe(["Conv", "Concat"])
    assert estimate_graphs(convs, 2, 1) > estimate_graphs(convs, 2)


def test_pool_workers_die_on_sigterm_even_under_the_cli_interrupt_handlers():
    """The pool closes with SIGTERM; a forked worker must not keep the CLI's handler (a worker
    that only noted the signal hung the pool's join, and `make rules` with it)."""
    import signal

    from superopt.core.atomic import handle_interrupts
    from superopt.generator.enumeration import _pool_worker_setup

    before = signal.getsignal(signal.SIGTERM)
    with handle_interrupts():
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        _pool_worker_setup(default_universe(["Relu"]), 0, 1, 0)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == before
