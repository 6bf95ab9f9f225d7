"""Rule matching: joint multi-output matches, kinds, refusals with reasons, explain()."""

from __future__ import annotations

import re

import numpy as np
import pytest
from graph_run import run_numpy
from handwritten_rules import ASSOC, PROVED
from onnx import TensorProto

from superopt.core.ir import Graph, Node, Value
from superopt.core.ops import get_op
from superopt.core.pattern import Bindings, PatternError
from superopt.core.rules import Rule
from superopt.core.types import FLOAT, TensorType
from superopt.search.match import Refused, RuleIndex, apply_match, explain, find_matches

PAIR = Rule.make(
    ["(MatMul ?x ?a)", "(MatMul ?x ?b)"],
    [
        f"(Split.{i}[axis=-1, split=(dim(?a,1), dim(?b,1))] (MatMul ?x (Concat[axis=1] ?a ?b)))"
        for i in range(2)
    ],
    {"x": "tensor", "a": "weight", "b": "weight"},
    proof=PROVED,
)
RELU2 = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"}, proof=PROVED)


def w(shape, name, seed=0):
    return Value.const(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def test_single_pattern_matches_and_applies():
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    m1 = Node.make("MatMul", {}, [x, w((4, 4), "A")], name="mm1").outputs[0]
    m2 = Node.make("MatMul", {}, [m1, w((4, 4), "B", 1)], name="mm2").outputs[0]
    g = Graph([x], [("y", m2)])
    [m] = find_matches(g, ASSOC)
    assert m.matched_names == ("mm2", "mm1")
    applied = apply_match(g, m)
    assert [n for n, _ in applied.graph.outputs] == ["y"]
    assert len(applied.created_nodes) == 2
    assert "mm1" not in {n.name for n in applied.graph.nodes}  # dead interior node dropped


def test_interior_node_used_elsewhere_stays():
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    m1 = Node.make("MatMul", {}, [x, w((4, 4), "A")], name="mm1").outputs[0]
    m2 = Node.make("MatMul", {}, [m1, w((4, 4), "B", 1)], name="mm2").outputs[0]
    g = Graph([x], [("y", m2), ("inner", m1)])
    new = apply_match(g, find_matches(g, ASSOC)[0]).graph
    assert "mm1" in {n.name for n in new.nodes}
    assert [n for n, _ in new.outputs] == ["y", "inner"]


def test_weight_kind_refuses_runtime_tensor_and_explain_says_why():
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    a = Value.input("a", TensorType(FLOAT, (4, 4)))
    m1 = Node.make("MatMul", {}, [x, a], name="mm1").outputs[0]
    m2 = Node.make("MatMul", {}, [m1, w((4, 4), "B")], name="mm2").outputs[0]
    g = Graph([x, a], [("y", m2)])
    assert find_matches(g, ASSOC) == []
    lines = explain(g, ASSOC)
    assert "node mm2: ?a must be a weight (constants only)" in lines
    assert any(line.startswith("node mm1: source pattern") for line in lines)
    assert explain(Graph([x], [("x", x)]), ASSOC)[0].startswith("no MatMul node")


def test_multi_output_match_is_joint_and_needs_distinct_roots():
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    y = Value.input("z", TensorType(FLOAT, (2, 4)))
    q = Node.make("MatMul", {}, [x, w((4, 3), "Wq")], name="q").outputs[0]
    k = Node.make("MatMul", {}, [x, w((4, 5), "Wk", 1)], name="k").outputs[0]
    other = Node.make("MatMul", {}, [y, w((4, 4), "Wo", 2)], name="o").outputs[0]
    g = Graph([x, y], [("q", q), ("k", k), ("o", other)])
    matches = find_matches(g, PAIR)
    # one match per set of roots: (q, k) and (k, q) are the same merge, up to the Concat's order
    assert [sorted(m.matched_names) for m in matches] == [["k", "q"]]
    applied = apply_match(g, matches[0])
    types = [v.type for v in applied.graph.output_values]
    assert [t.shape for t in types] == [(2, 3), (2, 5), (2, 4)]
    assert applied.graph.op_counts() == {"MatMul": 2, "Concat": 1, "Split": 1}


def test_symmetric_sources_are_detected_by_their_shape_not_their_names():
    from superopt.search.match import symmetric_sources

    v = {"x": "tensor", "y": "tensor", "a": "weight", "b": "weight"}
    assert symmetric_sources(PAIR)
    asym = Rule.make(["(MatMul ?x ?a)", "(Relu ?x)"], ["(MatMul ?x ?a)", "(Relu ?x)"],
                     {"x": "tensor", "a": "weight"}, proof=PROVED)
    assert not symmetric_sources(asym)
    # a variable used twice inside one source is not the same shape as two different ones
    twice = Rule.make(["(Add ?a ?a)", "(Add ?a ?b)"], ["(Add ?a ?a)", "(Add ?a ?b)"],
                      {"a": "weight", "b": "weight"}, proof=PROVED)
    assert not symmetric_sources(twice)
    mixed = Rule.make(["(MatMul ?x ?a)", "(MatMul ?y ?b)"], ["(MatMul ?x ?a)", "(MatMul ?y ?b)"],
                      v, proof=PROVED)
    assert symmetric_sources(mixed)


def test_multi_output_refuses_target_reading_downstream_of_a_root():
    # ?x of the second MatMul is computed from the first MatMul's output: merging would read
    # a value downstream of a replaced root.
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    r = Rule.make(
        ["(MatMul ?x ?a)", "(Relu ?y)"],
        ["(MatMul ?y ?a)", "(Relu ?x)"],
        {"x": "tensor", "y": "tensor", "a": "weight"},
        proof=PROVED,
    )
    m1 = Node.make("MatMul", {}, [x, w((4, 4), "A")], name="m1").outputs[0]
    relu = Node.make("Relu", {}, [m1], name="relu").outputs[0]
    g = Graph([x], [("a", m1), ("b", relu)])
    refusals = []
    for m in find_matches(g, r):
        try:
            apply_match(g, m)
        except Refused as e:
            refusals.append(str(e))
    assert any("computed from a replaced value" in s or "inside another" in s for s in refusals), (
        refusals
    )


def test_only_float_tensors_and_never_into_opaque_nodes():
    xi = Value.input("x", TensorType(TensorProto.INT64, (2, 4)))
    r1 = Node.make("Relu", {}, [Node.make("Relu", {}, [xi], name="a").outputs[0]], name="b")
    assert find_matches(Graph([xi], [("y", r1.outputs[0])]), RELU2) == []
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    opaque = Node.make(
        "Opaque",
        {"op_type": "Relu", "domain": "custom", "proto": b"", "n_explicit": 1, "implicit": ()},
        [x],
        name="op",
        output_types=[TensorType(FLOAT, (2, 4))],
    )
    top = Node.make("Relu", {}, [opaque.outputs[0]], name="top")
    g = Graph([x], [("y", top.outputs[0])])
    assert find_matches(g, RELU2) == []
    # ...but around it: Relu(Relu(opaque)) matches with ?x bound to the opaque output.
    top2 = Node.make("Relu", {}, [top.outputs[0]], name="top2")
    [m] = find_matches(Graph([x], [("y", top2.outputs[0])]), RELU2)
    assert m.bindings.tensors["x"] is opaque.outputs[0]


def test_type_mismatch_is_refused_with_reason():
    bad = Rule.make(["(Relu ?x)"], ["(Transpose[perm=(1, 0)] ?x)"], {"x": "tensor"})
    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    g = Graph([x], [("y", Node.make("Relu", {}, [x], name="r").outputs[0])])
    [m] = find_matches(g, bad)
    try:
        apply_match(g, m)
        raise AssertionError("should refuse")
    except Refused as e:
        assert "type" in str(e)
    assert explain(g, bad) == ["node r: target output 0 has type float[4×2], the source float[2×4]"]


def test_rule_index_selects_rules_by_root_ops():
    index = RuleIndex([ASSOC, PAIR, RELU2])
    assert list(index.candidates({"Relu"})) == [RELU2]
    assert {r.id for r in index.candidates({"MatMul", "Add"})} == {ASSOC.id, PAIR.id}


# ---------------------------------------------------------------------------------------------
# a rule says where it is true: the matcher checks every class and condition (issue #14 item 1)


CONV_ATTRS = get_op("Conv").canonical_attrs({})


def _conv_mul(c_shape, name="c"):
    x = Value.input("x", TensorType(FLOAT, (2, 4, 5, 5)))
    conv = Node.make("Conv", CONV_ATTRS, [x, w((4, 4, 1, 1), "K")], name="conv").outputs[0]
    mul = Node.make("Mul", {}, [conv, w(c_shape, name, 1)], name="mul").outputs[0]
    return Graph([x], [("y", mul)])


SCALE = Rule.make(["(Mul (Conv ?t ?k) ?c)"], ["(Conv ?t (Mul ?k ?c))"],
                  {"t": "tensor", "k": "weight", "c": "weight"},
                  example={"t": (2, 4, 5, 5), "k": (4, 4, 1, 1), "c": ()}, proof=PROVED)


def test_a_rule_fires_only_at_the_ranks_it_was_proved_for_and_explain_names_the_class():
    assert SCALE.ranks == {"t": 4, "k": 4, "c": 0}
    [m] = find_matches(_conv_mul(()), SCALE)  # a scalar: its class
    apply_match(_conv_mul(()), m)
    # A per-channel (C,1,1) constant would scale the input channels: another class, refused.
    assert find_matches(_conv_mul((4, 1, 1)), SCALE) == []
    assert explain(_conv_mul((4, 1, 1)), SCALE) == [
        "node mul: ?c has rank 3, the rule was proved for rank 0"]
    x = Value.input("x", TensorType(FLOAT, (3, 2, 4)))  # rank 3 where ASSOC says rank 2
    m1 = Node.make("MatMul", {}, [x, w((4, 4), "A")], name="mm1").outputs[0]
    g = Graph([x], [("y", Node.make("MatMul", {}, [m1, w((4, 4), "B", 1)], name="mm2")
                        .outputs[0])])
    assert find_matches(g, ASSOC) == []
    assert "node mm2: ?x has rank 3, the rule was proved for rank 2" in explain(g, ASSOC)


def test_a_class_with_a_broadcast_condition_and_a_parameter_constraint():
    # Per channel, with the broadcast relation as a condition: ?c is (C,1,1), C = dim(?k, 0).
    channel = Rule.make(
        ["(Mul (Conv[group=?g] ?t ?k) ?c)"],
        ["(Conv[group=?g] ?t (Mul ?k (Reshape[shape=(dim(?c,0), 1, 1, 1)] ?c)))"],
        {"t": {"kind": "tensor", "rank": 4}, "k": {"kind": "weight", "rank": 4},
         "c": {"kind": "weight", "rank": 3}},
        conditions=("dim(?c, 0) == dim(?k, 0)", "dim(?c, 1) == 1", "dim(?c, 2) == 1",
                    "?g == 1"), proof=PROVED)
    assert channel.params == {"g": "int"}
    assert len(find_matches(_conv_mul((4, 1, 1)), channel)) == 1
    assert explain(_conv_mul((1, 1, 1)), channel) == [
        "node mul: condition failed: dim(?c, 0) == dim(?k, 0)"]
    assert explain(_conv_mul((4, 1, 5)), channel) == [
        "node mul: condition failed: dim(?c, 2) == 1"]
    x = Value.input("x", TensorType(FLOAT, (2, 4, 5, 5)))
    grouped = Node.make("Conv", get_op("Conv").canonical_attrs({"group": 2}),
                        [x, w((4, 2, 1, 1), "K")], name="conv").outputs[0]
    mul = Node.make("Mul", {}, [grouped, w((4, 1, 1), "c", 1)], name="mul").outputs[0]
    assert explain(Graph([x], [("y", mul)]), channel) == ["node mul: condition failed: ?g == 1"]


def test_a_parameter_of_the_wrong_type_is_refused():
    rule = Rule.make(["(Relu (Conv[strides=?s] ?t ?k))"], ["(Relu (Conv[strides=?s] ?t ?k))"],
                     {"t": "tensor", "k": "weight"},
                     example={"t": (2, 4, 5, 5), "k": (4, 4, 1, 1)}, params={"s": "ints"})
    b = Bindings({"t": Value.input("t", TensorType(FLOAT, (2, 4, 5, 5))),
                  "k": w((4, 4, 1, 1), "K")}, {"s": 2})
    assert rule.holds(b) == "?s is 2, the rule was proved for a tuple of ints"


def test_loading_refuses_a_rule_whose_class_or_condition_the_matcher_cannot_check():
    base = {"src": ["(Relu ?x)"], "dst": ["(Relu ?x)"], "vars": {"x": {"kind": "tensor",
                                                                      "rank": 2}}}
    bad = {
        "?x == 2": "?x is a tensor",
        "dim(?x, 2) == 1": "outside ?x's dims (rank 2)",
        "dim(?x, -1) == 1": "outside ?x's dims",
        "len(?x) == 2": "only rank, dim, shape, is_const may be called",
        "dim(?y, 0) == 1": "?y is not a tensor variable of the rule",
        "?g == 1": "?g is not a parameter of the rule",
        "dim(?x, 0) ** 2 == 4": "operator Pow is not allowed",
        "dim(?x, 0) in (1, 2)": "only ==, !=, <, <=, >, >= compare",
        "dim(?x, 0) == 'a'": "is not a number",
    }
    for cond, why in bad.items():
        with pytest.raises(PatternError, match=re.escape(why)):
            Rule.from_json({**base, "conditions": [cond]})
    for vars_, why in [({"x": {"kind": "tensor", "rank": -1}}, "expected an integer"),
                       ({"x": {"kind": "tensor", "rank": 2, "dims": 3}}, "unknown field"),
                       ({"x": "tensor"}, '"vars" must map each variable')]:
        with pytest.raises(PatternError, match=re.escape(why)):
            Rule.from_json({**base, "vars": vars_})
    with pytest.raises(PatternError, match="has rank 3, its class says rank 2"):
        Rule.from_json({**base, "example": {"x": [1, 2, 3]}})
    with pytest.raises(PatternError, match=re.escape('parameter ?g is not declared')):
        Rule.from_json({**base, "src": ["(Conv[group=?g] ?x ?k)"],
                        "dst": ["(Conv[group=?g] ?x ?k)"],
                        "vars": {"x": {"kind": "tensor", "rank": 4},
                                 "k": {"kind": "weight", "rank": 4}}})
    ok = Rule.from_json({**base, "conditions": ["dim(?x, 1) % 2 == 0 and rank(?x) == 2",
                                                "shape(?x)[1:] == (4,)"]})
    assert ok.ranks == {"x": 2}


def test_the_id_covers_the_classes():
    r2 = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": {"kind": "tensor", "rank": 2}})
    r3 = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": {"kind": "tensor", "rank": 3}})
    assert r2.id != r3.id
    assert Rule.from_json(r2.to_json()) == r2
    # A proof record whose classes are not the rule's does not make it proved.
    proved2 = r2.with_proof({"result": "proved"})
    assert proved2.proof["classes"] == {"x": "rank 2"} and proved2.proved
    assert not Rule(**{**proved2.__dict__, "ranks": {"x": 3}}).proved


# ---------------------------------------------------------------------------------------------
# Add and Mul match in either operand order: one rule covers `x + c` and `c + x`

BIAS_SCALE = Rule.make(  # (x·W + b)·g with per-column b and g: the bias Add and scale Mul commute
    ["(Mul (Add (MatMul ?x ?w) ?b) ?g)"],
    ["(Add (MatMul ?x (Mul ?w ?g)) (Mul ?b ?g))"],
    {"x": {"kind": "tensor", "rank": 2}, "w": {"kind": "weight", "rank": 2},
     "b": {"kind": "weight", "rank": 1}, "g": {"kind": "weight", "rank": 1}},
    conditions=("shape(?g)[0] == shape(?w)[1]", "shape(?b)[0] == shape(?w)[1]"), proof=PROVED)


@pytest.mark.parametrize("bias_first,scale_first", [(False, False), (True, False),
                                                   (False, True), (True, True)])
def test_one_rule_matches_every_operand_order_of_add_and_mul(bias_first, scale_first):
    x = Value.input("x", TensorType(FLOAT, (3, 4)))
    mm = Node.make("MatMul", {}, [x, w((4, 5), "W")], name="mm").outputs[0]
    b, g = w((5,), "b", 1), w((5,), "g", 2)
    add = Node.make("Add", {}, [b, mm] if bias_first else [mm, b], name="add").outputs[0]
    mul = Node.make("Mul", {}, [g, add] if scale_first else [add, g], name="mul").outputs[0]
    graph = Graph([x], [("y", mul)])
    [m] = find_matches(graph, BIAS_SCALE)
    assert m.bindings.tensors["b"] is b and m.bindings.tensors["g"] is g
    assert sorted(m.matched_names) == ["add", "mm", "mul"]
    assert explain(graph, BIAS_SCALE) == ["node mul: fires"]
    new = apply_match(graph, m).graph
    feeds = {"x": np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)}
    np.testing.assert_allclose(run_numpy(new, feeds)[0], run_numpy(graph, feeds)[0],
                               rtol=1e-5, atol=1e-5)


