"""Rules and rule files (`"format": "superopt-rules/2"`; `superopt-rules/1` is read and migrated).

A rule is data: source and target patterns (one per mapped output), the class of every
variable (its kind and the rank its proof covers), the types of its attribute parameters, side
conditions, where it came from and its proof record. A rule says where it is true: the verifier
proves it for exactly these classes (every dim symbolic, >= 1) under its conditions, and the
matcher (`superopt.search.match.find_matches`, through `Rule.holds`) applies it only where the
bound values are in them. Loading checks every rule and names the bad one. Files are written
sorted by id, one rule per line, so diffs stay readable.

A rule file:

    {"format": "superopt-rules/2",
     "meta": {...how the file was made...},
     "rules": [
       {"id": "r3f2a...", "name": "matmul-assoc",
        "src": ["(MatMul (MatMul ?x ?a) ?b)"], "dst": ["(MatMul ?x (MatMul ?a ?b))"],
        "vars": {"a": {"kind": "weight", "rank": 2}, "b": {"kind": "weight", "rank": 2},
                 "x": {"kind": "tensor", "rank": 2}},
        "conditions": [], "example": {"x": [2, 4], "a": [4, 4], "b": [4, 4]},
        "provenance": {...},
        "proof": {"result": "proved", "classes": {"a": "rank 2", "b": "rank 2", "x": "rank 2"},
                  ...}}, ...]}

- `vars`: every tensor variable of the patterns, with its `kind` (`tensor` matches any tensor,
  runtime or constant; `weight` only a value known before the run, `Value.is_weight`: a
  constant, or computed from constants only) and its exact `rank` (the matcher refuses a
  value of another rank: `?c has rank 3, the rule was proved for rank 0`, or with an empty dim:
  the proof assumes every dim >= 1). A variable without a
  `rank` would match any rank, but the verifier proves only at exact ranks, so such a rule is
  never proved (it is usable only as an in-process claim, `Rule.make` without ranks or example).
- `params`: every attribute parameter variable (`?s` in `Conv[strides=?s]`, bound by matching)
  with its type, one of `int`, `float`, `ints`, `floats`, `str` (the type of the attribute it
  stands for); the matcher refuses a value of another type. Omitted when there are none.
- `conditions`: side conditions over the variables, each a small expression over `rank(?v)`,
  `dim(?v, i)` (0 <= i < the rank), `shape(?v)` (indexable and sliceable by constants),
  `is_const(?v)`, parameters `?p`, numbers, `+ - * // %`, comparisons, tuples and
  `and`/`or`/`not`: broadcast relations (`dim(?c, 0) == dim(?k, 0)`), kernel sizes
  (`shape(?k)[2:] == (3, 3)`), parameter constraints (`?g == 1`). The matcher checks every one
  of them at every match, and the verifier proves the rule under them as hypotheses; a rule
  with a condition outside this language is refused when loaded, with the reason.
- `example`: concrete shapes the rule holds at (the bounded check's and the tests'); when given
  for a variable, its rank must be the variable's.
- `id`: by default the content id, a hash of the patterns, conditions and classes (two rules
  that differ only in a class are different rules); a rule may carry another id (one chosen by
  hand, or a migrated rule's /1 id).
- `proof.classes`: the classes the proof covers (`{"x": "rank 2", "g": "int"}`); a proof record
  whose classes are not the rule's does not make the rule `proved`.

Reading `superopt-rules/1` (variables as `{"x": "tensor"}`, no classes) migrates each rule: a
variable's rank is the rank of its shape in the rule's `example` (the /1 verifier proved the
rule at those ranks), parameter types come from the attributes they stand for, and the id is
kept (skip lists, reports and proof records refer to it; within a /1 file it was unique, and so
it is for the migrated classes). A /1 rule with a variable missing from its example cannot be
migrated: a strict load raises naming it, a lenient one skips it with the reason. Files are
always written as /2 (`superopt rules migrate IN -o OUT`).

Example:
    >>> r = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": {"kind": "tensor", "rank": 2}})
    >>> r.id.startswith("r"), r.ranks["x"], r.classes()
    (True, 2, {'x': 'rank 2'})
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superopt.core.errors import OutputError, RulesError
from superopt.core.ir import Value
from superopt.core.pattern import (
    PARAM_TYPES,
    VAR_REF,
    Bindings,
    Param,
    Pattern,
    PatternError,
    PNode,
    check_ops,
    commuted_forms,
    param_fits,
    param_types,
    parse,
)

FORMAT = "superopt-rules/2"
FORMAT_V1 = "superopt-rules/1"
#: the formats `load_rules` reads (older ones are migrated on load)
READ_FORMATS = (FORMAT, FORMAT_V1)
VAR_KINDS = ("tensor", "weight")
#: the largest rank a variable may be declared with
MAX_RANK = 6


@dataclass(frozen=True)
class Rule:
    """A substitution: `src[i]` may be replaced by `dst[i]` for every mapped output i, where
    the bound values are in the variables' classes and the conditions hold.

    `vars` maps each tensor variable to its kind, `ranks` to the rank its proof covers (a
    variable absent from `ranks` matches any rank, and is never proved), `params` each attribute
    parameter variable to its type."""

    id: str
    src: tuple[Pattern, ...]
    dst: tuple[Pattern, ...]
    vars: Mapping[str, str]
    name: str = ""
    conditions: tuple[str, ...] = ()
    example: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    proof: Mapping[str, Any] = field(default_factory=dict)
    ranks: Mapping[str, int] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def make(src: Sequence[str | Pattern], dst: Sequence[str | Pattern],
             vars: Mapping[str, str | Mapping[str, Any]], **kw: Any) -> Rule:
        """Build and check a rule; its id is derived from its content.

        `vars` maps each variable to its kind or to `{"kind": ..., "rank": ...}`; `ranks=`
        may give ranks too, and a variable with neither takes the rank of its `example` shape.
        `params=` (parameter types) defaults to the types of the attributes they stand for.
        """
        s = tuple(parse(p) if isinstance(p, str) else p for p in src)
        d = tuple(parse(p) if isinstance(p, str) else p for p in dst)
        kinds, ranks = _split_vars(vars)
        ranks.update({k: int(v) for k, v in dict(kw.pop("ranks", None) or {}).items()})
        example = {k: tuple(int(x) for x in v) for k, v in dict(kw.pop("example", None)
                                                                  or {}).items()}
        for name in kinds:
            if name not in ranks and name in example:
                ranks[name] = len(example[name])
        params = kw.pop("params", None)
        params = param_types(s + d) if params is None else dict(params)
        conditions = tuple(kw.pop("conditions", ()))
        rid = kw.pop("id", None) or content_id(s, d, conditions,
                                               classes_text(kinds, ranks, params))
        rule = Rule(id=rid, src=s, dst=d, vars=kinds, conditions=conditions, example=example,
                    ranks=ranks, params=params, **kw)
        rule.check()
        return rule

    @property
    def proved(self) -> bool:
        """The proof record says proved, for this rule's classes (when it states them)."""
        if self.proof.get("result") != "proved":
            return False
        stated = self.proof.get("classes")
        return stated is None or dict(stated) == self.classes()

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id

    def classes(self) -> dict[str, str]:
        """The shape class of every variable and the type of every parameter, as a proof
        record states them: {"x": "rank 2", "g": "int"}."""
        out = {k: (f"rank {self.ranks[k]}" if k in self.ranks else "any rank")
               for k in self.vars}
        out.update(self.params)
        return dict(sorted(out.items()))

    def with_proof(self, proof: Mapping[str, Any]) -> Rule:
        """The rule with this proof record. A `proved` record that does not state its classes
        gets the rule's: the verifier proves a rule at exactly its classes."""
        proof = dict(proof)
        if proof.get("result") == "proved" and "classes" not in proof:
            proof["classes"] = self.classes()
        return Rule(**{**self.__dict__, "proof": proof})

    def ops(self) -> set[str]:
        out: set[str] = set()
        for p in self.src + self.dst:
            out.update(p.ops())
        return out

    def param_attributes(self) -> dict[str, str]:
        """Each attribute parameter -> the attribute it first stands for (`?g` -> "group")."""
        out: dict[str, str] = {}

        def walk(p: Pattern) -> None:
            if isinstance(p, PNode):
                for key, v in p.attrs:
                    if isinstance(v, Param):
                        out.setdefault(v.name, key)
                for a in p.args:
                    walk(a)

        for p in self.src + self.dst:
            walk(p)
        return out

    def src_size(self) -> int:
        return sum(p.size() for p in self.src)

    def dst_size(self) -> int:
        return sum(p.size() for p in self.dst)

    def check(self) -> None:
        """Raise PatternError if the rule is malformed (unbound variable, unknown op, a class
        or condition the matcher cannot check, ...)."""
        if not self.src or len(self.src) != len(self.dst):
            raise PatternError(f"{len(self.src)} source and {len(self.dst)} target outputs")
        for p in self.src + self.dst:
            check_ops(p)
        src_vars = set().union(*[p.variables() for p in self.src])
        src_params = set().union(*[p.params() for p in self.src if isinstance(p, PNode)])
        for p in self.dst:
            unbound = p.variables() - src_vars
            if unbound:
                raise PatternError(f"target uses variable ?{sorted(unbound)[0]} that the "
                                   "source never binds")
            if isinstance(p, PNode):
                missing = p.params() - src_params
                if missing:
                    raise PatternError(f"target uses parameter ?{sorted(missing)[0]} that the "
                                       "source never binds")
                dims = p.dim_vars() - src_vars
                if dims:
                    raise PatternError(f"dim() of unbound variable ?{sorted(dims)[0]}")
        if not all(isinstance(p, PNode) for p in self.src):
            raise PatternError("a source pattern must be an operator, not a bare variable")
        for v in sorted(src_vars):
            kind = self.vars.get(v)
            if kind not in VAR_KINDS:
                raise PatternError(f"variable ?{v} has kind {kind!r}, expected one of "
                                   f"{', '.join(VAR_KINDS)}")
        self._check_classes(src_vars)
        for c in self.conditions:
            check_condition(c, set(self.vars), dict(self.params), dict(self.ranks))

    def _check_classes(self, src_vars: set[str]) -> None:
        for v, r in sorted(self.ranks.items()):
            if v not in self.vars:
                raise PatternError(f"rank given for ?{v}, which is not a variable of the rule")
            if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= MAX_RANK:
                raise PatternError(f"?{v} has rank {r!r}, expected an integer 0..{MAX_RANK}")
        for v, shape in sorted(self.example.items()):
            if v in self.ranks and len(shape) != self.ranks[v]:
                raise PatternError(f"the example shape of ?{v} {list(shape)} has rank "
                                   f"{len(shape)}, its class says rank {self.ranks[v]}")
        declared = dict(self.params)
        used = param_types(self.src + self.dst)
        for name, ty in sorted(declared.items()):
            if ty not in PARAM_TYPES:
                raise PatternError(f"parameter ?{name} has type {ty!r}, expected one of "
                                   f"{', '.join(PARAM_TYPES)}")
            if name in self.vars:
                raise PatternError(f"?{name} is both a tensor variable and a parameter")
        for name in sorted(set(used) | set(declared)):
            if name not in declared:
                raise PatternError(f"parameter ?{name} is not declared (params: "
                                   f"{{\"{name}\": \"{used[name]}\"}})")
            if name not in used:
                raise PatternError(f"parameter ?{name} is declared but no pattern uses it")
            if declared[name] != used[name]:
                raise PatternError(f"parameter ?{name} is declared {declared[name]}, but it "
                                   f"stands for an attribute of type {used[name]}")
        for p in self.src + self.dst:
            if not isinstance(p, PNode):
                continue
            for v, axis in sorted(p.dim_refs()):
                if axis < 0 or (v in self.ranks and axis >= self.ranks[v]):
                    raise PatternError(f"dim(?{v},{axis}) is outside ?{v}'s dims "
                                       f"(rank {self.ranks.get(v, 'unknown')})")

    def holds(self, b: Bindings) -> str | None:
        """None if the bound values are in the rule's classes (kind, rank, dims >= 1, parameter
        types) and every side condition holds; else why not, naming what failed."""
        for name in sorted(self.vars):
            v = b.tensors.get(name)
            if v is not None:
                why = self.var_refusal(name, v)
                if why is not None:
                    return why
        for name, ty in sorted(self.params.items()):
            if name in b.params and not param_fits(ty, b.params[name]):
                return f"?{name} is {b.params[name]!r}, the rule was proved for {_a(ty)}"
        for c in self.conditions:
            try:
                if not _eval_condition(c, b):
                    return f"condition failed: {c}"
            except (TypeError, IndexError, ValueError, KeyError, NameError) as e:
                return f"condition {c} not decidable ({e})"
        return None

    def var_refusal(self, name: str, v: Value) -> str | None:
        """None if value v is in tensor variable ?name's class (kind, rank, dims >= 1), else
        why not. It depends on v alone, so a matcher may ask it as it binds (`holds` asks it
        of every bound variable)."""
        if self.vars.get(name) == "weight" and not v.is_weight:
            return f"?{name} must be a weight (constants only)"
        shape = v.shape
        want = self.ranks.get(name)
        if want is not None:
            if shape is None:
                return f"?{name} has unknown rank, the rule was proved for rank {want}"
            if len(shape) != want:
                return f"?{name} has rank {len(shape)}, the rule was proved for rank {want}"
        if shape is not None and any(isinstance(d, int) and d < 1 for d in shape):
            return (f"?{name} has an empty dim ({_shape_text(shape)}), the rule was proved "
                    "for dims >= 1")
        return None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id}
        if self.name:
            d["name"] = self.name
        d["src"] = [str(p) for p in self.src]
        d["dst"] = [str(p) for p in self.dst]
        d["vars"] = {k: ({"kind": kind, "rank": self.ranks[k]} if k in self.ranks
                         else {"kind": kind}) for k, kind in sorted(self.vars.items())}
        if self.params:
            d["params"] = dict(sorted(self.params.items()))
        if self.conditions:
            d["conditions"] = list(self.conditions)
        if self.example:
            d["example"] = {k: list(v) for k, v in sorted(self.example.items())}
        if self.provenance:
            d["provenance"] = dict(self.provenance)
        if self.proof:
            d["proof"] = dict(self.proof)
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any], format: str = FORMAT) -> Rule:
        """A rule of a file in `format` (FORMAT, or FORMAT_V1: migrated, see the module doc)."""
        if not isinstance(d, Mapping):
            raise PatternError("a rule must be a JSON object")
        for key in ("src", "dst", "vars"):
            if key not in d:
                raise PatternError(f"missing field {key!r}")
        if format == FORMAT_V1:
            return _migrate_v1(d)
        if format != FORMAT:
            raise PatternError(f"unknown rules format {format!r}")
        src = tuple(parse(p) for p in _as_list(d["src"]))
        dst = tuple(parse(p) for p in _as_list(d["dst"]))
        vars_ = d["vars"]
        if not isinstance(vars_, Mapping) or not all(isinstance(v, Mapping)
                                                    for v in vars_.values()):
            raise PatternError('"vars" must map each variable to {"kind": ..., "rank": ...} '
                               f"(a {FORMAT_V1} file says \"format\": \"{FORMAT_V1}\")")
        kinds, ranks = _split_vars(vars_)
        params = d.get("params", {})
        if not isinstance(params, Mapping):
            raise PatternError('"params" must map each parameter to its type')
        conditions = tuple(_as_list(d.get("conditions", ())))
        example = _example(d.get("example", {}))
        rule = Rule(
            id=str(d.get("id") or content_id(src, dst, conditions,
                                             classes_text(kinds, ranks, params))),
            src=src, dst=dst, vars=kinds, name=str(d.get("name", "")), conditions=conditions,
            example=example, provenance=dict(d.get("provenance", {})),
            proof=dict(d.get("proof", {})), ranks=ranks, params=dict(params))
        rule.check()
        return rule


