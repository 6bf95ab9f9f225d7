"""Proofs are checked, not trusted (issue #15 item 6).

A rules file's proof records are claims. A rule marked `proved` that does not come from the
intact (sealed) shipped database is re-proved before it is used, and the answer is cached by the
rule's content and the verifier's version; a proof that does not hold again is refused by name.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from handwritten_rules import ASSOC
from onnx import TensorProto, helper

import superopt
import superopt.core.rules as core_rules
import superopt.verifier as verifier
from superopt.core.rules import (
    SEAL_KEY,
    Rule,
    load_rules,
    rules_digest,
    save_rules,
    seal_state,
    sealed,
)
from superopt.face.cli import main
from superopt.pipeline import trust
from superopt.pipeline.optimize import select_rules
from superopt.pipeline.trust import CACHE_FILE, ProofCache, proof_key

# A false rule (Relu is not the identity) with a forged proof record.
BAD = Rule.make(["(Relu ?x)"], ["?x"], {"x": "tensor"}, example={"x": (2, 3)},
                name="relu-is-identity", proof={"result": "proved", "method": "forged"})


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own cache folder (the proof cache sits beside the cost cache)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SUPEROPT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def verify_calls(monkeypatch):
    """The rules each call of the verifier was asked about (the real verifier still answers)."""
    calls: list[list[str]] = []
    real = verifier.verify_rules

    def counting(rules, **kw):
        calls.append([r.id for r in rules])
        return real(rules, **kw)

    monkeypatch.setattr(verifier, "verify_rules", counting)
    return calls


def relu_model(path, n=1 << 20, depth=3):
    """y = 2 * Relu(...Relu(x)) on a large tensor: dropping the Relus is much faster, and wrong
    for every negative input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])
    names = ["x"] + [f"h{i}" for i in range(depth)]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"relu{i}")
             for i in range(depth)]
    nodes.append(helper.make_node("Add", [names[-1], names[-1]], ["y"], name="double"))
    g = helper.make_graph(nodes, "relus", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    return path


def _run(path, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _shipped_copy(tmp_path, rules, *, seal=True):
    """A stand-in shipped database (written like the real one, sealed unless told)."""
    rs = core_rules.RuleSet(list(rules), {"note": "test copy"})
    path = tmp_path / "shipped" / "rules.json"
    path.parent.mkdir(exist_ok=True)
    save_rules(sealed(rs) if seal else rs, path)
    return path


def _flip_proof(path, rule_id, proof):
    """Edit one proof record in the file's JSON, leaving everything else (meta too) alone."""
    doc = json.loads(path.read_text())
    [d] = [d for d in doc["rules"] if d["id"] == rule_id]
    d["proof"] = proof
    path.write_text(json.dumps(doc))


# ---------------------------------------------------------------------------------------------
# the measured defect


def test_a_false_rule_marked_proved_in_a_user_file_is_refused(tmp_path, capsys):
    rules = tmp_path / "bad.json"
    save_rules([BAD], rules)
    src = relu_model(tmp_path / "relu.onnx")
    out = tmp_path / "relu.opt.onnx"
    rc = main(["optimize", str(src), str(out), "--rules", str(rules), "--no-check",
               "--device", "cpu", "--cost", "analytic", "-q"])
    assert rc == 0
    x = np.random.default_rng(0).standard_normal((1, 1 << 20)).astype(np.float32)
    assert np.array_equal(_run(out, x), _run(src, x))  # the Relus are still there
    err = capsys.readouterr().err
    assert f"rule {BAD.id}: marked proved but the verifier says refuted" in err, err
    assert "not used" in err


def test_the_python_api_refuses_it_too_without_gate_or_check(tmp_path):
    rules = tmp_path / "bad.json"
    save_rules([BAD, ASSOC], rules)
    src = relu_model(tmp_path / "relu.onnx", n=64)
    lines: list[str] = []
    kept = select_rules(rules, warn=lines.append)
    assert [r.id for r in kept] == [ASSOC.id] and kept[0].proof["method"] == "axioms"
    assert [line.split(":")[0] for line in lines] == [f"rule {BAD.id}"]
    r = superopt.optimize(src, rules=rules, device="cpu", cost="analytic", gate=False,
                          check=False)
    assert r.steps == [] and r.rules_loaded == 1


# ---------------------------------------------------------------------------------------------
# the shipped database's seal


def test_the_shipped_database_is_sealed():
    rs = load_rules()
    assert rs.meta.get(SEAL_KEY) == rules_digest(rs), \
        "reseal it: superopt rules seal rules_db/rules.json"
    assert seal_state(rs) == "intact"


def test_the_intact_shipped_database_is_used_without_the_verifier(cache_dir):
    code = (
        "import sys\n"
        "from superopt.pipeline.optimize import select_rules\n"
        "warned = []\n"
        "rules = select_rules(None, warn=warned.append)\n"
        "assert len(rules) >= 500 and not warned, warned\n"
        "assert 'z3' not in sys.modules, 'z3 was imported'\n"
        "assert 'superopt.pipeline.trust' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert not (cache_dir / CACHE_FILE).exists()


def test_a_tampered_shipped_database_is_detected(tmp_path, monkeypatch):
    shipped = core_rules.default_rules_path()
    copy = tmp_path / "rules.json"
    copy.write_text(shipped.read_text())
    doc = json.loads(copy.read_text())
    doc["rules"][0]["proof"]["method"] = "hand-edited"  # flip one proof record
    copy.write_text(json.dumps(doc))
    monkeypatch.setattr(core_rules, "default_rules_path", lambda: copy)
    rechecked: list[int] = []

    def recheck(rules, **kw):  # the real one would re-prove ~1,800 rules: count them instead
        rechecked.append(len(rules))
        return list(rules)

    monkeypatch.setattr(trust, "recheck_rules", recheck)
    lines: list[str] = []
    rules = select_rules(None, warn=lines.append)
    assert seal_state(load_rules()) == "mismatch"
    assert rechecked == [len(rules)] and len(rules) >= 500
    assert len(lines) == 1 and "does not match its digest" in lines[0] and str(copy) in lines[0]
    # The same file named by path is the shipped database too.
    lines.clear()
    select_rules(copy, warn=lines.append)
    assert rechecked[-1] == len(rules) and len(lines) == 1


def test_a_false_proof_flipped_into_a_shipped_database_is_refused(tmp_path, monkeypatch,
                                                                   verify_calls):
    good = [r for r in load_rules().proved() if r.ops() == {"MatMul"}][:2]
    unproved = BAD.with_proof({"result": "refuted"})
    path = _shipped_copy(tmp_path, [*good, unproved])
    monkeypatch.setattr(core_rules, "default_rules_path", lambda: path)
    lines: list[str] = []
    assert {r.id for r in select_rules(None, warn=lines.append)} == {r.id for r in good}
    assert verify_calls == [] and lines == []  # sealed: trusted as it is
    _flip_proof(path, BAD.id, {"result": "proved"})
    kept = select_rules(None, warn=lines.append)
    assert {r.id for r in kept} == {r.id for r in good}
    assert "does not match its digest" in lines[0]
    assert lines[1].startswith(f"rule {BAD.id}: marked proved but the verifier says refuted")
    assert len(lines) == 2 and [sorted(c) for c in verify_calls] == [
        sorted([*(r.id for r in good), BAD.id])]  # one call, in the file's (id) order


def test_an_unsealed_shipped_database_is_rechecked(tmp_path, monkeypatch, verify_calls):
    path = _shipped_copy(tmp_path, [ASSOC], seal=False)
    monkeypatch.setattr(core_rules, "default_rules_path", lambda: path)
    lines: list[str] = []
    assert [r.id for r in select_rules(None, warn=lines.append)] == [ASSOC.id]
    assert len(lines) == 1 and "carries no digest" in lines[0]
    assert verify_calls == [[ASSOC.id]]


def test_seal_command_writes_and_checks_the_digest(tmp_path, capsys):
    path = tmp_path / "r.json"
    save_rules([ASSOC, BAD.with_proof({"result": "unknown"})], path, {"made": "by hand"})
    assert main(["rules", "seal", "--check", str(path)]) == 1
    assert main(["rules", "seal", str(path)]) == 0
    rs = load_rules(path)
    assert seal_state(rs) == "intact" and rs.meta["made"] == "by hand"
    assert main(["rules", "seal", "--check", "-q", str(path)]) == 0
    _flip_proof(path, BAD.id, {"result": "proved"})
    assert main(["rules", "seal", "--check", str(path)]) == 1
    assert "digest mismatch" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# the proof cache


def test_user_rules_are_reproved_once_then_the_cache_answers(tmp_path, cache_dir,
                                                               verify_calls):
    rules = tmp_path / "mine.json"
    save_rules([ASSOC], rules)
    src = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "A"], ["t"]), helper.make_node("MatMul", ["t", "B"],
                                                                       ["y"])],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [onnx.numpy_helper.from_array(np.eye(8, dtype=np.float32), n) for n in ("A", "B")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    first = superopt.optimize(src, rules=rules, device="cpu", cost="analytic", gate=False)
    assert verify_calls == [[ASSOC.id]] and first.rules_loaded == 1
    doc = json.loads((cache_dir / CACHE_FILE).read_text())
    key = proof_key(ASSOC, verifier.VERIFIER_VERSION)
    assert doc["entries"][key]["rule"] == ASSOC.id
    assert doc["entries"][key]["proof"]["result"] == "proved"
    second = superopt.optimize(src, rules=rules, device="cpu", cost="analytic", gate=False)
    assert verify_calls == [[ASSOC.id]]  # no second call: the cache answered
    assert second.rules_loaded == 1 and second.rules[ASSOC.id]["proof"]["result"] == "proved"
    cache = ProofCache()
    assert cache.get(key) is not None and cache.hits == 1


def test_refutations_are_cached_and_unknowns_are_asked_again(tmp_path, monkeypatch):
    other = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"},
                      proof={"result": "proved"})
    calls: list[list[str]] = []

    def fake_verify(rules, **kw):  # an "unknown" may be a timeout: it must be asked again
        calls.append([r.id for r in rules])
        return [r.with_proof({"result": "refuted"} if r.id == BAD.id else
                             {"result": "unknown", "reason": "Z3 timeout"}) for r in rules]

    monkeypatch.setattr(verifier, "verify_rules", fake_verify)
    path = tmp_path / "r.json"
    save_rules([BAD, other], path)
    for _ in range(2):
        lines: list[str] = []
        assert select_rules(path, warn=lines.append) == []
        assert sorted(lines) == sorted([
            f"rule {BAD.id}: marked proved but the verifier says refuted (counterexample "
            "found); not used",
            f"rule {other.id}: marked proved but the verifier says unknown (Z3 timeout); not used"])
    assert [sorted(c) for c in calls] == [sorted([BAD.id, other.id]), [other.id]]


