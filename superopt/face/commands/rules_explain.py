"""`superopt rules explain MODEL.onnx`: why a rewrite did or did not happen, family by family.

    superopt rules explain MODEL.onnx [--rule ID] [--rules FILE] [--family NAME] [--json]

Rules are grouped into *families* by their structure (`family_of`, one function): a readable
label from the ops of their source and target patterns, such as "Conv+BatchNormalization fold",
"MatMul merge (shared input)", "Transpose cancellation", "Add reassociation", "Concat/Split
movement", "Mul folded into Conv", or "ops: A+B -> C" for anything else. Ops that only compute
on weights (`Mul ?k ?c` on a kernel, the helper ops such as `BatchNormFoldKernel`) are folded
at export, so they do not count as work a rewrite removes or adds.

For each family, every node of the model whose op is the root op of one of the family's source
patterns (a *site*) lands in exactly one of three groups:

- **matched**: some rule of the family fires there (its source matches, the bound values are in
  the rule's classes, its conditions hold and its target builds with the same types); with the
  change of the graph's cost one such rewrite makes, estimated by the analytic CUDA roofline,
  so a match the search leaves alone because it is not cheaper shows as such;
- **refused**: some rule's source pattern matches there, but the rule is refused; the reasons
  are `superopt.search.match.explain`'s (`?c has rank 3, the rule was proved for rank 0`,
  `condition failed: ...`, `target does not build here: ...`, a type change, ...), grouped and
  counted by site;
- **not reached**: no rule's source pattern matches at all. For these the closest rule (the one
  whose pattern matches most of the neighbourhood) says what differs: an input that is another
  op (`input 0 of BatchNormalization is Relu, not Conv`) or attributes no rule takes (`Conv has
  group=24, strides=(2, 2)`); the attribute values are also tallied over all such sites, next
  to the values the family's rules do take.

Only the rules a search would use are explained: those marked proved (`--rule ID` explains the
rule named, whatever its proof). Families whose root ops do not occur in the model are listed
as not tried. Node names are listed up to `--sites` per group, then "... and N more".

`--json` prints one JSON document (`FORMAT`) to stdout instead:

    {"format": "superopt-explain/1",
     "model": "MODEL.onnx", "nodes": 242,             # registry + opaque nodes of the graph
     "rules_file": "shipped" | "PATH", "rules": 1790, # the rules explained
     "families": [                                    # tried families first
       {"family": "Conv+BatchNormalization fold",
        "rules": ["r0123456789", ...],                # ids of the family's rules
        "root_ops": {"BatchNormalization": 56},       # root op -> nodes of it in the model
        "tried": true,                                # false: no root op occurs in the model
        "sites": 56,                                  # = matched + refused + unreached counts
        "matched": {"count": 16,
                    "nodes": {"bn_3": ["r0123456789"], ...},    # node -> rules that fire
                    "cost_change_s": {"bn_3": -2.1e-06, ...}},  # best one-rewrite change
        "refused": {"count": 2,
                    "reasons": [{"reason": "condition failed: ...", "count": 2,
                                 "nodes": ["bn_9", ...]}, ...]},  # most sites first
        "unreached": {"count": 38,
                      "reasons": [{"reason": "Conv has group=24, strides=(2, 2)", "count": 24,
                                   "nodes": [...]}, ...],
                      "attributes": [{"op": "Conv", "attr": "group", "value": 24,
                                      "count": 24}, ...],  # values no rule of the family takes
                      "accepted": {"Conv": {"group": [1, 4], ...}}}},  # what the rules take
       ...]}

JSON lists every node; attribute values are JSON numbers, strings or lists.

Exit status: 0, or 2 with one line on stderr for a model or rules file that cannot be read, an
unknown rule id or a family name that selects nothing.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superopt.face.commands import add_verbosity

if TYPE_CHECKING:
    from superopt.core.ir import Graph, Node, Value
    from superopt.core.pattern import Pattern, PNode
    from superopt.core.rules import Rule

FORMAT = "superopt-explain/1"
DEFAULT_SITES = 5
#: reason groups shown per family and kind before "... and N more"
SHOWN_REASONS = 4
# Ops listed first in labels (the ones doing the work), then alphabetical.
_OP_ORDER = ("Conv", "MatMul", "Gemm", "BatchNormalization")
_MOVERS = ("Concat", "Split")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `explain` to the `superopt rules` subcommands."""
    p = sub.add_parser("explain", help="per rule family: where it matched in a model, where it "
                                       "was refused and why, which nodes no rule reached",
                       description="Explain why rewrites did or did not happen on a model, "
                                   "family by family (see `superopt.face.commands."
                                   "rules_explain`).")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to explain")
    p.add_argument("--rule", metavar="ID", help="explain only this rule (id, unique id prefix "
                                                "or name)")
    p.add_argument("--rules", metavar="FILE", help="rules file (default: the shipped database)")
    p.add_argument("--family", metavar="NAME",
                   help="only families whose label contains NAME (case-insensitive)")
    p.add_argument("--json", action="store_true",
                   help="print the superopt-explain/1 JSON document instead of text")
    p.add_argument("--sites", type=int, default=DEFAULT_SITES, metavar="N",
                   help=f"node names listed per group before '... and N more' (default "
                        f"{DEFAULT_SITES})")
    add_verbosity(p)
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# families


