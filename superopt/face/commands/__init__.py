"""The subcommands of `superopt`, one module each: its parser (`register(subparsers)`), its
logic and its rendering. `superopt.face.cli` imports them; they never import the cli.

What every command shares lives here: `add_verbosity`.
"""

from __future__ import annotations

import argparse


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """-q / -v, shared by every subcommand."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="print more detail, and full tracebacks on errors")
