"""Patterns: the s-expression terms that rules are written in, parsed into one tree type.

Syntax (in the spirit of egg's `"(+ ?a ?b)"`):

    term   := ?name                           a variable (a tensor of the rule)
            | (Op[.k] [attrs] term*)          output k (default 0) of a registry op
    attrs  := [key=value, ...]
    value  := int | float | 'str' | ?name     a parameter variable, bound by matching
            | (value, ...)                    a tuple
            | dim(?v, i)                      the size of dim i of tensor variable ?v

Attributes a pattern does not list must be at their registry default when matching. Examples:

    >>> p = parse("(MatMul (MatMul ?x ?a) ?b)")
    >>> sorted(p.variables())
    ['a', 'b', 'x']
    >>> str(parse("(Split.1[axis=1, split=(dim(?a,1), dim(?b,1))] ?y)"))
    '(Split.1[axis=1, split=(dim(?a,1), dim(?b,1))] ?y)'
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from superopt.core.ir import Node, Value
from superopt.core.ops import COMMUTATIVE, get_op


class PatternError(ValueError):
    """A pattern that does not parse or does not fit the registry."""


@dataclass(frozen=True)
class PVar:
    """A tensor variable `?name`."""

    name: str

    commutes = False  # see PNode.commutes

    def __str__(self) -> str:
        return f"?{self.name}"

    def variables(self) -> set[str]:
        return {self.name}

    def params(self) -> set[str]:
        return set()

    def ops(self) -> Iterator[str]:
        return iter(())

    def size(self) -> int:
        return 0


@dataclass(frozen=True)
class Param:
    """A parameter variable in an attribute: `?name`."""

    name: str

    def __str__(self) -> str:
        return f"?{self.name}"


@dataclass(frozen=True)
class DimOf:
    """`dim(?v, i)`: the size of dim i of tensor variable v (resolved when instantiating)."""

    var: str
    axis: int

    def __str__(self) -> str:
        return f"dim(?{self.var},{self.axis})"


AttrValue = int | float | str | Param | DimOf | tuple


@dataclass(frozen=True)
class PNode:
    """Output `out` of op `op` with attributes `attrs` applied to `args`."""

    op: str
    attrs: tuple[tuple[str, AttrValue], ...]
    args: tuple[Pattern, ...]
    out: int = 0

    @cached_property
    def swaps(self) -> bool:
        """Whether this node is a commutative op with two operands (Add, Mul): `each_match`
        tries both operand orders here. (Cached, as `commutes`: asked once per site.)"""
        return len(self.args) == 2 and _is_commutative(self.op)

    @cached_property
    def commutes(self) -> bool:
        """Whether such a node occurs anywhere in this pattern."""
        return self.swaps or self.args_commute

    @cached_property
    def args_commute(self) -> bool:
        """Whether such a node occurs below this one: only then can an operand match in more
        than one way."""
        return any(a.commutes for a in self.args)

    @cached_property
    def operand_heads(self) -> tuple[tuple[str, int] | None, ...]:
        """What each operand must be produced by, one level down: (op, output index) for an
        operator operand, None for a variable (any value)."""
        return tuple((a.op, a.out) if isinstance(a, PNode) else None for a in self.args)

    @cached_property
    def var_paths(self) -> tuple[tuple[str, tuple[tuple[PNode, int], ...]], ...]:
        """Each occurrence of a tensor variable below this node with the path down to it, as
        (node, operand index) steps from this node: shortest first, then in operand order.
        A matcher that has bound one of them finds this node among the users of users of
        the bound value (`superopt.search.match`)."""
        out: list[tuple[str, tuple[tuple[PNode, int], ...]]] = []

        def walk(node: PNode, path: tuple[tuple[PNode, int], ...]) -> None:
            for i, a in enumerate(node.args):
                step = (*path, (node, i))
                if isinstance(a, PVar):
                    out.append((a.name, step))
                else:
                    walk(a, step)

        walk(self, ())
        return tuple(sorted(out, key=lambda x: len(x[1])))

    def __str__(self) -> str:
        head = self.op + (f".{self.out}" if self.out else "")
        if self.attrs:
            head += "[" + ", ".join(f"{k}={_fmt(v)}" for k, v in self.attrs) + "]"
        return "(" + " ".join([head] + [str(a) for a in self.args]) + ")"

    def variables(self) -> set[str]:
        out: set[str] = set()
        for a in self.args:
            out |= a.variables()
        return out

    def params(self) -> set[str]:
        out: set[str] = set()
        for _, v in self.attrs:
            out |= _params_in(v)
        for a in self.args:
            out |= a.params()
        return out

    def dim_vars(self) -> set[str]:
        out: set[str] = set()
        for _, v in self.attrs:
            out |= _dims_in(v)
        for a in self.args:
            if isinstance(a, PNode):
                out |= a.dim_vars()
        return out

    def dim_refs(self) -> set[tuple[str, int]]:
        """Every `dim(?v, i)` in the attributes, as (v, i)."""
        out: set[tuple[str, int]] = set()
        for _, v in self.attrs:
            out |= _dim_refs_in(v)
        for a in self.args:
            if isinstance(a, PNode):
                out |= a.dim_refs()
        return out

    def ops(self) -> Iterator[str]:
        yield self.op
        for a in self.args:
            yield from a.ops()

    def size(self) -> int:
        return 1 + sum(a.size() for a in self.args)


Pattern = PVar | PNode


def _params_in(v: AttrValue) -> set[str]:
    if isinstance(v, Param):
        return {v.name}
    if isinstance(v, tuple):
        return set().union(*[_params_in(x) for x in v]) if v else set()
    return set()


def _dims_in(v: AttrValue) -> set[str]:
    if isinstance(v, DimOf):
        return {v.var}
    if isinstance(v, tuple):
        return set().union(*[_dims_in(x) for x in v]) if v else set()
    return set()


def _dim_refs_in(v: AttrValue) -> set[tuple[str, int]]:
    if isinstance(v, DimOf):
        return {(v.var, v.axis)}
    if isinstance(v, tuple):
        return set().union(*[_dim_refs_in(x) for x in v]) if v else set()
    return set()


def _fmt(v: AttrValue) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


#: a variable or parameter reference in pattern or condition text: `?x` -> "x"
VAR_REF = re.compile(r"\?(\w+)")


# ---------------------------------------------------------------------------------------------
# parsing

_TOKEN = re.compile(r"\s*(?:(?P<punct>[()\[\],=])|(?P<atom>'[^']*'|[^\s()\[\],=]+))")


def _tokens(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise PatternError(f"cannot read pattern at character {pos}: {text[pos:pos + 20]!r}")
        out.append(m.group("punct") or m.group("atom"))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expect: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expect is not None and tok != expect):
            raise PatternError(f"in {self.text!r}: expected {expect or 'more'}, got {tok!r}")
        self.i += 1
        return tok

    def term(self) -> Pattern:
        tok = self.take()
        if tok.startswith("?"):
            return PVar(tok[1:])
        if tok != "(":
            raise PatternError(f"in {self.text!r}: expected a term, got {tok!r}")
        head = self.take()
        op, _, out = head.partition(".")
        attrs: list[tuple[str, AttrValue]] = []
        if self.peek() == "[":
            self.take("[")
            while self.peek() != "]":
                key = self.take()
                self.take("=")
                attrs.append((key, self.value()))
                if self.peek() == ",":
                    self.take(",")
            self.take("]")
        args = []
        while self.peek() != ")":
            args.append(self.term())
        self.take(")")
        return PNode(op, tuple(sorted(attrs)), tuple(args), int(out) if out else 0)

    def value(self) -> AttrValue:
        tok = self.take()
        if tok == "(":
            items = []
            while self.peek() != ")":
                items.append(self.value())
                if self.peek() == ",":
                    self.take(",")
            self.take(")")
            return tuple(items)
        if tok.startswith("?"):
            return Param(tok[1:])
        if tok == "dim":
            self.take("(")
            var = self.take()
            self.take(",")
            axis = int(self.take())
            self.take(")")
            return DimOf(var.lstrip("?"), axis)
        if tok.startswith("'"):
            return tok[1:-1]
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                raise PatternError(f"in {self.text!r}: bad attribute value {tok!r}") from None


def parse(text: str) -> Pattern:
    """Parse one pattern; raises PatternError naming the problem."""
    p = _Parser(text)
    term = p.term()
    if p.peek() is not None:
        raise PatternError(f"in {text!r}: text after the pattern: {p.peek()!r}")
    return term


def check_ops(p: Pattern) -> None:
    """Every op exists in the registry with a fitting number of inputs."""
    if isinstance(p, PVar):
        return
    try:
        op = get_op(p.op)
    except KeyError as e:
        raise PatternError(str(e.args[0])) from None
    lo, hi = op.arity
    if len(p.args) < lo or (hi >= 0 and len(p.args) > hi):
        raise PatternError(f"{p.op} takes {lo}..{'n' if hi < 0 else hi} inputs, "
                           f"pattern gives {len(p.args)}")
    for key, _ in p.attrs:
        if key not in op.defaults and key not in _REQUIRED_ATTRS.get(p.op, ()):
            raise PatternError(f"{p.op} has no attribute {key!r}")
    for a in p.args:
        check_ops(a)


# Attributes with no default (the registry's `defaults` lists the optional ones).
_REQUIRED_ATTRS = {
    "Concat": ("axis",), "Split": ("axis", "split"), "Transpose": ("perm",),
    "Reshape": ("shape",), "MaxPool": ("kernel_shape",), "AveragePool": ("kernel_shape",),
}
# ... and their value types (`PARAM_TYPES`), for parameter variables bound to them.
_REQUIRED_ATTR_TYPES = {"axis": "int", "split": "ints", "perm": "ints", "shape": "ints",
                        "kernel_shape": "ints"}

#: The types of attribute parameter variables: what `?s` in `Conv[strides=?s]` may bind to.
PARAM_TYPES = ("int", "float", "ints", "floats", "str")


def attr_type(op: str, key: str) -> str | None:
    """The value type of attribute `key` of `op` (one of PARAM_TYPES), from the registry's
    default (or, for the attributes without one, their ONNX type); None if unknown."""
    if key in _REQUIRED_ATTRS.get(op, ()):
        return _REQUIRED_ATTR_TYPES.get(key)
    try:
        default = get_op(op).defaults.get(key)
    except KeyError:
        return None
    return _value_type(default)


def _value_type(v: Any) -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (tuple, list)):
        kinds = {_value_type(x) for x in v}
        if kinds <= {"int"}:
            return "ints"
        if kinds <= {"int", "float"}:
            return "floats"
    return None


def param_types(patterns: Iterable[Pattern]) -> dict[str, str]:
    """The type of every parameter variable in `patterns`, from the attribute it stands for
    (`?g` in `Conv[group=?g]` is an "int", `?s` in `Conv[strides=?s]` "ints", `?a` in
    `split=(?a, ?b)` an "int"). Raises PatternError for a parameter used with two types or in
    an attribute of unknown type.

    >>> param_types([parse("(Conv[strides=?s, group=?g] ?x ?w)")])
    {'g': 'int', 's': 'ints'}
    """
    out: dict[str, str] = {}

    def note(name: str, ty: str | None, where: str) -> None:
        if ty is None:
            raise PatternError(f"parameter ?{name} stands for {where}, whose type is unknown")
        if out.setdefault(name, ty) != ty:
            raise PatternError(f"parameter ?{name} is used as {out[name]} and as {ty}")

    def walk(p: Pattern) -> None:
        if isinstance(p, PVar):
            return
        for key, v in p.attrs:
            ty = attr_type(p.op, key)
            where = f"{p.op}.{key}"
            if isinstance(v, Param):
                note(v.name, ty, where)
            elif isinstance(v, tuple):
                item = {"ints": "int", "floats": "float"}.get(ty or "")
                for x in v:
                    if isinstance(x, Param):
                        note(x.name, item, f"an element of {where}")
        for a in p.args:
            walk(a)

    for p in patterns:
        walk(p)
    return dict(sorted(out.items()))


def param_fits(ty: str, value: Any) -> bool:
    """Whether an attribute value has parameter type `ty` (one of PARAM_TYPES)."""
    if ty == "int":
        return _value_type(value) == "int"
    if ty == "float":
        return _value_type(value) in ("int", "float")
    if ty == "ints":
        return isinstance(value, (tuple, list)) and _value_type(value) == "ints"
    if ty == "floats":
        return isinstance(value, (tuple, list)) and _value_type(value) in ("ints", "floats")
    if ty == "str":
        return isinstance(value, str)
    return False


# ---------------------------------------------------------------------------------------------
# matching and building


class Bindings:
    """Tensor variables bound to IR values, parameters bound to attribute values.

    `admit(name, value)`, when given, is asked before a tensor variable is bound, and the
    match fails where it says no: a matcher that will refuse such a binding anyway (a
    variable outside its rule's class) prunes it there instead of after a joint match of
    several patterns has multiplied it (`superopt.search.match.find_matches`).
    """

    __slots__ = ("admit", "params", "tensors")

    def __init__(self, tensors: dict[str, Value] | None = None,
                 params: dict[str, Any] | None = None,
                 admit: Callable[[str, Value], bool] | None = None) -> None:
        self.tensors = dict(tensors or {})
        self.params = dict(params or {})
        self.admit = admit

    def copy(self) -> Bindings:
        return Bindings(self.tensors, self.params, self.admit)

    def mark(self) -> tuple[int, int]:
        """A point to `undo` back to: matching only ever adds bindings."""
        return len(self.tensors), len(self.params)

    def undo(self, mark: tuple[int, int]) -> None:
        """Drop the bindings added since `mark` (a dict pops last-in first-out)."""
        while len(self.tensors) > mark[0]:
            self.tensors.popitem()
        while len(self.params) > mark[1]:
            self.params.popitem()


def _match_attr(pv: AttrValue, actual: Any, b: Bindings) -> bool:
    if isinstance(pv, Param):
        if pv.name in b.params:
            return b.params[pv.name] == actual
        b.params[pv.name] = actual
        return True
    if isinstance(pv, DimOf):
        v = b.tensors.get(pv.var)
        return (v is not None and v.shape is not None and 0 <= pv.axis < len(v.shape)
                and v.shape[pv.axis] == actual)
    if isinstance(pv, tuple):
        return (isinstance(actual, tuple) and len(actual) == len(pv)
                and all(_match_attr(p, a, b) for p, a in zip(pv, actual)))
    return same_attr(pv, actual)


def same_attr(a: Any, b: Any) -> bool:
    """Attribute equality as ONNX stores attributes: floats compare as float32 (an exported
    epsilon of 1e-5 reads back as 9.99999974e-06), tuples element-wise."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list))
                and len(a) == len(b) and all(same_attr(x, y) for x, y in zip(a, b)))
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and np.float32(a) == np.float32(b))
    return a == b