def family_of(rule: Rule) -> str:
    """The family of a rule: a readable label derived from its patterns' structure.

    Counted are the *runtime* ops of each side (ops on a path from a `tensor` variable; ops
    only on weights are folded at export); a multi-output target's subpatterns shared by its
    outputs count once (they are built as one node). In order:

    1. a runtime BatchNormalization in the source and none in the target: "Conv+BatchNormalization
       fold" (or "BatchNormalization fold" without a Conv);
    2. a weight-only helper op in the source (EnlargeKernel, ...): "<helper> cleanup" (such
       rules match only graphs other rewrites made);
    3. a Transpose above another Transpose in the source, fewer Transposes in the target:
       "Transpose cancellation";
    4. one source pattern written twice, the target the same node twice: "<op> duplicate merge"
       (the same computation on one tensor done once);
       one op only, as many of it on both sides (runtime or not): "<op> reassociation";
    5. two source nodes of one op (not Concat/Split) reading a common input, fewer of that op
       in the target: "<op> merge (shared input)";
    6. two or more of an op (not Concat/Split) in the source, fewer in the target, which has
       a Concat/Split and no fewer of them: "<op> merge (concatenated)" (`(Add (MatMul ?v ?b)
       (MatMul ?z ?a))` -> one MatMul of concatenated operands);
    7. the same runtime op multiset on both sides: "Concat/Split movement" when Concat or Split
       takes part, else "<op>/<op> reassociation";
    8. fewer of some runtime ops, more of none: "Concat/Split cancellation" when those are
       Concat/Split; else, when the target computes on weights, "<ops> folded into <op>" (the op
       reading that weight computation: `(Mul (Conv ?t ?k) ?c) -> (Conv ?t (Mul ?k ?c))` is
       "Mul folded into Conv") or "<ops> folded into weights"; else "<ops> elimination";
    9. Concat or Split on either side: "Concat/Split movement";
    10. otherwise "ops: A+B -> C".

    Example:
        >>> from superopt.core.rules import Rule
        >>> family_of(Rule.make(["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"],
        ...                     {"x": "tensor", "a": "weight", "b": "weight"}))
        'MatMul reassociation'
        >>> family_of(Rule.make(["(Mul (Conv ?t ?k) ?c)"], ["(Conv ?t (Mul ?k ?c))"],
        ...                     {"t": "tensor", "k": "weight", "c": "weight"}))
        'Mul folded into Conv'
        >>> family_of(Rule.make(["(Transpose[perm=(1, 0)] (Transpose[perm=(1, 0)] ?x))"], ["?x"],
        ...                     {"x": "tensor"}))
        'Transpose cancellation'
    """
    src = _runtime_ops(rule.src, rule.vars)
    dst = _runtime_ops(rule.dst, rule.vars, distinct=len(rule.dst) > 1)
    if src["BatchNormalization"] and not dst["BatchNormalization"]:
        return "Conv+BatchNormalization fold" if src["Conv"] else "BatchNormalization fold"
    helpers = sorted({op for p in rule.src for op in p.ops() if _weight_only(op)})
    if helpers:
        return f"{'/'.join(helpers)} cleanup"
    if dst["Transpose"] < src["Transpose"] and _nested(rule.src, "Transpose"):
        return "Transpose cancellation"
    if len(rule.src) > 1 and len(set(rule.src)) == 1 and set(rule.dst) == set(rule.src):
        return f"{rule.src[0].op} duplicate merge"
    raw_src, raw_dst = _all_ops(rule.src), _all_ops(rule.dst)
    if raw_src == raw_dst and len(raw_src) == 1:
        return f"{next(iter(raw_src))} reassociation"
    merged = _merged_op(rule, src, dst)
    if merged:
        return f"{merged} merge (shared input)"
    movers = sum(dst[m] for m in _MOVERS)
    concats = movers > 0 and movers >= sum(src[m] for m in _MOVERS)
    fewer = [op for op in _ordered(src) if dst[op] < src[op] and op not in _MOVERS]
    if concats and fewer and src[fewer[0]] >= 2:
        return f"{fewer[0]} merge (concatenated)"
    if src == dst:
        ops = _ordered(src)
        if set(ops) & set(_MOVERS):
            return "Concat/Split movement"
        return f"{'/'.join(ops)} reassociation"
    fewer = [op for op in _ordered(src) if dst[op] < src[op]]
    more = [op for op in dst if dst[op] > src[op]]
    if fewer and not more:
        if set(fewer) <= set(_MOVERS):
            return "Concat/Split cancellation"
        into = [op for op in _weight_consumers(rule.dst, rule.vars) if op not in fewer]
        if into:
            return f"{'+'.join(fewer)} folded into {into[0]}"
        if _weight_consumers(rule.dst, rule.vars):
            return f"{'+'.join(fewer)} folded into weights"
        return f"{'+'.join(fewer)} elimination"
    if set(src) & set(_MOVERS) or set(dst) & set(_MOVERS):
        return "Concat/Split movement"
    return f"ops: {'+'.join(_ordered(src)) or '-'} -> {'+'.join(_ordered(dst)) or '-'}"