def test_classes_are_checked_on_each_operand_order():
    """`(Add ?t ?c)` with ?c a scalar weight: at Add(c, x) the written order binds ?c to the
    runtime x and is refused; the other order is the match."""
    scalar = Rule.make(["(Relu (Add ?t ?c))"], ["(Relu (Add ?c ?t))"],
                       {"t": {"kind": "tensor", "rank": 2}, "c": {"kind": "weight", "rank": 0}},
                       proof=PROVED)
    x = Value.input("x", TensorType(FLOAT, (2, 3)))
    c = w((), "c")
    add = Node.make("Add", {}, [c, x], name="add").outputs[0]
    graph = Graph([x], [("y", Node.make("Relu", {}, [add], name="relu").outputs[0])])
    [m] = find_matches(graph, scalar)
    assert m.bindings.tensors == {"t": x, "c": c}
    y = Value.input("y", TensorType(FLOAT, (2, 3)))  # two runtime operands: no order fits
    add2 = Node.make("Add", {}, [y, x], name="add").outputs[0]
    graph2 = Graph([x, y], [("y", Node.make("Relu", {}, [add2], name="relu").outputs[0])])
    assert find_matches(graph2, scalar) == []
    assert explain(graph2, scalar) == ["node relu: ?c must be a weight (constants only)"]


