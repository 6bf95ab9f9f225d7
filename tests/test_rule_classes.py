"""A rule says where it is true (issue #14, item 1): every shipped rule holds wherever the
matcher applies it, checked in ONNX Runtime independently of the verifier.

Each proved rule is instantiated at shapes across its classes: every variable at its declared
rank, with the example's dims, with size-1 dims (one dim at a time, and one size class at a
time: broadcasting where the other operand has n), with a second set of sizes (every size class
renamed, and one dim at a time changed: accidental equalities of the example broken), and, for
attribute parameters, several values. An instance counts only where the matcher accepts it: the
source is built as a graph, `find_matches` must match it at its roots (kinds, ranks, parameter
types and every condition checked there) and `apply_match` must build the target (a target that
does not type-check, or changes the type, is refused). Both sides of every accepted instance are
written by `superopt rules show --onnx`'s code (`instantiate_pair`) and run in ORT (CPU,
optimizations off), float64 where ORT has the kernels, else float32. Zero failures are required.

The random choices (which fresh sizes, which renamings, the values) are seeded by SEED and the
rule's id (the seed is printed). `@pytest.mark.slow` adds broadcasting both ways (two size-1
dims), more renamings and more changed dims.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import pytest

from superopt.core.errors import RulesError
from superopt.core.ir import Graph, Value
from superopt.core.onnx_io import to_onnx
from superopt.core.pattern import Bindings, PNode, PVar, build
from superopt.core.rules import Rule, load_rules
from superopt.core.types import FLOAT, TensorType
from superopt.face.commands.rules import instantiate_pair
from superopt.search.match import Refused, apply_match, check_site, find_matches

SEED = 20261128
ort.set_default_logger_severity(4)  # a rejected source is counted, not logged
#: rules per ORT model (both sides of all their accepted instances in one graph)
RULES_PER_MODEL = 40
#: sizes a renamed size class or a changed dim may take
SIZES = (2, 3, 5, 6, 7)
#: values tried for an attribute parameter, by the attribute it stands for, else by type
PARAM_VALUES = {
    "group": (1, 2), "strides": ((1, 1), (2, 2)), "dilations": ((1, 1), (2, 2)),
    "pads": ((0, 0, 0, 0), (1, 1, 1, 1)), "epsilon": (1e-5, 1e-3), "axis": (0, 1, 2),
}
TYPE_VALUES = {"int": (0, 1, 2), "float": (1e-5, 0.5), "ints": ((1, 1), (2, 2)),
               "floats": ((1.0,),), "str": ("NOTSET",)}


@dataclass
class Instance:
    rule: Rule
    label: str  # which variant: example, one-1, class-1, renamed, one-dim
    shapes: dict[str, tuple[int, ...]]
    params: dict = field(default_factory=dict)


@dataclass
class Tally:
    candidates: int = 0
    accepted: Counter = field(default_factory=Counter)  # by variant
    refused: Counter = field(default_factory=Counter)  # by reason (first words)
    failures: list[str] = field(default_factory=list)
    checked_rules: int = 0
    float32_rules: int = 0
    example_refused: list[str] = field(default_factory=list)  # rules refused at their example
    invalid_source: list[str] = field(default_factory=list)  # instances ORT rejects the source of


# ---------------------------------------------------------------------------------------------
# candidate instances


def _param_choices(rule: Rule) -> list[dict]:
    """Assignments of the rule's attribute parameters (one per value of the first list, the
    others cycling), or [{}] when it has none."""
    if not rule.params:
        return [{}]
    attr_of = rule.param_attributes()
    values = {k: PARAM_VALUES.get(attr_of.get(k, ""), TYPE_VALUES[t])
              for k, t in rule.params.items()}
    n = max(len(v) for v in values.values())
    return [{k: v[i % len(v)] for k, v in values.items()} for i in range(n)]


def candidates(rule: Rule, rng: random.Random, extended: bool = False) -> list[Instance]:
    """The example first, then every other variant (deduplicated), in a seeded order:
    `one-1` one dim set to 1, `class-1` one size class set to 1, `renamed` every size class
    renamed, `one-dim` one dim changed. `extended` adds `two-1` (two dims of two variables set
    to 1: broadcasting both ways) and more renamings and changed dims."""
    ex = {k: tuple(v) for k, v in rule.example.items() if k in rule.vars}
    assert set(ex) == set(rule.vars), f"{rule.id}: every variable needs an example shape"
    sizes = sorted({d for s in ex.values() for d in s} - {1})
    others: list[tuple[str, dict]] = []
    dims = [(v, i) for v in sorted(ex) for i in range(len(ex[v]))]

    def with_dim(shapes: dict, v: str, i: int, d: int) -> dict:
        return {**shapes, v: shapes[v][:i] + (d,) + shapes[v][i + 1:]}

    for v, i in dims:
        if ex[v][i] != 1:
            others.append(("one-1", with_dim(ex, v, i, 1)))
        for fresh in rng.sample([s for s in SIZES if s != ex[v][i]], 2 if extended else 1):
            others.append(("one-dim", with_dim(ex, v, i, fresh)))
    if extended:
        for (v, i) in dims:
            for (w, j) in dims:
                if v < w and ex[v][i] != 1 and ex[w][j] != 1:
                    others.append(("two-1", with_dim(with_dim(ex, v, i, 1), w, j, 1)))
    for d in sizes:
        others.append(("class-1", {k: tuple(1 if x == d else x for x in s)
                                   for k, s in ex.items()}))
    for _ in range(10 if extended else 3):
        new = dict(zip(sizes, rng.sample(SIZES * 2, len(sizes)))) if sizes else {}
        others.append(("renamed", {k: tuple(new.get(x, x) for x in s) for k, s in ex.items()}))
    rng.shuffle(others)
    out, seen = [], set()
    choices = _param_choices(rule)
    for label, shapes in [("example", ex), *others]:
        key = tuple(sorted(shapes.items()))
        if key in seen:
            continue
        seen.add(key)
        for params in choices:
            out.append(Instance(rule, label, shapes, params))
    return out


def accepts(inst: Instance) -> str | None:
    """None if the matcher applies the rule to its own source built at these shapes (and
    parameters), else the matcher's reason."""
    rule = inst.rule
    values, inputs = {}, []
    for name, kind in sorted(rule.vars.items()):
        shape = inst.shapes[name]
        if kind == "weight":
            values[name] = Value.const(np.zeros(shape, np.float32), name=f"w_{name}")
        else:
            values[name] = Value.input(f"i_{name}", TensorType(FLOAT, shape))
            inputs.append(values[name])
    try:
        roots = [build(p, Bindings(dict(values), dict(inst.params))) for p in rule.src]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"source does not type-check ({type(e).__name__})"
    if len(set(roots)) != len(roots):
        return "source patterns meet in one value"
    graph = Graph(inputs, [(f"o{i}", r) for i, r in enumerate(roots)])
    found = [m for m in find_matches(graph, rule) if list(m.roots) == roots]
    if not found:
        why = check_site(rule, Bindings(dict(values), dict(inst.params)), roots)
        return why or "no match at the roots"
    try:
        apply_match(graph, found[0])
    except Refused as e:
        return f"refused: {e}"
    return None