def _weight_only(op: str) -> bool:
    from superopt.core.ops import WEIGHT_ONLY, get_op

    try:
        return get_op(op).has(WEIGHT_ONLY)
    except KeyError:
        return False


def _ordered(ops: Iterable[str]) -> list[str]:
    def key(op: str) -> tuple[int, str]:
        return (_OP_ORDER.index(op) if op in _OP_ORDER else len(_OP_ORDER), op)

    return sorted({op for op in ops}, key=key)


def _runtime_ops(patterns: Sequence[Pattern], kinds: Mapping[str, str], *,
                 distinct: bool = False) -> Counter:
    """Ops on a path from a tensor (non-weight) variable, counted; `distinct` counts equal
    subpatterns once (a target's are built as one node)."""
    from superopt.core.pattern import PVar

    out: Counter = Counter()
    seen: set = set()

    def walk(p: Pattern) -> bool:  # True when p reads a runtime tensor
        if isinstance(p, PVar):
            return kinds.get(p.name) != "weight"
        runtime = False
        for a in p.args:
            runtime = walk(a) or runtime
        if runtime and not (distinct and p in seen):
            out[p.op] += 1
        seen.add(p)
        return runtime

    for p in patterns:
        walk(p)
    return out


def _all_ops(patterns: Sequence[Pattern], *, distinct: bool = False) -> Counter:
    """Every op of the patterns but the weight-only helpers, counted (`distinct`: equal
    subpatterns once)."""
    nodes = _nodes(patterns)
    if distinct:
        nodes = list(dict.fromkeys(nodes))
    return Counter(n.op for n in nodes if not _weight_only(n.op))


def _weight_consumers(patterns: Sequence[Pattern], kinds: Mapping[str, str]) -> list[str]:
    """Runtime ops of `patterns` that read a computation on weights alone (folded at export)."""
    from superopt.core.pattern import PNode, PVar

    def runtime(p: Pattern) -> bool:
        if isinstance(p, PVar):
            return kinds.get(p.name) != "weight"
        return any(runtime(a) for a in p.args)

    return _ordered(n.op for n in _nodes(patterns) if runtime(n)
                    and any(isinstance(a, PNode) and not runtime(a) for a in n.args))


