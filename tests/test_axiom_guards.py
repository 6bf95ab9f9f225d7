"""Every axiom holds at every shape class its guard admits (issue #15: guarded axioms).

For each axiom, concrete cases are enumerated over ranks 0-4 and dims in {1, 2, 3}: its declared
instances mutated (dims renamed, leading dims added or dropped, single dims changed, down to
rank 0 and size-1 dims), one shape for all its tensors, and independent random shapes, with
integers near the instance's or derived from the dims (axes, offsets, conv and pool
parameters; shape axioms at every k in -1..4) and schema values (permutations). Integer draws
are retried (cheaply, on numpy values) until the premise admits the case.

A case is admitted where the axiom's premise can hold, exactly as the prover reads it
(`axioms.formula`): its guard and the typing facts of every primitive on both sides, evaluated
concretely and three-valued (`Concrete`: a premise that reads a dim past a rank is UNKNOWN and
admits the case, as it could hold symbolically). At an admitted case, if either side is defined
both must be, and they must be exactly equal (Z3 over the elements; shape axioms: the same
integer, not one left unconstrained); a typing fact false where its op applies fails too. A
guard must also admit its axiom's declared instances and some enumerated case (it is not
vacuous). The random choices come from SEED, printed in every failure message; the file runs
in about half a minute.
"""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from superopt.core.axiom_spec import Axiom, I, Instance
from superopt.core.ops import get_op
from superopt.verifier.algebra import Concrete, UnknownValue
from superopt.verifier.axioms import AXIOMS
from superopt.verifier.bounded import check_axiom_case

# (Run `python tests/test_axiom_guards.py` for the per-axiom counts of each result.)

SEED = 15001
DIMS = (1, 2, 3)
MAX_RANK = 4
CASES = 160  # candidate shape sets per axiom (before dedup; shape axioms also vary k)
MAX_ELEMS = 64  # the biggest tensor a case may have (keeps the exact check cheap)

_INT_RANGES = {
    "k": range(-1, 5), "ax": range(-1, 5), "bx": range(-1, 5),
    "s": range(-1, 4), "l": range(0, 4), "m": range(0, 4),
    "sh": (1, 2, 3), "sw": (1, 2, 3), "pt": (0, 1, 2), "pl": (0, 1, 2), "pb": (0, 1, 2),
    "pr": (0, 1, 2), "g": (1, 2, 3, 4), "kh": (1, 2, 3), "kw": (1, 2, 3), "cip": (0, 1),
}


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _mutate(shapes: dict[str, tuple[int, ...]], rng: random.Random) -> dict:
    """One mutation of an instance's shapes: dims renamed consistently into {1, 2, 3},
    leading dims added or dropped (some tensors or all), single dims changed."""
    out = dict(shapes)
    if rng.random() < 0.8:
        values = sorted({d for s in out.values() for d in s})
        ren = {v: rng.choice(DIMS) for v in values}
        if rng.random() < 0.5:  # keep distinct values distinct where {1, 2, 3} allows
            pool = list(DIMS) if len(values) <= 3 else list(DIMS) * 2
            rng.shuffle(pool)
            ren = {v: pool[k % len(pool)] for k, v in enumerate(values)}
        out = {n: tuple(ren[d] for d in s) for n, s in out.items()}
    if rng.random() < 0.6:
        names = [n for n in out if rng.random() < 0.5] or [rng.choice(list(out))]
        if rng.random() < 0.3:
            names = list(out)
        lead = rng.choice(DIMS)
        for n in names:
            s = out[n]
            if rng.random() < 0.5 and len(s) < MAX_RANK:
                out[n] = (lead if rng.random() < 0.7 else rng.choice(DIMS),) + s
            elif s:
                out[n] = s[1:] if rng.random() < 0.7 else s[-1:]
    if rng.random() < 0.3:
        n = rng.choice(list(out))
        if out[n]:
            s = list(out[n])
            s[rng.randrange(len(s))] = rng.choice(DIMS)
            out[n] = tuple(s)
    return out


def _random_shapes(names, rng: random.Random) -> dict:
    return {n: tuple(rng.choice(DIMS) for _ in range(rng.randint(0, MAX_RANK))) for n in names}


