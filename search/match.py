"""Rule matching: find every site where a rule's source patterns match a Graph, and apply it.

Add and Mul match in either operand order (`superopt.core.pattern.each_match`), so one rule
covers `x + c` and `c + x`. A rule with several source patterns (a multi-output rule, e.g. two
MatMuls sharing `?x`) matches only where all of its patterns match jointly with consistent
variable bindings. Matching never goes into opaque nodes (an opaque node's op is never a
registry op) and only binds float tensors.

Applying a match builds the target patterns with `superopt.core.pattern.build`, checks that each new
value has exactly the type of the value it replaces, and swaps them in with
`Graph.replace_values`; interior nodes still used elsewhere stay, dead ones disappear, graph
outputs keep their names. Every refusal carries a reason, and `explain(graph, rule)` lists the
reasons at every candidate site ("why didn't my rule fire?").

A rule says where it is true, and the matcher holds it to that (`check_site`): every bound
value must be in its variable's class (a `weight` a constant; the exact rank the rule was proved
for, `?c has rank 3, the rule was proved for rank 0`; no empty dim), every parameter of its
declared type, every side condition true (`condition failed: dim(?c,0) == dim(?k,0)`), and
every tensor a float one. A site that fails any of these is not a match.

Example:
    >>> rule = Rule.make(["(Relu (Relu ?x))"], ["(Relu ?x)"], {"x": "tensor"})  # doctest: +SKIP
    >>> for m in find_matches(graph, rule):                                      # doctest: +SKIP
    ...     new_graph = apply_match(graph, m).graph
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from onnx import TensorProto

from superopt.core.ir import Graph, Node, Value
from superopt.core.pattern import (
    VAR_REF,
    Bindings,
    Pattern,
    PatternError,
    PNode,
    build,
    commuted_forms,
    each_match,
    input_orders,
    match_node,
)
from superopt.core.rules import Rule

# Element types a rewrite may touch: rules are proved over reals, so only float tensors.
FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16,
                         TensorProto.BFLOAT16})


@dataclass(frozen=True)
class Match:
    """One site where all source patterns of `rule` match.

    `roots[i]` is the value matched by `rule.src[i]`; `matched_nodes` are the graph nodes the
    source patterns cover (interior nodes included), in pattern order.
    """

    rule: Rule
    bindings: Bindings
    roots: tuple[Value, ...]
    matched_nodes: tuple[Node, ...]

    @property
    def matched_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.matched_nodes)


@dataclass(frozen=True)
class Applied:
    """The result of applying a match: the new graph and the nodes the target created."""

    graph: Graph
    match: Match
    created_nodes: tuple[Node, ...]

    @property
    def created_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.created_nodes)


class Refused(Exception):
    """A match that cannot be applied; `str(e)` says why."""


class RuleIndex:
    """Rules indexed by the op at the root of each of their source patterns.

    `candidates(op_counts)` yields only the rules whose root ops all occur in a graph, so a graph
    without Conv never tries a Conv rule.

    Example:
        >>> index = RuleIndex(rules)                               # doctest: +SKIP
        >>> list(index.candidates(graph.op_counts()))               # doctest: +SKIP
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: list[Rule] = list(rules)
        self.by_root: dict[str, list[Rule]] = {}
        for r in self.rules:
            self.by_root.setdefault(_root_op(r.src[0]), []).append(r)

    def candidates(self, ops_present: Iterable[str]) -> Iterator[Rule]:
        present = set(ops_present)
        for op in sorted(present & set(self.by_root)):
            for r in self.by_root[op]:
                if all(_root_op(p) in present for p in r.src):
                    yield r

    def __len__(self) -> int:
        return len(self.rules)


def _root_op(p: Pattern) -> str:
    assert isinstance(p, PNode)  # Rule.check guarantees operator roots
    return p.op