def _nodes(patterns: Sequence[Pattern]) -> list[PNode]:
    from superopt.core.pattern import PNode

    out: list[PNode] = []
    stack = list(patterns)
    while stack:
        p = stack.pop()
        if isinstance(p, PNode):
            out.append(p)
            stack.extend(p.args)
    return out


def _nested(patterns: Sequence[Pattern], op: str) -> bool:
    """Whether some `op` node of the patterns has another `op` node below it."""
    from superopt.core.pattern import PNode

    return any(n.op == op and any(isinstance(a, PNode) and op in a.ops() for a in n.args)
               for n in _nodes(patterns))


def _merged_op(rule: Rule, src: Counter, dst: Counter) -> str | None:
    """The op two source nodes of which read a common input while the target has fewer of it."""
    nodes = _nodes(rule.src)
    for op in _ordered(src):
        if dst[op] >= src[op] or op in _MOVERS:  # fewer Concats: a movement, not a merge
            continue
        same = [n for n in nodes if n.op == op]
        for i, a in enumerate(same):
            for b in same[i + 1:]:
                if set(a.args) & set(b.args):
                    return op
    return None


# ---------------------------------------------------------------------------------------------
# explaining a model


@dataclass
class Miss:
    """One way a pattern differs from the graph at a node: another op feeds an input, or an
    attribute has a value the pattern does not take."""

    text: str  # "Conv has group=24" / "input 0 of BatchNormalization is Relu, not Conv"
    op: str = ""  # for attribute misses: the op, attribute and the value seen
    attr: str = ""
    value: Any = None


@dataclass
class FamilyReport:
    """What one family did on one model (see the module doc for the three groups)."""

    family: str
    rules: list[Rule]
    root_ops: dict[str, int]  # root op -> nodes of it in the model
    matched: dict[str, list[str]] = field(default_factory=dict)  # node -> rule ids that fire
    refused: dict[str, list[str]] = field(default_factory=dict)  # node -> refusal reasons
    unreached: dict[str, list[Miss]] = field(default_factory=dict)  # node -> closest misses
    accepted: dict[str, dict[str, list]] = field(default_factory=dict)  # op -> attr -> values
    # node -> the best change of the graph's estimated cost (seconds) one rewrite there makes
    cost_change: dict[str, float] = field(default_factory=dict)

    @property
    def tried(self) -> bool:
        return any(self.root_ops.values())

    @property
    def sites(self) -> int:
        return len(self.matched) + len(self.refused) + len(self.unreached)

    def refusal_groups(self) -> list[tuple[str, list[str]]]:
        """(reason, nodes), most sites first."""
        groups: dict[str, list[str]] = {}
        for node, reasons in self.refused.items():
            for r in dict.fromkeys(reasons):
                groups.setdefault(r, []).append(node)
        return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))

    def miss_groups(self) -> list[tuple[str, list[str]]]:
        """(what differs, nodes), most sites first."""
        groups: dict[str, list[str]] = {}
        for node, misses in self.unreached.items():
            groups.setdefault(_miss_summary(misses), []).append(node)
        return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))

    def attribute_tally(self) -> list[tuple[str, str, Any, int]]:
        """(op, attr, value, sites) over the not-reached sites, most sites first."""
        tally: Counter = Counter()
        for misses in self.unreached.values():
            for key in dict.fromkeys((m.op, m.attr, _hashable(m.value)) for m in misses
                                     if m.attr):
                tally[key] += 1
        return [(op, attr, value, n) for (op, attr, value), n in
                sorted(tally.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1], str(kv[0][2])))]

    def to_json(self) -> dict[str, Any]:
        tally = self.attribute_tally()
        shown = {(op, attr) for op, attr, _, _ in tally}
        return {
            "family": self.family,
            "rules": [r.id for r in self.rules],
            "root_ops": dict(self.root_ops),
            "tried": self.tried,
            "sites": self.sites,
            "matched": {"count": len(self.matched), "nodes": dict(self.matched),
                        "cost_change_s": dict(self.cost_change)},
            "refused": {"count": len(self.refused), "reasons": [
                {"reason": r, "count": len(nodes), "nodes": nodes}
                for r, nodes in self.refusal_groups()]},
            "unreached": {
                "count": len(self.unreached),
                "reasons": [{"reason": r, "count": len(nodes), "nodes": nodes}
                            for r, nodes in self.miss_groups()],
                "attributes": [{"op": op, "attr": attr, "value": _jsonable(value), "count": n}
                               for op, attr, value, n in tally],
                "accepted": {op: {attr: [_jsonable(v) for v in values]
                                  for attr, values in attrs.items() if (op, attr) in shown}
                             for op, attrs in self.accepted.items()
                             if any((op, a) in shown for a in attrs)}},
        }


