"""Progress bars for long steps (rich, on stderr). Silent with KIFABRIK_QUIET=1."""

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


def _quiet() -> bool:
    return os.environ.get("KIFABRIK_QUIET", "") not in ("", "0")


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