def _split_vars(vars: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    """(kinds, ranks) from {"x": "tensor"} or {"x": {"kind": "tensor", "rank": 2}} entries."""
    if not isinstance(vars, Mapping):
        raise PatternError('"vars" must be an object')
    kinds: dict[str, str] = {}
    ranks: dict[str, int] = {}
    for name, v in vars.items():
        if isinstance(v, Mapping):
            extra = set(v) - {"kind", "rank"}
            if extra:
                raise PatternError(f"variable ?{name}: unknown field {sorted(extra)[0]!r}")
            kinds[str(name)] = v.get("kind")  # type: ignore[assignment]
            if v.get("rank") is not None:
                ranks[str(name)] = v["rank"]
        else:
            kinds[str(name)] = v
    return kinds, ranks


def _example(ex: Any) -> dict[str, tuple[int, ...]]:
    if not isinstance(ex, Mapping):
        raise PatternError('"example" must map variables to shapes')
    return {k: tuple(v) for k, v in ex.items()}


def _migrate_v1(d: Mapping[str, Any]) -> Rule:
    """A `superopt-rules/1` rule as a /2 rule: ranks from its example, parameter types from
    its attributes, the same id."""
    src = tuple(parse(p) for p in _as_list(d["src"]))
    dst = tuple(parse(p) for p in _as_list(d["dst"]))
    kinds = d["vars"]
    if not isinstance(kinds, Mapping) or not all(isinstance(k, str) for k in kinds.values()):
        raise PatternError(f'"vars" of a {FORMAT_V1} rule must map variables to kinds')
    example = _example(d.get("example", {}))
    src_vars = set().union(*[p.variables() for p in src])
    missing = sorted((src_vars | set(kinds)) - set(example))
    if missing:
        raise PatternError(f"cannot migrate from {FORMAT_V1}: ?{missing[0]} has no example "
                           "shape, so the rank its proof covers is unknown")
    conditions = tuple(_as_list(d.get("conditions", ())))
    ranks = {k: len(example[k]) for k in kinds}
    params = param_types(src + dst)
    # The id is kept (skip lists, reports and proof records refer to it); one the file does
    # not give is the /2 content id.
    rid = str(d.get("id") or content_id(src, dst, conditions,
                                        classes_text(dict(kinds), ranks, params)))
    rule = Rule(id=rid, src=src, dst=dst, vars=dict(kinds), name=str(d.get("name", "")),
                conditions=conditions, example=example,
                provenance=dict(d.get("provenance", {})), proof=dict(d.get("proof", {})),
                ranks=ranks, params=params)
    rule.check()
    return rule


def _as_list(v: Any) -> list:
    return [v] if isinstance(v, str) else list(v)


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _a(ty: str) -> str:
    return {"int": "an int", "float": "a float", "ints": "a tuple of ints",
            "floats": "a tuple of floats", "str": "a string"}.get(ty, ty)


def classes_text(kinds: Mapping[str, str], ranks: Mapping[str, int],
                 params: Mapping[str, str]) -> str:
    """The classes in one canonical line (part of the content id): `?x:tensor/2 ?g:int`."""
    parts = [f"?{k}:{kinds[k]}" + (f"/{ranks[k]}" if k in ranks else "") for k in sorted(kinds)]
    parts += [f"?{k}:{t}" for k, t in sorted(params.items())]
    return " ".join(parts)


def content_id(src: Sequence[Pattern], dst: Sequence[Pattern], conditions: Iterable[str] = (),
               classes: str | None = None) -> str:
    """A stable id from the rule's text and classes: the same rule always gets the same id,
    and two rules that differ only in a class get different ids. (`classes=None` gives the
    id a `superopt-rules/1` rule had: patterns and conditions only.)"""
    text = " | ".join(str(p) for p in src) + " => " + " | ".join(str(p) for p in dst)
    text += " if " + " and ".join(conditions)
    if classes is not None:
        text += " where " + classes
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:10]