# ---------------------------------------------------------------------------------------------
# running both sides in ORT


def _variance_vars(rule: Rule) -> set[str]:
    """Variables used as a BatchNormalization variance (positive values keep it defined)."""
    where = {"BatchNormalization": 4, "BatchNormFoldKernel": 2, "BatchNormFoldBias": 3}
    out: set[str] = set()

    def walk(p):
        if isinstance(p, PNode):
            k = where.get(p.op)
            if k is not None and k < len(p.args) and isinstance(p.args[k], PVar):
                out.add(p.args[k].name)
            for a in p.args:
                walk(a)

    for p in rule.src + rule.dst:
        walk(p)
    return out


def _session(model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _values(shape, positive: bool, rng: np.random.Generator, dtype) -> np.ndarray:
    arr = rng.standard_normal(shape)
    return (np.abs(arr) + 0.5 if positive else arr).astype(dtype)


def _model(instances: list[Instance], dtype: str, rng: np.random.Generator, sides: str = "sd"):
    """One ORT session computing the chosen sides ("s": source, "d": target) of every instance,
    its feeds, and (instance, number of outputs) per instance."""
    inputs, outputs, feeds, pairs = [], [], {}, []
    for n, inst in enumerate(instances):
        rule, prefix = inst.rule, f"c{n}_"
        positive = _variance_vars(rule)
        consts = {k: _values(s, k in positive, rng, dtype) for k, s in inst.shapes.items()
                  if rule.vars[k] == "weight"}
        pair = instantiate_pair(rule, inst.shapes, dtype=dtype, rng=rng, prefix=prefix,
                                consts=consts, params=inst.params)
        for v in pair.inputs:
            name = v.name[len(prefix):]
            feeds[v.name] = consts.get(name, _values(inst.shapes[name], name in positive, rng,
                                                     dtype))
        inputs += pair.inputs
        for side, outs in (("s", pair.src), ("d", pair.dst)):
            if side in sides:
                outputs += [(f"{prefix}{side}{k}", v) for k, v in enumerate(outs)]
        pairs.append((inst, len(pair.src)))
    return _session(to_onnx(Graph(inputs, outputs))), feeds, pairs


def _describe(inst: Instance) -> str:
    return (f"{inst.rule.id} [{inst.label}] at "
            + ", ".join(f"?{v}={s}" for v, s in sorted(inst.shapes.items()))
            + (f" {inst.params}" if inst.params else "") + ": "
            + " | ".join(map(str, inst.rule.src)) + " => " + " | ".join(map(str, inst.rule.dst)))


def run_chunk(instances: list[Instance], dtype: str, rng: np.random.Generator,
              tally: Tally | None = None) -> list[str]:
    """Both sides of every instance in one ORT model; the instances whose sides differ. If the
    model does not run, each instance alone: one whose source does not run in ORT is not an
    instance any valid model contains (skipped, counted); one whose target does not is a
    failure."""
    try:
        session, feeds, pairs = _model(instances, dtype, rng)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    except ORT_ERRORS:
        if len(instances) == 1 and tally is None:
            raise
        bad = []
        for inst in instances:
            try:
                session, feeds, _ = _model([inst], dtype, rng, sides="s")
                session.run(None, feeds)
            except ORT_ERRORS as e:
                if tally is not None:
                    tally.invalid_source.append(f"{_describe(inst)} ({_first_line(e)})")
                continue
            try:
                bad += run_chunk([inst], dtype, rng)
            except ORT_ERRORS as e:
                bad.append(f"{_describe(inst)}: the target does not run in ORT "
                           f"({_first_line(e)})")
        return bad
    rtol = 1e-9 if dtype == "float64" else 1e-4
    bad = []
    for n, (inst, k_out) in enumerate(pairs):
        for k in range(k_out):
            a, b = got[f"c{n}_s{k}"], got[f"c{n}_d{k}"]
            scale = max(1.0, float(np.abs(a).max(initial=0.0)))
            if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=rtol * scale):
                err = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
                bad.append(f"{_describe(inst)}: output {k} differs (max abs error {err:.3g}, "
                           f"{dtype})")
                break
    return bad


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][-160:] if text else type(e).__name__


