"""Bounded element-wise checks: a rule (or an axiom) at concrete small shapes, exactly.

Every tensor element is a Z3 real and every op is encoded exactly by its bounded Z3 encoding
(`OpDef.z3`, applied by `superopt.verifier.semantics`). Z3 then looks for inputs where the two
sides differ: none means the equality holds at those shapes; a model is a concrete
counterexample (numbers for every input element, and the first output element that differs).

Example:
    >>> from superopt.core.rules import Rule
    >>> r = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"}, example={"x": (2, 2)})
    >>> check_rule(r)["result"]
    'holds'
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import z3

from superopt.core.axiom_spec import Axiom, Instance
from superopt.core.pattern import Bindings, Pattern, PVar, resolve_attr
from superopt.core.pattern import evaluate as reference
from superopt.verifier.algebra import UNKNOWN, Concrete, Undefined, Unknown, UnknownValue
from superopt.verifier.semantics import BoundedContext, bounded_apply, real


class _Shape:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def evaluate(p: Pattern, arrays: Mapping[str, np.ndarray], ctx: BoundedContext,
             memo: dict) -> np.ndarray:
    """A pattern evaluated with the exact Z3 encodings (like `pattern.evaluate` for numpy)."""
    if isinstance(p, PVar):
        return arrays[p.name]
    key = (p.op, p.attrs, p.args)
    if key not in memo:
        b = Bindings({k: _Shape(a.shape) for k, a in arrays.items()})  # type: ignore[misc]
        attrs = {k: resolve_attr(v, b) for k, v in p.attrs}
        ins = [evaluate(a, arrays, ctx, memo) for a in p.args]
        memo[key] = bounded_apply(ctx, p.op, attrs, ins)
    return memo[key][p.out]


def _num(v: z3.ExprRef) -> float:
    if z3.is_rational_value(v):
        return float(Fraction(v.numerator_as_long(), v.denominator_as_long()))
    if z3.is_algebraic_value(v):
        return float(Fraction(v.approx(12).as_fraction()))
    if z3.is_int_value(v):
        return float(v.as_long())
    return float("nan")


def _equal_by_simplification(lhs: Any, rhs: Any) -> bool:
    if lhs.eq(rhs):
        return True
    return z3.simplify(lhs - rhs, som=True, arith_lhs=True).eq(z3.RealVal(0))


def compare(lhs: list[np.ndarray], rhs: list[np.ndarray], ctx: BoundedContext,
            timeout_s: float, variables: Mapping[str, np.ndarray] | None = None
            ) -> dict[str, Any]:
    """Ask Z3 whether some inputs make lhs[k] and rhs[k] differ at some element."""
    for k, (a, b) in enumerate(zip(lhs, rhs)):
        if a.shape != b.shape:
            return {"result": "refuted", "counterexample": {
                "output": k, "shapes": [list(a.shape), list(b.shape)],
                "note": "the two sides have different shapes"}}
    diffs, where = [], []
    for k, (a, b) in enumerate(zip(lhs, rhs)):
        for idx in np.ndindex(*a.shape):
            x, y = real(a[idx]), real(b[idx])
            if not _equal_by_simplification(x, y):
                diffs.append(x != y)
                where.append((k, idx, x, y))
    if not diffs:
        return {"result": "holds"}
    s = z3.Solver()
    s.set("timeout", max(1, int(timeout_s * 1000)))
    s.add(*ctx.constraints)
    s.add(z3.Or(*diffs))
    answer = s.check()
    if answer == z3.unsat:
        return {"result": "holds"}
    if answer == z3.unknown:
        return {"result": "unknown", "reason": f"bounded check: Z3 {s.reason_unknown()}"}
    model = s.model()
    cex: dict[str, Any] = {}
    for name, arr in (variables or ctx.variables).items():
        vals = np.empty(arr.shape, dtype=float)
        for idx in np.ndindex(*arr.shape):
            vals[idx] = _num(model.eval(real(arr[idx]), model_completion=True))
        cex[name] = vals.tolist()
    for k, idx, x, y in where:
        vx = model.eval(x, model_completion=True)
        vy = model.eval(y, model_completion=True)
        if not z3.is_true(model.eval(vx == vy, model_completion=True)):
            cex["differs_at"] = {"output": k, "index": list(idx), "src": _num(vx),
                                 "dst": _num(vy)}
            break
    return {"result": "refuted", "counterexample": cex}


def check_rule(rule: Any, shapes: Mapping[str, tuple[int, ...]] | None = None,
               timeout_s: float = 5.0) -> dict[str, Any]:
    """Bounded check of a rule at `shapes` (default: the rule's example shapes).

    Returns {"result": "holds" | "refuted" | "unknown", "counterexample"?, "reason"?}.
    """
    shapes = dict(rule.example if shapes is None else shapes)
    names = set().union(*[p.variables() for p in rule.src])
    missing = sorted(names - set(shapes))
    if missing:
        return {"result": "unknown", "reason": f"no example shape for ?{missing[0]}"}
    params = set().union(*[p.params() for p in rule.src if not isinstance(p, PVar)])
    if params:
        return {"result": "unknown",
                "reason": f"bounded check cannot instantiate parameter ?{sorted(params)[0]}"}
    ctx = BoundedContext()
    arrays = {n: ctx.tensor(n, tuple(shapes[n])) for n in sorted(names)}
    memo: dict = {}
    try:
        lhs = [evaluate(p, arrays, ctx, memo) for p in rule.src]
        rhs = [evaluate(p, arrays, ctx, memo) for p in rule.dst]
    except (ValueError, IndexError, KeyError) as e:
        return {"result": "unknown", "reason": f"does not type-check at the example shapes: {e}"}
    res = compare(lhs, rhs, ctx, timeout_s, arrays)
    if res["result"] == "refuted" and ctx.uninterpreted:
        return _replayed(rule, res, ctx.uninterpreted)
    return res


def _replayed(rule: Any, res: dict[str, Any], fns: list[str]) -> dict[str, Any]:
    """A counterexample found with uninterpreted ops (Sigmoid, Erf, Tanh, ...) may give them
    values the real functions never take (Relu(Sigmoid(x)) = Sigmoid(x) "fails" where Sigmoid
    is free to be negative). Replay it with the reference semantics in float64: the rule is
    refuted only if the real ops differ there too; else the check says nothing."""
    cex = res["counterexample"]
    names = set().union(*[p.variables() for p in rule.src])
    if not names <= set(cex):
        return res  # (a shape mismatch: no values to replay, and no values needed)
    arrays = {n: np.asarray(cex[n], dtype=np.float64) for n in names}
    try:
        with np.errstate(all="ignore"):
            memo: dict = {}
            lhs = [np.asarray(reference(p, arrays, memo=memo), np.float64) for p in rule.src]
            rhs = [np.asarray(reference(p, arrays, memo=memo), np.float64) for p in rule.dst]
    except (ValueError, IndexError, KeyError, TypeError) as e:
        return {"result": "unknown",
                "reason": f"a counterexample with uninterpreted {', '.join(fns)} does not replay "
                          f"with the reference ops: {e}"}
    if all(a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
           for a, b in zip(lhs, rhs)):
        return {"result": "unknown",
                "reason": f"the bounded check's counterexample gives uninterpreted "
                          f"{', '.join(fns)} values the real functions do not take; with the "
                          f"reference ops the two sides agree there"}
    return {**res, "note": f"replayed with the reference {', '.join(fns)}: the sides differ"}


# ---------------------------------------------------------------------------------------------
# small shapes of a rule's classes (the second witness of a proof)

WITNESS_MAX_ELEMS = 144  # the most elements a variable of a witness shape may have


def _builds(rule: Any, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Both sides of the rule type-check at `shapes` and its conditions and classes hold."""
    from superopt.core.ir import Value
    from superopt.core.pattern import build
    from superopt.core.types import FLOAT, TensorType

    vals = {}
    for k, shape in shapes.items():
        if rule.vars.get(k) == "weight":
            vals[k] = Value.const(np.zeros(shape, np.float32), name=f"?{k}")
        else:
            vals[k] = Value.input(f"?{k}", TensorType(FLOAT, tuple(shape)))
    b = Bindings(vals)
    try:
        for p in tuple(rule.src) + tuple(rule.dst):
            build(p, b)
        return rule.holds(b) is None
    except Exception:  # noqa: BLE001 - any failure means "not an instance of the rule"
        return False


def _renamed(example: Mapping[str, tuple[int, ...]], ones: int) -> dict[str, tuple[int, ...]]:
    """The example with its dims renamed order-preservingly to small values: the `ones`
    smallest values other than 1 become 1 (size-1 dims), the others 2, 3, 4, ..."""
    values = sorted({d for s in example.values() for d in s} - {1})
    ren = {1: 1}
    for n, v in enumerate(values):
        ren[v] = 1 if n < ones else 2 + n - ones
    return {k: tuple(ren[d] for d in s) for k, s in example.items()}


def _random_renaming(example: Mapping[str, tuple[int, ...]], rng: Any) -> dict:
    """The example with each distinct dim renamed to one of 1, 2, 3 or kept (conditions and
    attributes pin some: a kernel size, a group's channel count), so equal dims stay equal."""
    ren = {v: (v if v == 1 or rng.random() < 0.5 else rng.choice((1, 2, 2, 3, 3)))
           for v in sorted({d for s in example.values() for d in s})}
    return {k: tuple(ren[d] for d in s) for k, s in example.items()}


def witness_shapes(rule: Any, ranks: Mapping[str, int], limit: int = 2,
                   tries: int = 32) -> list[dict[str, tuple[int, ...]]]:
    """Up to `limit` small concrete shapes of the rule's classes (each variable at its rank)
    where both sides type-check and the conditions hold: first one with two different dims > 1
    (so that swapped axes show) and as few 1s and elements as possible, then one with more
    size-1 dims (broadcasting). Candidates: the example renamed to small dims (equal dims stay
    equal), when it is at those ranks, and dims in {1, 2, 3}; random choices are seeded by the
    rule's id. [] if none is found."""
    import random

    names = sorted(set().union(*[p.variables() for p in rule.src]))
    if any(n not in ranks for n in names):
        return []
    rng = random.Random(f"witness:{rule.id}")
    example = {k: tuple(v) for k, v in dict(rule.example).items() if k in names}
    pool: list[dict[str, tuple[int, ...]]] = []
    if len(example) == len(names) and all(len(example[n]) == ranks[n] for n in names):
        pool += [_renamed(example, 0), _renamed(example, 1), _renamed(example, 2)]
        pool += [_random_renaming(example, rng) for _ in range(tries)]
    pool += [{n: (d,) * ranks[n] for n in names} for d in (3, 2, 1)]
    pool += [{n: tuple(rng.choice((1, 2, 3)) for _ in range(ranks[n])) for n in names}
             for _ in range(tries)]

    def size(sh: dict) -> int:
        return sum(int(np.prod(s)) for s in sh.values())

    def ones(sh: dict) -> int:
        return sum(s.count(1) for s in sh.values())

    valid, seen = [], set()
    for shapes in pool:
        key = tuple(sorted(shapes.items()))
        if key in seen or any(int(np.prod(s)) > WITNESS_MAX_ELEMS for s in shapes.values()):
            continue
        seen.add(key)
        if _builds(rule, shapes):
            valid.append(shapes)
            if len(valid) >= 16:
                break
    if not valid:
        return []
    def distinct(sh: dict) -> int:  # two different dims (> 1) are enough to tell axes apart
        return min(len({d for s in sh.values() for d in s} - {1}), 2)

    first = max(valid, key=lambda sh: (distinct(sh), -ones(sh), -size(sh)))
    out = [first]
    with_ones = [sh for sh in valid if sh != first and ones(sh) > ones(first)]
    if with_ones and limit > 1:
        out.append(min(with_ones, key=lambda sh: (-distinct(sh), size(sh))))
    return out[:limit]


def shapes_text(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """x=(2, 3), a=(3,)"""
    return ", ".join(f"{k}={tuple(v)}" for k, v in sorted(shapes.items()))


def check_axiom_case(ax: Axiom, inst: Instance, timeout_s: float = 20.0) -> dict[str, Any]:
    """Judge an axiom at one concrete case (shapes, integers and schema value).

    The case is admitted where the axiom's premise can hold: its guard and the typing facts of
    every primitive on both sides (`algebra.TYPING`, which `axioms.formula` adds to the guard),
    evaluated three-valued (`Concrete`): a premise that is UNKNOWN there (it reads a dim past
    a tensor's rank, which the symbolic world leaves free) counts as admitting it.
    Result {"result": ..., "reason"?, "counterexample"?}:
    - "guard-false": the premise excludes the case, or the schema value does not apply;
    - "undefined": admitted, but neither side is defined there (nothing to compare);
    - "holds": both sides defined and exactly equal (shape axioms: the same integer);
    - "refuted": admitted and the sides differ, or only one side is defined, or a shape
      axiom's value is left unconstrained (a dim past the rank), or a typing fact is false
      where its op applies;
    - "unknown": Z3 gave up.
    """
    A = Concrete()
    t = {name: A.tensor(name, inst.shapes[name]) for name in ax.tensors}
    ints = dict(inst.ints)
    try:
        built = ax.body(A, t, ints, inst.static)
    except UnknownValue as e:
        return {"result": "refuted", "reason": f"the axiom depends on an unconstrained value: {e}"}
    if built is None:
        return {"result": "guard-false", "reason": "schema not applicable"}
    lhs, rhs, guard = built
    if A.wrong_typing:
        return {"result": "refuted",
                "reason": f"a typing fact is false where its op applies: {A.wrong_typing[0]}"}
    admitted = A.all(guard, *A.typing)
    if admitted is False:
        return {"result": "guard-false"}
    note = {"guard": "unknown"} if admitted is UNKNOWN else {}
    if ax.kind != "eq":
        term = ax.term(A, t, ints) if ax.term is not None else None
        if isinstance(term, Undefined):
            return {"result": "undefined", "reason": term.why, **note}
        if isinstance(lhs, Unknown) or isinstance(rhs, Unknown):
            return {"result": "refuted", **note, "reason": "a value is unconstrained here",
                    "counterexample": {"lhs": repr(lhs), "rhs": repr(rhs)}}
        ok = int(lhs) == int(rhs)
        return {"result": "holds" if ok else "refuted", **note,
                **({} if ok else {"counterexample": {"lhs": int(lhs), "rhs": int(rhs)}})}
    bad = [n for n, side in (("left", lhs), ("right", rhs)) if isinstance(side, Undefined)]
    if len(bad) == 2:
        return {"result": "undefined", "reason": lhs.why, **note}
    if bad:
        why = (lhs if bad[0] == "left" else rhs).why
        return {"result": "refuted", **note,
                "reason": f"only one side is defined (the {bad[0]} side is not: {why})"}
    res = compare([np.asarray(lhs, dtype=object)], [np.asarray(rhs, dtype=object)], A.ctx,
                  timeout_s)
    return {**res, **note}


def check_axiom(ax: Axiom, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Check an axiom at each of its concrete instances; one result per instance.

    A result is {"instance": i, "result": "holds" | "refuted" | "unknown" | "guard-false" |
    "undefined", ...} (see `check_axiom_case`): "guard-false" flags an instance that does not
    satisfy the axiom's own conditions, "undefined" one where its sides do not exist.
    """
    return [{"instance": n, **check_axiom_case(ax, inst, timeout_s)}
            for n, inst in enumerate(ax.instances)]