def explain_model(graph: Graph, rules: Sequence[Rule], *, family: str | None = None,
                  cost_model: Any = None) -> list[FamilyReport]:
    """One `FamilyReport` per family of `rules` (tried families first, then by label);
    `family` keeps only families whose label contains it (case-insensitive). With a
    `cost_model`, each matched site also gets the best change of the graph's estimated cost
    that one rewrite there makes (a rewrite that is not cheaper on its own is one the search
    takes only as a step to a cheaper graph)."""
    from superopt.search.match import nodes_by_op

    by_family: dict[str, list[Rule]] = {}
    for r in rules:
        by_family.setdefault(family_of(r), []).append(r)
    if family is not None:
        by_family = {k: v for k, v in by_family.items() if family.lower() in k.lower()}
    by_op = nodes_by_op(graph)
    reports = [_explain_family(graph, label, frules, by_op)
               for label, frules in by_family.items()]
    if cost_model is not None:
        for report in reports:
            _cost_changes(graph, report, cost_model)
    reports.sort(key=lambda f: (not f.tried, -len(f.matched), -len(f.refused), -f.sites,
                                f.family))
    return reports


def _explain_family(graph: Graph, label: str, rules: list[Rule],
                    by_op: dict[str, list[Node]]) -> FamilyReport:
    from superopt.core.pattern import Bindings, PNode, each_match
    from superopt.search.match import explain

    by_root: dict[str, list[Rule]] = {}
    for r in rules:
        head = r.src[0]
        assert isinstance(head, PNode)
        by_root.setdefault(head.op, []).append(r)
    report = FamilyReport(label, rules, {op: len(by_op.get(op, ())) for op in sorted(by_root)})
    closest: dict[str, tuple[tuple[int, int], list[Miss]]] = {}
    for op, root_rules in by_root.items():
        nodes = by_op.get(op, [])
        if not nodes:
            continue
        for rule in root_rules:
            head = rule.src[0]
            assert isinstance(head, PNode)
            lines = explain(graph, rule, max_sites=len(nodes))
            for node, line in zip(nodes, lines):
                text = _site_text(node, line)
                if head.out < len(node.outputs) and next(
                        each_match(head, node.outputs[head.out], Bindings()), None) is not None:
                    if text == "fires":
                        report.matched.setdefault(node.name, []).append(rule.id)
                    elif "no partner" in text:
                        misses = [Miss(f"no partner for the rule's other source pattern"
                                       f"{'s' if len(rule.src) > 2 else ''} "
                                       f"({', '.join(str(p) for p in rule.src[1:])})")]
                        _keep_closest(closest, node.name, (head.size(), -1), misses)
                    else:
                        report.refused.setdefault(node.name, []).extend(text.split("; "))
                else:
                    score, misses = _differences(head, node, rule)
                    _keep_closest(closest, node.name, (score, -len(misses)), misses)
    for name in report.matched:
        report.refused.pop(name, None)
    for name, (_, misses) in closest.items():
        if name not in report.matched and name not in report.refused:
            report.unreached[name] = misses
    report.accepted = _accepted_values(rules)
    return report


def _cost_changes(graph: Graph, report: FamilyReport, cost_model: Any) -> None:
    """For each matched node, the lowest cost change of applying a firing rule rooted there."""
    from superopt.search.match import Refused, apply_match, find_matches

    base = cost_model.graph_cost(graph)
    by_id = {r.id: r for r in report.rules}
    for rule_id in dict.fromkeys(i for ids in report.matched.values() for i in ids):
        for m in find_matches(graph, by_id[rule_id]):
            names = [r.node.name for r in m.roots if r.node is not None
                     and r.node.name in report.matched]
            if not names:
                continue
            try:
                change = cost_model.graph_cost(apply_match(graph, m).graph) - base
            except (Refused, ValueError):
                continue
            for name in names:  # a merge is a rewrite at each of its source nodes
                if name not in report.cost_change or change < report.cost_change[name]:
                    report.cost_change[name] = change