def test_the_cache_key_covers_the_rules_content_and_the_verifier_version(tmp_path, monkeypatch,
                                                                         verify_calls):
    key = proof_key(ASSOC, "1")
    same = [ASSOC.with_proof({"result": "proved", "method": "other"}),
            Rule(**{**ASSOC.__dict__, "name": "renamed", "provenance": {"by": "me"}})]
    assert all(proof_key(r, "1") == key for r in same)
    changed = [
        Rule(**{**ASSOC.__dict__, "vars": {"x": "tensor", "a": "tensor", "b": "weight"}}),
        Rule(**{**ASSOC.__dict__, "conditions": ("rank(?x) == 2",)}),
        Rule(**{**ASSOC.__dict__, "example": {"x": (2, 4), "a": (4, 4), "b": (4, 4)}}),
        Rule.make(["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x ?a)"], ASSOC.vars, id=ASSOC.id),
    ]
    keys = {proof_key(r, "1") for r in changed} | {proof_key(ASSOC, "2"), key}
    assert len(keys) == len(changed) + 2
    # In use: a new verifier version asks again, the old answer stays for the old version.
    before = verifier.VERIFIER_VERSION
    path = tmp_path / "r.json"
    save_rules([ASSOC], path)
    select_rules(path)
    select_rules(path)
    monkeypatch.setattr(verifier, "VERIFIER_VERSION", before + "-next")
    select_rules(path)
    assert verify_calls == [[ASSOC.id], [ASSOC.id]]
    entries = json.loads(ProofCache().path.read_text())["entries"]
    assert set(entries) == {proof_key(ASSOC, before), proof_key(ASSOC, before + "-next")}


