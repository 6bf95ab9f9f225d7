"""Write rules_db/handwritten.json: the hand-written rule families, each expanded over the
variants real exports write (activation ranks, with and without a trailing Relu, which side of
a Concat the smaller kernel is on). Add and Mul are written in one operand order: the matcher
tries both.

Enumeration finds rules over the op configurations it is given; these families are the known
rewrites of real models (issue 14) stated once with attribute parameters (`Conv[pads=?p,
strides=?s]`) and the conditions under which they hold, so that one rule covers every stride
and padding a model uses. Nothing here is trusted: `make rules` proves every rule with the
verifier (`superopt verify`) before merging it into the shipped database, and this script
proves them too: it writes nothing when one does not prove.

Usage: python tools/handwritten_families.py [OUT.json]   (default: rules_db/handwritten.json)
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from superopt.core.rules import Rule, save_rules

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE = {"source": "hand-written", "issue": 14}


def T(rank: int) -> dict:
    return {"kind": "tensor", "rank": rank}


def W(rank: int) -> dict:
    return {"kind": "weight", "rank": rank}


def rule(src: list[str], dst: list[str], vars: dict, example: dict, name: str,
         conditions: tuple[str, ...] = ()) -> Rule:
    return Rule.make(src, dst, vars, example=example, name=name, conditions=conditions,
                     provenance=PROVENANCE)


def bn_folds() -> list[Rule]:
    """BatchNormalization after a Conv of any dilation, group, pads and strides, with or without
    a bias:
    folded into the Conv's kernel and bias (the weight-only helpers fold at export)."""
    conv = "Conv[dilations=?d, group=?g, pads=?p, strides=?s]"
    bn = {k: W(1) for k in ("scale", "bias", "mean", "var")}
    ex = {"x": (2, 4, 6, 6), "w": (4, 2, 3, 3), **{k: (4,) for k in bn}}
    kernel = "(BatchNormFoldKernel[epsilon=?e] ?w ?scale ?var)"
    return [
        rule([f"(BatchNormalization[epsilon=?e] ({conv} ?x ?w) ?scale ?bias ?mean ?var)"],
             [f"({conv} ?x {kernel} (BatchNormFoldBias[epsilon=?e] ?scale ?bias ?mean ?var))"],
             {"x": T(4), "w": W(4), **bn}, ex, "conv-bn-fold"),
        rule([f"(BatchNormalization[epsilon=?e] ({conv} ?x ?w ?b) ?scale ?bias ?mean ?var)"],
             [f"({conv} ?x {kernel} "
              f"(BatchNormFoldBias[epsilon=?e] ?scale ?bias (Sub ?mean ?b) ?var))"],
             {"x": T(4), "w": W(4), "b": W(1), **bn}, {**ex, "b": (4,)}, "conv-bias-bn-fold"),
    ]


def linear_merges() -> list[Rule]:
    """Two linear layers (MatMul + bias Add) reading one activation -> one MatMul with the
    weights side by side and the biases concatenated, split back: Q/K/V projections, LLaMA's
    gate and up projections. Per activation rank (2-4); one operand order of each Add covers
    both, as the matcher tries both at Add and Mul (exporters write both)."""
    out = []
    for r in (2, 3, 4):
        merged = "(Add (MatMul ?x (Concat[axis=1] ?w1 ?w2)) (Concat[axis=0] ?b1 ?b2))"
        split = f"axis={r - 1}, split=(dim(?w1,1), dim(?w2,1))"
        dst = [f"(Split[{split}] {merged})", f"(Split.1[{split}] {merged})"]
        example = {"x": (2, 2, 3, 4)[-r:], "w1": (4, 5), "w2": (4, 6), "b1": (5,), "b2": (6,)}
        out.append(rule(
            [f"(Add (MatMul ?x ?w{k}) ?b{k})" for k in (1, 2)], dst,
            {"x": T(r), "w1": W(2), "w2": W(2), "b1": W(1), "b2": W(1)}, example,
            "linear-bias-merge",
            ("shape(?b1)[0] == shape(?w1)[1]", "shape(?b2)[0] == shape(?w2)[1]")))
    return out


