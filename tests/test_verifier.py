"""Rule proofs: known-true rules are proved, mutants of them never are, and the record says why.

Random data uses a fixed seed (printed on failure via the assertion message)."""

import json
import re

import numpy as np
import pytest

from superopt.core.pattern import evaluate
from superopt.core.rules import Rule
from superopt.verifier import verify_rules
from superopt.verifier.bounded import check_rule
from superopt.verifier.prove import prove_rule

SEED = 1234
I4 = (2, 4, 5, 5)
P1 = "pads=(1,1,1,1)"


def rule(src, dst, kinds, example, conditions=()):
    src = [src] if isinstance(src, str) else src
    dst = [dst] if isinstance(dst, str) else dst
    return Rule.make(src, dst, kinds, example=example, conditions=tuple(conditions))


W2 = {"x": "tensor", "a": "weight", "b": "weight"}
KNOWN_TRUE = {
    "matmul-assoc": rule("(MatMul (MatMul ?x ?a) ?b)", "(MatMul ?x (MatMul ?a ?b))", W2,
                         {"x": (2, 4), "a": (4, 4), "b": (4, 4)}),
    "matmul-distrib": rule("(Add (MatMul ?x ?a) (MatMul ?x ?b))", "(MatMul ?x (Add ?a ?b))",
                           W2, {"x": (2, 4), "a": (4, 4), "b": (4, 4)}),
    "conv-linear-w": rule(f"(Add (Conv[{P1}] ?x ?a) (Conv[{P1}] ?x ?b))",
                          f"(Conv[{P1}] ?x (Add ?a ?b))", W2,
                          {"x": I4, "a": (4, 4, 3, 3), "b": (4, 4, 3, 3)},
                          [f"dim(?a,{k}) == dim(?b,{k})" for k in range(4)]),
    "concat-convs-split": rule(
        [f"(Conv[{P1}] ?x ?a)", f"(Conv[{P1}] ?x ?b)"],
        [f"(Split.{k}[axis=1, split=(dim(?a,0), dim(?b,0))] "
         f"(Conv[{P1}] ?x (Concat[axis=0] ?a ?b)))" for k in (0, 1)],
        W2, {"x": I4, "a": (4, 4, 3, 3), "b": (4, 4, 3, 3)}),
    "relu-concat": rule("(Concat[axis=1] (Relu ?x) (Relu ?y))", "(Relu (Concat[axis=1] ?x ?y))",
                        {"x": "tensor", "y": "tensor"}, {"x": (2, 4), "y": (2, 4)}),
    "1x1-as-enlarged-3x3": rule(
        f"(Add (Conv ?x ?a) (Conv[{P1}] ?x ?b))", f"(Conv[{P1}] ?x (Add (EnlargeKernel ?a ?b) ?b))",
        W2, {"x": I4, "a": (4, 4, 1, 1), "b": (4, 4, 3, 3)},
        ["dim(?a,2) == 1 and dim(?a,3) == 1 and dim(?b,2) == 3 and dim(?b,3) == 3",
         "dim(?a,0) == dim(?b,0) and dim(?a,1) == dim(?b,1)"]),
    "transpose-of-matmul": rule("(Transpose[perm=(1,0)] (MatMul ?x ?a))",
                                "(MatMul (Transpose[perm=(1,0)] ?a) (Transpose[perm=(1,0)] ?x))",
                                {"x": "tensor", "a": "weight"}, {"x": (2, 4), "a": (4, 4)}),
    # Rank-3 activation times a 2-D weight (numpy-broadcast MatMul): merge two MatMuls that
    # share the activation into one over the concatenated weights, then split the output.
    "matmul3d-merge-split": rule(
        ["(MatMul ?x ?b)", "(MatMul ?x ?a)"],
        [f"(Split.{k}[axis=2, split=(dim(?a,1), dim(?b,1))] "
         "(MatMul ?x (Concat[axis=1] ?a ?b)))" for k in (1, 0)],
        W2, {"x": (2, 3, 4), "a": (4, 4), "b": (4, 2)}),
    "matmul4d-concat-cols": rule("(Concat[axis=3] (MatMul ?x ?a) (MatMul ?x ?b))",
                                 "(MatMul ?x (Concat[axis=1] ?a ?b))",
                                 W2, {"x": (2, 2, 3, 4), "a": (4, 4), "b": (4, 2)}),
    "matmul3d-concat-batch": rule(
        "(Concat[axis=0] (MatMul ?x ?a) (MatMul ?y ?a))", "(MatMul (Concat[axis=0] ?x ?y) ?a)",
        {"x": "tensor", "y": "tensor", "a": "weight"},
        {"x": (2, 3, 4), "y": (1, 3, 4), "a": (4, 4)}),
    "matmul3d-concat-inner": rule(
        "(MatMul (Concat[axis=2] ?x ?y) (Concat[axis=0] ?a ?a))", "(MatMul (Add ?x ?y) ?a)",
        {"x": "tensor", "y": "tensor", "a": "weight"},
        {"x": (2, 3, 4), "y": (2, 3, 4), "a": (4, 4)}),
    "relu-relu": rule("(Relu (Relu ?x))", "(Relu ?x)", {"x": "tensor"}, {"x": (2, 3, 4)}),
}