def _rename_refs(text: str, names: Mapping[str, str]) -> str:
    return VAR_REF.sub(lambda m: "?" + names.get(m.group(1), m.group(1)), text)


def rule_key(rule: Rule) -> str:
    """The same key for rules that differ only by variable renaming (within a kind and rank)
    and by the operand order of Add/Mul: the least text over the renamings and orders. Every
    reference is renamed, `dim(?w, 1)` attributes included. Conditions and parameter classes
    are part of it, so a rule with a narrower condition is not taken for the general one.

    Operand orders are a rule's twins because the matcher tries both orders at Add/Mul
    (`superopt.core.pattern.each_match`), checking classes on each: one of `Add(?t, ?c)` and
    `Add(?c, ?t)` matches every site the other does. Equal keys always mean equal rules; a rule
    with more than 6 variables, or very many orders, is compared over fewer renamings and
    orders, so two such twins may keep different keys (both are kept: only a duplicate)."""
    groups: dict[tuple, list[str]] = {}
    for v in sorted(rule.vars):
        groups.setdefault((rule.vars[v], rule.ranks.get(v)), []).append(v)
    classes = {v: f"{kind}{rank}" for (kind, rank), vs in groups.items() for v in vs}
    tail = " params " + " ".join(f"?{k}:{t}" for k, t in sorted(rule.params.items()))
    # Per pattern, its texts over the Add/Mul operand orders that renaming could make least:
    # each has the same length, so the least whole text takes the least of each pattern.
    src = [[str(x) for x in commuted_forms(p, classes)] for p in rule.src]
    dst = [[str(x) for x in commuted_forms(p, classes)] for p in rule.dst]
    best = None
    for perm in itertools.product(*(itertools.permutations(vs) for vs in groups.values())):
        names = {old: f"{kind}{rank}_{i}" for (kind, rank), vs, new in
                 zip(groups, groups.values(), perm) for i, old in enumerate(new)}
        conds = sorted(_rename_refs(c, names) for c in rule.conditions)
        text = (" | ".join(min(_rename_refs(t, names) for t in ts) for ts in src) + " => "
                + " | ".join(min(_rename_refs(t, names) for t in ts) for ts in dst)
                + " if " + " and ".join(conds))
        if best is None or text < best:
            best = text
        if sum(len(vs) for vs in groups.values()) > 6:
            break  # a rule that large: renaming in order of the sorted names is enough
    return (best or "") + tail