def test_a_site_both_orders_match_is_one_match_with_the_nodes_it_covers():
    """`(Add (Relu ?a) (Relu ?b))` at Add(Relu(p), Relu(q)) matches both ways over the same
    nodes: one match (the rewrites differ only by operand order). `(Add (Relu ?a) ?b)` there
    matches twice, over different nodes. At Add(s, Relu(p)) with s computed by a Sigmoid, the
    match covers the Add and Relu(p), not the node that computes ?b."""
    t2 = {"kind": "tensor", "rank": 2}
    both_relu = Rule.make(["(Add (Relu ?a) (Relu ?b))"], ["(Add (Relu ?b) (Relu ?a))"],
                          {"a": t2, "b": t2}, proof=PROVED)
    one_relu = Rule.make(["(Add (Relu ?a) ?b)"], ["(Add ?b (Relu ?a))"], {"a": t2, "b": t2},
                         proof=PROVED)
    p = Value.input("p", TensorType(FLOAT, (2, 3)))
    q = Value.input("q", TensorType(FLOAT, (2, 3)))
    rp = Node.make("Relu", {}, [p], name="rp").outputs[0]
    rq = Node.make("Relu", {}, [q], name="rq").outputs[0]
    both = Graph([p, q], [("y", Node.make("Add", {}, [rp, rq], name="add").outputs[0])])
    [m] = find_matches(both, both_relu)
    assert sorted(m.matched_names) == ["add", "rp", "rq"]
    assert sorted(sorted(m.matched_names) for m in find_matches(both, one_relu)) == [
        ["add", "rp"], ["add", "rq"]]
    other = Node.make("Sigmoid", {}, [q], name="sq").outputs[0]
    swapped = Graph([p, q], [("y", Node.make("Add", {}, [other, rp], name="add").outputs[0])])
    [m] = find_matches(swapped, one_relu)
    assert m.bindings.tensors == {"a": p, "b": other}
    assert sorted(m.matched_names) == ["add", "rp"]