def test_a_corrupt_cache_file_is_replaced(tmp_path, cache_dir, verify_calls):
    cache_dir.mkdir()
    (cache_dir / CACHE_FILE).write_text('{"format": "superopt-proof-cache/1", "entr')
    path = tmp_path / "r.json"
    save_rules([ASSOC], path)
    assert [r.id for r in select_rules(path)] == [ASSOC.id]
    assert sorted(p.name for p in cache_dir.iterdir()) == [CACHE_FILE]  # nothing set aside
    doc = json.loads((cache_dir / CACHE_FILE).read_text())
    assert list(doc["entries"]) == [proof_key(ASSOC, verifier.VERIFIER_VERSION)]
    select_rules(path)
    assert verify_calls == [[ASSOC.id]]
    # A file of another shape (valid JSON, not a cache) is replaced the same way.
    (cache_dir / CACHE_FILE).write_text("[1, 2, 3]")
    select_rules(path)
    assert len(verify_calls) == 2 and json.loads((cache_dir / CACHE_FILE).read_text())["entries"]


def test_without_z3_a_user_rule_is_refused_not_trusted(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "z3" else real(name, *a))
    path = tmp_path / "r.json"
    save_rules([ASSOC], path)
    lines: list[str] = []
    assert select_rules(path, warn=lines.append) == []
    assert lines == [f"rule {ASSOC.id}: marked proved but the verifier says unknown (cannot "
                     "re-prove here: z3 is not installed); not used"]


def test_rules_given_as_objects_and_include_unproved_are_not_reproved(tmp_path, verify_calls):
    assert select_rules([BAD]) == [BAD]  # the caller's own claim (tests rely on it)
    path = tmp_path / "r.json"
    save_rules([BAD], path)
    assert [r.id for r in select_rules(path, include_unproved=True)] == [BAD.id]
    assert verify_calls == []