def three_way_merges() -> list[Rule]:
    """Three projections of one activation merged in one step (Q/K/V; with and without a
    bias): two pairwise merges would leave a Split of a Split, which costs more than it saves."""
    out = []
    vars3 = {f"w{k}": W(2) for k in (1, 2, 3)}
    ws = "(Concat[axis=1] ?w1 ?w2 ?w3)"
    for r in (2, 3, 4):
        split = f"axis={r - 1}, split=(dim(?w1,1), dim(?w2,1), dim(?w3,1))"
        example = {"x": (2, 2, 3, 4)[-r:], "w1": (4, 5), "w2": (4, 6), "w3": (4, 2)}
        mm = f"(MatMul ?x {ws})"
        out.append(rule([f"(MatMul ?x ?w{k})" for k in (1, 2, 3)],
                        [f"(Split{'.' + str(k) if k else ''}[{split}] {mm})" for k in range(3)],
                        {"x": T(r), **vars3}, example, "matmul-merge-3"))
        merged = f"(Add {mm} (Concat[axis=0] ?b1 ?b2 ?b3))"
        out.append(rule(
            [f"(Add (MatMul ?x ?w{k}) ?b{k})" for k in (1, 2, 3)],
            [f"(Split{'.' + str(k) if k else ''}[{split}] {merged})" for k in range(3)],
            {"x": T(r), **vars3, "b1": W(1), "b2": W(1), "b3": W(1)},
            {**example, "b1": (5,), "b2": (6,), "b3": (2,)}, "linear-bias-merge-3",
            tuple(f"shape(?b{k})[0] == shape(?w{k})[1]" for k in (1, 2, 3))))
    return out


CONV = "Conv[dilations=?d, pads=?p, strides=?s]"


def _bias(bias: bool, *names: str) -> tuple[str, dict, str]:
    """The bias parts of a Conv family's templates: the trailing Conv argument of each named
    bias (" ?b1"), their variables, and the name prefix ("conv-bias-" or "conv-"). Exports
    write both forms: torch.onnx's folded BatchNorm gives a bias; the dynamo exporter drops
    an all-zero one (freshly initialized BatchNorm) and bias=False Convs have none."""
    args = {n: f" ?{n}" if bias else "" for n in names}
    return args, ({n: W(1) for n in names} if bias else {}), ("conv-bias-" if bias else "conv-")


def conv_merges(bias: bool = True) -> list[Rule]:
    """Two Convs (with bias, or both without), same kernel size, dilation, pads and strides
    (group 1), reading one tensor -> one Conv over the concatenated kernels (and biases): split
    back into two outputs, or, when a Concat along channels already joins them (with or
    without a Relu on each), that Concat."""
    b, bvars, prefix = _bias(bias, "b1", "b2", "b3")
    cat2 = " (Concat[axis=0] ?b1 ?b2)" if bias else ""
    cat3 = " (Concat[axis=0] ?b1 ?b2 ?b3)" if bias else ""
    vars = {"x": T(4), "w1": W(4), "w2": W(4), **{k: bvars[k] for k in bvars if k != "b3"}}
    ex = {"x": (2, 4, 6, 6), "w1": (3, 4, 3, 3), "w2": (5, 4, 3, 3),
          **({"b1": (3,), "b2": (5,)} if bias else {})}
    merged = f"({CONV} ?x (Concat[axis=0] ?w1 ?w2){cat2})"
    split = "axis=1, split=(dim(?w1,0), dim(?w2,0))"
    same_kernel = ("shape(?w1)[1:] == shape(?w2)[1:]",)
    one = f"({CONV} ?x ?w1{b['b1']})"
    two = f"({CONV} ?x ?w2{b['b2']})"
    merged3 = f"({CONV} ?x (Concat[axis=0] ?w1 ?w2 ?w3){cat3})"
    split3 = "axis=1, split=(dim(?w1,0), dim(?w2,0), dim(?w3,0))"
    return [
        rule([one, two], [f"(Split[{split}] {merged})", f"(Split.1[{split}] {merged})"],
             vars, ex, f"{prefix}merge", same_kernel),
        rule([one, two, f"({CONV} ?x ?w3{b['b3']})"],
             [f"(Split{'.' + str(k) if k else ''}[{split3}] {merged3})" for k in range(3)],
             {**vars, "w3": W(4), **({"b3": W(1)} if bias else {})},
             {**ex, "w3": (2, 4, 3, 3), **({"b3": (2,)} if bias else {})},
             f"{prefix}merge-3", same_kernel + ("shape(?w1)[1:] == shape(?w3)[1:]",)),
        rule([f"(Concat[axis=1] {one} {two})"], [merged], vars, ex,
             f"{prefix}merge", same_kernel),
        rule([f"(Concat[axis=1] (Relu {one}) (Relu {two}))"], [f"(Relu {merged})"],
             vars, ex, f"{prefix}merge", same_kernel),
    ]