def nodes_by_op(graph: Graph, keep: Callable[[Node], bool] | None = None
                ) -> dict[str, list[Node]]:
    """The graph's registry nodes grouped by op (opaque nodes are left out: never matched);
    with `keep`, only the nodes it accepts (the roots a caller allows: `find_matches` starts
    every source pattern that shares no variable with an earlier one from these lists)."""
    out: dict[str, list[Node]] = {}
    for n in graph.nodes:
        if not n.is_opaque and (keep is None or keep(n)):
            out.setdefault(n.op, []).append(n)
    return out


def operands_fit(p: PNode, node: Node) -> bool:
    """Whether node's inputs can match p's operands one level down (`PNode.operand_heads`), in
    the written order or, where p `swaps` (Add, Mul), the other: a node that fails this fails
    `match` at its operands."""
    ins, heads = node.inputs, p.operand_heads
    if len(ins) != len(heads):
        return False

    def fit(order: Sequence[Value | None]) -> bool:
        for head, x in zip(heads, order):
            if x is None:
                return False
            if head is not None and (x.node is None or x.node.op != head[0]
                                     or x.index != head[1]):
                return False
        return True

    return fit(ins) or (p.swaps and fit((ins[1], ins[0])))


# ---------------------------------------------------------------------------------------------
# finding matches


def find_matches(graph: Graph, rule: Rule, *, by_op: dict[str, list[Node]] | None = None,
                 limit: int | None = None) -> list[Match]:
    """Every site where all of `rule`'s source patterns match and `check_site` accepts the
    bindings (classes, parameter types, conditions, float tensors).

    Add and Mul match in either operand order (`each_match`); a site the two orders both
    match is one match, the first order `check_site` accepts: the rewrites differ only by the
    order of operands of a commutative op, at the same cost.

    A variable is bound only to a value in its class (`_admits`): `check_site` would refuse
    the match anyway, and a merge of three `(Add (MatMul ?x ?w) ?b)` would otherwise try every
    MatMul output as each bias before refusing them all.

    `by_op` is `nodes_by_op(graph)`, passed when many rules are matched against one graph.
    """
    by_op = nodes_by_op(graph) if by_op is None else by_op
    out: list[Match] = []
    symmetric = symmetric_sources(rule)
    commutes = any(p.commutes for p in rule.src)
    sites: set[tuple] = set()
    admit = _admits(rule)
    for bindings, roots in _joint_matches(graph, rule.src, by_op, Bindings(admit=admit)):
        # The same sources in another order (symmetric sources): the same rewrite up to the
        # order of a Concat, at the same cost (a 3-way merge of 8 projections: 336 orders,
        # 56 sites), accepted or refused alike. Other operand orders of Add/Mul binding the
        # same values: the same rewrite, but class checks may refuse one order and accept the
        # other, so only an accepted one closes the site.
        site = (frozenset(roots) if symmetric else tuple(roots),
                frozenset(bindings.tensors.values()) if commutes else None)
        if site in sites:
            continue
        if check_site(rule, bindings, roots) is not None:
            if not commutes:
                sites.add(site)
            continue
        sites.add(site)
        out.append(Match(rule, bindings.copy(), tuple(roots),
                         tuple(_covered(rule.src, roots, bindings))))
        if limit is not None and len(out) >= limit:
            break
    return out


def _admits(rule: Rule) -> Callable[[str, Value], bool]:
    """Whether a value may be bound to a tensor variable of `rule`: in the variable's class
    (`Rule.var_refusal`) and a float tensor, the parts of `check_site` that depend on one
    binding alone, so pruning them changes no match that `check_site` accepts."""
    def admit(name: str, v: Value) -> bool:
        return v.type.elem_type in FLOAT_TYPES and rule.var_refusal(name, v) is None
    return admit


_SYMMETRIC: dict[str, bool] = {}