def _site_text(node: Node, line: str) -> str:
    prefix = f"node {node.name}: "
    if line.startswith(prefix):
        return line[len(prefix):]
    return line.split(": ", 1)[-1]


def _keep_closest(closest: dict, name: str, score: tuple[int, int], misses: list[Miss]) -> None:
    if name not in closest or score > closest[name][0]:
        closest[name] = (score, misses)


def _differences(head: PNode, node: Node, rule: Rule) -> tuple[int, list[Miss]]:
    """(pattern nodes that agree with the graph, what differs) for a source pattern that does
    not match at `node`; a rough, explanatory walk (`superopt.core.pattern.each_match` decides)."""
    from superopt.core.ops import get_op
    from superopt.core.pattern import DimOf, Param, PVar, same_attr

    bound: dict[str, Value] = {}
    params: dict[str, Any] = {}

    def restore(b: dict[str, Value], ps: dict[str, Any]) -> None:
        bound.clear()
        bound.update(b)
        params.clear()
        params.update(ps)

    def walk(p: Pattern, v: Value, where: str) -> tuple[int, list[Miss]]:
        if isinstance(p, PVar):
            if p.name in bound and bound[p.name] is not v:
                return 0, [Miss(f"{where} is not the tensor ?{p.name} stands for elsewhere")]
            bound[p.name] = v
            return 0, []
        n = v.node
        if n is None or n.op != p.op:
            what = (n.op if n is not None and not n.is_opaque else
                    "an opaque node" if n is not None else
                    "a weight" if v.is_const else "a graph input")
            return 0, [Miss(f"{where} is {what} (the rule wants {p.op})")]
        if v.index != p.out or len(n.inputs) != len(p.args):
            if v.index != p.out:
                return 0, [Miss(f"{where} is output {v.index} of {n.op}, not output {p.out}")]
            return 0, [Miss(f"{where} is {n.op} with {len(n.inputs)} inputs, the rule's "
                            f"{p.op} has {len(p.args)}")]
        # the operands in the written order, and at an Add/Mul also swapped (the matcher tries
        # both): the order that agrees most is the one explained
        orders = [list(enumerate(n.inputs))]
        if p.swaps:
            orders.append(orders[0][::-1])
        best: tuple | None = None
        start = dict(bound), dict(params)
        for order in orders:
            restore(*start)
            got, missed = 0, []
            for sub, (i, arg) in zip(p.args, order):
                if arg is None:
                    missed.append(Miss(f"input {i} of {n.op} is missing"))
                    continue
                s, m = walk(sub, arg, f"input {i} of {n.op}")
                got += s
                missed += m
            # ties go to the order whose variables got values of their kind (a weight a
            # value known before the run), as the matcher's class check would
            fits = sum(rule.vars.get(k) != "weight" or v.is_weight
                       for k, v in bound.items() if k not in start[0])
            rank = (got, -len(missed), fits)
            if best is None or rank > best[0]:
                best = (rank, missed, dict(bound), dict(params))
        assert best is not None
        restore(best[2], best[3])
        score, misses = 1 + best[0][0], best[1]
        defaults = get_op(p.op).defaults
        listed = dict(p.attrs)
        actual = n.attr_dict
        for key in sorted(set(actual) | set(listed)):
            value = actual.get(key)
            if key in listed:
                want = listed[key]
                if key not in actual:
                    misses.append(Miss(f"{n.op} has no {key}"))
                elif isinstance(want, Param):
                    if want.name in params and not same_attr(params[want.name], value):
                        misses.append(Miss(f"{n.op} has {key}={_fmt(value)}", n.op, key, value))
                    params.setdefault(want.name, value)
                elif not _has(want, (Param, DimOf)) and not same_attr(want, value):
                    misses.append(Miss(f"{n.op} has {key}={_fmt(value)}", n.op, key, value))
            elif key in defaults and not same_attr(defaults[key], value):
                misses.append(Miss(f"{n.op} has {key}={_fmt(value)}", n.op, key, value))
        return score, misses

    return walk(head, node.outputs[head.out] if head.out < len(node.outputs)
                else node.outputs[0], "the node")


