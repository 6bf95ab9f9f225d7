"""The generator proposes TASO's classic rules, and every candidate it writes checks in float64.

Fixed seeds: the enumeration's random inputs use seed 0, the re-check uses seed 12345.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from superopt.core.errors import UsageError
from superopt.core.pattern import PNode, parse
from superopt.generator import estimate_graphs, generate
from superopt.generator.candidates import fingerprint_groups
from superopt.generator.enumeration import Enumerator, enumerate_graphs
from superopt.generator.fingerprint import outputs_hash, tensor_hash
from superopt.generator.opset import default_universe
from superopt.generator.prune import Checker, renaming_key

# The op set of the expected rules below (the full default set is exercised by the slow test).
TEST_OPS = ["MatMul", "Add", "Conv", "Concat", "Split", "Relu", "BatchNormalization",
            "BatchNormFoldKernel", "BatchNormFoldBias", "EnlargeKernel", "Transpose"]
SEED = 0
P1 = "pads=(1, 1, 1, 1)"

EXPECTED = {
    "matmul associativity": (["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"]),
    "matmul distributes over add": (["(Add (MatMul ?x ?a) (MatMul ?x ?b))"],
                                    ["(MatMul ?x (Add ?a ?b))"]),
    "conv linear in its weight": ([f"(Add (Conv[{P1}] ?t ?k) (Conv[{P1}] ?t ?j))"],
                                  [f"(Conv[{P1}] ?t (Add ?k ?j))"]),
    "two convs on one input merge": (
        [f"(Conv[{P1}] ?t ?k)", f"(Conv[{P1}] ?t ?j)"],
        [f"(Split[axis=1, split=(dim(?k,0), dim(?j,0))] (Conv[{P1}] ?t (Concat[axis=0] ?k ?j)))",
         f"(Split.1[axis=1, split=(dim(?k,0), dim(?j,0))] (Conv[{P1}] ?t "
         "(Concat[axis=0] ?k ?j)))"]),
    "two matmuls on one input merge": (
        ["(MatMul ?x ?a)", "(MatMul ?x ?b)"],
        ["(Split[axis=1, split=(dim(?a,1), dim(?b,1))] (MatMul ?x (Concat[axis=1] ?a ?b)))",
         "(Split.1[axis=1, split=(dim(?a,1), dim(?b,1))] (MatMul ?x (Concat[axis=1] ?a ?b)))"]),
    "relu commutes with concat": (["(Concat[axis=1] (Relu ?x) (Relu ?y))"],
                                  ["(Relu (Concat[axis=1] ?x ?y))"]),
    "relu commutes with split": (
        ["(Split[axis=1, split=(dim(?x,1), dim(?y,1))] (Relu (Concat[axis=1] ?x ?y)))",
         "(Split.1[axis=1, split=(dim(?x,1), dim(?y,1))] (Relu (Concat[axis=1] ?x ?y)))"],
        ["(Relu ?x)", "(Relu ?y)"]),
    "conv + batchnorm fold": (
        [f"(BatchNormalization (Conv[{P1}] ?t ?k) ?bn_scale ?bn_bias ?bn_mean ?bn_var)"],
        [f"(Conv[{P1}] ?t (BatchNormFoldKernel ?k ?bn_scale ?bn_var) "
         "(BatchNormFoldBias ?bn_scale ?bn_bias ?bn_mean ?bn_var))"]),
    "1x1 conv is a 3x3 conv on its enlarged kernel": (
        ["(Conv ?t ?k11)"], [f"(Conv[{P1}] ?t (EnlargeKernel ?k11 ?k))"]),
    "transpose of matmul": (["(Transpose[perm=(1, 0)] (MatMul ?x ?a))"],
                            ["(MatMul (Transpose[perm=(1, 0)] ?a) (Transpose[perm=(1, 0)] ?x))"]),
}

COMMUTATIVE = {"Add", "Mul"}
_VAR = re.compile(r"\?(\w+)")


def _sorted_commutative(p):
    if isinstance(p, PNode):
        args = tuple(_sorted_commutative(a) for a in p.args)
        if p.op in COMMUTATIVE:
            args = tuple(sorted(args, key=str))
        return PNode(p.op, p.attrs, args, p.out)
    return p


def _rename(text: str, table: dict[str, str]) -> str:
    return _VAR.sub(lambda m: "?" + table[m.group(1)], text)


def canonical(src: list[str], dst: list[str]) -> str:
    """The same text for rules equal up to variable renaming, argument order of commutative
    ops, output order and orientation."""
    forms = []
    names = sorted(set(_VAR.findall(" ".join(src + dst))))
    for a, b in ((src, dst), (dst, src)):
        for perm in itertools.permutations(range(len(a))):
            sa, sb = [a[i] for i in perm], [b[i] for i in perm]
            for renamed in itertools.permutations(range(len(names))):
                table = {n: f"v{renamed[i]}" for i, n in enumerate(names)}
                ta = [str(_sorted_commutative(parse(_rename(t, table)))) for t in sa]
                tb = [str(_sorted_commutative(parse(_rename(t, table)))) for t in sb]
                forms.append(" | ".join(ta) + " => " + " | ".join(tb))
    return min(forms)


@pytest.fixture(scope="module")
def result():
    return generate(max_ops=3, ops=TEST_OPS, workers=2, seed=SEED)


@pytest.fixture(scope="module")
def canon(result):
    return {canonical([str(p) for p in r.src], [str(p) for p in r.dst]) for r in result.rules}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generator_proposes(name, canon):
    src, dst = EXPECTED[name]
    assert canonical(src, dst) in canon, f"{name} not proposed"


def test_every_candidate_passes_float64_check_at_fresh_inputs(result):
    universe = default_universe(TEST_OPS)
    checker = Checker(universe.inputs, seed=12345)
    assert result.rules
    bad = [r.id for r in result.rules if not checker.check(list(r.src), list(r.dst))]
    assert bad == []


def test_stage_counts_are_consistent(result):
    s = result.stages
    assert s["graphs enumerated"] >= s["graphs fingerprinted"] >= s["graphs in groups"]
    assert s["candidate pairs"] >= s["after weight-only pruning"] >= s["after renaming pruning"]
    assert s["after renaming pruning"] >= s["after common-supergraph pruning"]
    assert s["after common-supergraph pruning"] >= s["after specialization pruning"]
    assert s["after specialization pruning"] >= s["after common-subgraph pruning"]
    assert (s["after common-subgraph pruning"] - s["false matches (float64 check)"]
            == s["candidates written"] == len(result.rules))
    assert result.complete and "partial" not in result.meta


def test_rules_carry_kinds_examples_and_provenance(result):
    for r in result.rules:
        assert r.proof == {"result": "unverified"}
        assert set(r.example) == set(r.vars)
        # the class of each variable: the rank of its input's shape
        assert r.ranks == {k: len(v) for k, v in r.example.items()}
        assert all(v["rank"] == r.ranks[k] for k, v in r.to_json()["vars"].items())
        assert r.provenance["max_ops"] == 3 and "fingerprint" in r.provenance
        assert any(kind == "tensor" for kind in r.vars.values())
    kinds = next(r.vars for r in result.rules if "bn_var" in r.vars)
    assert kinds["bn_var"] == "weight" and kinds["t"] == "tensor"


def test_no_two_rules_equal_up_to_renaming(result):
    universe = default_universe(TEST_OPS)
    kinds = {s.name: s.kind for s in universe.inputs}
    keys = [renaming_key([str(p) for p in r.src], [str(p) for p in r.dst], kinds)
            for r in result.rules]
    assert len(keys) == len(set(keys))


def test_each_graph_enumerated_once():
    # Canonical augmentation over {Relu, Add}. By hand, level 1 = Relu x, Relu y, Relu t,
    # Add(x,x), Add(x,y), Add(y,y), Add(t,t) on runtime tensors (fingerprinted) plus 10 Adds of
    # weights: a+a, a+b, b+b, k+k, k+j, j+j and each of k13, k31, k11, kg with itself.
    universe = default_universe(["Relu", "Add"])
    e1 = enumerate_graphs(universe, 1, workers=1)
    assert e1.counts.graphs == 17
    assert e1.counts.fingerprinted == 7 and e1.counts.weight_only == 10
    e2 = enumerate_graphs(universe, 2, workers=1)
    enum = Enumerator(universe, 0, 2)
    seen = set()
    for row in e2.graphs:
        if row[0] <= -2:
            continue
        nodes = enum.unpack(row)
        key = frozenset(nodes)
        assert key not in seen
        seen.add(key)
    # Parallel workers find exactly the same graphs.
    e2p = enumerate_graphs(universe, 2, workers=2)
    assert sorted(e2p.fps.tolist()) == sorted(e2.fps.tolist())
    assert e2p.counts.as_dict() == e2.counts.as_dict()


def test_fingerprint_ignores_rounding_but_not_values():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    x = rng.standard_normal((2, 4))
    assert tensor_hash((x @ a) @ b) == tensor_hash(x @ (a @ b))
    assert tensor_hash(x @ a) != tensor_hash(x @ b)
    assert tensor_hash(x) != tensor_hash(2 * x)  # the scale is part of the hash
    assert tensor_hash(np.zeros((2, 4))) != tensor_hash(np.zeros((4, 2)))
    assert outputs_hash([1, 2]) == outputs_hash([2, 1])


def test_fingerprint_groups():
    groups = fingerprint_groups(np.array([5, 3, 5, 7, 3, 5], dtype=np.int64))
    assert sorted(sorted(g.tolist()) for g in groups) == [[0, 2, 5], [1, 4]]


def test_estimate_grows_with_depth():
    universe = default_universe(["Relu", "Add"])
    assert estimate_graphs(universe, 1) == 17
    e3 = estimate_graphs(universe, 3)
    assert e3 > estimate_graphs(universe, 2) > 17


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="unknown op 'Foo'"):
        generate(max_ops=1, ops=["Foo"])
    with pytest.raises(UsageError, match="at least 1"):
        generate(max_ops=0)


@pytest.mark.slow
def test_default_run_proposes_everything():
    res = generate(seed=SEED)
    print(res.stages, res.meta["seconds"], res.meta["peak_memory_mb"])
    canon = {canonical([str(p) for p in r.src], [str(p) for p in r.dst]) for r in res.rules}
    missing = [n for n, (s, d) in EXPECTED.items() if canonical(s, d) not in canon]
    assert missing == []
    universe = default_universe()
    checker = Checker(universe.inputs, seed=12345)
    assert all(checker.check(list(r.src), list(r.dst)) for r in res.rules)


def test_result_does_not_depend_on_worker_count():
    ops = ["MatMul", "Add", "Concat", "Split", "Relu", "Transpose"]
    one = generate(max_ops=2, ops=ops, workers=1, seed=SEED)
    two = generate(max_ops=2, ops=ops, workers=2, seed=SEED)
    assert [r.id for r in one.rules] == [r.id for r in two.rules]
    assert one.stages == two.stages


# The `matmul3d` preset (`--ops matmul3d`): rank-3 activations `z`, `v` times 2-D weights, so
# the merged MatMul splits on axis 2 (BERT's 1×128×768 by 768×768, NASRNN's 1×1×512).
EXPECTED_3D = {
    "two matmuls on a rank-3 input merge": (
        ["(MatMul ?z ?a)", "(MatMul ?z ?b)"],
        ["(Split[axis=2, split=(dim(?a,1), dim(?b,1))] (MatMul ?z (Concat[axis=1] ?a ?b)))",
         "(Split.1[axis=2, split=(dim(?a,1), dim(?b,1))] (MatMul ?z (Concat[axis=1] ?a ?b)))"]),
    "concat of rank-3 matmuls": (["(Concat[axis=2] (MatMul ?z ?a) (MatMul ?z ?b))"],
                                 ["(MatMul ?z (Concat[axis=1] ?a ?b))"]),
    "rank-3 matmul distributes over add": (["(Add (MatMul ?z ?a) (MatMul ?z ?b))"],
                                           ["(MatMul ?z (Add ?a ?b))"]),
    "rank-3 matmul associativity": (["(MatMul (MatMul ?z ?a) ?b)"],
                                    ["(MatMul ?z (MatMul ?a ?b))"]),
    "relu commutes with concat on axis 2": (["(Concat[axis=2] (Relu ?z) (Relu ?v))"],
                                            ["(Relu (Concat[axis=2] ?z ?v))"]),
    "relu commutes with split on axis 2": (
        ["(Split[axis=2, split=(dim(?z,2), dim(?v,2))] (Relu (Concat[axis=2] ?z ?v)))",
         "(Split.1[axis=2, split=(dim(?z,2), dim(?v,2))] (Relu (Concat[axis=2] ?z ?v)))"],
        ["(Relu ?z)", "(Relu ?v)"]),
}


@pytest.fixture(scope="module")
def result_3d():
    return generate(max_ops=3, ops=["matmul3d"], workers=2, seed=SEED)


@pytest.mark.parametrize("name", sorted(EXPECTED_3D))
def test_matmul3d_preset_proposes(name, result_3d):
    canon = {canonical([str(p) for p in r.src], [str(p) for p in r.dst]) for r in result_3d.rules}
    src, dst = EXPECTED_3D[name]
    assert canonical(src, dst) in canon, f"{name} not proposed"


def test_matmul3d_preset_universe_and_checks(result_3d):
    universe = default_universe(["matmul3d"])
    assert {s.name: s.shape for s in universe.inputs} == {
        "z": (2, 2, 4), "v": (2, 2, 4), "a": (4, 4), "b": (4, 4)}
    assert universe.settings == {"ops": ["Add", "Concat", "MatMul", "Relu", "Split",
                                         "Transpose"], "preset": "matmul3d"}
    assert result_3d.meta["settings"]["preset"] == "matmul3d"
    assert all(r.provenance["preset"] == "matmul3d" for r in result_3d.rules)
    # Registry ops beside the preset name restrict it; an op outside the preset is an error.
    assert default_universe(["matmul3d", "MatMul"]).settings["ops"] == ["MatMul"]
    with pytest.raises(UsageError, match="unknown op 'Conv'.*matmul3d"):
        default_universe(["matmul3d", "Conv"])
    # The default universe stays 2-D / 4-D: no rank-3 input.
    assert all(len(s.shape) != 3 for s in default_universe().inputs)
    checker = Checker(universe.inputs, seed=12345)
    assert all(checker.check(list(r.src), list(r.dst)) for r in result_3d.rules)
