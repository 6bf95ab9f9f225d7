"""Axiomatic rule proofs, valid for all shapes (TASO's method).

A rule's patterns are lowered into the axiom language (`semantics.lower`): tensors are
constants of an uninterpreted sort, every dim is symbolic (`dim(?x, i)` >= 1), and every
variable has exactly the rank its class declares (`Rule.ranks`; a rule with a variable of no
declared rank is not proved). The rule is proved when, for every mapped output k,
`axioms ∧ classes ∧ conditions ∧ typing ∧ src[k] ≠ dst[k]` is unsat: the proof covers exactly
the classes and conditions the matcher checks, and its record says so
(`"classes": {"x": "rank 2", ...}`). Z3 instantiates the quantified axioms by
E-matching on their triggers only (MBQI off), under a per-query timeout: a timeout or a `sat`
(the axioms are incomplete, so `sat` does not refute) gives "unknown", never a hang.

Example:
    >>> from superopt.core.rules import Rule
    >>> r = Rule.make(["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"],
    ...               {"x": "tensor", "a": "weight", "b": "weight"},
    ...               example={"x": (2, 4), "a": (4, 4), "b": (4, 4)})
    >>> proof = prove_rule(r)
    >>> proof["result"], proof["classes"]
    ('proved', {'a': 'rank 2', 'b': 'rank 2', 'x': 'rank 2'})
"""

from __future__ import annotations

import ast
from typing import Any

import z3

from superopt.core.ops import get_op
from superopt.core.pattern import Bindings, DimOf, Param, Pattern, PVar
from superopt.verifier.algebra import Symbolic
from superopt.verifier.axioms import all_formulas
from superopt.verifier.semantics import check_rule_ops, lower


class Unsupported(Exception):
    """The rule uses something the axiomatic encoding cannot express (the reason says what)."""


class _Lowering:
    def __init__(self, A: Symbolic, rule: Any) -> None:
        self.A = A
        self.rule = rule
        self.vars: dict[str, z3.ExprRef] = {}
        self.params: dict[str, z3.ArithRef] = {}
        self.memo: dict = {}
        # Ranks come from the rule's classes, never from its example (which may be absent).
        self.ranks: dict[str, int] = dict(getattr(rule, "ranks", {}))
        self.param_types: dict[str, str] = dict(getattr(rule, "params", {}))
        self._shapes = _representative_shapes(rule, self.ranks)
        # Parameters at a representative value too (shape inference needs them bound); a
        # tuple parameter at the default of the attribute it stands for (its arity).
        self._param_values: dict[str, Any] = {
            k: 1.0 if t == "float" else 1
            for k, t in self.param_types.items() if t in ("int", "float")}
        self._param_values.update(_tuple_param_defaults(rule))

    def var(self, name: str) -> z3.ExprRef:
        if name not in self.vars:
            self.vars[name] = self.A.tensor(f"?{name}")
        return self.vars[name]

    def attr(self, v: Any, real: bool = False, default: Any = None) -> Any:
        """An attribute value in Z3: a parameter `?g` is a Z3 Int (Real for a float one), a
        tuple parameter `?s` (type `ints`) a tuple of Z3 Ints whose length is the arity of the
        attribute it stands for (its default: Conv strides 2, pads 4, dilations 2)."""
        if isinstance(v, Param):
            if v.name not in self.params:
                ty = self.param_types.get(v.name, "float" if real else "int")
                if ty == "ints":
                    if not isinstance(default, tuple) or not default:
                        raise Unsupported(f"parameter ?{v.name} is ints: the arity of the "
                                          "attribute it stands for is unknown")
                    self.params[v.name] = tuple(z3.Int(f"param_{v.name}_{k}")
                                                for k in range(len(default)))
                elif ty in ("int", "float"):
                    self.params[v.name] = (z3.Real if ty == "float" else z3.Int)(
                        f"param_{v.name}")
                else:
                    raise Unsupported(f"parameter ?{v.name} is {ty}: the prover handles int, "
                                      "float and ints parameters only")
            value = self.params[v.name]
            if isinstance(value, tuple) and (not isinstance(default, tuple)
                                             or len(default) != len(value)):
                raise Unsupported(f"parameter ?{v.name} stands for attributes of different "
                                  "arities")
            return value
        if isinstance(v, DimOf):
            return self.A.dim(self.var(v.var), v.axis)
        if isinstance(v, tuple):
            return tuple(self.attr(x) for x in v)
        if isinstance(v, float):
            return v
        return v

    def term(self, p: Pattern) -> Any:
        if isinstance(p, PVar):
            return self.var(p.name)
        key = (p.op, p.attrs, p.args)
        if key not in self.memo:
            args = [self.term(a) for a in p.args]
            # A parameter of a real-valued attribute (BatchNormalization's epsilon) is a real.
            defaults = get_op(p.op).defaults
            attrs = {k: self.attr(v, isinstance(defaults.get(k), float), defaults.get(k))
                     for k, v in p.attrs}
            ranks = [self._static_rank(a) for a in p.args]
            unknown = [str(a) for a, r in zip(p.args, ranks) if r is None]
            if unknown:
                raise Unsupported(f"the rank of {unknown[0]} is unknown (a variable with no "
                                  "declared rank, or no instance of the rule type-checks)")
            self.memo[key] = lower(self.A, p.op, attrs, args, ranks)
        return self.memo[key][p.out]

    def _static_rank(self, p: Pattern) -> int | None:
        """The rank of a subpattern: a variable's declared rank, an op's from shape inference
        at a representative instance of the classes (ranks are not symbolic here; every op's
        output rank follows from its input ranks, so any instance that type-checks gives it)."""
        if isinstance(p, PVar):
            return self.ranks.get(p.name)
        for shapes in self._shapes:
            shape = _shape_of(p, shapes, self._param_values)
            if shape is not None:
                return len(shape)
        return None


