"""`superopt rules list|show|stats|import-taso|merge|migrate|seal`: inspect a rules file
(default: the shipped DB), join files, migrate an old file, seal the shipped DB.

    superopt rules list [FILE]
    superopt rules show ID [FILE] [--onnx DIR]
    superopt rules stats [FILE]
    superopt rules import-taso FILE.pb -o FILE.json
    superopt rules merge FILE... -o FILE.json
    superopt rules migrate FILE -o FILE.json
    superopt rules seal [--check] FILE

`migrate` rewrites a `superopt-rules/1` file as `superopt-rules/2` (each variable's class from
its example shape; see `superopt.core.rules`); rules that cannot be migrated are listed, one
line each, and left out (exit 1). Every command that writes a rules file writes /2.

`show --onnx DIR` writes the rule's two sides, instantiated at its example shapes, as
DIR/src.onnx and DIR/dst.onnx with the same input names, so both can be fed the same data.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from superopt.core.errors import OutputError, RulesError
from superopt.face.commands import add_verbosity


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("rules", help="list, show and count the rules of a rules file",
                              description="Inspect a rules file (default: the shipped database).")
    sub = p.add_subparsers(dest="rules_command", metavar="RULES_COMMAND", required=True)
    lister = sub.add_parser("list", help="one line per rule: id, name, src => dst, proof")
    lister.add_argument("file", nargs="?", metavar="FILE", help="rules file (default: shipped)")
    add_verbosity(lister)
    lister.set_defaults(func=run_list)
    show = sub.add_parser("show", help="one rule in full; --onnx writes its two sides")
    show.add_argument("rule_id", metavar="ID", help="rule id (a unique prefix works) or name")
    show.add_argument("file", nargs="?", metavar="FILE", help="rules file (default: shipped)")
    show.add_argument("--onnx", metavar="DIR",
                      help="write DIR/src.onnx and DIR/dst.onnx at the example shapes")
    add_verbosity(show)
    show.set_defaults(func=run_show)
    stats = sub.add_parser("stats", help="counts by proof result, op and size")
    stats.add_argument("file", nargs="?", metavar="FILE", help="rules file (default: shipped)")
    add_verbosity(stats)
    stats.set_defaults(func=run_stats)
    imp = sub.add_parser("import-taso", help="convert TASO's rule collection (.pb)")
    imp.add_argument("file", metavar="FILE.pb", help="TASO's graph_subst.pb")
    imp.add_argument("-o", "--output", required=True, metavar="FILE.json",
                     help="where to write the imported rules (superopt-rules/2)")
    add_verbosity(imp)
    imp.set_defaults(func=run_import)
    merge = sub.add_parser("merge", help="join rules files into one (rules equal up to "
                                         "renaming and Add/Mul operand order once)")
    merge.add_argument("files", nargs="+", metavar="FILE", help="rules files to join")
    merge.add_argument("-o", "--output", required=True, metavar="FILE.json",
                       help="where to write the joined rules (atomically)")
    add_verbosity(merge)
    merge.set_defaults(func=run_merge)
    migrate = sub.add_parser("migrate", help="rewrite a superopt-rules/1 file as "
                                             "superopt-rules/2 (variable classes from examples)")
    migrate.add_argument("file", metavar="FILE", help="rules file to read (/1 or /2)")
    migrate.add_argument("-o", "--output", required=True, metavar="FILE.json",
                         help="where to write the /2 rules (atomically; may be FILE itself)")
    add_verbosity(migrate)
    migrate.set_defaults(func=run_migrate)
    seal = sub.add_parser("seal", help="record the digest of a rules file's rules in its meta "
                                       "(the shipped database is trusted only while it holds)")
    seal.add_argument("file", metavar="FILE", help="rules file to seal (rewritten atomically)")
    seal.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 unless the file's digest holds")
    add_verbosity(seal)
    seal.set_defaults(func=run_seal)
    from superopt.face.commands import rules_explain, rules_reach  # explain, reach

    rules_explain.register(sub)
    rules_reach.register(sub)


def _load(path: str | None):
    from superopt.core.rules import load_rules

    return load_rules(path)


def _console():
    from superopt.face.console import Console

    return Console(stderr=False)


def run_list(args: argparse.Namespace) -> int:
    from superopt.face.console import Table, escape

    rs = _load(args.file)
    table = Table(title=f"{len(rs.rules)} rules", title_justify="left")
    for col in ("id", "name", "src => dst", "proof"):
        table.add_column(col, overflow="fold")
    for r in rs.rules:
        text = " | ".join(map(str, r.src)) + "  =>  " + " | ".join(map(str, r.dst))
        table.add_row(r.id, escape(r.name), escape(text), str(r.proof.get("result", "-")))
    _console().print(table)
    return 0


def run_show(args: argparse.Namespace) -> int:
    rs = _load(args.file)
    rule = rs.by_id(args.rule_id)
    for line in describe(rule):
        print(line)
    if args.onnx:
        for line in write_onnx_pair(rule, Path(args.onnx)):
            print(line)
    return 0


def describe(rule) -> list[str]:
    """The rule in readable lines: patterns, variables, conditions, example, provenance, proof."""
    import json

    lines = [f"rule {rule.id}" + (f" ({rule.name})" if rule.name else "")]
    for i, (s, d) in enumerate(zip(rule.src, rule.dst)):
        tag = f" output {i}" if len(rule.src) > 1 else ""
        lines += [f"  src{tag}: {s}", f"  dst{tag}: {d}"]
    lines.append("  variables: " + ", ".join(
        f"?{k} ({v}, " + (f"rank {rule.ranks[k]})" if k in rule.ranks else "any rank)")
        for k, v in sorted(rule.vars.items())))
    if rule.params:
        lines.append("  parameters: " + ", ".join(f"?{k} ({t})"
                                                  for k, t in sorted(rule.params.items())))
    lines.append("  conditions: " + ("; ".join(rule.conditions) or "none"))
    if rule.example:
        lines.append("  example shapes: " + ", ".join(
            f"?{k} {'x'.join(map(str, v)) or 'scalar'}" for k, v in sorted(rule.example.items())))
    if rule.provenance:
        lines.append("  provenance: " + json.dumps(dict(rule.provenance), sort_keys=True))
    lines.append("  proof: " + (json.dumps(dict(rule.proof), sort_keys=True)
                                if rule.proof else "none"))
    return lines


@dataclass
class PairInstance:
    """A rule's two sides built over the same values (see `instantiate_pair`)."""

    values: dict  # variable -> superopt Value (a graph input, or a constant)
    inputs: list  # the values that are graph inputs, in variable order
    src: list  # one Value per source pattern
    dst: list  # one Value per target pattern
    helpers: bool  # weights are constants because a side uses a weight-only helper op