# ---------------------------------------------------------------------------------------------
# side conditions: a tiny, safe expression language, checked by the matcher and proved under by
# the verifier (`superopt.verifier.prove.condition_to_z3` translates exactly this language)


_COND_FUNCS = ("rank", "dim", "shape", "is_const")
_COND_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
_COND_CMPOPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def check_condition(text: str, tensors: set[str] | None = None,
                    params: Mapping[str, str] | None = None,
                    ranks: Mapping[str, int] | None = None) -> ast.Expression:
    """Parse a side condition and check that the matcher can decide it: only the language
    above, every `?v` a variable of the rule (`tensors`: used only inside rank/dim/shape/
    is_const; `params`: used only as numbers), dim indices constant and inside the declared
    rank. Raises PatternError naming the problem. (None for `tensors`/`params`: not checked.)"""
    if not isinstance(text, str):
        raise PatternError(f"condition {text!r} is not a string")
    try:
        tree = ast.parse(text.replace("?", "_v_"), mode="eval")
    except SyntaxError:
        raise PatternError(f"condition {text!r} does not parse") from None
    ranks = ranks or {}

    def bad(why: str) -> PatternError:
        return PatternError(f"condition {text!r}: {why}")

    def const_int(node: ast.AST) -> int:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -const_int(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise bad("indices must be integer constants")

    def tensor_arg(node: ast.Call, f: str) -> str:
        if not node.args or not isinstance(node.args[0], ast.Name) \
                or not node.args[0].id.startswith("_v_"):
            raise bad(f"{f}() takes a tensor variable ?v")
        name = node.args[0].id[3:]
        if tensors is not None and name not in tensors:
            raise bad(f"?{name} is not a tensor variable of the rule")
        return name

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            visit(node.body)
        elif isinstance(node, ast.Call):
            f = node.func.id if isinstance(node.func, ast.Name) else None
            if f not in _COND_FUNCS or node.keywords:
                raise bad(f"only {', '.join(_COND_FUNCS)} may be called")
            name = tensor_arg(node, f)
            if f == "dim":
                if len(node.args) != 2:
                    raise bad("dim() takes a variable and an index")
                i = const_int(node.args[1])
                if i < 0 or (name in ranks and i >= ranks[name]):
                    raise bad(f"dim(?{name}, {i}) is outside ?{name}'s dims "
                              f"(rank {ranks.get(name, 'unknown')})")
            elif len(node.args) != 1:
                raise bad(f"{f}() takes one variable")
        elif isinstance(node, ast.Name):
            name = node.id[3:] if node.id.startswith("_v_") else None
            if name is None:
                raise bad(f"unknown name {node.id!r} (variables are written ?v)")
            if tensors is not None and name in tensors:
                raise bad(f"?{name} is a tensor: compare rank(?{name}), dim(?{name}, i) or "
                          f"shape(?{name})")
            if params is not None and name not in params:
                raise bad(f"?{name} is not a parameter of the rule")
        elif isinstance(node, ast.Constant):
            if type(node.value) not in (int, float, bool):
                raise bad(f"constant {node.value!r} is not a number")
        elif isinstance(node, ast.Subscript):
            if not (isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id == "shape"):
                raise bad("only shape(?v) can be indexed")
            visit(node.value)
            index = node.slice
            if isinstance(index, ast.Slice):
                if index.step is not None:
                    raise bad("slices with a step are not supported")
                for bound in (index.lower, index.upper):
                    if bound is not None:
                        const_int(bound)
            else:
                const_int(index)
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, _COND_BINOPS):
                raise bad(f"operator {type(node.op).__name__} is not allowed")
            visit(node.left)
            visit(node.right)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub)):
                raise bad(f"operator {type(node.op).__name__} is not allowed")
            visit(node.operand)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                visit(v)
        elif isinstance(node, ast.Compare):
            if not all(isinstance(op, _COND_CMPOPS) for op in node.ops):
                raise bad("only ==, !=, <, <=, >, >= compare")
            visit(node.left)
            for c in node.comparators:
                visit(c)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                visit(e)
        else:
            raise bad(f"{type(node).__name__} is not allowed")

    visit(tree)
    return tree