def _has(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, types):
        return True
    return isinstance(value, tuple) and any(_has(v, types) for v in value)


def _miss_summary(misses: Sequence[Miss]) -> str:
    """One line: attribute misses of one op joined ("Conv has group=24, strides=(2, 2)")."""
    parts: list[str] = []
    attrs: dict[str, list[str]] = {}
    for m in misses:
        if m.attr:
            attrs.setdefault(m.op, []).append(f"{m.attr}={_fmt(m.value)}")
        else:
            parts.append(m.text)
    parts += [f"{op} has {', '.join(dict.fromkeys(items))}" for op, items in attrs.items()]
    parts = list(dict.fromkeys(parts))
    if len(parts) > 3:
        parts = [*parts[:3], f"{len(parts) - 3} more differences"]
    return "; ".join(parts) or "the source pattern does not match"


def _accepted_values(rules: Sequence[Rule]) -> dict[str, dict[str, list]]:
    """Op -> attribute -> the values the rules' source patterns take ("any" for a parameter)."""
    from superopt.core.ops import get_op
    from superopt.core.pattern import DimOf, Param

    out: dict[str, dict[str, dict]] = {}
    for r in rules:
        for p in _nodes(r.src):
            try:
                defaults = get_op(p.op).defaults
            except KeyError:
                continue
            listed = dict(p.attrs)
            for key in sorted(set(defaults) | set(listed)):
                value = listed.get(key, defaults.get(key))
                if _has(value, (Param, DimOf)):
                    value = "any" if isinstance(value, Param) else str(value)
                out.setdefault(p.op, {}).setdefault(key, {})[_hashable(value)] = value
    return {op: {k: list(vs.values()) for k, vs in attrs.items()} for op, attrs in out.items()}


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):
        return v.item()
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_fmt(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# the command


def run(args: argparse.Namespace) -> int:
    from superopt.core.errors import UsageError

    if args.sites < 0:
        raise UsageError("--sites must be 0 or more")
    from superopt.cost_model.analytic import AnalyticCost

    graph, rules, label = _inputs(args)
    reports = explain_model(graph, rules, family=args.family,
                            cost_model=AnalyticCost.for_device("cuda"))
    if args.family is not None and not reports:
        names = sorted({family_of(r) for r in rules})
        raise UsageError(f"--family {args.family!r} selects no family; families: "
                         f"{', '.join(names)}")
    if args.json:
        print(json.dumps(to_json(args.model, graph, label, rules, reports), indent=1))
        return 0
    if not args.quiet:
        render(args.model, graph, label, rules, reports, sites=args.sites)
    return 0


def _inputs(args: argparse.Namespace) -> tuple[Graph, list[Rule], str]:
    """(graph, rules explained, rules file label); SuperoptErrors for bad input."""
    from superopt.core.onnx_io import load
    from superopt.core.rules import load_rules
    from superopt.pipeline.optimize import ort_typed_opaque_outputs

    ruleset = load_rules(args.rules)
    if args.rule:
        rules = [ruleset.by_id(args.rule)]
    else:
        rules = ruleset.proved()
    graph = load(args.model)
    graph = ort_typed_opaque_outputs(graph, args.model, None)
    return graph, rules, args.rules or "shipped"


def to_json(model: str, graph: Graph, rules_file: str, rules: Sequence[Rule],
            reports: Sequence[FamilyReport]) -> dict[str, Any]:
    """The `superopt-explain/1` document (shape in the module doc)."""
    return {"format": FORMAT, "model": str(model), "nodes": len(graph.nodes),
            "rules_file": rules_file, "rules": len(rules),
            "families": [f.to_json() for f in reports]}


def render(model: str, graph: Graph, rules_file: str, rules: Sequence[Rule],
           reports: Sequence[FamilyReport], *, sites: int = DEFAULT_SITES) -> None:
    """Print the overview table and, for every tried family, its matches, refusals and misses."""
    from superopt.face.console import Console, Table, escape

    console = Console(stderr=False)
    tried = [f for f in reports if f.tried]
    console.print(escape(f"{model}: {len(graph.nodes)} nodes; {len(rules)} rules "
                         f"({rules_file}) in {len(reports)} families, {len(tried)} tried "
                         "(their root op occurs in the model)"))
    table = Table(title="families", title_justify="left")
    for col, justify in (("family", "left"), ("rules", "right"), ("root op: nodes", "left"),
                         ("matched", "right"), ("refused", "right"), ("not reached", "right")):
        table.add_column(col, justify=justify)
    for f in tried:
        roots = ", ".join(f"{op}: {n}" for op, n in f.root_ops.items() if n)
        table.add_row(escape(f.family), str(len(f.rules)), escape(roots), str(len(f.matched)),
                      str(len(f.refused)), str(len(f.unreached)))
    if tried:
        console.print(table)
    for f in tried:
        console.print("")
        for line in family_lines(f, sites=sites):
            console.print(escape(line))
    untried = [f for f in reports if not f.tried]
    if untried:
        console.print("")
        console.print(escape("not tried (no node of their root op in the model): " + "; ".join(
            f"{f.family} ({len(f.rules)} rule{'s' if len(f.rules) != 1 else ''}, root "
            f"{'/'.join(f.root_ops)})" for f in untried)))


def family_lines(f: FamilyReport, *, sites: int = DEFAULT_SITES) -> list[str]:
    """The plain-text lines of one tried family."""
    roots = ", ".join(f"{n} {op}" for op, n in f.root_ops.items() if n)
    lines = [f"{f.family}: {len(f.rules)} rule{'s' if len(f.rules) != 1 else ''}, "
             f"{f.sites} site{'s' if f.sites != 1 else ''} ({roots} nodes)"]
    if f.matched:
        fires = Counter(r for ids in f.matched.values() for r in dict.fromkeys(ids))
        top = ", ".join(f"{r} ({n})" for r, n in fires.most_common(3))
        lines.append(f"  matched at {len(f.matched)}: {_names(list(f.matched), sites)}")
        lines.append(f"    rules that fire: {top}"
                     + (f" and {len(fires) - 3} more" if len(fires) > 3 else ""))
        if f.cost_change:
            worse = [n for n, c in f.cost_change.items() if c >= 0]
            better = len(f.cost_change) - len(worse)
            best = min(f.cost_change.values())
            lines.append(f"    one rewrite there, estimated by the analytic CUDA roofline: "
                         f"cheaper at {better}, not cheaper at {len(worse)} (best "
                         f"{best * 1e6:+.1f} µs)")
            if worse:
                lines.append(f"    not cheaper on its own (the search takes it only on the way "
                             f"to a cheaper graph): {_names(worse, sites)}")
    else:
        lines.append("  matched nowhere")
    if f.refused:
        lines.append(f"  refused at {len(f.refused)} (a rule's source matches, the rule is "
                     "refused):")
        lines += _group_lines(f.refusal_groups(), sites, "reasons")
    if f.unreached:
        lines.append(f"  not reached at {len(f.unreached)} (no source pattern of the family "
                     "matches; what differs from the closest rule):")
        lines += _group_lines(f.miss_groups(), sites, "kinds of difference")
        tally = f.attribute_tally()
        if tally:
            seen = ", ".join(f"{op} {attr}={_fmt(v)} ({n})" for op, attr, v, n in tally[:8])
            more = f" and {len(tally) - 8} more" if len(tally) > 8 else ""
            lines.append(f"    attribute values no rule of the family takes: {seen}{more}")
            keys = list(dict.fromkeys((op, attr) for op, attr, _, _ in tally))[:4]
            takes = "; ".join(
                f"{op} {attr} " + " | ".join(_fmt(v) for v in f.accepted.get(op, {}).get(attr, []))
                for op, attr in keys)
            lines.append(f"    the family's rules take: {takes}")
    return lines



def _group_lines(groups: list, sites: int, what: str) -> list[str]:
    """`count  reason: nodes` for the first SHOWN_REASONS groups, then how many more."""
    lines = [f"    {len(nodes):>4}  {reason}: {_names(nodes, sites)}"
             for reason, nodes in groups[:SHOWN_REASONS]]
    if len(groups) > SHOWN_REASONS:
        lines.append(f"    ... and {len(groups) - SHOWN_REASONS} more {what}")
    return lines

def _names(nodes: Sequence[str], limit: int) -> str:
    shown = ", ".join(nodes[:limit])
    if len(nodes) > limit:
        shown += f"{', ' if shown else ''}... and {len(nodes) - limit} more"
    return shown
