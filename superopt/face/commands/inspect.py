"""`superopt inspect FILE`: what is in an ONNX model, a rules file or (later) a report."""

from __future__ import annotations

import argparse
import json

from superopt.face.cli import add_verbosity


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect", help="summarize an ONNX model or a rules file",
        description="Summarize a file superopt reads or writes, recognized by its content: an "
                    "ONNX model (inputs, outputs, op counts, which ops superopt models and "
                    "which stay opaque, opsets, size, parameters) or a superopt rules file "
                    "(rules by proof result and by op).")
    p.add_argument("file", metavar="FILE",
                   help="an .onnx model, a superopt rules .json or an optimization report .json")
    p.add_argument("--json", action="store_true",
                   help="print machine-readable JSON (keys in the docstring of "
                        "superopt/face/inspection.py)")
    p.add_argument("--overwrite-input-shape", action="append", default=[], metavar="NAME:DIMS",
                   help="fix an input's shape before inspecting, e.g. input:1,3,224,224 "
                        "(repeatable; the name may be left out when the model has one input)")
    add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from superopt.face.commands.optimize import parse_input_shapes
    from superopt.face.inspection import summarize

    summary = summarize(args.file, parse_input_shapes(args.overwrite_input_shape))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    elif not args.quiet:
        summary.render(Console())
    return 0