def _ints(ax: Axiom, base: dict, shapes: dict, rng: random.Random) -> dict:
    """The instance's integers, some replaced by a value from the name's range or one derived
    from the case's dims (a dim, half of one less 1, a ratio of two: what groups, offsets and
    centred pads are made of), so that tight guards still admit cases."""
    dims = [d for s in shapes.values() for d in s]
    derived = sorted(set(dims) | {(d - 1) // 2 for d in dims} |
                     {p // q for p in dims for q in dims if p % q == 0})
    out = {}
    for n in ax.ints:
        if n == "k":
            continue
        u = rng.random()
        if n in base and (n not in _INT_RANGES or u < 0.5):
            out[n] = base[n]
        elif u < 0.75 and derived and n != "eps":
            out[n] = rng.choice(derived)
        else:
            out[n] = rng.choice(list(_INT_RANGES.get(n, range(0, 3))))
    return out


def _perm(n: int, rng: random.Random) -> tuple[int, ...]:
    p = list(range(n))
    rng.shuffle(p)
    return tuple(p)


def _static(ax: Axiom, shapes: dict, base, rng: random.Random):
    if ax.schema is None:
        return None
    if rng.random() < 0.3 and base is not None:
        return base
    rank = len(shapes[ax.tensors[0]]) if rng.random() < 0.8 else rng.randint(0, MAX_RANK)
    if ax.schema == "perm":
        if rank >= 2 and rng.random() < 0.5:  # the swap of the last two axes (MatMul's)
            return tuple(range(rank - 2)) + (rank - 1, rank - 2)
        return _perm(rank, rng)
    if ax.schema == "perm2":
        return _perm(rank, rng), _perm(rank, rng)
    if ax.schema == "perm_axis":  # the prover only makes axes of the permutation
        rank = max(rank, 1)
        return _perm(rank, rng), rng.randrange(rank)
    raise ValueError(ax.schema)


class _Numeric(Concrete):
    """`Concrete` on numpy values (ones) through the ops' numpy `compute`: the same guard,
    typing facts and definedness, cheaply, to pick integers the premise admits."""

    def tensor(self, name, shape):
        return np.ones(tuple(shape))

    def _op(self, op, attrs, inputs):
        d = get_op(op)
        with np.errstate(all="ignore"):
            return d.compute(d.canonical_attrs(attrs), list(inputs))


def _admits(ax: Axiom, shapes: dict, ints: dict, static) -> bool:
    A = _Numeric()
    t = {n: A.tensor(n, shapes[n]) for n in ax.tensors}
    try:  # shape axioms: judged at k = 0 here (every k is enumerated afterwards)
        built = ax.body(A, t, {**ints, **({"k": 0} if "k" in ax.ints else {})}, static)
    except UnknownValue:
        return True
    return built is not None and A.all(built[2], *A.typing) is not False


def cases(ax: Axiom, rng: random.Random, n: int = CASES, tries: int = 8) -> list[Instance]:
    """Candidate cases for `ax` (see the module docstring), deduplicated. For each shape set
    up to `tries` draws of integers and schema value, until the premise admits one."""
    out, seen = [], set()
    for j in range(n):
        base = ax.instances[j % len(ax.instances)]
        if j % 4 == 3:
            shapes = _random_shapes(ax.tensors, rng)
        elif j % 8 == 1:  # one shape for all (what element-wise and Concat axioms admit)
            one = _random_shapes(["x"], rng)["x"]
            shapes = {name: one for name in ax.tensors}
        else:
            shapes = _mutate(dict(base.shapes), rng)
        if any(_size(s) > MAX_ELEMS for s in shapes.values()):
            continue
        for _ in range(tries if (ax.ints or ax.schema) else 1):
            ints = _ints(ax, dict(base.ints), shapes, rng)
            static = _static(ax, shapes, base.static, rng)
            if _admits(ax, shapes, ints, static):
                break
        ks = _INT_RANGES["k"] if "k" in ax.ints else [None]
        for k in ks:
            inst = I(shapes, {**ints, **({} if k is None else {"k": k})}, static)
            key = (tuple(sorted(inst.shapes.items())), tuple(sorted(inst.ints.items())),
                   repr(static))
            if key not in seen:
                seen.add(key)
                out.append(inst)
    return out


def judge(ax: Axiom, rng: random.Random, n: int = CASES) -> tuple[Counter, list[str]]:
    """Results per kind over the enumerated cases, and a line per failure."""
    counts: Counter = Counter()
    bad = []
    for inst in cases(ax, rng, n):
        res = check_axiom_case(ax, inst, timeout_s=10.0)
        counts[res["result"]] += 1
        if res["result"] in ("refuted", "unknown"):
            bad.append(f"{ax.name} at shapes {dict(inst.shapes)} ints {dict(inst.ints)} "
                       f"static {inst.static}: {res}")
    return counts, bad


@pytest.mark.parametrize("axiom", AXIOMS, ids=[a.name for a in AXIOMS])
def test_axiom_holds_wherever_its_guard_admits(axiom):
    rng = random.Random(f"{SEED}:{axiom.name}")
    counts, bad = judge(axiom, rng)
    assert not bad, f"seed {SEED}: " + "\n".join(bad[:5])
    # Not vacuous: the guard admits the declared instances and some enumerated cases.
    for n, inst in enumerate(axiom.instances):
        assert check_axiom_case(axiom, inst)["result"] == "holds", (axiom.name, n)
    assert counts["holds"] >= 1, f"seed {SEED}: {axiom.name} admits no enumerated case {counts}"


def test_cases_cover_ranks_0_to_4_and_size_1_dims():
    rng = random.Random(SEED)
    ax = next(a for a in AXIOMS if a.name == "MatMul-assoc")
    shapes = [s for inst in cases(ax, rng, 200) for s in inst.shapes.values()]
    assert {len(s) for s in shapes} == set(range(MAX_RANK + 1))
    assert any(1 in s for s in shapes) and any(3 in s for s in shapes)


# ---------------------------------------------------------------------------------------------
# the test of the test: wrong or under-guarded axioms are caught


def _variant(name: str, guard) -> Axiom:
    """An axiom with its guard replaced by guard(A, t, i, original_guard)."""
    ax = next(a for a in AXIOMS if a.name == name)

    def body(A, t, i, s):
        built = ax.body(A, t, i, s)
        return None if built is None else (built[0], built[1], guard(A, t, i, built[2]))
    return Axiom(ax.name + "-unguarded", ax.ops, ax.tensors, ax.ints, body, ax.instances,
                 ax.triggers, ax.kind, ax.schema, ax.term)


# (Some guards only restate the typing facts, e.g. Split-Concat-right's: without them the
# axiom is still right, so they are not in this list; a grouped Conv-Concat-weights is in
# tests/test_axioms_bounded.py.)
@pytest.mark.parametrize("name", ["MatMul-assoc", "MatMul-Split-rows", "MatMul-Concat-cols",
                                  "dim-MatMul", "MatMul-Add-left", "Conv-identity-kernel",
                                  "Conv-EnlargeKernel", "Concat-Concat-swap"])
def test_an_unguarded_axiom_is_caught(name):
    wrong = _variant(name, lambda A, t, i, g: True)
    counts, bad = judge(wrong, random.Random(f"{SEED}:{name}"))
    assert bad, f"seed {SEED}: {name} without its guard passed: {counts}"


def test_the_old_rank_matmul_is_caught():
    # rank(a b) == rank(a) where the ranks agree: wrong for 1-D x 1-D (a scalar).
    ax = next(a for a in AXIOMS if a.name == "rank-MatMul")
    old = Axiom("rank-MatMul-old", ax.ops, ax.tensors, ax.ints,
                lambda A, t, i, s: (A.rank(A.matmul(t["a"], t["b"])), A.rank(t["a"]),
                                    A.rank(t["a"]) == A.rank(t["b"])),
                ax.instances[:1], kind="rank", term=ax.term)
    counts, bad = judge(old, random.Random(f"{SEED}:rank-MatMul-old"))
    assert bad, f"seed {SEED}: {counts}"
    assert check_axiom_case(old, I({"a": (3,), "b": (3,)}))["result"] == "refuted"


def test_matmul_assoc_with_a_1d_middle_operand_is_caught():
    ax = _variant("MatMul-assoc", lambda A, t, i, g: True)
    res = check_axiom_case(ax, I({"a": (4, 4), "b": (4,), "c": (4, 4)}))
    assert res["result"] == "refuted", res


def test_a_guard_that_only_reads_an_unconstrained_dim_admits_the_case():
    # dim(a, 5) of a rank-2 tensor is free symbolically: such a guard could hold, so the
    # check must not treat the case as excluded.
    ax = _variant("MatMul-assoc", lambda A, t, i, g: A.dim(t["a"], 5) == 3)
    res = check_axiom_case(ax, I({"a": (2, 2), "b": (2,), "c": (2, 2)}))
    assert res["result"] == "refuted" and res["guard"] == "unknown", res


def test_enumeration_is_deterministic():
    ax = next(a for a in AXIOMS if a.name == "Concat-assoc")
    a = cases(ax, random.Random(SEED))
    b = cases(ax, random.Random(SEED))
    assert a == b and len(a) > 10
    assert len({len(i.shapes["a"]) for i in a}) >= 3


if __name__ == "__main__":  # per-axiom counts of each result
    for _ax in AXIOMS:
        _counts, _bad = judge(_ax, random.Random(f"{SEED}:{_ax.name}"))
        print(f"{_ax.name:34s} {dict(_counts)}" + (f"  FAILS: {_bad[0]}" if _bad else ""))