def instantiate_pair(rule, shapes=None, *, dtype: str = "float32", rng=None, prefix: str = "",
                     consts=None, params=None) -> PairInstance:
    """Build both sides of `rule` over the same values, at `shapes` (variable -> shape; default
    the example shapes): tensor variables are graph inputs named `prefix + name`; weight
    variables too, unless a side uses a weight-only helper op that ONNX lacks (e.g.
    EnlargeKernel), then they are constants with random values from `rng` (positive, so
    helpers like the BatchNorm fold stay defined) that the exporter folds. `consts` (variable
    -> array) fixes the values of constant weights; `params` binds the rule's attribute
    parameters (default: `example_params`). Raises RulesError when a side does not build at
    these shapes."""
    import numpy as np
    from onnx import helper as onnx_helper

    from superopt.core.ir import Value
    from superopt.core.ops import WEIGHT_ONLY, get_op
    from superopt.core.pattern import Bindings, build
    from superopt.core.types import TensorType

    shapes = rule.example if shapes is None else shapes
    if not shapes:
        raise RulesError(f"rule {rule.id} has no example shapes to instantiate it at")
    rng = np.random.default_rng(0) if rng is None else rng
    helpers = any(get_op(op).has(WEIGHT_ONLY) for op in rule.ops())
    np_dtype = np.dtype(dtype)
    elem = onnx_helper.np_dtype_to_tensor_dtype(np_dtype)
    values: dict = {}
    for name in sorted(shapes):
        shape = tuple(int(d) for d in shapes[name])
        if helpers and rule.vars.get(name) == "weight":
            arr = (consts or {}).get(name)
            if arr is None:
                arr = rng.uniform(0.5, 1.5, size=shape)
            values[name] = Value.const(np.asarray(arr).astype(np_dtype), name=prefix + name)
        else:
            values[name] = Value.input(prefix + name, TensorType(elem, shape))
    if params is None and rule.params:
        params = example_params(rule, values)
    sides = []
    for side, patterns in (("src", rule.src), ("dst", rule.dst)):
        b = Bindings(dict(values), dict(params or {}))
        try:
            sides.append([build(p, b) for p in patterns])
        except (ValueError, KeyError, IndexError) as e:
            raise RulesError(f"rule {rule.id}: the {side} side does not instantiate at "
                             f"{'its example' if shapes is rule.example else 'these'} shapes "
                             f"({e})") from None
    inputs = [v for v in values.values() if not v.is_const]
    return PairInstance(values, inputs, sides[0], sides[1], helpers)