def symmetric_sources(rule: Rule) -> bool:
    """Whether the rule's source patterns are one pattern written several times, with only the
    variables they share in common (`(Add (MatMul ?x ?w1) ?b1)`, `(Add ?b2 (MatMul ?x ?w2))`:
    Add/Mul operands in any order): then every order of the same matched values is the same
    rewrite."""
    hit = _SYMMETRIC.get(rule.id)
    if hit is None:
        counts: dict[str, int] = {}
        for p in rule.src:
            for v in p.variables():
                counts[v] = counts.get(v, 0) + 1
        shared = {v for v, n in counts.items() if n > 1}
        classes = {v: v if v in shared else f"_{rule.vars.get(v)}{rule.ranks.get(v)}"
                   for v in counts}

        def canonical(text: str) -> str:  # own variables renamed in order of appearance
            own: dict[str, str] = {}
            return VAR_REF.sub(lambda m: "?" + (m.group(1) if m.group(1) in shared else
                                                own.setdefault(m.group(1), f"_{len(own)}")),
                               text)

        canon = {min(canonical(str(x)) for x in commuted_forms(p, classes))
                 for p in rule.src}
        hit = _SYMMETRIC[rule.id] = len(rule.src) > 1 and len(canon) == 1
    return hit


def check_site(rule: Rule, bindings: Bindings, roots: Sequence[Value] = ()) -> str | None:
    """None if the rule may be applied with these bindings, else the reason it may not: the
    first variable outside its class (kind, rank, empty dim), parameter of another type, or
    failed side condition (`Rule.holds`), or a non-float tensor among the bindings and roots.

    Example:
        >>> check_site(rule, bindings)                  # doctest: +SKIP
        '?c has rank 3, the rule was proved for rank 0'
    """
    return rule.holds(bindings) or _non_float(bindings, roots)


def _candidate_values(graph: Graph, p: PNode, by_op: dict[str, list[Node]],
                      b: Bindings) -> Iterator[Value]:
    """Values that may match root pattern p: outputs of nodes with p's op; when an argument of
    p is an already bound variable, only the users of that value (fast joint matching).

    When a bound variable lies deeper (`(Add (MatMul ?x ?w2) ?b2)` once ?x is bound), only
    the nodes reached from it up p's path to it: the users of ?x that are MatMuls, then their
    users that are Adds. Those are listed in `by_op`'s order, the order of trying every node
    of p's op, so the matches and their order are the same, without trying every Add.
    """
    nodes = by_op.get(p.op, ())
    for name, path in p.var_paths:  # operands first, then deeper, each in operand order
        v = b.tensors.get(name)
        if v is None:
            continue
        if len(path) == 1:
            for node, _ in graph.users.get(v, ()):
                if node.op == p.op and p.out < len(node.outputs):
                    yield node.outputs[p.out]
        else:
            reached = _reached_up(graph, v, path)
            for node in nodes:
                if p.out < len(node.outputs) and node.outputs[p.out] in reached:
                    yield node.outputs[p.out]
        return
    for node in nodes:
        if p.out < len(node.outputs):
            yield node.outputs[p.out]


def _reached_up(graph: Graph, v: Value, path: Sequence[tuple[PNode, int]]) -> set[Value]:
    """The values that path's top node can match given that the variable at its bottom is v:
    v's users with the bottom step's op at its operand index (either operand at an Add/Mul),
    their users with the next step's op, and so on up."""
    level = {v}
    for step, index in reversed(path):
        up: set[Value] = set()
        for value in level:
            for node, i in graph.users.get(value, ()):
                if (node.op == step.op and (i == index or step.swaps)
                        and step.out < len(node.outputs)):
                    up.add(node.outputs[step.out])
        level = up
        if not level:
            break
    return level


def _joint_matches(graph: Graph, patterns: Sequence[Pattern], by_op: dict[str, list[Node]],
                   b: Bindings) -> Iterator[tuple[Bindings, list[Value]]]:
    """Every joint match of the patterns, extending b. Yields b itself (see `each_match`):
    copy it to keep it past the next step."""
    if not patterns:
        yield b, []
        return
    head = patterns[0]
    assert isinstance(head, PNode)
    seen: set[Value] = set()
    for v in _candidate_values(graph, head, by_op, b):
        if v in seen:
            continue
        seen.add(v)
        node = v.node  # has head's op and output (`_candidate_values`)
        assert node is not None
        if len(node.inputs) != len(head.args):
            continue
        if head.args_commute:  # operands that match in several ways: the generator
            for _ in each_match(head, v, b):
                yield from _joint_rest(graph, patterns, by_op, b, v)
            continue
        # the common case, without a generator per candidate (the search's hot loop)
        for inputs in input_orders(head, node):
            mark = b.mark()
            if match_node(head, node, inputs, b):
                yield from _joint_rest(graph, patterns, by_op, b, v)
            b.undo(mark)