def match(p: Pattern, v: Value, b: Bindings) -> bool:
    """Match pattern p against value v, extending bindings b (which is mutated; copy first).

    Attributes are compared after the tensor arguments so `dim(?w, 0)` can see its variable.
    """
    if isinstance(p, PVar):
        bound = b.tensors.get(p.name)
        if bound is not None:
            return bound is v
        if b.admit is not None and not b.admit(p.name, v):
            return False
        b.tensors[p.name] = v
        return True
    node = v.node
    if node is None or node.op != p.op or v.index != p.out or len(node.inputs) != len(p.args):
        return False
    for sub, arg in zip(p.args, node.inputs):
        if arg is None or not match(sub, arg, b):
            return False
    return _attrs_match(p, node, b)


def _attrs_match(p: PNode, node: Node, b: Bindings) -> bool:
    """The node's attributes fit p's (binding parameters in b); unlisted ones at their default."""
    op = get_op(p.op)
    listed = dict(p.attrs)
    for key, actual in node.attrs:
        if key in listed:
            if not _match_attr(listed[key], actual, b):
                return False
        elif key in op.defaults and not same_attr(op.defaults[key], actual):
            return False
    return all(k in node._attr_map for k in listed)


def each_match(p: Pattern, v: Value, b: Bindings) -> Iterator[Bindings]:
    """Every way pattern p matches value v, extending bindings b: `match`, except that at a
    commutative op with two operands (Add, Mul) both operand orders are tried, so
    `(Add ?t ?c)` matches `Add(c, t)` too and a rule needs no twin per operand order.

    Yields b itself, extended, and undoes the extension when resumed: a caller that keeps a
    result copies it (`b.copy()`) before asking for the next one.

    Example:
        >>> [sorted(x.tensors) for x in each_match(p, v, Bindings())]   # doctest: +SKIP
    """
    if not p.commutes:  # the common case: one way at most, with the fast matcher
        mark = b.mark()
        if match(p, v, b):
            yield b
        b.undo(mark)
        return
    assert isinstance(p, PNode)
    node = v.node
    if node is None or node.op != p.op or v.index != p.out or len(node.inputs) != len(p.args):
        return
    for inputs in input_orders(p, node):
        mark = b.mark()
        if not p.args_commute:  # operands match one way at most: the fast matcher
            if match_node(p, node, inputs, b):
                yield b
        else:
            for _ in _each_match_args(p.args, inputs, 0, b):
                args_mark = b.mark()
                if _attrs_match(p, node, b):
                    yield b
                b.undo(args_mark)
        b.undo(mark)