# Conv + BatchNormalization folded into one Conv and a per-channel bias, in registry ops only.
BN_FOLD = rule(
    "(BatchNormalization (Conv ?x ?w) ?s ?b ?m ?v)",
    "(Add (Conv ?x (Transpose[perm=(1,0,2,3)] (BatchNormalization "
    "(Transpose[perm=(1,0,2,3)] ?w) ?s (Sub ?b ?b) (Sub ?m ?m) ?v))) "
    "(BatchNormalization (Reshape[shape=(1,-1,1,1)] (Sub ?m ?m)) ?s ?b ?m ?v))",
    {"x": "tensor", "w": "weight", "s": "weight", "b": "weight", "m": "weight", "v": "weight"},
    {"x": (1, 2, 3, 3), "w": (2, 2, 1, 1), "s": (2,), "b": (2,), "m": (2,), "v": (2,)})


@pytest.mark.parametrize("name", sorted(KNOWN_TRUE))
def test_known_true_rules_are_proved_by_the_axioms(name):
    res = prove_rule(KNOWN_TRUE[name], timeout_s=10.0)
    assert res["result"] == "proved", res


@pytest.mark.parametrize("name", sorted(KNOWN_TRUE))
def test_known_true_rules_hold_in_the_bounded_check(name):
    assert check_rule(KNOWN_TRUE[name], timeout_s=20.0)["result"] == "holds"


def test_conv_bn_fold_holds_exactly_and_is_not_overclaimed():
    assert check_rule(BN_FOLD, timeout_s=20.0)["result"] == "holds"
    (r,) = verify_rules([BN_FOLD], workers=1)
    # No axiom relates BatchNormalization to Conv yet: holds at the example shapes only.
    assert r.proof["result"] in ("proved", "unknown")
    if r.proof["result"] == "unknown":
        assert "example shapes only" in r.proof["reason"]


