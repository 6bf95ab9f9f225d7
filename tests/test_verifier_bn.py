"""Conv + BatchNormalization folding is proved by the axioms for all shapes (result "proved",
method "axioms"), in the forms the generator emits too, and wrong folds never are.

Random data uses a fixed seed (printed on failure via the assertion message)."""

import numpy as np
import pytest

from superopt.core.pattern import evaluate
from superopt.core.rules import Rule
from superopt.verifier import verify_rules
from superopt.verifier.axioms import AXIOMS
from superopt.verifier.bounded import check_axiom, check_rule
from superopt.verifier.prove import prove_rule

SEED = 4321
V = {"x": "tensor", "w": "weight", "s": "weight", "b": "weight", "m": "weight", "v": "weight",
     "c": "weight"}
P1 = "pads=(1, 1, 1, 1)"
BN4 = {"s": (4,), "b": (4,), "m": (4,), "v": (4,), "c": (4,)}
EX = {"x": (2, 4, 5, 5), "w": (4, 4, 3, 3), **BN4}
EX11 = {**EX, "w": (4, 4, 1, 1)}
EXG = {**EX, "w": (4, 1, 3, 3)}
SMALL = {"x": (1, 2, 3, 3), "w": (2, 2, 3, 3), "s": (2,), "b": (2,), "m": (2,), "v": (2,),
         "c": (2,)}


def rule(src, dst, example, conditions=()):
    vars_ = {k: V[k] for k in example}
    return Rule.make([src], [dst], vars_, example=example, conditions=tuple(conditions))


def fold(conv_attrs="", eps="", bias=""):
    """BN(Conv(x, w[, c])) => Conv(x, FoldKernel(w), FoldBias(...)), in registry ops only."""
    ca = f"[{conv_attrs}]" if conv_attrs else ""
    ea = f"[epsilon={eps}]" if eps else ""
    mean = "(Sub ?m ?c)" if bias else "?m"
    return (f"(BatchNormalization{ea} (Conv{ca} ?x ?w{bias}) ?s ?b ?m ?v)",
            f"(Conv{ca} ?x (BatchNormFoldKernel{ea} ?w ?s ?v) "
            f"(BatchNormFoldBias{ea} ?s ?b {mean} ?v))")


def _drop_c(example):
    return {k: v for k, v in example.items() if k != "c"}


KNOWN_TRUE = {
    "fold eps param": rule(*fold(P1, "?e"), _drop_c(EX)),
    "fold eps literal": rule(*fold(P1, "1e-05"), _drop_c(EX)),
    "fold eps other literal": rule(*fold(P1, "0.001"), _drop_c(EX)),
    "fold eps default": rule(*fold(P1), _drop_c(EX)),
    "fold 1x1": rule(*fold(), _drop_c(EX11)),
    "fold grouped": rule(*fold(f"group=4, {P1}"), _drop_c(EXG)),
    "fold strided": rule(*fold(f"strides=(2, 2), {P1}"), _drop_c(EX)),
    "fold conv bias eps param": rule(*fold(P1, "?e", " ?c"), EX),
    "fold conv bias": rule(*fold(P1, bias=" ?c"), EX),
    "fold conv bias 1x1": rule(*fold(bias=" ?c"), EX11),
    "fold conv bias grouped": rule(*fold(f"group=4, {P1}", bias=" ?c"), EXG),
}

# What `superopt generate --ops Conv,BatchNormalization,BatchNormFoldKernel,BatchNormFoldBias`
# writes: no epsilon attribute (the default), and a `shape(?k)[2:]` side condition.
_GV = {"t": "tensor", "bn_scale": "weight", "bn_bias": "weight", "bn_mean": "weight",
       "bn_var": "weight"}
_GBN = {"bn_scale": (4,), "bn_bias": (4,), "bn_mean": (4,), "bn_var": (4,)}


def generated(kernel, shape, attrs=""):
    a = f"[{attrs}]" if attrs else ""
    return Rule.make(
        [f"(BatchNormalization (Conv{a} ?t ?{kernel}) ?bn_scale ?bn_bias ?bn_mean ?bn_var)"],
        [f"(Conv{a} ?t (BatchNormFoldKernel ?{kernel} ?bn_scale ?bn_var) "
         f"(BatchNormFoldBias ?bn_scale ?bn_bias ?bn_mean ?bn_var))"],
        {**_GV, kernel: "weight"}, example={"t": (2, 4, 5, 5), kernel: shape, **_GBN},
        conditions=(f"shape(?{kernel})[2:] == {tuple(shape[2:])}",))


GENERATED = {
    "k11": generated("k11", (4, 4, 1, 1)),
    "k13": generated("k13", (4, 4, 1, 3), "pads=(0, 1, 0, 1)"),
    "k31": generated("k31", (4, 4, 3, 1), "pads=(1, 0, 1, 0)"),
    "j": generated("j", (4, 4, 3, 3), P1),
    "kg": generated("kg", (4, 1, 3, 3), f"group=4, {P1}"),
}

