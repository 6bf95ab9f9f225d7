"""Atomic file writes, and the interrupt discipline of the commands that write files.

Writes: every file superopt writes (models, rules, reports, benchmark results) goes through
`atomic_write`: a temp file in the target folder, then a rename, so an interrupted run never
leaves a half-written file and a failure is one clear `OutputError` line.

Interrupts: a command that writes runs inside `handle_interrupts()`, which installs SIGINT and
SIGTERM handlers that note the interrupt and raise `KeyboardInterrupt`. Python ignores an
exception raised inside a weakref callback or a `__del__` ("Exception ignored in ...
WeakValueDictionary ... KeyboardInterrupt") and the run would go on; so:
- the note stays: whatever commits results checks it (`raise_if_interrupted`): the rename in
  `atomic_write`, `commit_outputs`, the optimize pipeline's write phase;
- such a swallowed `KeyboardInterrupt` is not printed and is raised again a moment later
  (`sys.unraisablehook`), outside the callback;
- `critical()` sections (creating or renaming a temp file, cleaning up) cannot be cut: an
  interrupt arriving inside is raised as soon as the outermost one ends;
- after the first `KeyboardInterrupt` is raised, further signals are only noted, so cleanup
  runs to its end; every temp file created is tracked and removed (`discard_temps`).
Within `staged_outputs(paths)`, writes to those paths are staged (temp file written, rename
deferred) and `commit_outputs()` renames them all at once, in a critical section, unless an
interrupt was noted: a command's outputs appear together or not at all. After the commit,
signals are only noted: the run is done.

Example:
    >>> atomic_write("notes.txt", "hello\\n")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from superopt.core.errors import OutputError

# ---------------------------------------------------------------------------------------------
# interrupts


@dataclass
class _Interrupts:
    noted: bool = False  # a SIGINT or SIGTERM arrived while handlers were installed
    signum: int = 0  # the first signal noted
    depth: int = 0  # critical sections entered
    pending: bool = False  # noted inside a critical section, to raise when it ends
    stopping: bool = False  # a KeyboardInterrupt is on its way up: only note further signals
    done: bool = False  # the results are committed: only note further signals
    installed: bool = False
    temps: set[str] = field(default_factory=set)  # temp files created and not yet removed
    renamed: list[Path] = field(default_factory=list)  # files written since the handlers went in
    staged: dict[str, list[tuple[str, Path]]] | None = None  # path -> [(temp, path)] to commit


_state = _Interrupts()


def interrupted() -> bool:
    """Whether an interrupt (SIGINT, SIGTERM) arrived while `handle_interrupts` was active."""
    return _state.noted


def interrupt_signal() -> int:
    """The first interrupting signal's number (0 when none arrived)."""
    return _state.signum


def raise_if_interrupted() -> None:
    """Raise `KeyboardInterrupt` if an interrupt was noted (and the results are not committed):
    the check before anything is committed, so an interrupt swallowed on the way still stops
    the write."""
    if _state.noted and not _state.done:
        _state.stopping = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section no interrupt can cut: one arriving inside is noted and raised as
    `KeyboardInterrupt` when the outermost critical section ends."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0 and _state.pending:
            _state.pending = False
            if not _state.stopping and not _state.done:
                _state.stopping = True
                raise KeyboardInterrupt


def _on_signal(signum: int, frame: object) -> None:
    _state.noted = True
    _state.signum = _state.signum or signum
    if _state.done or _state.stopping:
        return
    if _state.depth:
        _state.pending = True
        return
    _state.stopping = True
    raise KeyboardInterrupt


def _deliver_again() -> None:
    import _thread

    if _state.installed and not _state.done:
        _thread.interrupt_main(_state.signum or signal.SIGINT)