_compiled: dict[str, Any] = {}


class _SymbolicDim:
    """A dim known only by its symbol, inside a condition: it equals the very same input symbol
    and nothing else is decidable. `batch != seq`, `batch < seq`, `batch == 1` or arithmetic
    may hold or not at run time, so each raises ValueError, which `Rule.holds` turns into a
    refusal: a rule applies to symbolic dims only when its conditions hold for every size.
    Symbols that shape inference derived (`"(reshape3->1)"`, broadcast results) are not
    known to name one size, so even equality with themselves is undecidable."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _plain(self) -> bool:
        return self.name.isidentifier()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _SymbolicDim) and other.name == self.name and self._plain():
            return True
        raise ValueError(f"symbolic dim {self.name!r} vs {_dim_text(other)} is undecidable")

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.name)

    def _undecidable(self, *other: object) -> Any:
        raise ValueError(f"symbolic dim {self.name!r}: comparison or arithmetic is undecidable")

    __lt__ = __le__ = __gt__ = __ge__ = _undecidable
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _undecidable
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __truediv__ = __rtruediv__ = _undecidable
    __neg__ = __bool__ = __int__ = __index__ = _undecidable


def _dim_text(d: object) -> str:
    return repr(d.name) if isinstance(d, _SymbolicDim) else repr(d)


def _cond_dim(d: Any) -> Any:
    return _SymbolicDim(d) if isinstance(d, str) else d


def _eval_condition(text: str, b: Bindings) -> bool:
    code = _compiled.get(text)
    if code is None:
        code = _compiled[text] = compile(check_condition(text), "<condition>", "eval")

    def val(v: Any) -> Value:
        if not isinstance(v, Value) and not hasattr(v, "shape"):
            raise TypeError(f"{v!r} is not a tensor")
        return v

    def dim(v: Any, i: int) -> Any:
        shape = val(v).shape
        if shape is None:
            raise ValueError("unknown rank")
        if not 0 <= i < len(shape):
            raise IndexError(f"dim {i} of a rank-{len(shape)} tensor")
        return _cond_dim(shape[i])

    env: dict[str, Any] = {f"_v_{k}": v for k, v in b.tensors.items()}
    env.update({f"_v_{k}": v for k, v in b.params.items()})
    env.update({
        "rank": lambda v: len(val(v).shape),
        "dim": dim,
        "shape": lambda v: tuple(_cond_dim(d) for d in val(v).shape),
        "is_const": lambda v: val(v).is_const,
        "__builtins__": {},
    })
    return bool(eval(code, env))


# ---------------------------------------------------------------------------------------------
# files


@dataclass
class RuleSet:
    """The rules of one file, plus the file's metadata."""

    rules: list[Rule]
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "rule <id>: why" for rules not loaded
    format: str = FORMAT  # the format the file was in (its rules are always /2 once loaded)

    def proved(self) -> list[Rule]:
        return [r for r in self.rules if r.proved]

    def by_id(self, rule_id: str) -> Rule:
        """The rule with this id, name, or unique id prefix."""
        for r in self.rules:
            if r.id == rule_id or r.name == rule_id:
                return r
        matches = [r for r in self.rules if r.id.startswith(rule_id)]
        if len(matches) == 1:
            return matches[0]
        raise RulesError(f"no rule {rule_id!r} in this file" if not matches else
                         f"{rule_id!r} is ambiguous: {', '.join(r.id for r in matches[:5])}")