def test_rule_key_merges_operand_orders_and_symmetric_sources_see_through_them():
    from superopt.core.rules import rule_key
    from superopt.search.match import symmetric_sources

    v = {"x": {"kind": "tensor", "rank": 2}, **{k: {"kind": "weight", "rank": 2}
                                                 for k in ("w1", "w2")},
         **{k: {"kind": "weight", "rank": 1} for k in ("b1", "b2")}}
    merged = "(Add (MatMul ?x (Concat[axis=1] ?w1 ?w2)) (Concat[axis=0] ?b1 ?b2))"
    split = "axis=1, split=(dim(?w1,1), dim(?w2,1))"
    dst = [f"(Split[{split}] {merged})", f"(Split.1[{split}] {merged})"]

    def merge(src):
        return Rule.make(src, dst, v, proof=PROVED)

    straight = merge(["(Add (MatMul ?x ?w1) ?b1)", "(Add (MatMul ?x ?w2) ?b2)"])
    mixed = merge(["(Add ?b1 (MatMul ?x ?w1))", "(Add (MatMul ?x ?w2) ?b2)"])
    assert straight.id != mixed.id and rule_key(straight) == rule_key(mixed)
    assert symmetric_sources(mixed)  # the same pattern twice, up to the Add's order
    # Sub does not commute: its orders are different rules
    sub1 = Rule.make(["(Sub ?x ?w1)"], ["(Sub ?x ?w1)"], v, proof=PROVED)
    sub2 = Rule.make(["(Sub ?w1 ?x)"], ["(Sub ?w1 ?x)"], v, proof=PROVED)
    assert rule_key(sub1) != rule_key(sub2)


