"""Progress bars for long steps (rich, on stderr). Silent with KIFABRIK_QUIET=1 or inside `silenced()`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, emoji=False, highlight=False)
_silenced = 0


def _quiet() -> bool:
    return _silenced > 0 or os.environ.get("KIFABRIK_QUIET", "") not in ("", "0")


@contextmanager
def silenced() -> Iterator[None]:
    """No bars and no info lines inside (a dry run that counts work must not show a second run)."""
    global _silenced
    _silenced += 1
    try:
        yield
    finally:
        _silenced -= 1


def duration(seconds: float) -> str:
    """`45s`, `3m 05s`, `1h 12m`."""
    s = max(0, round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m {s % 60:02d}s" if s < 3600 else f"{s // 3600}h {s % 3600 // 60:02d}m"


@contextmanager
def bar(description: str, total: int | None = None, *, bytes_: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar; yields `advance(n)`. Without `total` it shows a spinner and the elapsed time."""
    if _quiet():
        yield lambda n: None
        return
    if total is None:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    else:
        columns = [TextColumn("{task.description}"), BarColumn(),
                   DownloadColumn() if bytes_ else TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
        if total is None:
            progress.update(task, total=1, completed=1)


def info(message: str) -> None:
    """A line for the user on stderr (printed as is: no markup, no emoji codes)."""
    if not _quiet():
        console.print(message, markup=False)