def conv_add_merges(bias: bool = True) -> list[Rule]:
    """Two Convs (with bias, or both without) whose outputs are added, with the same kernel
    size, dilation, pads and strides (group 1), reading inputs of equal batch and spatial size
    (a ResNet projection shortcut: the block's last 1x1 Conv plus the downsample Conv of the
    block's input) -> one Conv over the inputs concatenated along channels, with the kernels
    side by side along input channels and the biases summed. Both Convs and the Add become one
    Conv; the Concat it adds copies the two (smaller) inputs instead of adding the two (larger)
    outputs."""
    b, bvars, _ = _bias(bias, "b1", "b2")
    vars = {"x": T(4), "y": T(4), "w1": W(4), "w2": W(4), **bvars}
    ex = {"x": (2, 3, 6, 6), "y": (2, 4, 6, 6), "w1": (5, 3, 3, 3), "w2": (5, 4, 3, 3),
          **({"b1": (5,), "b2": (5,)} if bias else {})}
    conds = ("shape(?x)[0] == shape(?y)[0]", "shape(?x)[2:] == shape(?y)[2:]",
             "shape(?w1)[0] == shape(?w2)[0]", "shape(?w1)[2:] == shape(?w2)[2:]")
    summed = " (Add ?b1 ?b2)" if bias else ""
    return [rule([f"(Add ({CONV} ?x ?w1{b['b1']}) ({CONV} ?y ?w2{b['b2']}))"],
                 [f"({CONV} (Concat[axis=1] ?x ?y) (Concat[axis=1] ?w1 ?w2){summed})"],
                 vars, ex, "conv-add-merge" if bias else "conv-add-merge-no-bias", conds)]