_T = "Transpose[perm=(1, 0, 2, 3)]"
MUTANTS = {
    "scale and var swapped": rule(
        f"(BatchNormalization (Conv[{P1}] ?x ?w) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x (BatchNormFoldKernel ?w ?v ?s) (BatchNormFoldBias ?v ?b ?m ?s))",
        _drop_c(SMALL)),
    "kernel scaled along input channels": rule(
        f"(BatchNormalization (Conv[{P1}] ?x ?w) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x ({_T} (BatchNormFoldKernel ({_T} ?w) ?s ?v)) "
        f"(BatchNormFoldBias ?s ?b ?m ?v))", _drop_c(SMALL)),
    "bias and mean swapped": rule(
        f"(BatchNormalization (Conv[{P1}] ?x ?w) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x (BatchNormFoldKernel ?w ?s ?v) (BatchNormFoldBias ?s ?m ?b ?v))",
        _drop_c(SMALL)),
    "other epsilon": rule(
        f"(BatchNormalization[epsilon=1e-05] (Conv[{P1}] ?x ?w) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x (BatchNormFoldKernel[epsilon=0.5] ?w ?s ?v) "
        f"(BatchNormFoldBias[epsilon=0.5] ?s ?b ?m ?v))", _drop_c(SMALL)),
    "conv bias dropped": rule(
        f"(BatchNormalization (Conv[{P1}] ?x ?w ?c) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x (BatchNormFoldKernel ?w ?s ?v) (BatchNormFoldBias ?s ?b ?m ?v))",
        SMALL),
    "conv bias added to the mean": rule(
        f"(BatchNormalization (Conv[{P1}] ?x ?w ?c) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x (BatchNormFoldKernel ?w ?s ?v) "
        f"(BatchNormFoldBias ?s ?b (Add ?m ?c) ?v))", SMALL),
    "kernel not scaled": rule(
        f"(BatchNormalization (Conv[{P1}] ?x ?w) ?s ?b ?m ?v)",
        f"(Conv[{P1}] ?x ?w (BatchNormFoldBias ?s ?b ?m ?v))", _drop_c(SMALL)),
}


def _arrays(example, rng):
    arrays = {k: rng.standard_normal(v) for k, v in example.items()}
    for k in ("s", "v"):  # variances are positive; positive scales keep swapped ones defined
        if k in arrays:
            arrays[k] = rng.uniform(0.5, 2.0, example[k])
    return arrays


@pytest.mark.parametrize("name", sorted(KNOWN_TRUE))
def test_bn_fold_is_proved_by_the_axioms(name):
    r = KNOWN_TRUE[name]
    (v,) = verify_rules([r], timeout_s=10.0, workers=1)
    assert (v.proof["result"], v.proof["method"]) == ("proved", "axioms"), v.proof
    assert v.proof["seconds"] < 5.0, v.proof  # typically well under 1-2 s


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_bn_fold_rules_are_proved(name):
    res = prove_rule(GENERATED[name], timeout_s=10.0)
    assert res["result"] == "proved", res


@pytest.mark.parametrize("name", ["fold eps literal", "fold 1x1", "fold grouped", "fold conv bias"])
def test_bn_fold_holds_numerically_and_in_the_bounded_check(name):
    r = KNOWN_TRUE[name]
    rng = np.random.default_rng(SEED)
    arrays = _arrays(r.example, rng)
    assert np.allclose(evaluate(r.src[0], arrays), evaluate(r.dst[0], arrays)), f"seed {SEED}"
    assert check_rule(r, timeout_s=30.0)["result"] == "holds"


def _numerically_wrong(r: Rule) -> bool:
    rng = np.random.default_rng(SEED)
    arrays = _arrays(r.example, rng)
    a, b = evaluate(r.src[0], arrays), evaluate(r.dst[0], arrays)
    return a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_wrong_bn_folds_are_never_proved(name):
    r = MUTANTS[name]
    assert _numerically_wrong(r), f"mutant {name} is not wrong (seed {SEED})"
    assert prove_rule(r, timeout_s=5.0)["result"] != "proved"
    (v,) = verify_rules([r], timeout_s=5.0, workers=1)
    assert v.proof["result"] in ("refuted", "unknown"), v.proof


def test_swapped_scale_and_var_is_refuted_with_a_counterexample():
    (v,) = verify_rules([MUTANTS["scale and var swapped"]], timeout_s=10.0, workers=1)
    assert v.proof["result"] == "refuted" and v.proof["method"] == "bounded", v.proof


def test_bn_axioms_are_checked_exactly():
    names = {"Conv-BatchNormalization-fold", "BatchNormalization-channel-shift"}
    axioms = [a for a in AXIOMS if a.name in names]
    assert {a.name for a in axioms} == names
    for ax in axioms:
        res = check_axiom(ax)
        assert len(res) >= 2 and all(r["result"] == "holds" for r in res), (ax.name, res)


def test_a_bn_fold_axiom_on_the_wrong_axis_is_refuted():
    # The kernel scaled along its input-channel axis is not the fold: the exact check says so.
    from superopt.core.axiom_spec import Axiom, I, conv_ints, conv_p

    perm = (1, 0, 2, 3)

    def body(A, t, i, _s):
        x, w, s, b, m, v, e = t["x"], t["w"], t["s"], t["b"], t["m"], t["v"], i["eps"]
        p = conv_p(i)
        wk = A.transpose(A.fold_kernel(A.transpose(w, perm), s, v, e), perm)
        return (A.bn(A.conv(x, w, p), s, b, m, v, e),
                A.binary("Add", A.conv(x, wk, p), A.channel(A.fold_bias(s, b, m, v, e))), True)

    ax = Axiom("BN-fold-input-axis", frozenset(), tuple("xwsbmv"),
               tuple("sh sw pt pl pb pr g eps".split()), body,
               (I({"x": (1, 2, 2, 2), "w": (2, 2, 1, 1), "s": (2,), "b": (2,), "m": (2,),
                   "v": (2,)}, {**conv_ints(), "eps": 0.5}),))
    (res,) = check_axiom(ax)
    assert res["result"] == "refuted", res
