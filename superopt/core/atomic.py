"""Atomic file writes: a temp file in the target folder, then a rename.

Every file superopt writes (models, rules, reports, benchmark results) goes through here, so an
interrupted run never leaves a half-written file and a failure is one clear `OutputError` line.

Example:
    >>> atomic_write("notes.txt", "hello\\n")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from superopt.core.errors import OutputError


def check_output_path(path: str | os.PathLike) -> Path:
    """The path as a Path, if a file can be written there (its folder exists, it is no folder)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    return path


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[str], None]) -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, to `path` atomically.

    The file gets ordinary permissions (mkstemp's are 0600). Raises OutputError on failure and
    leaves no temp file behind.
    """
    path = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, str):
                f.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                f.write(data)
        if callable(data):
            data(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
