"""`superopt generate` and `superopt rules list|show|stats|import-taso` from the command line.

Generation here is small (up to 2 ops over a few op kinds, seed 0) so the tests stay fast.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

import superopt.generator as generator
import superopt.generator.enumeration as enumeration
from superopt.core.rules import Rule, load_rules, save_rules
from superopt.face.cli import main
from superopt.generator import generate

OPS = ["MatMul", "Add", "Conv", "EnlargeKernel", "Relu", "Concat", "Transpose"]


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    result = generate(max_ops=2, ops=OPS, workers=1, seed=0)
    path = tmp_path_factory.mktemp("rules") / "rules.json"
    save_rules(result.rules, path, result.meta)
    return path


def _one_line_error(capsys, code, argv, needle):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    # One error line, last; `generate` may print its work estimate before refusing to start.
    assert [line for line in lines if "error:" in line] == lines[-1:], err
    assert needle in lines[-1], err


def test_generate_writes_a_loadable_file_with_stage_counts(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["generate", "--max-ops", "2", "--ops", "MatMul,Add", "Transpose",
                 "--workers", "1", "--no-verify", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "estimate: about" in err and "wrote" in err
    rs = load_rules(out)
    assert rs.rules and all(r.proof["result"] == "unverified" for r in rs.rules)
    assert rs.meta["stages"]["candidates written"] == len(rs.rules)
    assert rs.meta["stages"]["after specialization pruning"] <= rs.meta["stages"][
        "after renaming pruning"]
    assert rs.meta["settings"]["ops"] == ["Add", "MatMul", "Transpose"]
    assert rs.meta["verification"] == "skipped (--no-verify)"
    texts = {" | ".join(map(str, r.src)) + " => " + " | ".join(map(str, r.dst)) for r in rs.rules}
    assert "(MatMul (MatMul ?x ?a) ?b) => (MatMul ?x (MatMul ?a ?b))" in texts
    assert "(Transpose[perm=(1, 0)] (Transpose[perm=(1, 0)] ?y)) => ?y" in texts


def test_generate_keeps_only_proved_rules_unless_asked(tmp_path, monkeypatch):
    import superopt.verifier as verifier

    def fake_verify(rules, timeout_s, workers, progress=None):
        # A stand-in for Z3: "proves" every other rule, so the filtering is what is tested.
        out = []
        for i, r in enumerate(rules):
            out.append(r.with_proof({"result": "proved" if i % 2 == 0 else "unknown"}))
            if progress:
                progress(i + 1, len(rules), out[-1])  # the verifier's progress signature
        return out

    monkeypatch.setattr(verifier, "verify_rules", fake_verify, raising=False)
    base = ["generate", "--max-ops", "2", "--ops", "MatMul", "Add", "--workers", "1", "-q"]
    assert main(base + ["-o", str(tmp_path / "p.json")]) == 0
    assert main(base + ["--keep-unproved", "-o", str(tmp_path / "all.json")]) == 0
    proved, everything = load_rules(tmp_path / "p.json"), load_rules(tmp_path / "all.json")
    assert all(r.proved for r in proved.rules)
    assert len(everything.rules) == proved.meta["stages"]["candidates written"]
    assert len(proved.rules) == (len(everything.rules) + 1) // 2
    assert proved.meta["verification"]["results"]["proved"] == len(proved.rules)


def test_interrupted_generation_writes_partial_file(tmp_path, monkeypatch, capsys):
    real, calls = enumeration._run_root, []

    def interrupted(root_index):
        calls.append(root_index)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(root_index)

    monkeypatch.setattr(generator, "estimate_graphs",
                        lambda universe, max_ops, max_weight_ops=0: 100)
    monkeypatch.setattr(enumeration, "_run_root", interrupted)
    out = tmp_path / "partial.json"
    assert main(["generate", "--max-ops", "2", "--ops", "MatMul", "Add", "--workers", "1",
                 "--no-verify", "-o", str(out)]) == 0
    meta = load_rules(out).meta
    assert meta["partial"].startswith("interrupted: 4 of ")
    assert "PARTIAL" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--max-ops", "0", "-o", "x.json"], "--max-ops must be at least 1"),
    (["generate", "--ops", "Foo", "--no-verify", "-o", "x.json"], "unknown op 'Foo'"),
    (["generate", "--no-verify", "-o", "/no/such/folder/x.json"], "does not exist"),
    (["generate", "--max-ops", "6", "--no-verify", "-o", "x.json"], "pass --yes"),
    (["rules", "list", "/no/such/rules.json"], "no such rules file"),
    (["rules", "import-taso", "/no/such/graph_subst.pb", "-o", "x.json"], "no such file"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, 2, argv, needle)


def test_malformed_rules_file_names_the_rule(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "superopt-rules/1", "meta": {}, "rules": [
        {"id": "rgood", "src": ["(Relu (Relu ?x))"], "dst": ["(Relu ?x)"], "vars": {"x": "tensor"},
         "example": {"x": [2, 3]}},
        {"id": "rbroken", "src": ["(Frobnicate ?x)"], "dst": ["?x"], "vars": {"x": "tensor"},
         "example": {"x": [2, 3]}},
    ]}))
    _one_line_error(capsys, 2, ["rules", "stats", str(bad)], "rule rbroken")


V1_RULES = [
    {"id": "r10e20e0f63", "src": ["(MatMul (MatMul ?x ?a) ?b)"],
     "dst": ["(MatMul ?x (MatMul ?a ?b))"], "vars": {"x": "tensor", "a": "weight", "b": "weight"},
     "example": {"x": [2, 4], "a": [4, 4], "b": [4, 4]}, "proof": {"result": "proved"}},
    # a parameter gets the type of its attribute; a rule without an id gets the /2 content id
    {"src": ["(BatchNormalization[epsilon=?e] ?t ?s ?b ?m ?v)"],
     "dst": ["(BatchNormalization[epsilon=?e] ?t ?s ?b ?m ?v)"], "name": "eps",
     "vars": {"t": "tensor", "s": "weight", "b": "weight", "m": "weight", "v": "weight"},
     "example": {"t": [1, 2, 3, 3], "s": [2], "b": [2], "m": [2], "v": [2]}},
    # no example shape for ?c: its rank is unknown, it cannot be migrated
    {"id": "rnoexample", "src": ["(Mul (Conv ?t ?k) ?c)"], "dst": ["(Conv ?t (Mul ?k ?c))"],
     "vars": {"t": "tensor", "k": "weight", "c": "weight"},
     "example": {"t": [2, 4, 5, 5], "k": [4, 4, 1, 1]}},
]


def test_a_v1_file_is_migrated_on_load_and_by_the_migrate_command(tmp_path, capsys):
    from superopt.core.rules import FORMAT, FORMAT_V1

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": FORMAT_V1, "meta": {"made": "by hand"},
                               "rules": V1_RULES}))
    # strict: the rule that cannot be migrated is named
    _one_line_error(capsys, 2, ["rules", "stats", str(old)], "rule rnoexample: cannot migrate")
    rs = load_rules(old, strict=False)
    assert rs.format == FORMAT_V1 and len(rs.rules) == 2
    [why] = rs.skipped
    assert "rnoexample" in why and "?c has no example shape" in why
    assoc, eps = rs.by_id("r10e20e0f63"), rs.by_id("eps")
    assert assoc.ranks == {"x": 2, "a": 2, "b": 2} and assoc.vars["a"] == "weight"
    assert assoc.proved  # a /1 record states no classes: it was proved at the example's ranks
    assert eps.params == {"e": "float"} and eps.ranks["t"] == 4 and eps.ranks["s"] == 1
    assert eps.id == Rule.make(list(map(str, eps.src)), list(map(str, eps.dst)), eps.vars,
                               example=eps.example).id
    # the command writes /2 and lists what it left out (exit 1)
    new = tmp_path / "new.json"
    assert main(["rules", "migrate", str(old), "-o", str(new)]) == 1
    captured = capsys.readouterr()
    assert "not migrated:" in captured.err and "rnoexample" in captured.err
    assert "2 rules (superopt-rules/1 -> superopt-rules/2)" in captured.out
    doc = json.loads(new.read_text())
    assert doc["format"] == FORMAT and doc["meta"]["migrated_from"] == FORMAT_V1
    by_id = {d["id"]: d for d in doc["rules"]}
    assert by_id["r10e20e0f63"]["vars"] == {"a": {"kind": "weight", "rank": 2},
                                            "b": {"kind": "weight", "rank": 2},
                                            "x": {"kind": "tensor", "rank": 2}}
    assert by_id[eps.id]["params"] == {"e": "float"}
    again = load_rules(new)
    assert again.format == FORMAT and sorted(again.rules, key=lambda r: r.id) == \
        sorted(rs.rules, key=lambda r: r.id)
    # a /2 file migrates to itself
    assert main(["rules", "migrate", str(new), "-o", str(tmp_path / "same.json"), "-q"]) == 0
    assert load_rules(tmp_path / "same.json").rules == again.rules


def test_list_stats_and_show(rules_file, capsys):
    rs = load_rules(rules_file)
    assert main(["rules", "list", str(rules_file)]) == 0
    out = capsys.readouterr().out
    assert f"{len(rs.rules)} rules" in out and rs.rules[0].id in out
    assert main(["rules", "stats", str(rules_file)]) == 0
    out = capsys.readouterr().out
    assert "unverified" in out and str(len(rs.rules)) in out
    assert "Conv" in out and "size" in out
    rule = next(r for r in rs.rules if "EnlargeKernel" in str(r.src) + str(r.dst))
    assert main(["rules", "show", rule.id[:8], str(rules_file)]) == 0
    out = capsys.readouterr().out
    assert str(rule.src[0]) in out and "(weight, rank 4)" in out and "example shapes" in out
    assert "fingerprint" in out and "unverified" in out
    _one_line_error(capsys, 2, ["rules", "show", "rnosuchrule", str(rules_file)], "no rule")


def _check_onnx_pair(rule: Rule, folder, capsys):
    assert main(["rules", "show", rule.id, str(folder.parent / "rules.json"),
                 "--onnx", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "src.onnx" in out and "dst.onnx" in out
    rng = np.random.default_rng(3)
    sess = ort.InferenceSession(str(folder / "src.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: rng.standard_normal([d for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    dst = ort.InferenceSession(str(folder / "dst.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in dst.get_inputs()} <= set(feeds)
    a = sess.run(None, feeds)
    b = dst.run(None, {i.name: feeds[i.name] for i in dst.get_inputs()})
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    return out


def test_show_onnx_sides_run_in_ort_and_agree(rules_file, tmp_path, capsys):
    rs = load_rules(rules_file)
    save_rules(rs, tmp_path / "rules.json")
    with_helper = next(r for r in rs.rules if "EnlargeKernel" in str(r.src) + str(r.dst))
    out = _check_onnx_pair(with_helper, tmp_path / "helper", capsys)
    assert "constants with random values" in out
    plain = next(r for r in rs.rules if "weight" in r.vars.values()
                 and "EnlargeKernel" not in str(r.src) + str(r.dst))
    out = _check_onnx_pair(plain, tmp_path / "plain", capsys)
    assert "every variable is a graph input" in out
    sess = ort.InferenceSession(str(tmp_path / "plain" / "src.onnx"))
    weights = [n for n, k in plain.vars.items() if k == "weight"]
    assert set(weights) <= {i.name for i in sess.get_inputs()}


def test_merge_keeps_a_rule_once_up_to_renaming_and_prefers_the_named_one(tmp_path, capsys):
    v = {"t": {"kind": "tensor", "rank": 2}, "a": {"kind": "weight", "rank": 2},
         "b": {"kind": "weight", "rank": 2}}
    ex = {"t": (2, 4), "a": (4, 4), "b": (4, 4)}
    generated = Rule.make(["(MatMul ?t (Add ?a ?b))"], ["(Add (MatMul ?t ?a) (MatMul ?t ?b))"],
                          v, example=ex, proof={"result": "proved"})
    # the same rule with the variables renamed, as a family states it
    named = Rule.make(["(MatMul ?t (Add ?b ?a))"], ["(Add (MatMul ?t ?b) (MatMul ?t ?a))"], v,
                      example=ex, name="linear-sum", proof={"result": "proved"})
    other = Rule.make(["(Relu (Relu ?t))"], ["(Relu ?t)"], {"t": {"kind": "tensor", "rank": 2}},
                      example={"t": (2, 4)}, proof={"result": "proved"})
    save_rules([generated, other], tmp_path / "a.json")
    save_rules([named], tmp_path / "b.json")
    out = tmp_path / "m.json"
    assert main(["rules", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                 "-o", str(out)]) == 0
    assert "2 rules from 2 files (1 duplicates left out)" in capsys.readouterr().out
    merged = load_rules(out).rules
    assert {r.id for r in merged} == {named.id, other.id}
    assert load_rules(out).by_id("linear-sum").proved


def test_generate_leaves_self_concatenations_out_unless_asked(tmp_path, capsys):
    """No export concatenates a tensor with itself, so `Concat(?x, ?x)` rules are dropped before
    proving; `--keep-self-concat` keeps them (the stage counts say how many)."""
    from superopt.generator.selection import self_concatenates

    argv = ["generate", "--max-ops", "2", "--ops", "Relu,Concat,Split", "--workers", "1",
            "--no-verify"]
    assert main([*argv, "-o", str(tmp_path / "a.json")]) == 0
    assert main([*argv, "--keep-self-concat", "-o", str(tmp_path / "b.json")]) == 0
    default, kept = load_rules(tmp_path / "a.json"), load_rules(tmp_path / "b.json")
    dropped = default.meta["stages"]["dropped: self-concatenation"]
    assert dropped > 0 and kept.meta["stages"]["dropped: self-concatenation"] == 0
    assert len(kept.rules) == len(default.rules) + dropped
    assert not any(self_concatenates(p) for r in default.rules for p in r.src + r.dst)
    assert any(self_concatenates(p) for r in kept.rules for p in r.src + r.dst)
    texts = {" | ".join(map(str, r.src)) + " => " + " | ".join(map(str, r.dst))
             for r in default.rules}
    assert "(Relu (Relu ?y)) => (Relu ?y)" in texts  # what is not a self-concatenation stays