# Values tried for a rule's attribute parameters when none are given, by the attribute they
# stand for (the op's default first), then by type.
_PARAM_TRIES = {"group": (1, 2, 3, 4, 8), "strides": ((1, 1), (2, 2)),
                "pads": ((0, 0, 0, 0), (1, 1, 1, 1)), "dilations": ((1, 1),),
                "epsilon": (1e-5,), "axis": (0, 1, -1)}
_TYPE_TRIES = {"int": (1, 2, 3, 4), "float": (1e-5, 0.5), "ints": ((1, 1), (0, 0, 0, 0)),
               "floats": ((1.0,),), "str": ("NOTSET",)}


def example_params(rule, values) -> dict:
    """Attribute parameter values at which both sides of `rule` build over `values` (variable ->
    IR value): the attributes' usual values first, e.g. `group` 1, then 2, 3, ... The proof
    covers every value; this only picks a concrete one to show or test the rule at. Raises
    RulesError when no tried combination builds."""
    import itertools

    from superopt.core.pattern import Bindings, build

    if not rule.params:
        return {}
    attr_of = rule.param_attributes()
    names = sorted(rule.params)
    tries = [_PARAM_TRIES.get(attr_of.get(n, ""), _TYPE_TRIES.get(rule.params[n], ()))
             for n in names]
    for combo in itertools.islice(itertools.product(*tries), 256):
        params = dict(zip(names, combo))
        try:
            for patterns in (rule.src, rule.dst):
                b = Bindings(dict(values), dict(params))
                for p in patterns:
                    build(p, b)
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        return params
    raise RulesError(f"rule {rule.id}: no tried value of its parameters "
                     f"({', '.join('?' + n for n in names)}) builds both sides at these shapes")


def write_onnx_pair(rule, folder: Path, seed: int = 0, *, shapes=None,
                    dtype: str = "float32") -> list[str]:
    """Write the two sides at the example shapes as folder/src.onnx and folder/dst.onnx.

    `shapes` (variable -> shape) instantiates the rule at other shapes; `dtype` is the tensors'
    element type ("float32" or "float64").

    Variables become graph inputs with the same names on both sides. Where a side computes on
    weights with a helper op that ONNX lacks (e.g. EnlargeKernel), weight variables become
    constants with random values (the exporter folds the helper away); the returned lines say so.
    """
    import numpy as np

    from superopt.core.ir import Graph
    from superopt.core.onnx_io import save

    if not folder.is_dir():
        if folder.exists() or not folder.parent.is_dir():
            raise OutputError(f"{folder}: not a folder that exists or can be created")
        folder.mkdir()
    pair = instantiate_pair(rule, shapes, dtype=dtype, rng=np.random.default_rng(seed))
    lines = []
    for side, outs in (("src", pair.src), ("dst", pair.dst)):
        graph = Graph(pair.inputs, [(f"out{i}", v) for i, v in enumerate(outs)])
        path = folder / f"{side}.onnx"
        save(graph, path)
        lines.append(f"wrote {path}")
    if pair.helpers:
        lines.append("note: weight variables are constants with random values in both files "
                     "(helper ops on weights were folded); inputs are the tensor variables")
    else:
        lines.append("note: every variable is a graph input, named alike in both files")
    return lines