def input_orders(p: PNode, node: Node) -> tuple[tuple[Value | None, ...], ...]:
    """The orders in which p's operands are matched against node's inputs: both at an Add or
    Mul (unless it adds a value to itself), else the written one."""
    ins = node.inputs
    return (ins, (ins[1], ins[0])) if p.swaps and ins[0] is not ins[1] else (ins,)


def match_node(p: PNode, node: Node, inputs: Sequence[Value | None], b: Bindings) -> bool:
    """`match` at a node already known to have p's op and output: p's operands against
    `inputs` in this order, then p's attributes (b is mutated, as with `match`)."""
    for a, x in zip(p.args, inputs):
        if x is None or not match(a, x, b):
            return False
    return _attrs_match(p, node, b)


def _each_match_args(args: tuple[Pattern, ...], inputs: Sequence[Value | None], i: int,
                     b: Bindings) -> Iterator[None]:
    if i == len(args):
        yield None
        return
    x = inputs[i]
    if x is None:
        return
    for _ in each_match(args[i], x, b):
        yield from _each_match_args(args, inputs, i + 1, b)


def _is_commutative(op: str) -> bool:
    try:
        return COMMUTATIVE in get_op(op).props
    except KeyError:  # not a registry op: never matched anyway
        return False


_MAX_ORDERS = 16  # operand orders kept per pattern (ties only; rarely reached)