# Mutants of proved rules: swapped operands, changed axis, dropped/added op, changed kernel.
MUTANTS = {
    "matmul-assoc swapped": rule("(MatMul (MatMul ?x ?a) ?b)", "(MatMul ?x (MatMul ?b ?a))", W2,
                                 {"x": (2, 4), "a": (4, 4), "b": (4, 4)}),
    "matmul-distrib extra op": rule("(Add (MatMul ?x ?a) (MatMul ?x ?b))",
                                    "(MatMul ?x (Add ?a (Relu ?b)))", W2,
                                    {"x": (2, 4), "a": (4, 4), "b": (4, 4)}),
    "relu-concat dropped op": rule("(Concat[axis=1] (Relu ?x) ?y)",
                                   "(Relu (Concat[axis=1] ?x ?y))",
                                   {"x": "tensor", "y": "tensor"}, {"x": (2, 4), "y": (2, 4)}),
    "relu-concat axis": rule("(Concat[axis=1] (Relu ?x) (Relu ?y))",
                             "(Relu (Concat[axis=0] ?x ?y))",
                             {"x": "tensor", "y": "tensor"}, {"x": (2, 2), "y": (2, 2)}),
    "split axis": rule("(Split.0[axis=1, split=(dim(?a,1), dim(?b,1))] (Concat[axis=0] ?a ?b))",
                       "?a", {"a": "tensor", "b": "tensor"}, {"a": (2, 2), "b": (2, 2)}),
    "split wrong part": rule("(Split.1[axis=1, split=(dim(?a,1), dim(?b,1))] "
                             "(Concat[axis=1] ?a ?b))", "?a", {"a": "tensor", "b": "tensor"},
                             {"a": (2, 2), "b": (2, 2)}),
    "1x1 enlarged wrong pads": rule(
        f"(Add (Conv ?x ?a) (Conv[{P1}] ?x ?b))",
        "(Conv[pads=(2,2,0,0)] ?x (Add (EnlargeKernel ?a ?b) ?b))",
        W2, {"x": I4, "a": (4, 4, 1, 1), "b": (4, 4, 3, 3)},
        ["dim(?a,2) == 1 and dim(?a,3) == 1 and dim(?b,2) == 3 and dim(?b,3) == 3"]),
    "transpose-of-matmul order": rule(
        "(Transpose[perm=(1,0)] (MatMul ?x ?a))",
        "(Transpose[perm=(1,0)] (MatMul (Transpose[perm=(1,0)] ?a) ?x))",
        {"x": "tensor", "a": "weight"}, {"x": (4, 4), "a": (4, 4)}),
    "conv-linear-w dropped op": rule(f"(Add (Conv[{P1}] ?x ?a) (Conv[{P1}] ?x ?b))",
                                     f"(Conv[{P1}] ?x ?a)", W2,
                                     {"x": I4, "a": (4, 4, 3, 3), "b": (4, 4, 3, 3)}),
    # The rank-3 merge with the Split on the wrong axis, or the weights concatenated in the
    # opposite order to the Split outputs.
    "matmul3d-merge split axis 1": rule(
        ["(MatMul ?x ?b)", "(MatMul ?x ?a)"],
        [f"(Split.{k}[axis=1, split=(dim(?a,1), dim(?b,1))] "
         "(MatMul ?x (Concat[axis=1] ?a ?b)))" for k in (1, 0)],
        W2, {"x": (2, 8, 4), "a": (4, 4), "b": (4, 4)}),
    "matmul3d-merge weights swapped": rule(
        ["(MatMul ?x ?b)", "(MatMul ?x ?a)"],
        [f"(Split.{k}[axis=2, split=(dim(?a,1), dim(?b,1))] "
         "(MatMul ?x (Concat[axis=1] ?b ?a)))" for k in (1, 0)],
        W2, {"x": (2, 3, 4), "a": (4, 4), "b": (4, 4)}),
    "matmul3d-concat-cols wrong axis": rule(
        "(Concat[axis=1] (MatMul ?x ?a) (MatMul ?x ?b))", "(MatMul ?x (Concat[axis=1] ?a ?b))",
        W2, {"x": (2, 4, 4), "a": (4, 4), "b": (4, 4)}),
    "relu-add not linear": rule("(Add (Relu ?x) (Relu ?y))", "(Relu (Add ?x ?y))",
                                {"x": "tensor", "y": "tensor"}, {"x": (2, 3), "y": (2, 3)}),
}


def _numerically_wrong(r: Rule) -> bool:
    rng = np.random.default_rng(SEED)
    arrays = {k: rng.standard_normal(v) for k, v in r.example.items()}
    try:
        for s, d in zip(r.src, r.dst):
            a, b = evaluate(s, arrays), evaluate(d, arrays)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=1e-9):
                return True
    except (ValueError, IndexError):
        return True
    return False


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutants_are_never_proved(name):
    r = MUTANTS[name]
    assert _numerically_wrong(r), f"mutant {name} is not wrong (seed {SEED})"
    (v,) = verify_rules([r], timeout_s=5.0, workers=1)
    assert v.proof["result"] in ("refuted", "unknown"), v.proof
    assert prove_rule(r, timeout_s=5.0)["result"] != "proved"


def test_refuted_rule_carries_a_numeric_counterexample():
    r = MUTANTS["matmul-assoc swapped"]
    (v,) = verify_rules([r], workers=1)
    assert v.proof["result"] == "refuted" and v.proof["method"] == "bounded"
    cex = v.proof["counterexample"]
    arrays = {k: np.array(cex[k]) for k in ("x", "a", "b")}
    src, dst = evaluate(r.src[0], arrays), evaluate(r.dst[0], arrays)
    assert not np.allclose(src, dst)
    at = tuple(cex["differs_at"]["index"])
    assert src[at] == pytest.approx(cex["differs_at"]["src"])


def test_proof_record_fields():
    (v,) = verify_rules([KNOWN_TRUE["matmul-assoc"]], workers=1)
    p = v.proof
    assert p["method"] == "axioms" and p["result"] == "proved"
    assert isinstance(p["seconds"], float) and p["z3"].count(".") >= 2
    json.dumps(p)