def _tuple_param_defaults(rule: Any) -> dict[str, tuple]:
    """Each tuple parameter (`strides=?s`) at the default of the attribute it stands for."""
    out: dict[str, tuple] = {}

    def walk(p: Any) -> None:
        if isinstance(p, PVar) or not hasattr(p, "attrs"):
            return
        defaults = get_op(p.op).defaults
        for k, v in p.attrs:
            if isinstance(v, Param) and isinstance(defaults.get(k), tuple):
                out.setdefault(v.name, tuple(defaults[k]))
        for a in p.args:
            walk(a)

    for p in list(getattr(rule, "src", [])) + list(getattr(rule, "dst", [])):
        walk(p)
    return out


def _representative_shapes(rule: Any, ranks: dict[str, int]) -> list[dict[str, tuple]]:
    """Instances of the rule's classes to infer subpattern ranks at: its example (when it
    covers every variable at its rank), then all dims 4, all dims 3, all dims 1."""
    out = []
    example = {k: tuple(v) for k, v in getattr(rule, "example", {}).items()}
    if ranks and all(k in example and len(example[k]) == r for k, r in ranks.items()):
        out.append({k: example[k] for k in ranks})
    out += [{k: (d,) * r for k, r in ranks.items()} for d in (4, 3, 1)]
    return out