ORT_ERRORS = (RulesError, ValueError, RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail,
              ort.capi.onnxruntime_pybind11_state.NotImplemented,
              ort.capi.onnxruntime_pybind11_state.InvalidGraph,
              ort.capi.onnxruntime_pybind11_state.InvalidArgument)


def _check(rules: list[Rule], extended: bool = False) -> Tally:
    tally = Tally()
    accepted: list[tuple[Rule, list[Instance]]] = []
    for rule in rules:
        rng = random.Random(f"{SEED}:{rule.id}")
        pool = candidates(rule, rng, extended)
        mine = []
        for inst in pool:
            tally.candidates += 1
            why = accepts(inst)
            if why is None:
                mine.append(inst)
                tally.accepted[inst.label] += 1
            else:
                tally.refused[" ".join(why.split()[:4])] += 1
        if not mine or mine[0].label != "example":
            # e.g. a multi-output rule whose source outputs share a node: the matcher never
            # applies it (`apply_match` refuses overlapping roots).
            tally.example_refused.append(f"{rule.id}: {accepts(pool[0])}")
        if mine:
            accepted.append((rule, mine))
    rng = np.random.default_rng(SEED)
    for start in range(0, len(accepted), RULES_PER_MODEL):
        chunk = accepted[start:start + RULES_PER_MODEL]
        # float64 where ORT has the kernels; a rule whose ops lack one runs in float32.
        doubles, singles = [], []
        for rule, insts in chunk:
            (singles if _float32_only(rule) else doubles).extend(insts)
        for insts, dtype in ((doubles, "float64"), (singles, "float32")):
            if insts:
                tally.failures += run_chunk(insts, dtype, rng, tally)
        tally.checked_rules += len(chunk)  # rules with at least one accepted instance
        tally.float32_rules += sum(1 for rule, _ in chunk if _float32_only(rule))
    return tally