def _joint_rest(graph: Graph, patterns: Sequence[Pattern], by_op: dict[str, list[Node]],
                b: Bindings, v: Value) -> Iterator[tuple[Bindings, list[Value]]]:
    """The joint matches of patterns[1:] once patterns[0] matched at v."""
    if len(patterns) == 1:
        yield b, [v]
        return
    for b3, rest in _joint_matches(graph, patterns[1:], by_op, b):
        if v in rest:
            continue  # two source patterns on one value: not a multi-output site
        yield b3, [v, *rest]


def _covered(patterns: Sequence[Pattern], roots: Sequence[Value], b: Bindings) -> list[Node]:
    """The graph nodes covered by the source patterns under the bindings b of a successful
    match, in pattern order: at an Add/Mul, the operand order the bindings fit."""
    out: dict[Node, None] = {}

    def walk(p: Pattern, v: Value) -> None:
        if isinstance(p, PNode) and v.node is not None:
            out.setdefault(v.node)
            inputs = v.node.inputs
            if p.swaps and not _fits(p.args, inputs, b):
                inputs = (inputs[1], inputs[0])
            for sub, arg in zip(p.args, inputs):
                if arg is not None:
                    walk(sub, arg)

    for p, v in zip(patterns, roots):
        walk(p, v)
    return list(out)


def _fits(args: Sequence[Pattern], inputs: Sequence[Value | None], b: Bindings) -> bool:
    """Whether each pattern matches its input under (a copy of) the complete bindings b."""
    for sub, arg in zip(args, inputs):
        if arg is None or next(each_match(sub, arg, b.copy()), None) is None:
            return False
    return True


def _non_float(b: Bindings, roots: Sequence[Value]) -> str | None:
    for name, v in b.tensors.items():
        if v.type.elem_type not in FLOAT_TYPES:
            return f"?{name} is not a float tensor ({v.type})"
    for v in roots:
        if v.type.elem_type not in FLOAT_TYPES:
            return f"{v.name} is not a float tensor ({v.type})"
    return None


# ---------------------------------------------------------------------------------------------
# applying


def apply_match(graph: Graph, m: Match) -> Applied:
    """Apply one match; raises `Refused` (with the reason) when the rewrite cannot be made.

    Refusals: a target that does not type-check at these shapes, a target value whose type
    differs from the value it replaces, a multi-output site whose roots overlap another
    pattern's matched nodes, or a target that would read a value downstream of a replaced one.
    """
    rule = m.rule
    try:
        dst_values = [build(p, m.bindings) for p in rule.dst]
    except (ValueError, PatternError, KeyError, IndexError, TypeError, ZeroDivisionError) as e:
        raise Refused(f"target does not build here: {_one_line(e)}") from None
    mapping: dict[Value, Value] = {}
    for i, (src_v, dst_v) in enumerate(zip(m.roots, dst_values)):
        if src_v.type != dst_v.type:
            raise Refused(f"target output {i} has type {dst_v.type}, the source {src_v.type}")
        if src_v is not dst_v:
            mapping[src_v] = dst_v
    if not mapping:
        raise Refused("the target is the source itself")
    if len(m.roots) > 1:
        _check_multi_output(graph, m, dst_values)
    new_graph = graph.replace_values(mapping)
    try:
        new_nodes = new_graph.nodes
    except ValueError as e:  # a cycle: impossible with immutable nodes, but never export one
        raise Refused(f"the rewrite would create a cycle ({e})") from None
    old = set(graph.nodes)
    old_names = {n.name for n in old}  # rebuilt downstream nodes keep their names
    created = tuple(n for n in new_nodes if n not in old and n.name not in old_names)
    return Applied(new_graph, m, created)