def default_rules_path() -> Path:
    """The shipped database (package data `superopt/rules_db/rules.json`)."""
    from superopt import rules_db

    return Path(rules_db.__file__).parent / "rules.json"


def load_rules(path: str | os.PathLike | None = None, *, strict: bool = True) -> RuleSet:
    """Read a rules file. `strict` raises on the first bad rule (naming it); otherwise bad
    rules are skipped and listed in `RuleSet.skipped`."""
    path = Path(path) if path is not None else default_rules_path()
    if not path.exists():
        raise RulesError(f"{path}: no such rules file")
    if path.is_dir():
        raise RulesError(f"{path}: is a directory, not a rules file")
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RulesError(f"{path}: not a JSON rules file ({e})") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt not in READ_FORMATS:
        raise RulesError(f"{path}: not a superopt rules file (expected \"format\": "
                         f"\"{FORMAT}\", or \"{FORMAT_V1}\" which is migrated)")
    if not isinstance(doc.get("rules"), list):
        raise RulesError(f"{path}: \"rules\" must be a list")
    rules, skipped, seen = [], [], set()
    for i, d in enumerate(doc["rules"]):
        label = d.get("id", f"#{i}") if isinstance(d, dict) else f"#{i}"
        try:
            r = Rule.from_json(d, fmt)
        except (PatternError, TypeError, ValueError, KeyError) as e:
            msg = f"{path}: rule {label}: {e}"
            if strict:
                raise RulesError(msg) from None
            skipped.append(msg)
            continue
        if r.id in seen:
            msg = f"{path}: rule {r.id} appears twice"
            if strict:
                raise RulesError(msg)
            skipped.append(msg)
            continue
        seen.add(r.id)
        rules.append(r)
    meta = dict(doc.get("meta", {})) if isinstance(doc.get("meta", {}), dict) else {}
    return RuleSet(rules, meta, skipped, fmt)


