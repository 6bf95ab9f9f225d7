"""`superopt cache info` and `superopt cache clear`: where superopt keeps what it caches.

Two caches share one folder: measured op costs (`costs.sqlite3`, `superopt.cost_model.cache`)
and the verifier's answers for rules re-proved before use (`proofs.json`,
`superopt.pipeline.trust`). The folder is `$SUPEROPT_CACHE_DIR`, else
`$XDG_CACHE_HOME/superopt`, else `~/.cache/superopt`. Both are caches: clearing them only costs
time (ops are measured again, user rules re-proved).

JSON keys of `superopt cache info --json`: folder, source (what chose it: "SUPEROPT_CACHE_DIR",
"XDG_CACHE_HOME" or "default"), exists (bool), files ([{name, kind ("cost cache", "cost cache
side file", "corrupt copy" or "proof cache"), bytes}]), total_bytes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from superopt.core.errors import OutputError
from superopt.face.commands import add_verbosity

HELP_LINE = ("measured op costs and re-proved rules are cached in $SUPEROPT_CACHE_DIR (else "
             "$XDG_CACHE_HOME/superopt, else ~/.cache/superopt); `superopt cache info` shows it, "
             "`superopt cache clear` empties it")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cache", help="show or clear the cost and proof caches",
        description="Measured op costs (costs.sqlite3) and the answers of re-proved rules "
                    "(proofs.json) are cached in one folder: $SUPEROPT_CACHE_DIR, else "
                    "$XDG_CACHE_HOME/superopt, else ~/.cache/superopt. Set SUPEROPT_CACHE_DIR "
                    "to move it; clearing it only costs time.")
    sub = p.add_subparsers(dest="cache_command", metavar="CACHE_COMMAND", required=True)
    info = sub.add_parser("info", help="the cache folder, its files and their sizes")
    info.add_argument("--json", action="store_true",
                      help="print machine-readable JSON (keys in the docstring of "
                           "superopt/face/commands/cache.py)")
    add_verbosity(info)
    info.set_defaults(func=run_info)
    clear = sub.add_parser("clear", help="remove the cost cache and the proof cache")
    add_verbosity(clear)
    clear.set_defaults(func=run_clear)


def cache_folder() -> tuple[Path, str]:
    """The cache folder, and what chose it ("SUPEROPT_CACHE_DIR", "XDG_CACHE_HOME", "default")."""
    from superopt.cost_model.cache import default_cache_dir

    source = ("SUPEROPT_CACHE_DIR" if os.environ.get("SUPEROPT_CACHE_DIR") else
              "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "default")
    return default_cache_dir(), source


def cache_entries(folder: Path) -> list[tuple[Path, str]]:
    """The files of both caches in `folder`, each with its kind."""
    from superopt.cost_model.cache import CORRUPT_MARK, FILE_NAME, cache_files
    from superopt.pipeline.trust import CACHE_FILE

    entries = []
    for path in cache_files(folder):
        kind = ("cost cache" if path.name == FILE_NAME else
                "corrupt copy" if CORRUPT_MARK in path.name else "cost cache side file")
        entries.append((path, kind))
    proofs = folder / CACHE_FILE
    if proofs.is_file():
        entries.append((proofs, "proof cache"))
    return entries


def info(folder: Path | None = None) -> dict[str, Any]:
    """What `superopt cache info --json` prints."""
    source = "given"
    if folder is None:
        folder, source = cache_folder()
    files = []
    for path, kind in cache_entries(folder):
        try:
            size = path.stat().st_size
        except OSError:  # removed meanwhile by another process
            continue
        files.append({"name": path.name, "kind": kind, "bytes": size})
    return {"folder": str(folder), "source": source, "exists": folder.is_dir(), "files": files,
            "total_bytes": sum(f["bytes"] for f in files)}


def run_info(args: argparse.Namespace) -> int:
    from superopt.face.console import Console, Table, format_bytes

    doc = info()
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    if args.quiet:
        return 0
    console = Console(stderr=False, width=80)
    chosen = {"SUPEROPT_CACHE_DIR": "set by $SUPEROPT_CACHE_DIR",
              "XDG_CACHE_HOME": "$XDG_CACHE_HOME/superopt; set $SUPEROPT_CACHE_DIR to move it",
              "default": "the default; set $SUPEROPT_CACHE_DIR to move it"}[doc["source"]]
    console.print(f"cache folder: {doc['folder']} ({chosen})", markup=False)
    if not doc["files"]:
        console.print("empty" if doc["exists"] else "not created yet", markup=False)
        return 0
    table = Table(show_header=True)
    table.add_column("file")
    table.add_column("what")
    table.add_column("size", justify="right")
    for f in doc["files"]:
        table.add_row(f["name"], f["kind"], format_bytes(f["bytes"]))
    table.add_section()
    table.add_row("total", "", format_bytes(doc["total_bytes"]))
    console.print(table)
    console.print("clear with: superopt cache clear", markup=False)
    return 0


def clear(folder: Path | None = None) -> list[tuple[Path, int]]:
    """Remove both caches' files from `folder` (default: the cache folder); returns each file
    removed with its size. The folder itself, and anything else in it, stay."""
    if folder is None:
        folder, _ = cache_folder()
    removed = []
    for path, _ in cache_entries(folder):
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        except OSError as e:
            raise OutputError(f"cannot remove {path} ({e.strerror})") from None
        removed.append((path, size))
    return removed


def run_clear(args: argparse.Namespace) -> int:
    from superopt.face.console import format_bytes

    folder, _ = cache_folder()
    removed = clear(folder)
    if not args.quiet:
        if removed:
            total = sum(size for _, size in removed)
            names = ", ".join(path.name for path, _ in removed)
            print(f"removed {len(removed)} file(s) from {folder} ({format_bytes(total)}): {names}")
        else:
            print(f"nothing to remove in {folder}")
    return 0