def enlarge_merges(bias: bool = True) -> list[Rule]:
    """Two Convs (with bias, or both without) with different kernel sizes, each padded "same",
    with the same strides, reading one tensor: the smaller kernels zero-padded (centered) to
    3x3, one Conv (TASO's enlarge + merge). Two pairs occur in real models: a 1x1 and a 3x3
    (SqueezeNet's Fire module; a ResNet-18/34 block that opens a stage, whose 3x3 and
    downsample 1x1 read the block input at stride 2) and a 1x3 and a 3x1 (Inception-v3's last
    blocks). Joined by a Concat along channels (with or without the Relus) the merged Conv
    writes the Concat itself; apart, it is split back, the seed's own example. EnlargeKernel
    pads a kernel to the size of a reference kernel; the 1x3 and the 3x1 have no 3x3 beside
    them, so their reference is the other kernel repeated three times along its length-1 axis
    (`Concat[axis=3] ?w31 ?w31 ?w31` is 3x3), a weight-only expression of which only the shape
    is used; it folds at export."""
    big = "Conv[pads=(1, 1, 1, 1), strides=?s]"
    pairs = [  # (small conv, its kernel, its enlarged kernel, other conv, other kernel, ...)
        ("Conv[strides=?s]", "w1", "(EnlargeKernel ?w1 ?w3)", big, "w3", "?w3",
         ("shape(?w1)[2:] == (1, 1)", "shape(?w3)[2:] == (3, 3)"),
         {"w1": (3, 4, 1, 1), "w3": (5, 4, 3, 3)}),
        ("Conv[pads=(0, 1, 0, 1), strides=?s]", "w13",
         "(EnlargeKernel ?w13 (Concat[axis=3] ?w31 ?w31 ?w31))",
         "Conv[pads=(1, 0, 1, 0), strides=?s]", "w31",
         "(EnlargeKernel ?w31 (Concat[axis=2] ?w13 ?w13 ?w13))",
         ("shape(?w13)[2:] == (1, 3)", "shape(?w31)[2:] == (3, 1)"),
         {"w13": (3, 4, 1, 3), "w31": (5, 4, 3, 1)}),
    ]
    out = []
    for conv_a, a, big_a, conv_b, b, big_b, conds, kernels in pairs:
        ba, bb = "b" + a[1:], "b" + b[1:]
        arg, bvars, prefix = _bias(bias, ba, bb)
        vars = {"x": T(4), a: W(4), b: W(4), **bvars}
        ex = {"x": (2, 4, 6, 6), **kernels,
              **({ba: (kernels[a][0],), bb: (kernels[b][0],)} if bias else {})}
        one, two = f"({conv_a} ?x ?{a}{arg[ba]})", f"({conv_b} ?x ?{b}{arg[bb]})"
        cat_ab = f" (Concat[axis=0] ?{ba} ?{bb})" if bias else ""
        cat_ba = f" (Concat[axis=0] ?{bb} ?{ba})" if bias else ""
        for relu in (False, True):
            def act(t: str, relu: bool = relu) -> str:
                return f"(Relu {t})" if relu else t
            out.append(rule(
                [f"(Concat[axis=1] {act(one)} {act(two)})"],
                [act(f"({big} ?x (Concat[axis=0] {big_a} {big_b}){cat_ab})")],
                vars, ex, f"{prefix}enlarge-merge", conds))
            out.append(rule(
                [f"(Concat[axis=1] {act(two)} {act(one)})"],
                [act(f"({big} ?x (Concat[axis=0] {big_b} {big_a}){cat_ba})")],
                vars, ex, f"{prefix}enlarge-merge", conds))
        merged = f"({big} ?x (Concat[axis=0] {big_a} {big_b}){cat_ab})"
        split = f"axis=1, split=(dim(?{a},0), dim(?{b},0))"
        out.append(rule([one, two], [f"(Split[{split}] {merged})", f"(Split.1[{split}] {merged})"],
                        vars, ex, f"{prefix}enlarge-merge", conds))
    return out


def duplicate_merges() -> list[Rule]:
    """The same op applied twice to one tensor with the same attributes (NASNet's separable
    branches each start with their own Relu of the cell input, and one branch adds two equal
    average pools): computed once. The sources are two nodes, the targets one."""
    out = [rule(["(Relu ?x)", "(Relu ?x)"], ["(Relu ?x)", "(Relu ?x)"], {"x": T(r)},
                {"x": (2, 3, 4, 5)[-r:]}, "duplicate-merge") for r in (2, 3, 4)]
    for pool in ("AveragePool", "MaxPool"):
        p = f"({pool}[kernel_shape=(3, 3), pads=?p, strides=?s] ?x)"
        out.append(rule([p, p], [p, p], {"x": T(4)}, {"x": (1, 2, 5, 5)}, "duplicate-merge"))
    return out


def scale_folds() -> list[Rule]:
    """A per-channel scale folded into the weights before it: a Mul by a (C, 1, 1) constant
    after a Conv (any group, pads, strides; with or without bias) into the kernel and bias, and
    an RMSNorm/LayerNorm-style weight (a Mul by a (D,) vector) into the rows of the MatMul that
    reads it (LLaMA's q/k/v and gate/up projections). One operand order of the Mul covers
    both (the matcher tries both)."""
    conv = "Conv[dilations=?d, group=?g, pads=?p, strides=?s]"
    per_channel = ("shape(?c)[0] == shape(?w)[0]", "shape(?c)[1:] == (1, 1)")
    ex = {"x": (2, 4, 6, 6), "w": (4, 2, 3, 3), "b": (4,), "c": (4, 1, 1)}
    out = []
    out.append(rule([f"(Mul ({conv} ?x ?w) ?c)"], [f"({conv} ?x (ScaleAxis0 ?w ?c))"],
                    {"x": T(4), "w": W(4), "c": W(3)}, {k: ex[k] for k in "xwc"},
                    "conv-channel-scale-fold", per_channel))
    out.append(rule([f"(Mul ({conv} ?x ?w ?b) ?c)"],
                    [f"({conv} ?x (ScaleAxis0 ?w ?c) (ScaleAxis0 ?b ?c))"],
                    {"x": T(4), "w": W(4), "b": W(1), "c": W(3)}, ex,
                    "conv-channel-scale-fold", per_channel))
    for r in (2, 3, 4):
        out.append(rule(["(MatMul (Mul ?n ?g) ?w)"], ["(MatMul ?n (ScaleAxis0 ?w ?g))"],
                        {"n": T(r), "g": W(1), "w": W(2)},
                        {"n": (2, 2, 3, 4)[-r:], "g": (4,), "w": (4, 5)},
                        "norm-scale-fold", ("shape(?g)[0] == shape(?w)[0]",)))
    return out