def test_missing_semantics_is_a_loud_unknown_and_others_continue(monkeypatch):
    from superopt.core.ops import get_op

    monkeypatch.setattr(get_op("Relu"), "z3", None)
    out = verify_rules([KNOWN_TRUE["relu-concat"], KNOWN_TRUE["matmul-assoc"]], workers=1)
    assert out[0].proof["result"] == "unknown"
    assert out[0].proof["reason"] == "op Relu has no Z3 semantics"
    assert out[1].proof["result"] == "proved"


def test_tiny_timeout_gives_unknown_not_a_hang():
    (v,) = verify_rules([BN_FOLD], timeout_s=0.001, workers=1)
    assert v.proof["result"] == "unknown"


def test_parallel_workers_keep_order_and_report_progress():
    rules = [KNOWN_TRUE["matmul-assoc"], MUTANTS["matmul-assoc swapped"],
             KNOWN_TRUE["relu-concat"]]
    seen = []
    out = verify_rules(rules, workers=2, progress=lambda d, t, r: seen.append((d, t)))
    assert [r.id for r in out] == [r.id for r in rules]
    assert [r.proof["result"] for r in out] == ["proved", "refuted", "proved"]
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]


def test_cli_verify_writes_records_and_names_a_malformed_rule(tmp_path, capsys):
    from superopt.face.cli import main

    good = [KNOWN_TRUE["matmul-assoc"].to_json(), MUTANTS["matmul-assoc swapped"].to_json()]
    bad = {"id": "rbad", "src": ["(Frobnicate ?x)"], "dst": ["?x"],
           "vars": {"x": {"kind": "tensor", "rank": 2}}}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"format": "superopt-rules/2", "meta": {},
                                "rules": good + [bad]}))
    code = main(["verify", str(path), "--workers", "1", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rule rbad" in err and "Frobnicate" in err
    doc = json.loads(path.read_text())
    results = {d["id"]: d.get("proof", {}).get("result") for d in doc["rules"]}
    assert results == {good[0]["id"]: "proved", good[1]["id"]: "refuted", "rbad": None}


def test_cli_verify_to_output_file(tmp_path, capsys):
    from superopt.core.rules import load_rules, save_rules
    from superopt.face.cli import main

    src = tmp_path / "in.json"
    save_rules([KNOWN_TRUE["relu-concat"]], src)
    out = tmp_path / "out.json"
    assert main(["verify", str(src), "--workers", "1", "-o", str(out)]) == 0
    assert load_rules(out).rules[0].proof["result"] == "proved"
    assert "proof" not in json.loads(src.read_text())["rules"][0]
    assert "proved" in capsys.readouterr().out


def test_cli_verify_in_place_keeps_a_sealed_file_sealed(tmp_path, capsys):
    """Re-proving a sealed database (the shipped one: `superopt verify rules_db/rules.json`)
    rewrites its proof records; the seal then covers the new ones instead of going stale. An
    unsealed file stays unsealed."""
    from superopt.core.rules import RuleSet, load_rules, save_rules, seal_state, sealed
    from superopt.face.cli import main

    rules = [KNOWN_TRUE["relu-concat"], KNOWN_TRUE["matmul-assoc"]]
    path, plain = tmp_path / "sealed.json", tmp_path / "plain.json"
    save_rules(sealed(RuleSet(rules, {})), path)
    save_rules(rules, plain)
    assert seal_state(load_rules(path)) == "intact"
    before = json.loads(path.read_text())["meta"]["rules_sha256"]
    for f in (path, plain):
        assert main(["verify", str(f), "--workers", "1", "-q"]) == 0
    after = load_rules(path)
    assert all(r.proof["result"] == "proved" for r in after.rules)
    assert seal_state(after) == "intact" and after.meta["rules_sha256"] != before
    assert seal_state(load_rules(plain)) == "unsealed"


def test_cli_verify_check_writes_nothing_and_fails_on_an_unproved_rule(tmp_path, capsys):
    from superopt.core.rules import save_rules
    from superopt.face.cli import main

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    save_rules([KNOWN_TRUE["relu-concat"]], good)
    save_rules([KNOWN_TRUE["relu-concat"], MUTANTS["matmul-assoc swapped"]], bad)
    texts = {f: f.read_bytes() for f in (good, bad)}
    assert main(["verify", str(good), "--check", "--workers", "1"]) == 0
    assert "not written" in " ".join(capsys.readouterr().out.split())  # the title may wrap
    assert main(["verify", str(bad), "--check", "--workers", "1", "-q"]) == 1
    assert {f: f.read_bytes() for f in (good, bad)} == texts  # nothing rewritten
    assert main(["verify", str(good), "--check", "-o", str(tmp_path / "x.json")]) == 2
    assert "does not take -o" in capsys.readouterr().err


def test_cli_verify_missing_file_is_one_line(tmp_path, capsys):
    from superopt.face.cli import main

    assert main(["verify", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such rules file" in err[0]


# ---------------------------------------------------------------------------------------------
# issue #15, guarded axioms: a false rule is never proved, a proof gets a second witness, and
# a rule the lowering cannot handle is a clean "unknown"

# (4,4) x (4,) x (4,4): the 1-D middle operand is contracted on both sides, so the two
# associations differ (the old MatMul-assoc had no guard for it and "proved" this).
ASSOC_1D = rule("(MatMul (MatMul ?x ?a) ?b)", "(MatMul ?x (MatMul ?a ?b))", W2,
                {"x": (4, 4), "a": (4,), "b": (4, 4)})
CONCAT_NO_RANKS = Rule.make(["(Concat[axis=1] (Relu ?x) (Relu ?y))"],
                            ["(Relu (Concat[axis=1] ?x ?y))"], {"x": "tensor", "y": "tensor"})


def test_matmul_assoc_with_a_1d_middle_operand_is_refuted_not_proved():
    assert _numerically_wrong(ASSOC_1D)
    assert prove_rule(ASSOC_1D, timeout_s=5.0)["result"] != "proved"
    (v,) = verify_rules([ASSOC_1D], workers=1)
    assert v.proof["result"] == "refuted", v.proof


def _unguarded_assoc(monkeypatch):
    """The axioms with MatMul-assoc's guard dropped (a new name: formulas are cached by name)."""
    import dataclasses

    import superopt.verifier.axioms as axioms

    old = next(a for a in axioms.AXIOMS if a.name == "MatMul-assoc")

    def body(A, t, i, s):
        return old.body(A, t, i, s)[:2] + (True,)

    bad = dataclasses.replace(old, name="MatMul-assoc-unguarded", body=body)
    monkeypatch.setattr(axioms, "AXIOMS", [bad if a is old else a for a in axioms.AXIOMS])


def test_a_proof_from_a_wrong_axiom_is_refuted_by_the_second_witness(monkeypatch):
    _unguarded_assoc(monkeypatch)
    assert prove_rule(ASSOC_1D, timeout_s=5.0)["result"] == "proved"  # the axiom bug
    (v,) = verify_rules([ASSOC_1D], workers=1)
    p = v.proof
    assert (p["result"], p["method"]) == ("refuted", "bounded"), p
    assert "axioms proved" in p["note"] and "under-guarded" in p["note"]
    cex = p["counterexample"]
    arrays = {k: np.array(cex[k]) for k in ("x", "a", "b")}
    assert [list(a.shape) for a in arrays.values()] == [cex["shapes"][k] for k in arrays]
    src, dst = evaluate(ASSOC_1D.src[0], arrays), evaluate(ASSOC_1D.dst[0], arrays)
    assert not np.allclose(src, dst)


def test_a_proof_record_states_its_classes_and_its_bounded_witness():
    from superopt.verifier.driver import rule_ranks

    r = KNOWN_TRUE["matmul-assoc"]
    assert rule_ranks(r) == {"x": 2, "a": 2, "b": 2}
    (v,) = verify_rules([r], workers=1)
    p = v.proof
    assert p["result"] == "proved" and p["classes"] == {"a": "rank 2", "b": "rank 2",
                                                        "x": "rank 2"}
    assert v.proved
    # Two small instances of the classes: two different dims and no 1s, then size-1 dims.
    assert p["witness"].startswith("bounded at ") and p["witness"].count(";") == 1, p
    first, second = (set(map(int, re.findall(r"\d+", w)))
                     for w in p["witness"][len("bounded at "):].split("; "))
    assert 1 not in first and len(first) >= 2 and 1 in second, p["witness"]
    json.dumps(p)


def test_witness_shapes_keep_the_ranks_and_type_check():
    from superopt.verifier.bounded import witness_shapes

    for name in ("matmul3d-merge-split", "1x1-as-enlarged-3x3", "concat-convs-split"):
        r = KNOWN_TRUE[name]
        ranks = {k: len(v) for k, v in r.example.items()}
        shapes = witness_shapes(r, ranks)
        assert shapes, name
        for sh in shapes:
            assert {k: len(v) for k, v in sh.items()} == ranks
            assert check_rule(r, sh, timeout_s=20.0)["result"] == "holds", (name, sh)


def test_concat_without_ranks_is_a_clean_unknown():
    (v,) = verify_rules([CONCAT_NO_RANKS], workers=1)
    p = v.proof
    assert p["result"] == "unknown", p
    assert "rank" in p["reason"] and "\n" not in p["reason"], p


def test_concat_lowering_of_an_unknown_rank_says_why():
    from superopt.verifier.algebra import Symbolic
    from superopt.verifier.semantics import CannotLower, lower

    A = Symbolic()
    for op, attrs in (("Concat", {"axis": 1}), ("Split", {"axis": 0, "split": (1, 1)})):
        args = [A.tensor("a"), A.tensor("b")][:2 if op == "Concat" else 1]
        with pytest.raises(CannotLower, match=f"{op} needs the rank of its inputs"):
            lower(A, op, attrs, args, [0] * len(args))


def test_cli_verify_of_a_concat_rule_without_example_shapes_prints_no_traceback(tmp_path,
                                                                               capsys):
    from superopt.core.rules import load_rules, save_rules
    from superopt.face.cli import main

    src = tmp_path / "in.json"
    save_rules([CONCAT_NO_RANKS], src)
    out = tmp_path / "out.json"
    code = main(["verify", str(src), "--workers", "1", "-o", str(out), "-v"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert code == 0
    (r,) = load_rules(out).rules
    assert r.proof["result"] == "unknown" and "rank" in r.proof["reason"]


# ---------------------------------------------------------------------------------------------
# the prover proves a rule at exactly its classes (issue #14 item 1)

_SCALE = (["(Mul (Conv ?t ?k) ?c)"], ["(Conv ?t (Mul ?k ?c))"])


def test_the_prover_takes_ranks_from_the_classes_and_says_which_it_proved():
    # No example at all: the ranks are the rule's classes.
    scalar = Rule.make(*_SCALE, {"t": {"kind": "tensor", "rank": 4},
                                 "k": {"kind": "weight", "rank": 4},
                                 "c": {"kind": "weight", "rank": 0}},
                       conditions=("shape(?k)[2:] == (1, 1)",))
    proof = prove_rule(scalar)
    assert proof == {"result": "proved", "classes": {"c": "rank 0", "k": "rank 4", "t": "rank 4"}}
    (v,) = verify_rules([scalar], workers=1)
    assert v.proved and v.proof["classes"] == scalar.classes()
    # The same patterns at a per-channel (C,1,1) ?c are another rule, and a false one.
    channel = Rule.make(*_SCALE, {"t": "tensor", "k": "weight", "c": "weight"},
                        example={"t": (2, 4, 5, 5), "k": (4, 4, 1, 1), "c": (4, 1, 1)},
                        conditions=("shape(?k)[2:] == (1, 1)",))
    assert channel.ranks["c"] == 3 and channel.id != scalar.id
    assert prove_rule(channel)["result"] != "proved"
    (v,) = verify_rules([channel], workers=1)
    assert v.proof["result"] == "refuted" and not v.proved


def test_a_variable_without_a_rank_is_not_proved():
    r = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"})
    assert r.classes() == {"x": "any rank"}
    proof = prove_rule(r)
    assert proof["result"] == "unknown" and "?x has no declared rank" in proof["reason"]


def test_a_counterexample_through_an_uninterpreted_op_is_replayed_before_refuting():
    """Sigmoid, Tanh, Erf are free functions in the bounded check, so Z3 may "refute" a true
    rule by giving them impossible values (a negative Sigmoid). The counterexample is replayed
    with the reference ops: a true rule is then not refuted, a false one still is."""
    t = {"kind": "tensor", "rank": 3}
    true_rules = [Rule.make(["(Relu (Sigmoid ?v))"], ["(Sigmoid ?v)"], {"v": t},
                            example={"v": (2, 2, 4)}),
                  Rule.make(["(Tanh (Relu ?z))"], ["(Relu (Tanh ?z))"], {"z": t},
                            example={"z": (2, 2, 4)})]
    for rule in true_rules:
        res = check_rule(rule)
        assert res["result"] == "unknown", res
        assert "uninterpreted" in res["reason"]
    false_rule = Rule.make(["(Sigmoid (Add ?z ?z))"], ["(Add (Sigmoid ?z) (Sigmoid ?z))"],
                           {"z": t}, example={"z": (2, 2, 4)})
    res = check_rule(false_rule)
    assert res["result"] == "refuted" and "the sides differ" in res["note"], res
