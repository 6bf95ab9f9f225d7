"""Rules and rule files (`"format": "superopt-rules/1"`).

A rule is data: source and target patterns (one per mapped output), the kinds of its variables,
side conditions, where it came from and its proof record. Loading checks every rule and names
the bad one. Files are written sorted by id, one rule per line, so diffs stay readable.

A rule file:

    {"format": "superopt-rules/1",
     "meta": {...how the file was made...},
     "rules": [
       {"id": "r3f2a...", "name": "matmul-assoc",
        "src": ["(MatMul (MatMul ?x ?a) ?b)"], "dst": ["(MatMul ?x (MatMul ?a ?b))"],
        "vars": {"x": "tensor", "a": "weight", "b": "weight"},
        "conditions": [], "example": {"x": [2, 4], "a": [4, 4], "b": [4, 4]},
        "provenance": {...}, "proof": {"result": "proved", ...}}, ...]}

Variable kinds: `tensor` matches any tensor (runtime or constant), `weight` only a constant.
Side conditions are small expressions over `rank(?v)`, `dim(?v, i)`, `shape(?v)` and
`is_const(?v)` (e.g. `"rank(?x) == 4"`), evaluated when a rule matches.

Example:
    >>> r = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"})
    >>> r.id.startswith("r")
    True
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superopt.core.errors import OutputError, RulesError
from superopt.core.ir import Value
from superopt.core.pattern import Bindings, Pattern, PatternError, PNode, check_ops, parse

FORMAT = "superopt-rules/1"
VAR_KINDS = ("tensor", "weight")


@dataclass(frozen=True)
class Rule:
    """A substitution: `src[i]` may be replaced by `dst[i]` for every mapped output i."""

    id: str
    src: tuple[Pattern, ...]
    dst: tuple[Pattern, ...]
    vars: Mapping[str, str]
    name: str = ""
    conditions: tuple[str, ...] = ()
    example: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    proof: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def make(src: Sequence[str | Pattern], dst: Sequence[str | Pattern],
             vars: Mapping[str, str], **kw: Any) -> Rule:
        """Build and check a rule; its id is derived from its content."""
        s = tuple(parse(p) if isinstance(p, str) else p for p in src)
        d = tuple(parse(p) if isinstance(p, str) else p for p in dst)
        rule = Rule(id=content_id(s, d, kw.get("conditions", ())), src=s, dst=d,
                    vars=dict(vars), **{k: v for k, v in kw.items() if k != "id"})
        if kw.get("id"):
            rule = Rule(**{**rule.__dict__, "id": kw["id"]})
        rule.check()
        return rule

    @property
    def proved(self) -> bool:
        return self.proof.get("result") == "proved"

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id

    def with_proof(self, proof: Mapping[str, Any]) -> Rule:
        return Rule(**{**self.__dict__, "proof": dict(proof)})

    def ops(self) -> set[str]:
        out: set[str] = set()
        for p in self.src + self.dst:
            out.update(p.ops())
        return out

    def src_size(self) -> int:
        return sum(p.size() for p in self.src)

    def dst_size(self) -> int:
        return sum(p.size() for p in self.dst)

    def check(self) -> None:
        """Raise PatternError if the rule is malformed (unbound variable, unknown op, ...)."""
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
        for v in src_vars:
            kind = self.vars.get(v)
            if kind not in VAR_KINDS:
                raise PatternError(f"variable ?{v} has kind {kind!r}, expected one of "
                                   f"{', '.join(VAR_KINDS)}")
        if not all(isinstance(p, PNode) for p in self.src):
            raise PatternError("a source pattern must be an operator, not a bare variable")
        for c in self.conditions:
            _compile_condition(c)

    def holds(self, b: Bindings) -> str | None:
        """None if the variable kinds and side conditions hold for these bindings, else why not."""
        for name, kind in self.vars.items():
            v = b.tensors.get(name)
            if v is not None and kind == "weight" and not v.is_const:
                return f"?{name} must be a constant weight"
        for c in self.conditions:
            try:
                if not _eval_condition(c, b):
                    return f"condition failed: {c}"
            except (TypeError, IndexError, ValueError, KeyError) as e:
                return f"condition {c} not decidable ({e})"
        return None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id}
        if self.name:
            d["name"] = self.name
        d["src"] = [str(p) for p in self.src]
        d["dst"] = [str(p) for p in self.dst]
        d["vars"] = dict(sorted(self.vars.items()))
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
    def from_json(d: Mapping[str, Any]) -> Rule:
        if not isinstance(d, Mapping):
            raise PatternError("a rule must be a JSON object")
        for key in ("src", "dst", "vars"):
            if key not in d:
                raise PatternError(f"missing field {key!r}")
        src = [parse(p) for p in _as_list(d["src"])]
        dst = [parse(p) for p in _as_list(d["dst"])]
        rule = Rule(
            id=str(d.get("id") or content_id(tuple(src), tuple(dst), d.get("conditions", ()))),
            src=tuple(src), dst=tuple(dst), vars=dict(d["vars"]), name=d.get("name", ""),
            conditions=tuple(d.get("conditions", ())),
            example={k: tuple(v) for k, v in d.get("example", {}).items()},
            provenance=dict(d.get("provenance", {})), proof=dict(d.get("proof", {})))
        rule.check()
        return rule


def _as_list(v: Any) -> list:
    return [v] if isinstance(v, str) else list(v)


def content_id(src: Sequence[Pattern], dst: Sequence[Pattern], conditions: Iterable[str] = ()
               ) -> str:
    """A stable id from the rule's text: the same rule always gets the same id."""
    text = " | ".join(str(p) for p in src) + " => " + " | ".join(str(p) for p in dst)
    text += " if " + " and ".join(conditions)
    return "r" + hashlib.sha256(text.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# side conditions: a tiny, safe expression language


_COND_FUNCS = ("rank", "dim", "shape", "is_const")


def _compile_condition(text: str) -> ast.Expression:
    src = text.replace("?", "_v_")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError:
        raise PatternError(f"condition {text!r} does not parse") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _COND_FUNCS:
                raise PatternError(f"condition {text!r}: only {', '.join(_COND_FUNCS)} "
                                   "may be called")
        elif not isinstance(node, (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp,
                                   ast.UnaryOp, ast.Name, ast.Constant, ast.Load, ast.Tuple,
                                   ast.Subscript, ast.Slice, ast.operator, ast.cmpop,
                                   ast.boolop, ast.unaryop, ast.List)):
            raise PatternError(f"condition {text!r}: {type(node).__name__} is not allowed")
    return tree


_compiled: dict[str, Any] = {}


def _eval_condition(text: str, b: Bindings) -> bool:
    code = _compiled.get(text)
    if code is None:
        code = _compiled[text] = compile(_compile_condition(text), "<condition>", "eval")

    def val(v: Any) -> Value:
        return v

    env: dict[str, Any] = {f"_v_{k}": v for k, v in b.tensors.items()}
    env.update({f"_v_{k}": v for k, v in b.params.items()})
    env.update({
        "rank": lambda v: len(val(v).shape),
        "dim": lambda v, i: val(v).shape[i],
        "shape": lambda v: tuple(val(v).shape),
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

    def proved(self) -> list[Rule]:
        return [r for r in self.rules if r.proved]

    def by_id(self, rule_id: str) -> Rule:
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
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RulesError(f"{path}: not a superopt rules file (expected \"format\": "
                         f"\"{FORMAT}\")")
    if not isinstance(doc.get("rules"), list):
        raise RulesError(f"{path}: \"rules\" must be a list")
    rules, skipped, seen = [], [], set()
    for i, d in enumerate(doc["rules"]):
        label = d.get("id", f"#{i}") if isinstance(d, dict) else f"#{i}"
        try:
            r = Rule.from_json(d)
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
    return RuleSet(rules, dict(doc.get("meta", {})), skipped)


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
                   list(ruleset.skipped))


def is_shipped_path(path: str | os.PathLike | None) -> bool:
    """True for None (the default) and for a path to the shipped database's file."""
    if path is None:
        return True
    try:
        return Path(path).resolve() == default_rules_path().resolve()
    except OSError:
        return False