def dump_rules(rules: RuleSet | Sequence[Rule], meta: Mapping[str, Any] | None = None) -> str:
    """The file text: sorted by id, one rule per line (diff-friendly)."""
    if isinstance(rules, RuleSet):
        meta = {**rules.meta, **(meta or {})}
        rules = rules.rules
    lines = [json.dumps(r.to_json(), sort_keys=False, separators=(", ", ": "))
             for r in sorted(rules, key=lambda r: r.id)]
    head = json.dumps(dict(meta or {}), sort_keys=True)
    body = ",\n  ".join(lines)
    return (f'{{"format": "{FORMAT}",\n "meta": {head},\n "rules": [\n  {body}\n ]}}\n'
            if lines else f'{{"format": "{FORMAT}", "meta": {head}, "rules": []}}\n')


def save_rules(rules: RuleSet | Sequence[Rule], path: str | os.PathLike,
               meta: Mapping[str, Any] | None = None) -> None:
    """Write atomically (temp file + rename)."""
    from superopt.core.atomic import atomic_write

    try:
        atomic_write(path, dump_rules(rules, meta))
    except OutputError as e:
        raise RulesError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# the shipped database's seal: a digest of its rules, proof records included
#
# `meta["rules_sha256"]` holds the sha256 of the canonical JSON of the rules *as loaded*
# (`rules_digest`), not of the file's bytes: a file rewritten with another layout, or migrated to
# another format version, is sealed again by `superopt rules seal FILE` (the `make rules` target
# does it). The digest is over the rules alone, so it can live in the file's own meta. It is an
# integrity check (a hand-edited or half-merged database), not a signature: whoever can write
# the package's files can also reseal them.