def _shape_of(p: Pattern, shapes: dict[str, tuple[int, ...]],
              params: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """Static shape inference of a subpattern at these shapes (None if it fails)."""
    from superopt.core.ir import Value
    from superopt.core.pattern import build
    from superopt.core.types import FLOAT, TensorType

    try:
        b = Bindings({k: Value.input(f"?{k}", TensorType(FLOAT, v)) for k, v in shapes.items()},
                     dict(params or {}))
        return tuple(build(p, b).shape)
    except Exception:  # noqa: BLE001 - any failure means "unknown rank"
        return None


# ---------------------------------------------------------------------------------------------
# side conditions -> Z3 hypotheses


def condition_to_z3(text: str, L: _Lowering) -> z3.BoolRef:
    """Translate a rule side condition (`dim(?w, 2) == 1 and rank(?x) == 4`) into Z3."""
    tree = ast.parse(text.replace("?", "_v_"), mode="eval").body

    def var(node: ast.AST) -> z3.ExprRef:
        if isinstance(node, ast.Name) and node.id.startswith("_v_"):
            return L.var(node.id[3:])
        raise Unsupported(f"condition {text!r}: expected a variable")

    def conv(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, bool)):
            return node.value
        if isinstance(node, ast.Name) and node.id.startswith("_v_"):
            name = node.id[3:]
            if name in L.params:
                return L.params[name]
            raise Unsupported(f"condition {text!r}: tensor ?{name} used as a number")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            f = node.func.id
            if f == "dim":
                return L.A.dim(var(node.args[0]), conv(node.args[1]))
            if f == "rank":
                return L.A.rank(var(node.args[0]))
            if f == "shape":
                return shape(node.args[0])
            if f == "is_const":
                return True
            raise Unsupported(f"condition {text!r}: {f}() is not supported by the prover")
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(conv(e) for e in node.elts)
        if isinstance(node, ast.Subscript):
            return subscript(conv(node.value), node.slice)
        if isinstance(node, ast.BoolOp):
            vals = [conv(v) for v in node.values]
            return z3.And(*vals) if isinstance(node.op, ast.And) else z3.Or(*vals)
        if isinstance(node, ast.UnaryOp):
            v = conv(node.operand)
            if isinstance(node.op, ast.Not):
                return z3.Not(v)
            if isinstance(node.op, ast.USub):
                return -v
        if isinstance(node, ast.BinOp):
            a, b = conv(node.left), conv(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.FloorDiv: lambda: a / b, ast.Mod: lambda: a % b}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        if isinstance(node, ast.Compare):
            out, left = [], conv(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = conv(right_node)
                out.append(_compare(op, left, right, text))
                left = right
            return z3.And(*out)
        raise Unsupported(f"condition {text!r}: not supported by the prover")

    def shape(node: ast.AST) -> tuple:
        # `shape(?v)` as a tuple of symbolic dims: the rank comes from the example shapes.
        v = var(node)
        r = L.ranks.get(node.id[3:])  # type: ignore[attr-defined]
        if r is None:
            raise Unsupported(f"condition {text!r}: shape() of a tensor of unknown rank")
        return tuple(L.A.dim(v, k) for k in range(r))

    def const_int(node: ast.AST | None, default: int | None) -> int | None:
        if node is None:
            return default
        value = conv(node)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Unsupported(f"condition {text!r}: only constant indices are supported")
        return value

    def subscript(value: Any, index: ast.AST) -> Any:
        if not isinstance(value, tuple):
            raise Unsupported(f"condition {text!r}: only shape(...) can be indexed")
        if isinstance(index, ast.Slice):
            if index.step is not None:
                raise Unsupported(f"condition {text!r}: slices with a step are not supported")
            return value[const_int(index.lower, None):const_int(index.upper, None)]
        k = const_int(index, None)
        if not -len(value) <= k < len(value):  # type: ignore[operator]
            raise Unsupported(f"condition {text!r}: index {k} out of range")
        return value[k]

    return conv(tree)


def _compare(op: ast.cmpop, left: Any, right: Any, text: str) -> Any:
    if isinstance(left, tuple) or isinstance(right, tuple):
        # Tuples (shapes) compare element-wise for == and != only.
        if not (isinstance(left, tuple) and isinstance(right, tuple)) or \
                not isinstance(op, (ast.Eq, ast.NotEq)):
            raise Unsupported(f"condition {text!r}: comparison of a tuple not supported")
        same = z3.BoolVal(False) if len(left) != len(right) else z3.And(
            True, *[_as_bool(a == b) for a, b in zip(left, right)])
        return same if isinstance(op, ast.Eq) else z3.Not(same)
    if isinstance(op, ast.Eq):
        return left == right
    if isinstance(op, ast.NotEq):
        return left != right
    if isinstance(op, ast.Lt):
        return left < right
    if isinstance(op, ast.LtE):
        return left <= right
    if isinstance(op, ast.Gt):
        return left > right
    if isinstance(op, ast.GtE):
        return left >= right
    raise Unsupported(f"condition {text!r}: comparison not supported")


def _as_bool(e: Any) -> Any:
    return z3.BoolVal(e) if isinstance(e, bool) else e


def prove_rule(rule: Any, timeout_s: float = 5.0) -> dict[str, Any]:
    """Try the axiomatic proof. Returns {"result": "proved" | "unknown", "reason"?}."""
    check_rule_ops(rule.ops())
    ranks = dict(getattr(rule, "ranks", {}))
    variables = sorted(set().union(*[p.variables() for p in rule.src]))
    unranked = [v for v in variables if v not in ranks]
    if unranked:
        return {"result": "unknown", "reason": f"?{unranked[0]} has no declared rank (the "
                "prover proves a rule at exact ranks)"}
    A = Symbolic()
    L = _Lowering(A, rule)
    try:
        # Typing facts of both sides are hypotheses: a rule fires only where its source
        # matched a well-typed graph and its target built (shape inference rejects the rest).
        A.collect_typing = True
        src = [L.term(p) for p in rule.src]
        dst = [L.term(p) for p in rule.dst]
        A.collect_typing = False
        hyps = [condition_to_z3(c, L) for c in rule.conditions]
    except Unsupported as e:
        return {"result": "unknown", "reason": str(e)}
    # The classes: every variable at exactly its declared rank, every dim >= 1.
    for name in variables:
        v, r = L.var(name), ranks[name]
        hyps.append(A.rank(v) == r)
        hyps += [A.dim(v, k) >= 1 for k in range(r)]
    proved = {"result": "proved", "classes": rule.classes()} if hasattr(rule, "classes") \
        else {"result": "proved"}
    todo = [k for k, (a, b) in enumerate(zip(src, dst)) if not a.eq(b)]
    if not todo:
        return proved
    s = z3.Solver()
    s.set("timeout", max(1, int(timeout_s * 1000)))
    s.set("smt.mbqi", False)
    s.add(*all_formulas(A, A.perms))
    s.add(*hyps, *A.typing)
    for k in todo:
        goal = z3.Bool(f"goal!{k}")
        s.add(z3.Implies(goal, src[k] != dst[k]))
        answer = s.check(goal)
        if answer == z3.unsat:
            if goal not in s.unsat_core():
                # Vacuous: the source's typing and the conditions contradict each other.
                return {"result": "unknown",
                        "reason": "the source never type-checks under the rule's conditions"}
            continue
        if answer == z3.sat:
            why = "the axioms do not imply it"
        else:
            why = f"Z3 {s.reason_unknown()}"
        return {"result": "unknown",
                "reason": f"output {k}: {why}" if len(src) > 1 else why}
    return proved
