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

from superopt.core.axiom_spec import Axiom
from superopt.core.pattern import Bindings, Pattern, PVar, resolve_attr
from superopt.verifier.algebra import Concrete
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
    return compare(lhs, rhs, ctx, timeout_s, arrays)


def check_axiom(ax: Axiom, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Check an axiom at each of its concrete instances; one result per instance.

    A result is {"instance": i, "result": "holds" | "refuted" | "unknown" | "guard-false", ...}:
    "guard-false" flags an instance that does not satisfy the axiom's own conditions.
    """
    out = []
    for n, inst in enumerate(ax.instances):
        A = Concrete()
        t = {name: A.tensor(name, inst.shapes[name]) for name in ax.tensors}
        built = ax.body(A, t, dict(inst.ints), inst.static)
        if built is None:
            out.append({"instance": n, "result": "guard-false", "reason": "schema not applicable"})
            continue
        lhs, rhs, guard = built
        if not bool(guard):
            out.append({"instance": n, "result": "guard-false"})
            continue
        if ax.kind != "eq":
            ok = int(lhs) == int(rhs)
            out.append({"instance": n, "result": "holds" if ok else "refuted",
                        "counterexample": None if ok else {"lhs": int(lhs), "rhs": int(rhs)}})
            continue
        res = compare([np.asarray(lhs, dtype=object)], [np.asarray(rhs, dtype=object)], A.ctx,
                      timeout_s)
        out.append({"instance": n, **res})
    return out