def test_a_variable_outside_its_class_is_refused_as_it_is_bound():
    """Bindings(admit=...) fails the match at the binding it refuses, before the rest of the
    pattern is tried."""
    from superopt.core.pattern import match, parse

    x = Value.input("x", TensorType(FLOAT, (2, 4)))
    mm = Node.make("MatMul", {}, [x, w((4, 4), "A")]).outputs[0]
    asked: list[str] = []

    def no_inputs(name: str, v: Value) -> bool:
        asked.append(name)
        return v.is_const

    assert not match(parse("(MatMul ?x ?a)"), mm, Bindings(admit=no_inputs))
    assert asked == ["x"]
    b = Bindings(admit=lambda name, v: True)
    assert match(parse("(MatMul ?x ?a)"), mm, b) and b.copy().admit is b.admit


def _matches_equal_naive_matching(g: Graph, monkeypatch) -> int:
    """Assert that find_matches lists what the naive matcher lists (every node of the op
    tried, every binding refused afterwards) for every shipped rule that occurs in g; return
    the number of matches."""
    from superopt.core.rules import load_rules
    from superopt.search import match as match_module

    index = RuleIndex(load_rules().proved())
    rules = list(index.candidates({n.op for n in g.nodes}))

    def listed(rule: Rule) -> list[tuple]:
        return [(m.roots, m.matched_nodes, sorted(m.bindings.tensors.items()),
                 sorted(m.bindings.params.items(), key=repr))
                for m in find_matches(g, rule, limit=200)]

    pruned = [listed(r) for r in rules]

    def every_node(graph, p, by_op, b):
        return (n.outputs[p.out] for n in by_op.get(p.op, ()) if p.out < len(n.outputs))

    with monkeypatch.context() as m:
        m.setattr(match_module, "_admits", lambda rule: None)
        m.setattr(match_module, "_candidate_values", every_node)
        naive = [listed(r) for r in rules]
    assert naive == pruned
    return sum(map(len, pruned))