_F32_ONLY: dict[str, bool] = {}


def _float32_only(rule: Rule) -> bool:
    """Whether ORT's CPU provider lacks a double kernel for one of the rule's ops (probed once
    per op on a tiny instance of a rule using it)."""
    key = ",".join(sorted(rule.ops()))
    if key not in _F32_ONLY:
        try:
            inst = Instance(rule, "example", {k: tuple(v) for k, v in rule.example.items()})
            run_chunk([inst], "float64", np.random.default_rng(0))
            _F32_ONLY[key] = False
        except ORT_ERRORS:
            _F32_ONLY[key] = True
    return _F32_ONLY[key]


def _summary(tally: Tally, rules: int) -> str:
    total = sum(tally.accepted.values()) - len(tally.invalid_source)
    lines = [f"seed {SEED}: {rules} proved rules, {tally.candidates} candidate instances, "
             f"{total} accepted by the matcher and checked in ORT "
             f"({tally.float32_rules} rules in float32), {len(tally.failures)} failures",
             "  accepted by variant: " + ", ".join(f"{k} {v}"
                                                   for k, v in sorted(tally.accepted.items())),
             "  refused (reason, first words): " + "; ".join(
                 f"{k!r} {v}" for k, v in tally.refused.most_common(8)),
             f"  accepted instances whose source ORT rejects (no valid model has them): "
             f"{len(tally.invalid_source)}"
             + "".join(f"\n    {line}" for line in tally.invalid_source[:5]),
             f"  rules the matcher refuses at their own example: {len(tally.example_refused)}"
             + "".join(f"\n    {line}" for line in tally.example_refused[:10])]
    return "\n".join(lines + [f"  FAIL {f}" for f in tally.failures[:40]])


@pytest.fixture(scope="module")
def proved() -> list[Rule]:
    return load_rules().proved()


def _is_duplicate_merge(rule_id: str, proved: list[Rule]) -> bool:
    rule = next(r for r in proved if r.id == rule_id)
    return len(set(rule.src)) == 1 < len(rule.src) and set(rule.dst) == set(rule.src)


def _assert_all_hold(proved: list[Rule], extended: bool = False) -> Tally:
    tally = _check(proved, extended)
    text = _summary(tally, len(proved))
    print(text)
    assert tally.checked_rules + len(tally.example_refused) >= len(proved)
    # The matcher refuses a rule at its own example only for its structure (degenerate
    # multi-output rules whose source outputs share a node), never for a class or condition.
    # Duplicate merges (one source pattern written twice, e.g. two Relus of one tensor) need
    # two distinct nodes, which building by structure hash-conses into one; their target is
    # their source pattern itself, so there is nothing numerical to check here (they are
    # checked end to end on NASNet in tests/test_handwritten_families.py).
    assert all("lies inside another source pattern's match" in line
               or ("source patterns meet in one value" in line
                   and _is_duplicate_merge(line.split(":")[0].strip(), proved))
               for line in tally.example_refused), text
    assert not tally.failures, text
    return tally