def _unraisable(previous: Callable) -> Callable:
    def hook(unraisable) -> None:
        if _state.noted and isinstance(unraisable.exc_value, KeyboardInterrupt):
            # Swallowed by a weakref callback or a __del__: raise it again in a moment, from
            # wherever the run is then (not from inside this hook, which would swallow it too).
            _state.stopping = False
            timer = threading.Timer(0.002, _deliver_again)
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def handle_interrupts(restore: bool = True) -> Iterator[None]:
    """Run a command with the interrupt discipline of this module (see its doc).

    Installs the SIGINT/SIGTERM handlers and the unraisable hook (only in the main thread;
    elsewhere Python's defaults stay), resets the state, and on leaving removes every temp file
    still tracked. `restore` False leaves the handlers in place afterwards (a process that is
    about to exit: a late Ctrl-C is then only noted).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    previous_hook = sys.unraisablehook
    _reset()
    _state.installed = True
    sys.unraisablehook = _unraisable(previous_hook)
    for s in previous:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        _state.stopping = True  # from here on, signals are only noted
        with critical():
            discard_temps()
            _state.staged = None
            if restore:
                for s, handler in previous.items():
                    signal.signal(s, handler if handler is not None else signal.SIG_DFL)
                sys.unraisablehook = previous_hook
                _state.installed = False
        if restore:
            _reset()


def _reset() -> None:
    _state.noted = _state.pending = _state.stopping = _state.done = False
    _state.signum = _state.depth = 0
    _state.staged = None
    _state.renamed = []


def files_written() -> list[Path]:
    """The files renamed into place since `handle_interrupts` began, only the declared ones
    within `staged_outputs` (for the last line of an interrupted command: whether it may say
    that nothing was written)."""
    return list(_state.renamed)


def _drain_signals() -> None:
    """Run the handlers of signals already delivered (CPython runs them whenever a signal mask
    is set): an interrupt that has arrived is noted before a commit decides."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, [])


# ---------------------------------------------------------------------------------------------
# staged outputs


@contextlib.contextmanager
def staged_outputs(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Stage the writes to `paths` until `commit_outputs()`: `atomic_write` to one of them
    writes its temp file and defers the rename. Leaving without a commit removes the staged
    temp files: nothing is written."""
    _state.staged = {os.path.abspath(p): [] for p in paths}
    try:
        yield
    finally:
        with critical():
            staged, _state.staged = _state.staged, None
            for entries in (staged or {}).values():
                for tmp, _ in entries:
                    _remove_temp(tmp)


def commit_outputs() -> list[Path]:
    """Rename every staged write into place, unless an interrupt was noted (then
    `KeyboardInterrupt`, nothing renamed); afterwards the run counts as done and later signals
    are only noted. Returns the paths committed."""
    committed: list[Path] = []
    with critical():
        _drain_signals()
        if _state.noted and not _state.done:
            _state.stopping = True
            raise KeyboardInterrupt
        for entries in (_state.staged or {}).values():
            for tmp, path in entries:
                _rename(tmp, path)
                committed.append(path)
            entries.clear()
        _state.done = True
    return committed


# ---------------------------------------------------------------------------------------------
# writes


def check_output_path(path: str | os.PathLike) -> Path:
    """The path as a Path, if a file can be written there (its folder exists, it is no folder)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    return path


def make_temp(folder: str | os.PathLike, prefix: str, suffix: str) -> str:
    """Create an empty temp file in `folder` (mkstemp's name), tracked until `discard_temps`
    or `release_temp`; an interrupt cannot leave it untracked."""
    with critical():
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        os.close(fd)
        _state.temps.add(tmp)
    return tmp


def release_temp(tmp: str) -> None:
    """Remove a temp file made by `make_temp` (if it is still there) and stop tracking it."""
    with critical():
        _remove_temp(tmp)


def discard_temps() -> None:
    """Remove every temp file still tracked (a run interrupted or failed half way)."""
    with critical():
        for tmp in list(_state.temps):
            _remove_temp(tmp)


def _remove_temp(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    _state.temps.discard(tmp)


def _rename(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as e:
        _remove_temp(tmp)
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    _state.temps.discard(tmp)
    # With declared outputs, only they are the command's results (not, say, a cache file).
    if _state.installed and (_state.staged is None or os.path.abspath(path) in _state.staged):
        _state.renamed.append(path)


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[str], None]) -> Path:
    """Write text, bytes, or whatever `data(tmp_path)` writes, to `path` atomically.

    The file gets ordinary permissions (mkstemp's are 0600). Raises OutputError on failure and
    leaves no temp file behind. An interrupt noted before the rename raises KeyboardInterrupt
    instead of renaming; within `staged_outputs` the rename waits for `commit_outputs`.
    """
    path = check_output_path(path)
    try:
        tmp = make_temp(path.parent, f".{path.name}.", ".tmp")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    kept = False
    try:
        if not callable(data):
            with open(tmp, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        else:
            data(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with critical():
            staged = _state.staged.get(os.path.abspath(path)) if _state.staged else None
            if staged is not None:
                staged.append((tmp, path))
                kept = True
            else:
                raise_if_interrupted()
                _rename(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        if not kept:
            release_temp(tmp)
    return path