@pytest.mark.parametrize("model", ["nasrnn", "bert", "squeezenet", "nasnet_a"])
def test_pruned_matching_finds_what_trying_everything_finds(model, zoo_model_path,
                                                             monkeypatch):
    """find_matches binds a variable only to a value in its class (`_admits`) and tries as
    a later source pattern's root only the nodes reached up from a value already bound
    (`_candidate_values`). For every shipped rule that occurs, the matches are exactly those
    of the naive matcher, which tries every node of the op and refuses afterwards
    (`check_site`): the same matches, in the same order, with the same bindings."""
    import superopt

    assert _matches_equal_naive_matching(superopt.load(zoo_model_path(model)), monkeypatch)


def test_pruned_matching_reaches_a_root_through_either_operand(monkeypatch):
    """Q/K/V projections whose bias Adds are written bias-first and bias-last: reaching the
    later roots up from ?x goes through either operand of an Add, and the three-way merge is
    found once, as the naive matcher finds it."""
    from superopt.core.rules import load_rules

    x = Value.input("x", TensorType(FLOAT, (2, 8, 16)))
    outs = []
    for i in range(3):
        mm = Node.make("MatMul", {}, [x, w((16, 16), f"W{i}", i)]).outputs[0]
        b = w((16,), f"b{i}", 10 + i)
        outs.append((f"y{i}", Node.make("Add", {}, [b, mm] if i % 2 else [mm, b]).outputs[0]))
    g = Graph([x], outs)
    assert _matches_equal_naive_matching(g, monkeypatch) > 0
    merge3 = [r for r in load_rules().proved() if r.name == "linear-bias-merge-3"]
    assert merge3 and any(len(find_matches(g, r)) == 1 for r in merge3)