def run_stats(args: argparse.Namespace) -> int:
    from superopt.face.console import Table

    rs = _load(args.file)
    by_result: dict[str, int] = {}
    by_op: dict[str, int] = {}
    by_size: dict[str, int] = {}
    for r in rs.rules:
        res = str(r.proof.get("result", "-"))
        by_result[res] = by_result.get(res, 0) + 1
        for op in r.ops():
            by_op[op] = by_op.get(op, 0) + 1
        size = f"{r.src_size()} -> {r.dst_size()} ops"
        by_size[size] = by_size.get(size, 0) + 1
    console = _console()
    console.print(f"{len(rs.rules)} rules in {args.file or 'the shipped database'}")
    for title, counts in (("proof result", by_result), ("rules using op", by_op),
                          ("size (src -> dst)", by_size)):
        table = Table(title=title, title_justify="left")
        table.add_column(title.split(" (")[0])
        table.add_column("rules", justify="right")
        for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(k, str(v))
        console.print(table)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    """Union of several rules files; each file's meta is kept under "parts". A rule equal to
    an earlier one up to renaming and Add/Mul operand order (`rule_key`) is kept once; of the
    two, a proved rule wins over an unproved one, then a named rule (a hand-written family's)
    over an unnamed one."""
    from superopt.core.rules import rule_key, save_rules

    rules: dict[str, object] = {}  # rule_key -> rule, in first-seen order
    parts = []
    duplicates = 0
    for path in args.files:
        rs = _load(path)
        parts.append({"file": Path(path).name, "rules": len(rs.rules), **rs.meta})
        for r in rs.rules:
            key = rule_key(r)
            if key not in rules:
                rules[key] = r
                continue
            duplicates += 1
            old = rules[key]
            if (r.proved, bool(r.name)) > (old.proved, bool(old.name)):
                rules[key] = r
    save_rules(list(rules.values()), Path(args.output), {"merged": parts})
    if not args.quiet:
        extra = f" ({duplicates} duplicates left out)" if duplicates else ""
        print(f"wrote {args.output}: {len(rules)} rules from {len(args.files)} files{extra}")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """Read FILE in any known format and write it as superopt-rules/2; rules that cannot be
    migrated (a /1 rule with a variable missing from its example) are listed and left out."""
    import sys

    from superopt.core.rules import FORMAT, SEAL_KEY, load_rules, save_rules

    rs = load_rules(args.file, strict=False)
    meta = {k: v for k, v in rs.meta.items() if k != SEAL_KEY}
    if rs.format != FORMAT:
        meta["migrated_from"] = rs.format
    out = Path(args.output)
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist")
    save_rules(rs.rules, out, meta)
    for line in rs.skipped:
        print(f"not migrated: {line}", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {out}: {len(rs.rules)} rules ({rs.format} -> {FORMAT})"
              + (f", {len(rs.skipped)} not migrated" if rs.skipped else "")
              + ("; the input was sealed: re-verify and `superopt rules seal` it"
                 if SEAL_KEY in rs.meta else ""))
    return 1 if rs.skipped else 0


def run_seal(args: argparse.Namespace) -> int:
    """Write meta.rules_sha256, the digest of the rules as loaded (`rules_digest`); `--check`
    only compares. `make rules` seals the shipped database after writing it."""
    from superopt.core.rules import SEAL_KEY, save_rules, seal_state, sealed

    rs = _load(args.file)
    state = seal_state(rs)
    if args.check:
        if not args.quiet or state != "intact":
            print(f"{args.file}: {len(rs.rules)} rules, digest {state}")
        return 0 if state == "intact" else 1
    done = sealed(rs)
    save_rules(done, Path(args.file))
    if not args.quiet:
        print(f"sealed {args.file}: {len(rs.rules)} rules, {SEAL_KEY} "
              f"{done.meta[SEAL_KEY][:16]}... (was {state})")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from superopt.core.rules import save_rules

    src = Path(args.file)
    if not src.is_file():
        raise RulesError(f"{src}: no such file")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist")
    try:
        from superopt.verifier.taso import import_taso
    except ImportError as e:
        raise RulesError(f"the TASO importer is not available ({e})") from None
    rules = import_taso(str(src))
    save_rules(rules, out, {"imported_from": src.name, "format_source": "TASO graph_subst.pb"})
    if not args.quiet:
        print(f"wrote {out}: {len(rules)} rules imported from {src}")
    return 0