def channel_constant_folds() -> list[Rule]:
    """A per-channel constant added to (or, written (1, C, 1, 1), multiplied with) a Conv's
    output (any group, pads, strides, dilation; with or without bias), folded into its bias (or
    kernel and bias): an affine channel transform after a Conv that no BatchNormalization op
    carries, e.g. torchvision's FrozenBatchNorm2d (detection backbones: x * scale + shift, both
    (1, C, 1, 1)), or a bias-free Conv with its bias added after it. `ChannelVector` (weight-only)
    reads the constant's C values as the (C,) vector a Conv bias is; the (C, 1, 1) Mul is
    `conv-channel-scale-fold` above. A constant of another shape (a (C,) vector broadcasts
    along the width) does not match."""
    conv = "Conv[dilations=?d, group=?g, pads=?p, strides=?s]"
    shapes = {3: ("shape(?c)[0] == shape(?w)[0]", "shape(?c)[1:] == (1, 1)"),
              4: ("shape(?c)[0] == 1", "shape(?c)[1] == shape(?w)[0]",
                  "shape(?c)[2:] == (1, 1)")}
    ex = {"x": (2, 4, 6, 6), "w": (4, 2, 3, 3), "b": (4,)}
    cv = "(ChannelVector ?c)"
    out = []
    for r, conds in shapes.items():
        c_ex = {"c": (4, 1, 1) if r == 3 else (1, 4, 1, 1)}
        out.append(rule([f"(Add ({conv} ?x ?w ?b) ?c)"], [f"({conv} ?x ?w (Add ?b {cv}))"],
                        {"x": T(4), "w": W(4), "b": W(1), "c": W(r)}, {**ex, **c_ex},
                        "conv-channel-shift-fold", conds))
        out.append(rule([f"(Add ({conv} ?x ?w) ?c)"], [f"({conv} ?x ?w {cv})"],
                        {"x": T(4), "w": W(4), "c": W(r)},
                        {"x": ex["x"], "w": ex["w"], **c_ex}, "conv-channel-shift-fold", conds))
    conds, c_ex = shapes[4], {"c": (1, 4, 1, 1)}
    out.append(rule([f"(Mul ({conv} ?x ?w ?b) ?c)"],
                    [f"({conv} ?x (ScaleAxis0 ?w {cv}) (ScaleAxis0 ?b {cv}))"],
                    {"x": T(4), "w": W(4), "b": W(1), "c": W(4)}, {**ex, **c_ex},
                    "conv-channel-scale-fold", conds))
    out.append(rule([f"(Mul ({conv} ?x ?w) ?c)"], [f"({conv} ?x (ScaleAxis0 ?w {cv}))"],
                    {"x": T(4), "w": W(4), "c": W(4)}, {"x": ex["x"], "w": ex["w"], **c_ex},
                    "conv-channel-scale-fold", conds))
    return out