def commuted_forms(p: Pattern, classes: Mapping[str, str]) -> list[Pattern]:
    """p with the operands of each Add/Mul sorted by their text with every variable replaced by
    its class in `classes` (e.g. `tensor4`), which no renaming within a class and no operand
    order changes; in every order where the two operands tie, at most 16. Patterns equal up to
    renaming and operand order give the same forms up to renaming: the basis of
    `superopt.core.rules.rule_key`.

    Example:
        >>> commuted_forms(parse("(Add ?b (MatMul ?x ?w))"), {})  # doctest: +SKIP
        [PNode(op='Add', ... args=(PNode(op='MatMul', ...), PVar(name='b')))]
    """
    return _commuted(p, classes)[1]


def _commuted(p: Pattern, classes: Mapping[str, str]) -> tuple[str, list[Pattern]]:
    """(p's class text, its commuted forms): the text orders a parent's operands."""
    if not isinstance(p, PNode):
        return "?" + classes.get(p.name, p.name), [p]
    subs = [_commuted(a, classes) for a in p.args]
    orders = [subs]
    if len(subs) == 2 and _is_commutative(p.op):
        if subs[1][0] < subs[0][0]:
            orders = [subs[::-1]]
        elif subs[1][0] == subs[0][0]:
            orders.append(subs[::-1])
    head = VAR_REF.sub(lambda m: "?" + classes.get(m.group(1), m.group(1)),
                       str(PNode(p.op, p.attrs, (), p.out)))
    text = head + "(" + " ".join(t for t, _ in orders[0]) + ")"
    variants: list[Pattern] = []
    for order in orders:
        for args in itertools.product(*(vs for _, vs in order)):
            variants.append(PNode(p.op, p.attrs, tuple(args), p.out))
            if len(variants) >= _MAX_ORDERS:
                return text, variants
    return text, variants