def _check_multi_output(graph: Graph, m: Match, dst_values: Sequence[Value]) -> None:
    """Roots must be independent: no root inside another pattern's match, and no target may
    read a value computed downstream of a replaced root (that would keep the old one alive, or
    tie the new nodes into a loop through the old ones)."""
    for i in range(len(m.rule.src)):
        others = set(_covered([q for j, q in enumerate(m.rule.src) if j != i],
                              [v for j, v in enumerate(m.roots) if j != i], m.bindings))
        if m.roots[i].node in others:
            raise Refused(f"source output {i} lies inside another source pattern's match")
    downstream = _downstream(graph, m.roots)
    graph_nodes = set(graph.nodes)
    for dv in dst_values:
        for leaf in _reads(dv, graph_nodes):
            if leaf in downstream:
                raise Refused(f"the target reads {leaf.name}, which is computed from a "
                              "replaced value")


def _reads(v: Value, graph_nodes: set[Node]) -> Iterator[Value]:
    """The values already in the graph that a freshly built target value reads."""
    stack, seen = [v], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x.node is None or x.node in graph_nodes:
            yield x
            continue
        stack.extend(i for i in x.node.inputs if i is not None)


def _downstream(graph: Graph, roots: Sequence[Value]) -> set[Value]:
    users = graph.users
    out: set[Value] = set(roots)
    stack = list(roots)
    while stack:
        v = stack.pop()
        for node, _ in users.get(v, ()):
            for o in node.outputs:
                if o not in out:
                    out.add(o)
                    stack.append(o)
    return out


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if e.args else type(e).__name__
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# explaining


def explain(graph: Graph, rule: Rule, *, max_sites: int = 50) -> list[str]:
    """Why `rule` did or did not fire on `graph`: one line per candidate site.

    Candidate sites are the nodes whose op is the root op of the rule's first source pattern.

    Example:
        >>> explain(graph, rule)                                       # doctest: +SKIP
        ['node mm1: fires', 'node mm2: ?a must be a weight (constants only)',
         'node mm3: ?x has rank 3, the rule was proved for rank 2']
    """
    lines: list[str] = []
    by_op = nodes_by_op(graph)
    head = rule.src[0]
    assert isinstance(head, PNode)
    sites = by_op.get(head.op, [])
    if not sites:
        return [f"no {head.op} node in the graph: the rule's root op never occurs"]
    for node in sites[:max_sites]:
        lines.append(f"node {node.name}: {_explain_site(graph, rule, node, by_op)}")
    if len(sites) > max_sites:
        lines.append(f"... {len(sites) - max_sites} more {head.op} nodes")
    return lines


def _explain_site(graph: Graph, rule: Rule, node: Node, by_op: dict[str, list[Node]]) -> str:
    head = rule.src[0]
    assert isinstance(head, PNode)
    if head.out >= len(node.outputs):
        return f"output {head.out} does not exist"
    v = node.outputs[head.out]
    reasons: list[str] = []
    matched = found = False
    for _ in each_match(head, v, b := Bindings()):
        matched = True
        for bindings, rest in _joint_matches(graph, rule.src[1:], by_op, b):
            if v in rest:
                continue
            found = True
            roots = [v, *rest]
            why = check_site(rule, bindings, roots)
            if why is None:
                m = Match(rule, bindings.copy(), tuple(roots),
                          tuple(_covered(rule.src, roots, bindings)))
                try:
                    apply_match(graph, m)
                    return "fires"
                except Refused as e:
                    why = str(e)
            reasons.append(why)
    if not matched:
        return f"source pattern {head} does not match here"
    if not found:
        return "the other source patterns find no partner sharing its variables"
    return "; ".join(dict.fromkeys(reasons))


__all__ = ["Applied", "Match", "Refused", "RuleIndex", "apply_match", "check_site", "explain",
           "find_matches", "nodes_by_op"]
