"""Every operator axiom checked exactly at concrete shapes (TASO shipped two wrong axioms that
only such a check caught), and the check itself catches wrong axioms."""

import pytest

from superopt.core.axiom_spec import Axiom, I, conv_ints, conv_p
from superopt.verifier.axioms import AXIOMS
from superopt.verifier.bounded import check_axiom


@pytest.mark.parametrize("axiom", AXIOMS, ids=[a.name for a in AXIOMS])
def test_axiom_holds_at_every_instance(axiom):
    results = check_axiom(axiom)
    assert results, "an axiom without instances is never checked"
    bad = [r for r in results if r["result"] != "holds"]
    assert not bad, f"{axiom.name}: {bad}"


def test_equation_axioms_are_checked_at_two_or_more_shapes():
    for ax in AXIOMS:
        if ax.kind == "eq":
            shapes = {tuple(sorted(i.shapes.items())) + (repr(i.ints), repr(i.static))
                      for i in ax.instances}
            assert len(shapes) >= 2, ax.name


def test_there_are_axioms_for_the_core_ops():
    names = {a.name for a in AXIOMS}
    for n in ("MatMul-assoc", "Conv-linear-w", "Conv-Concat-weights", "Split-Concat-left",
              "Relu-Concat", "Conv-EnlargeKernel", "Conv-identity-kernel", "MatMul-Transpose"):
        assert n in names


def _wrong(name, tensors, ints, body, instances):
    return Axiom(name, frozenset(), tuple(tensors), tuple(ints), body, tuple(instances))


def test_a_wrong_axiom_is_refuted_with_a_counterexample():
    # Relu does not distribute over Add.
    ax = _wrong("Relu-Add", "ab", "",
                lambda A, t, i, s: (A.unary("Relu", A.binary("Add", t["a"], t["b"])),
                                    A.binary("Add", A.unary("Relu", t["a"]),
                                             A.unary("Relu", t["b"])), True),
                [I({"a": (2,), "b": (2,)})])
    (res,) = check_axiom(ax)
    assert res["result"] == "refuted"
    cex = res["counterexample"]
    a, b = cex["a"][cex["differs_at"]["index"][0]], cex["b"][cex["differs_at"]["index"][0]]
    assert max(a + b, 0) != max(a, 0) + max(b, 0)


def test_a_wrong_grouped_conv_axiom_is_refuted():
    # Conv over concatenated weights equals concatenated convs only for group 1.
    cp = ("sh", "sw", "pt", "pl", "pb", "pr", "g")
    ax = _wrong("Conv-Concat-weights-any-group", ["x", "w", "v"], cp,
                lambda A, t, i, s: (A.conv(t["x"], A.cat(0, t["w"], t["v"]), conv_p(i)),
                                    A.cat(1, A.conv(t["x"], t["w"], conv_p(i)),
                                          A.conv(t["x"], t["v"], conv_p(i))), True),
                [I({"x": (1, 2, 2, 2), "w": (2, 1, 1, 1), "v": (2, 1, 1, 1)}, conv_ints(g=2))])
    assert check_axiom(ax)[0]["result"] == "refuted"


def test_an_instance_outside_the_guard_is_flagged():
    ax = next(a for a in AXIOMS if a.name == "Conv-Concat-weights")
    bad = Axiom(ax.name, ax.ops, ax.tensors, ax.ints, ax.body,
                (I({"x": (1, 2, 3, 3), "w": (2, 1, 1, 1), "v": (2, 1, 1, 1)}, conv_ints(g=2)),))
    assert check_axiom(bad)[0]["result"] == "guard-false"


def test_an_instance_where_neither_side_exists_is_flagged():
    # Batch dims 2 and 3 do not broadcast (a premise the typing facts do not state): such an
    # instance checks nothing.
    ax = next(a for a in AXIOMS if a.name == "MatMul-assoc")
    bad = Axiom(ax.name, ax.ops, ax.tensors, ax.ints, ax.body,
                (I({"a": (2, 2, 3), "b": (3, 3, 4), "c": (3, 4, 2)}),), ax.triggers)
    assert check_axiom(bad)[0]["result"] == "undefined"


def test_a_typing_fact_that_fails_where_the_op_applies_is_reported(monkeypatch):
    # The typing facts are hypotheses of every proof: one that is false at a well-typed term
    # would be unsound, and the bounded check says so.
    from superopt.verifier import algebra

    monkeypatch.setitem(algebra.TYPING, "unary", lambda A, name, x: [A.rank(x) == 7])
    ax = next(a for a in AXIOMS if a.name == "Relu-Relu")
    res = check_axiom(ax)[0]
    assert res["result"] == "refuted" and "typing fact" in res["reason"]