def resolve_attr(v: AttrValue, b: Bindings) -> Any:
    """The concrete attribute value of a pattern attribute under bindings."""
    if isinstance(v, Param):
        if v.name not in b.params:
            raise PatternError(f"parameter ?{v.name} is not bound")
        return b.params[v.name]
    if isinstance(v, DimOf):
        t = b.tensors[v.var]
        d = t.shape[v.axis] if t.shape is not None else None
        if not isinstance(d, int):
            raise PatternError(f"dim {v.axis} of ?{v.var} is not static")
        return d
    if isinstance(v, tuple):
        return tuple(resolve_attr(x, b) for x in v)
    return v


def build(p: Pattern, b: Bindings) -> Value:
    """Instantiate a pattern over IR values (hash-consed nodes with derived names).

    Raises ValueError (from shape inference) when the instantiation does not type-check.
    """
    if isinstance(p, PVar):
        return b.tensors[p.name]
    args = [build(a, b) for a in p.args]
    op = get_op(p.op)
    attrs = op.canonical_attrs({k: resolve_attr(v, b) for k, v in p.attrs})
    return Node.make(p.op, attrs, args).outputs[p.out]


def evaluate(p: Pattern, arrays: Mapping[str, np.ndarray],
             params: Mapping[str, Any] | None = None,
             memo: dict | None = None) -> np.ndarray:
    """Evaluate a pattern with numpy reference semantics on concrete arrays.

    >>> evaluate(parse("(Add ?a ?b)"), {"a": np.ones(2), "b": np.ones(2)}).tolist()
    [2.0, 2.0]
    """
    memo = {} if memo is None else memo
    if isinstance(p, PVar):
        return arrays[p.name]
    key = (p.op, p.attrs, p.args)
    if key not in memo:

        class _Shape:
            def __init__(self, a: np.ndarray) -> None:
                self.shape = a.shape

        b = Bindings({k: _Shape(a) for k, a in arrays.items()}, dict(params or {}))  # type: ignore
        op = get_op(p.op)
        attrs = op.canonical_attrs({k: resolve_attr(v, b) for k, v in p.attrs})
        ins = [evaluate(a, arrays, params, memo) for a in p.args]
        memo[key] = op.compute(attrs, ins)
    return memo[key][p.out]
