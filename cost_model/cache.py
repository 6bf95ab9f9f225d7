"""A disk cache of measured costs, shared safely between processes.

Measuring one op through ONNX Runtime takes milliseconds to seconds; the search asks for the
same (op, attributes, shapes) many times, in many runs. `CostCache` keeps every measured cost in
one SQLite file (`$SUPEROPT_CACHE_DIR/costs.sqlite3`, else `$XDG_CACHE_HOME/superopt/`, else
`~/.cache/superopt/`) in WAL mode with a busy timeout, so parallel workers and concurrent
`superopt` runs read and write it at once.

Keys are opaque strings the caller builds, normally with `make_key`. A key must contain
everything the cost depends on: the op, its attributes, input shapes and dtypes, *and* the
runtime it was measured on: execution provider, device name and ONNX Runtime version
(`superopt.runtime.runtime_fingerprint(device)` gives those three). The cache itself does not know
about devices; a key without them would hand a CPU timing to a CUDA search.

The cache never stops a run: a corrupt file is replaced by a new, empty one (it is only a
cache: nothing in it is worth keeping, and copies moved aside would pile up), and an unwritable
directory (or any later SQLite failure) degrades to an in-memory cache; each says so once with
`warnings.warn` (the command line prints it as one line).

`cache_files(folder)` lists what a cache folder holds (the cost cache, its SQLite side files,
copies earlier versions moved aside); `superopt cache info|clear` shows and removes them.

Example:
    >>> cache = CostCache(":memory:")
    >>> key = make_key(op="Relu", shape=[1, 64], provider="CPUExecutionProvider")
    >>> cache.put(key, 1.5e-6)
    >>> cache.get(key)
    1.5e-06
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "costs.sqlite3"
# Side files of the SQLite file, and copies of corrupt files earlier versions moved aside.
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
CORRUPT_MARK = ".corrupt-"
# Bumped when the table layout changes; a file with another version is moved aside and rebuilt.
SCHEMA_VERSION = 1
# Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT_S = 30.0


def make_key(**parts: Any) -> str:
    """A stable key for `parts`: the sha256 of their JSON with sorted keys.

    Tuples and lists hash alike, numpy scalars and arrays as their values, sets sorted, bytes
    as hex; dict order never matters.

    Example:
        >>> make_key(op="Add", shape=(2, 3)) == make_key(shape=[2, 3], op="Add")
        True
    """
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy here
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot build a cache key from {type(value).__name__}: {value!r}")


def default_cache_dir() -> Path:
    """Where the cost cache lives unless told otherwise."""
    if os.environ.get("SUPEROPT_CACHE_DIR"):
        return Path(os.environ["SUPEROPT_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "superopt"
    return Path.home() / ".cache" / "superopt"


class CostCache:
    """Measured costs (seconds) by key, on disk, shared between processes.

    `path` is a directory (the file `costs.sqlite3` is created in it), a file path ending in
    `.sqlite3`/`.sqlite`/`.db`, ":memory:" for a cache that is never written, or None for
    `default_cache_dir()`. Safe to use from several threads; a forked child reopens the file.

    Example:
        >>> with CostCache(tmp_path) as cache:          # doctest: +SKIP
        ...     cache.put_many({"a": 1e-3, "b": 2e-3})
        ...     len(cache)
        2
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._memory: dict[str, float] | None = None
        if path is not None and os.fspath(path) == ":memory:":
            self.path: Path | None = None
            self._memory = {}
            return
        self.path = _resolve_file(Path(path).expanduser() if path is not None else None)
        self._open()

    # -- public API --------------------------------------------------------------------------

    @property
    def persistent(self) -> bool:
        """True while entries go to disk; False after falling back to memory."""
        return self._memory is None

    def get(self, key: str) -> float | None:
        """The cost stored under `key`, or None."""
        with self._lock:
            if self._memory is not None:
                return self._memory.get(key)
            try:
                row = (
                    self._connection()
                    .execute("SELECT seconds FROM costs WHERE key = ?", (key,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                self._degrade(f"cannot read the cost cache {self.path} ({exc})", stacklevel=3)
                return None
            return None if row is None else float(row[0])

    def put(self, key: str, seconds: float) -> None:
        """Store `seconds` under `key`, replacing what was there."""
        self.put_many({key: seconds})

    def put_many(self, items: Mapping[str, float] | Iterable[tuple[str, float]]) -> None:
        """Store many costs in one transaction (much faster than many `put`s)."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        for key, seconds in pairs:
            _check_entry(key, seconds)
        with self._lock:
            if self._memory is None:
                now = time.time()
                rows = [(key, float(seconds), now) for key, seconds in pairs]
                try:
                    with self._transaction() as conn:
                        conn.executemany(
                            "INSERT OR REPLACE INTO costs (key, seconds, updated) VALUES (?, ?, ?)",
                            rows,
                        )
                    return
                except sqlite3.Error as exc:
                    self._degrade(f"cannot write the cost cache {self.path} ({exc})")
            assert self._memory is not None
            self._memory.update((key, float(seconds)) for key, seconds in pairs)

    def clear(self) -> None:
        """Remove every entry."""
        with self._lock:
            if self._memory is not None:
                self._memory.clear()
                return
            try:
                with self._transaction() as conn:
                    conn.execute("DELETE FROM costs")
            except sqlite3.Error as exc:
                self._degrade(f"cannot clear the cost cache {self.path} ({exc})", stacklevel=3)
                self._memory = {}

    def __len__(self) -> int:
        with self._lock:
            if self._memory is not None:
                return len(self._memory)
            try:
                return int(self._connection().execute("SELECT COUNT(*) FROM costs").fetchone()[0])
            except sqlite3.Error as exc:
                self._degrade(f"cannot read the cost cache {self.path} ({exc})", stacklevel=3)
                return 0

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def close(self) -> None:
        """Close the file (the cache can still be used; it reopens on demand)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def __enter__(self) -> CostCache:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.persistent else "memory"
        return f"CostCache({where!r})"

    # -- opening, recovery, fallback ---------------------------------------------------------

    def _open(self) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._degrade(f"cannot create the cost cache folder {self.path.parent} ({exc})")
            return
        try:
            self._conn = _connect(self.path)
            return
        except _Corrupt as exc:
            self._replace_corrupt(str(exc))
        except sqlite3.Error as exc:
            self._degrade(f"cannot open the cost cache {self.path} ({exc})")
            return
        try:  # once more, on a fresh file (or on one another process rebuilt meanwhile)
            self._conn = _connect(self.path)
        except (sqlite3.Error, _Corrupt) as exc:
            self._degrade(f"cannot rebuild the cost cache {self.path} ({exc})")

    def _replace_corrupt(self, reason: str) -> None:
        """Remove the unreadable file (a new one is created in its place), its WAL and
        shared-memory files (a rebuilt database must not replay them), and the copies of
        corrupt files that earlier versions moved aside."""
        assert self.path is not None
        for suffix in ("", *SIDE_SUFFIXES):
            with contextlib.suppress(FileNotFoundError):  # another process removed it first
                os.remove(f"{self.path}{suffix}")
        for stale in self.path.parent.glob(f"{self.path.name}{CORRUPT_MARK}*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        warnings.warn(
            f"the cost cache {self.path} was unreadable ({reason}); replaced it with a new one",
            stacklevel=4,
        )

    def _degrade(self, reason: str, stacklevel: int = 4) -> None:
        """Switch to an in-memory cache for the rest of this object's life, saying so once."""
        self.close()
        if self._memory is None:
            self._memory = {}
            warnings.warn(
                f"{reason}; measured costs are kept in memory only", stacklevel=stacklevel
            )

    def _connection(self) -> sqlite3.Connection:
        # SQLite connections must not cross fork(): a child opens its own.
        if self._conn is None or self._pid != os.getpid():
            assert self.path is not None
            self._pid = os.getpid()
            self._conn = _connect(self.path)
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        # IMMEDIATE takes the write lock up front, so a busy database is waited for here
        # (busy timeout) instead of failing halfway through the transaction.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class _Corrupt(Exception):
    """The file exists but is not a cost cache SQLite can read."""


def cache_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """The cost cache's files in `folder` (default `default_cache_dir()`): the SQLite file, its
    side files and any copies of corrupt files moved aside by earlier versions."""
    folder = Path(folder) if folder is not None else default_cache_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{FILE_NAME}*") if p.is_file())


def _resolve_file(path: Path | None) -> Path:
    if path is None:
        return default_cache_dir() / FILE_NAME
    if path.suffix in (".sqlite3", ".sqlite", ".db") and not path.is_dir():
        return path
    return path / FILE_NAME


def _check_entry(key: object, seconds: object) -> None:
    if not isinstance(key, str):
        raise TypeError(f"cache keys are strings, got {type(key).__name__}")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ValueError(f"a cost must be a finite number of seconds, got {seconds!r}")


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the cache file; `_Corrupt` if it is not a usable cache."""
    # Autocommit mode: reads need no transaction, writes use explicit BEGIN IMMEDIATE.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # WAL lets readers go on while one process writes; on file systems without shared
        # memory (some network mounts) SQLite keeps its rollback journal, which is still safe.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough for a cache, much faster
        conn.execute("BEGIN IMMEDIATE")  # also proves the file is writable
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise _Corrupt(f"schema version {version}, expected {SCHEMA_VERSION}")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS costs ("
                " key TEXT PRIMARY KEY, seconds REAL NOT NULL, updated REAL NOT NULL)"
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("SELECT COUNT(*) FROM costs").fetchone()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _looks_corrupt(exc):
            raise _Corrupt(str(exc)) from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _looks_corrupt(exc: sqlite3.DatabaseError) -> bool:
    message = str(exc).lower()
    # "file is not a database", "database disk image is malformed", a foreign table layout.
    return not isinstance(exc, sqlite3.OperationalError) or any(
        text in message for text in ("not a database", "malformed", "no such column")
    )
