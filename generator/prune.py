"""Pruning candidates as TASO does, and the float64 check every written candidate passes.

Stages, in order (each counted by the caller):
1. `weight_only`: no runtime variable (the exporter folds weight-only work anyway);
2. `renaming`: equal to an earlier candidate up to renaming variables (of the same kind);
3. `supergraph`: a smaller rule plus shared context: some output has the same root operator on
   both sides with arguments equal by fingerprint, or is the very same term on both sides; or
   a multi-output candidate whose outputs share no operator on either side (several
   single-output rules side by side);
   `specialization`: equal to another candidate with two of its variables merged (the
   instance `(x a) a = x (a a)` of associativity adds nothing to the general rule);
4. `subgraph`: both sides share a subterm that can be abstracted into a fresh variable while the
   rule still holds numerically (so the rule is the smaller one applied in a context);
5. `check`: the float64 check at fresh random inputs, at the same with their signs flipped,
   at inputs shifted to be mostly negative, at inputs scaled by 4 and by -4, and at a second
   set of shapes (larger dims, kernels scaled to match); a candidate that fails is a false
   match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from superopt.core.pattern import VAR_REF, Pattern, PNode, PVar, evaluate
from superopt.generator.candidates import Candidate
from superopt.generator.enumeration import Enumerator
from superopt.generator.opset import InputSpec

RTOL = 1e-7


def renaming_key(src: list[str], dst: list[str], kinds: Mapping[str, str]) -> str:
    """The rule text with variables renamed in order of first appearance (kind kept).

    >>> renaming_key(["(Relu ?y)"], ["(Relu ?y)"], {"y": "tensor"})
    '(Relu ?tensor0) => (Relu ?tensor0)'
    """
    names: dict[str, str] = {}

    def rename(m: re.Match) -> str:
        v = m.group(1)
        if v not in names:
            kind = kinds.get(v, "tensor")
            names[v] = f"{kind}{sum(1 for n in names.values() if n.startswith(kind))}"
        return "?" + names[v]

    return VAR_REF.sub(rename, " | ".join(src) + " => " + " | ".join(dst))


def specializations(src: list[str], dst: list[str], kinds: Mapping[str, str],
                    shapes: Mapping[str, tuple]) -> set[str]:
    """Renaming keys of the rules made from this one by merging two of its variables of the
    same kind and shape (e.g. `?b` := `?a`): those instances follow from it and add nothing.

    >>> sorted(specializations(["(MatMul (MatMul ?x ?a) ?b)"], ["(MatMul ?x (MatMul ?a ?b))"],
    ...        {"x": "tensor", "a": "weight", "b": "weight"}, {"x": (2, 4), "a": (4, 4),
    ...        "b": (4, 4)}))
    ['(MatMul (MatMul ?tensor0 ?weight0) ?weight0) => (MatMul ?tensor0 (MatMul ?weight0 ?weight0))']
    """
    names = sorted(set(VAR_REF.findall(" ".join(src + dst))))
    out = set()
    for i, u in enumerate(names):
        for v in names[i + 1:]:
            if kinds.get(u) != kinds.get(v) or shapes.get(u) != shapes.get(v):
                continue
            pattern = re.compile(r"\?" + re.escape(v) + r"\b")
            out.add(renaming_key([pattern.sub("?" + u, t) for t in src],
                                 [pattern.sub("?" + u, t) for t in dst], kinds))
    return out


def is_supergraph(c: Candidate, enum: Enumerator) -> bool:
    """Some output is the same term on both sides, or has the same root op and attributes
    on both sides over arguments with equal fingerprints (a smaller rule inside a context)."""
    for ts, td in zip(c.src.outputs, c.dst.outputs):
        if ts == td:
            return True
        ns, nd = enum.t_node[ts], enum.t_node[td]
        if ns < 0 or nd < 0 or enum.t_out[ts] != enum.t_out[td]:
            continue
        if enum.n_inst[ns] != enum.n_inst[nd] or enum.n_pattrs[ns] != enum.n_pattrs[nd]:
            continue
        if all(enum.t_hash[a] == enum.t_hash[b] for a, b in zip(enum.n_args[ns], enum.n_args[nd])):
            return True
    return False


def is_decomposable(c: Candidate) -> bool:
    """A multi-output candidate whose outputs share no operator on either side is just several
    single-output rules side by side."""
    if len(c.src.patterns) < 2:
        return False

    def shares(patterns: list[Pattern]) -> bool:
        seen: set = set()
        for p in patterns:
            terms = _subterms(p, set())
            if seen & terms:
                return True
            seen |= terms
        return False

    return not shares(c.src.patterns) and not shares(c.dst.patterns)


def _subterms(p: Pattern, out: set) -> set:
    if isinstance(p, PNode):
        out.add(p)
        for a in p.args:
            _subterms(a, out)
    return out


def _replace(p: Pattern, old: Pattern, new: Pattern) -> Pattern:
    if p == old:
        return new
    if isinstance(p, PNode):
        return PNode(p.op, p.attrs, tuple(_replace(a, old, new) for a in p.args), p.out)
    return p


class Checker:
    """Evaluates patterns on random inputs at the enumeration shapes or the second shape set."""

    def __init__(self, inputs: list[InputSpec], seed: int) -> None:
        self.specs = {s.name: s for s in inputs}
        rng = np.random.default_rng(seed + 7919)
        self.base = {s.name: s.sample(rng) for s in inputs}
        self.alt = {s.name: s.sample(rng, alt=True) for s in inputs}
        # The base draw with signs flipped: a coincidence of signs (a positive scalar, a product
        # that happened to be positive everywhere) cannot hold in both draws.
        self.flipped = {n: (a if self.specs[n].positive else -a) for n, a in self.base.items()}
        # Mostly negative data: identities that hold only where maxima come out non-negative
        # (pooling commuting with squaring on small images) fail here.
        self.shifted = {s.name: (s.sample(rng) if s.positive else s.sample(rng) - 2.0)
                        for s in inputs}
        # Larger magnitudes: identities that need a scalar below a threshold ((1 - c) Relu(t)
        # = Relu((1 - c) t) only for c <= 1) fail here.
        self.scaled = {n: (a if self.specs[n].positive else 4.0 * a) for n, a in self.base.items()}
        self.scaled_flipped = {n: (a if self.specs[n].positive else -a)
                               for n, a in self.scaled.items()}

    @staticmethod
    def _close(a: np.ndarray, b: np.ndarray) -> bool:
        if a.shape != b.shape:
            return False
        scale = max(float(np.max(np.abs(a))) if a.size else 0.0, 1.0)
        return bool(np.all(np.abs(a - b) <= RTOL * scale))

    def holds(self, src: list[Pattern], dst: list[Pattern],
              extra: Mapping[str, np.ndarray] | None = None, draw: str = "base") -> bool:
        """Every src output equals its dst output (float64, relative to the output's scale) on
        one draw of inputs: "base", "flipped", "shifted", "scaled", "scaled_flipped"
        (enumeration shapes) or "alt"."""
        arrays = dict(getattr(self, draw))
        if extra:
            arrays.update(extra)
        try:
            with np.errstate(all="ignore"):
                ms, md = {}, {}
                return all(self._close(np.asarray(evaluate(s, arrays, memo=ms)),
                                       np.asarray(evaluate(d, arrays, memo=md)))
                           for s, d in zip(src, dst))
        except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError):
            return False

    def check(self, src: list[Pattern], dst: list[Pattern]) -> bool:
        """The final check: fresh inputs at the enumeration shapes (also with signs flipped,
        shifted to mostly negative, and scaled by 4 and -4) and at the second shapes."""
        return all(self.holds(src, dst, draw=d)
                   for d in ("base", "flipped", "shifted", "scaled", "scaled_flipped", "alt"))

    def abstracts(self, c: Candidate, rng: np.random.Generator) -> bool:
        """True if some subterm shared by both sides can become a fresh variable and the rule
        still holds (then this candidate is that smaller rule in a context)."""
        shared = set()
        for p in c.src.patterns:
            _subterms(p, shared)
        dst_terms: set = set()
        for p in c.dst.patterns:
            _subterms(p, dst_terms)
        shared &= dst_terms
        if not shared:
            return False
        for term in sorted(shared, key=lambda t: (-t.size(), str(t))):
            value = evaluate(term, self.base)
            fresh = PVar("_shared")
            src = [_replace(p, term, fresh) for p in c.src.patterns]
            dst = [_replace(p, term, fresh) for p in c.dst.patterns]
            if self.holds(src, dst, extra={"_shared": rng.standard_normal(np.shape(value))}):
                return True
        return False