SEAL_KEY = "rules_sha256"


def rules_digest(rules: RuleSet | Iterable[Rule]) -> str:
    """The sha256 of the rules' canonical JSON (sorted by id; every field, proof included)."""
    items = rules.rules if isinstance(rules, RuleSet) else list(rules)
    docs = [r.to_json() for r in sorted(items, key=lambda r: r.id)]
    text = json.dumps(docs, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_state(ruleset: RuleSet) -> str:
    """"intact" (the meta's digest matches the rules), "unsealed" (no digest) or "mismatch"."""
    stored = ruleset.meta.get(SEAL_KEY)
    if not stored:
        return "unsealed"
    return "intact" if stored == rules_digest(ruleset) else "mismatch"


def sealed(ruleset: RuleSet) -> RuleSet:
    """The same rules with `meta[SEAL_KEY]` set to their digest."""
    return RuleSet(list(ruleset.rules), {**ruleset.meta, SEAL_KEY: rules_digest(ruleset)},
                   list(ruleset.skipped), ruleset.format)


def is_shipped_path(path: str | os.PathLike | None) -> bool:
    """True for None (the default) and for a path to the shipped database's file."""
    if path is None:
        return True
    try:
        return Path(path).resolve() == default_rules_path().resolve()
    except OSError:
        return False