def linear_channel_scale_folds() -> list[Rule]:
    """A per-feature scale after a linear layer (MatMul, with or without its bias Add) folded
    into the weight's columns and the bias: LayerScale, and ConvNeXt's layer scale, which
    multiplies by a (C, 1, 1) constant after the channels-last MLP's Transpose back to NCHW (the
    scale then acts on the last axis before the Transpose, as its (1, 1, C) transpose). The
    products of constants fold at export, so the Mul disappears. One operand order of the Mul
    and the Add covers both (the matcher tries both)."""
    out = []
    cols = ("shape(?g)[0] == shape(?w)[1]",)
    bias = ("shape(?b)[0] == shape(?w)[1]",)
    for r in (2, 3, 4):
        ex = {"x": (2, 2, 3, 5)[-r:], "w": (5, 6), "b": (6,), "g": (6,)}
        out.append(rule(["(Mul (MatMul ?x ?w) ?g)"], ["(MatMul ?x (Mul ?w ?g))"],
                        {"x": T(r), "w": W(2), "g": W(1)}, {k: ex[k] for k in "xwg"},
                        "linear-channel-scale-fold", cols))
        out.append(rule(["(Mul (Add (MatMul ?x ?w) ?b) ?g)"],
                        ["(Add (MatMul ?x (Mul ?w ?g)) (Mul ?b ?g))"],
                        {"x": T(r), "w": W(2), "b": W(1), "g": W(1)}, ex,
                        "linear-channel-scale-fold", cols + bias))
    # ConvNeXt: Mul(c, Transpose[0, 3, 1, 2](MatMul + bias)), c of shape (C, 1, 1)
    # the weight's columns scaled through its transpose, so that it stays (K, C): a
    # (1, K, C) weight (?w times the (1, 1, C) scale) runs 4% slower in ORT's CPU MatMul
    nchw, q = "Transpose[perm=(0, 3, 1, 2)]", "(Transpose[perm=(1, 2, 0)] ?g)"
    wq = "(Transpose[perm=(1, 0)] (ScaleAxis0 (Transpose[perm=(1, 0)] ?w) ?g))"
    per_channel = ("shape(?g)[0] == shape(?w)[1]", "shape(?g)[1:] == (1, 1)")
    ex = {"x": (2, 3, 4, 5), "w": (5, 6), "b": (6,), "g": (6, 1, 1)}
    # (with the bias only, as nn.Linear writes it: the prover does not close the bias-free
    # form, whose quantifier instantiation takes another path)
    out.append(rule([f"(Mul ({nchw} (Add (MatMul ?x ?w) ?b)) ?g)"],
                    [f"({nchw} (Add (MatMul ?x {wq}) (Mul ?b {q})))"],
                    {"x": T(4), "w": W(2), "b": W(1), "g": W(3)}, ex,
                    "linear-channel-scale-fold", per_channel + bias))
    return out


def transpose_cancellations() -> list[Rule]:
    """A Transpose followed by its inverse (attention code moves heads back and forth): the
    identity. Every non-identity permutation of ranks 2-4, one rule each."""
    out = []
    for r in (2, 3, 4):
        for p in itertools.permutations(range(r)):
            if p == tuple(range(r)):
                continue
            q = tuple(p.index(k) for k in range(r))  # the inverse: q[p[k]] = k
            out.append(rule([f"(Transpose[perm={_perm(q)}] (Transpose[perm={_perm(p)}] ?x))"],
                            ["?x"], {"x": T(r)}, {"x": (2, 3, 4, 5)[:r]},
                            "transpose-cancellation"))
    return out


def _perm(p: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, p)) + ("," if len(p) == 1 else "") + ")"


def families() -> list[Rule]:
    return (bn_folds() + linear_merges() + three_way_merges()
            + [r for bias in (True, False) for r in conv_merges(bias) + conv_add_merges(bias)
               + enlarge_merges(bias)]
            + duplicate_merges() + scale_folds() + channel_constant_folds()
            + linear_channel_scale_folds() + transpose_cancellations())


def main(argv: list[str]) -> int:
    from superopt.verifier.driver import verify_rules

    out = Path(argv[1]) if len(argv) > 1 else ROOT / "rules_db" / "handwritten.json"
    rules = verify_rules(families(), workers=1)
    failed = [r for r in rules if not r.proved]
    for r in failed:
        print(f"not proved: {r.name} {r.id}: {r.proof.get('reason', r.proof.get('result'))}",
              file=sys.stderr)
    if failed:
        return 1
    save_rules(rules, out, meta={"source": "hand-written, proved families (rules_db/README.md); "
                                 "written by tools/handwritten_families.py"})
    print(f"{len(rules)} hand-written rules -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
