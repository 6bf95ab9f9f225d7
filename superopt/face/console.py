"""Console output that works with or without `rich`: tables, styled lines, phase progress.

`rich` is a dependency of the package, but the GPU machine runs superopt from an editable
install with `--no-deps`, where it may be missing. This is the one module that imports rich;
the commands print through it: with rich they get its tables, colours and progress bars;
without it, the same content as plain text.

Example:
    >>> console = Console(stderr=False)
    >>> table = Table(title="ops")
    >>> table.add_column("op"); table.add_column("count", justify="right")
    >>> table.add_row("Conv", "3")
    >>> print(table.plain())
    ops
    op    count
    ----  -----
    Conv      3
"""

from __future__ import annotations

import importlib.util
import re
import sys
from typing import Any, ClassVar

# Only the markup this project writes ([green]...[/green], [bold], [/]); text such as a shape
# "[1, 3, 224, 224]" must survive the plain fallback untouched.
_MARKUP = re.compile(r"\[/?(?:bold|dim|italic|red|green|yellow|blue|cyan|magenta)?\]")


def have_rich() -> bool:
    """Whether `rich` can be imported here."""
    return importlib.util.find_spec("rich") is not None


def format_bytes(n: float) -> str:
    """A size for people, in decimal units: `4951572` -> "4.95 MB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def escape(text: str) -> str:
    """`text` made safe to print with markup: brackets that look like style tags are escaped
    (rich's `escape`); without rich, unchanged.

    Example:
        >>> escape("model.onnx")
        'model.onnx'
    """
    if not have_rich():
        return text
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def strip_markup(text: str) -> str:
    """Drop rich style tags, keep everything else.

    Example:
        >>> strip_markup("[green]1.20x[/green] on [1, 3]")
        '1.20x on [1, 3]'
    """
    return _MARKUP.sub("", text)


class Table:
    """A table rendered by rich when available, else as aligned plain text."""

    def __init__(self, title: str | None = None, *, show_header: bool = True,
                 title_justify: str = "center") -> None:
        """`title_justify` ("left", "center", "right") places the title (rich only)."""
        self.title = title
        self.show_header = show_header
        self.title_justify = title_justify
        self.columns: list[tuple[str, str]] = []  # (header, justify)
        self.styles: list[str | None] = []  # a column's rich style, e.g. "bold"
        self.overflows: list[str | None] = []  # rich's overflow, e.g. "fold" for long patterns
        self.rows: list[list[str] | None] = []  # None marks a section break

    def add_column(self, header: str = "", justify: str = "left", style: str | None = None,
                   overflow: str | None = None) -> None:
        self.columns.append((header, justify))
        self.styles.append(style)
        self.overflows.append(overflow)

    def add_row(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])

    def add_section(self) -> None:
        self.rows.append(None)

    def plain(self) -> str:
        """The table as plain, aligned text (markup removed)."""
        headers = [h for h, _ in self.columns]
        body = [None if r is None else [strip_markup(c) for c in r] for r in self.rows]
        widths = [len(h) if self.show_header else 0 for h in headers]
        for row in body:
            for i, cell in enumerate(row or []):
                widths[i] = max(widths[i], len(cell))

        def line(cells: list[str]) -> str:
            out = []
            for (_, justify), width, cell in zip(self.columns, widths, cells):
                out.append(cell.rjust(width) if justify == "right" else cell.ljust(width))
            return "  ".join(out).rstrip()

        lines = [self.title] if self.title else []
        if self.show_header:
            lines += [line(headers), line(["-" * w for w in widths])]
        for row in body:
            lines.append(line(["-" * w for w in widths]) if row is None else line(row))
        return "\n".join(lines)

    def to_rich(self) -> Any:
        from rich.table import Table as RichTable

        table = RichTable(title=self.title, show_header=self.show_header,
                          title_justify=self.title_justify)  # type: ignore[arg-type]
        for (header, justify), style, overflow in zip(self.columns, self.styles, self.overflows):
            extra = {"overflow": overflow} if overflow else {}
            table.add_column(header, justify=justify, style=style,  # type: ignore[arg-type]
                             **extra)
        for row in self.rows:
            if row is None:
                table.add_section()
            else:
                table.add_row(*row)
        return table


class Console:
    """Prints styled lines and `Table`s through rich, or as plain text without it."""

    def __init__(self, stderr: bool = True, quiet: bool = False, width: int | None = None
                 ) -> None:
        """On a terminal rich uses its width; into a file or pipe, `width` (default 100)."""
        self.quiet = quiet
        self.stream = sys.stderr if stderr else sys.stdout
        self.rich = None
        if have_rich():
            from rich.console import Console as RichConsole

            self.rich = RichConsole(stderr=stderr, quiet=quiet)
            if not self.rich.is_terminal:  # logs: wide enough for the tables
                self.rich.width = max(width or 100, 40)

    @property
    def is_terminal(self) -> bool:
        if self.rich is not None:
            return bool(self.rich.is_terminal)
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def print(self, item: str | Table = "", markup: bool = True) -> None:
        """Print a line (with rich style tags unless `markup` is False) or a `Table`."""
        if self.quiet:
            return
        if self.rich is not None:
            if isinstance(item, Table):
                self.rich.print(item.to_rich())
            else:
                # Log lines (markup False) stay one line each in files and pipes.
                self.rich.print(item, markup=markup, highlight=markup, soft_wrap=not markup)
            return
        if isinstance(item, Table):
            text = item.plain()
        else:
            text = strip_markup(item) if markup else item
        print(text, file=self.stream, flush=True)


class _Bars:
    """A rich `Progress` (or None: no bars) as a context manager, for the progress classes."""

    bars: Any = None

    def __enter__(self):
        if self.bars is not None:
            self.bars.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.__exit__(*exc)


class PhaseProgress(_Bars):
    """Progress of a pipeline's phases: rich bars on a terminal; plain text, one line per new
    phase, without rich; nothing when quiet.

    `update(phase, done, total, detail)` matches `superopt.pipeline.optimize.PipelineProgress`.
    """

    LABELS: ClassVar[dict[str, str]] = {
        "load": "Loading", "measure": "Measuring ops", "search": "Searching",
        "gate": "Timing end to end", "check": "Checking numerics", "write": "Writing"}

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.bars = None
        if not quiet and console.rich is not None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bars = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(), console=console.rich, transient=True,
                disable=not console.is_terminal)
        self.tasks: dict[str, Any] = {}

    def update(self, phase: str, done: int, total: int | None, detail: str = "") -> None:
        if self.quiet:
            return
        label = self.LABELS.get(phase, phase)
        if self.bars is None:
            if phase not in self.tasks:
                self.tasks[phase] = True
                self.console.print(f"{label}: {detail}" if detail else label)
            return
        if phase not in self.tasks:
            self.tasks[phase] = self.bars.add_task(label, total=total, detail=detail)
        self.bars.update(self.tasks[phase], completed=done, total=total, detail=detail[:60])


class CountProgress(_Bars):
    """Counted progress bars, one per stage (`label  ━━━━  12/40  0:01`): rich bars on a
    terminal, nothing otherwise (the commands print their own summary lines).

    `update(stage, done, total)` creates the stage's bar on first use.
    """

    def __init__(self, console: Console, quiet: bool = False, label_width: int = 10) -> None:
        self.bars = None
        if not quiet and console.rich is not None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bars = Progress(
                TextColumn(f"{{task.description:<{label_width}}}"), BarColumn(),
                MofNCompleteColumn(), TimeElapsedColumn(), console=console.rich, transient=True,
                disable=not console.is_terminal)
        self.tasks: dict[str, Any] = {}

    def update(self, stage: str, done: int, total: int | None) -> None:
        if self.bars is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total)
        self.bars.update(self.tasks[stage], completed=done, total=total)