def test_is_weight_is_known_before_the_run():
    x = Value.input("x", TensorType(FLOAT, (4, 4)))
    c = w((4, 4), "C")
    folded = Node.make("Relu", {}, [c]).outputs[0]  # a constant subexpression
    both = Node.make("Add", {}, [folded, c]).outputs[0]
    runtime = Node.make("MatMul", {}, [x, c]).outputs[0]
    after = Node.make("Add", {}, [runtime, c]).outputs[0]
    assert c.is_weight and folded.is_weight and both.is_weight
    assert not x.is_weight and not runtime.is_weight and not after.is_weight
    assert not folded.is_const  # a literal only after export folds it


def test_a_kernel_one_rewrite_made_is_a_weight_to_the_next():
    """LLaMA's MLP: the RMSNorm scale is folded into the gate and the up projection's weights
    one consumer at a time (norm-scale-fold, shipped), and the two MatMuls, now on the unscaled
    activation with weights ScaleAxis0(W, g), merge into one: the merge's ?a and ?b bind to
    the scaled kernels. Before weights computed by a rewrite counted as weights, the merge was
    refused ("?a must be a constant weight") and the search kept two MatMuls."""
    from superopt.core.onnx_io import to_onnx
    from superopt.core.rules import load_rules

    fold = next(r for r in load_rules().proved()
                if r.name == "norm-scale-fold" and r.ranks.get("n") == 3)
    x = Value.input("x", TensorType(FLOAT, (1, 4, 8)))
    scaled = Node.make("Mul", {}, [w((8,), "g"), x], name="norm").outputs[0]
    gate = Node.make("MatMul", {}, [scaled, w((8, 6), "Wg", 1)], name="gate").outputs[0]
    up = Node.make("MatMul", {}, [scaled, w((8, 5), "Wu", 2)], name="up").outputs[0]
    graph = Graph([x], [("gate", gate), ("up", up)])
    assert find_matches(graph, PAIR)  # the plain merge: the weights are initializers
    g = graph
    for _ in range(2):
        g = apply_match(g, find_matches(g, fold)[0]).graph
    assert {n.op for n in g.nodes} == {"MatMul", "ScaleAxis0"}  # the Mul is gone
    kernels = [n.inputs[1] for n in g.nodes if n.op == "MatMul"]
    assert all(k.is_weight and not k.is_const for k in kernels)
    [m] = find_matches(g, PAIR)
    merged = apply_match(g, m).graph
    assert sum(n.op == "MatMul" for n in merged.nodes) == 1
    feeds = {"x": np.random.default_rng(7).standard_normal((1, 4, 8)).astype(np.float32)}
    for got, want in zip(run_numpy(merged, feeds), run_numpy(graph, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the export folds the scaled, concatenated kernel into one initializer
    ops = [n.op_type for n in to_onnx(merged).graph.node]
    assert ops.count("MatMul") == 1 and "Concat" not in ops and "ScaleAxis0" not in ops