def test_every_shipped_rule_holds_across_the_classes_the_matcher_accepts(proved):
    tally = _assert_all_hold(proved)
    # The instances reach past the example: broadcasting (size-1) and other sizes.
    # (a rule with attribute parameters is instantiated at several values of them)
    assert tally.accepted["example"] >= len(proved) - len(tally.example_refused)
    assert tally.accepted["one-1"] + tally.accepted["class-1"] >= len(proved) // 2
    assert tally.accepted["renamed"] + tally.accepted["one-dim"] >= len(proved) // 2


@pytest.mark.slow
def test_every_shipped_rule_holds_at_more_instances(proved):
    """Broadcasting both ways (two size-1 dims), more renamings and changed dims."""
    _assert_all_hold(proved, extended=True)


def test_the_matcher_refuses_other_ranks_and_names_the_class():
    """The rank class in one picture: a rule proved for a scalar ?c never fires at a
    per-channel (C,1,1) constant, and says why."""
    rule = Rule.make(["(Mul (Conv ?t ?k) ?c)"], ["(Conv ?t (Mul ?k ?c))"],
                     {"t": "tensor", "k": "weight", "c": "weight"},
                     example={"t": (2, 4, 5, 5), "k": (4, 4, 1, 1), "c": ()},
                     conditions=("shape(?k)[2:] == (1, 1)",))
    assert rule.ranks == {"t": 4, "k": 4, "c": 0}
    scalar = Instance(rule, "example", dict(rule.example))
    assert accepts(scalar) is None
    channel = Instance(rule, "per-channel", {**rule.example, "c": (4, 1, 1)})
    assert accepts(channel) == "?c has rank 3, the rule was proved for rank 0"


def test_attribute_parameters_are_tried_at_several_values():
    """No shipped rule has parameters yet; hand-written ones go through the same check: each
    parameter at several values of its attribute, only the matcher's accepted ones run."""
    eps = Rule.make(
        ["(BatchNormalization[epsilon=?e] (Conv[group=?g] ?t ?k) ?s ?b ?m ?v)"],
        ["(Conv[group=?g] ?t (BatchNormFoldKernel[epsilon=?e] ?k ?s ?v) "
         "(BatchNormFoldBias[epsilon=?e] ?s ?b ?m ?v))"],
        {"t": "tensor", "k": "weight", "s": "weight", "b": "weight", "m": "weight",
         "v": "weight"},
        example={"t": (2, 4, 5, 5), "k": (4, 2, 1, 1), "s": (4,), "b": (4,), "m": (4,),
                 "v": (4,)}, proof={"result": "proved"})
    assert eps.params == {"e": "float", "g": "int"}
    assert {(p["e"], p["g"]) for p in _param_choices(eps)} == {(1e-5, 1), (1e-3, 2)}
    tally = _check([eps])
    assert not tally.failures and tally.accepted["example"] == 1
    assert sum(tally.accepted.values()) >= 4
    # A constraint on a parameter is a condition the matcher checks.
    small = Rule.make(["(Add (BatchNormalization[epsilon=?e] ?t ?s ?b ?m ?v) ?t)"],
                      ["(Add ?t (BatchNormalization[epsilon=?e] ?t ?s ?b ?m ?v))"],
                      {"t": "tensor", "s": "weight", "b": "weight", "m": "weight",
                       "v": "weight"},
                      example={"t": (2, 4, 5, 5), "s": (4,), "b": (4,), "m": (4,), "v": (4,)},
                      conditions=("?e < 0.001",))
    insts = [i for i in candidates(small, random.Random(SEED)) if i.label == "example"]
    assert [(i.params["e"], accepts(i)) for i in insts] == [
        (1e-5, None), (1e-3, "condition failed: ?e < 0.001")]
