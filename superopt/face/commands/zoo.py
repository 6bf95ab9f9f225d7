"""`superopt zoo list` and `superopt zoo build NAME -o FILE`: the TASO benchmark models."""

from __future__ import annotations

import argparse

from superopt.core.errors import UsageError
from superopt.face.commands import add_verbosity


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "zoo", help="list or build the benchmark models",
        description="The TASO paper's benchmark models, built with onnx.helper (random weights, "
                    "batch 1, float32, opset 17).")
    sub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    lister = sub.add_parser("list", help="names and descriptions")
    add_verbosity(lister)
    lister.set_defaults(func=run_list)
    builder = sub.add_parser("build", help="write one model as an ONNX file")
    builder.add_argument("name", metavar="NAME", help="a name from `superopt zoo list`")
    builder.add_argument("-o", "--output", required=True, metavar="FILE.onnx",
                         help="where to write the model (written atomically)")
    builder.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    add_verbosity(builder)
    builder.set_defaults(func=run_build)


def run_list(args: argparse.Namespace) -> int:
    from superopt.face.console import Console, Table
    from superopt.zoo import MODELS

    table = Table(title="superopt zoo", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, (_, description) in MODELS.items():
        table.add_row(name, description)
    Console(stderr=False).print(table)
    return 0


def run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from superopt import zoo
    from superopt.core.onnx_io import write_model

    if args.name not in zoo.MODELS:
        raise UsageError(f"unknown zoo model {args.name!r}; valid names: "
                         f"{', '.join(zoo.list_models())}")
    folder = Path(args.output).parent
    if not folder.is_dir():  # fail before spending seconds building the model
        from superopt.core.errors import OutputError

        raise OutputError(f"{args.output}: folder {folder} does not exist")
    write_model(zoo.build(args.name, seed=args.seed), args.output)
    if not args.quiet:
        print(f"wrote {args.output} ({args.name}, seed {args.seed})")
    return 0
