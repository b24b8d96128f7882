"""Compact listings for narrow terminals, as `docker ps` and `git log --oneline` print them.

Plain columns separated by two spaces, no borders, one line per record: short ids, relative
times, and cells too long for their column cut with `…` instead of wrapped. The one flexible
column shrinks so that a line fits the terminal (`COLUMNS`, 80 when not a terminal). `--wide`
prints every cell in full; `--json` prints the records.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime

from kifabrik.cli.common import out

GAP = "  "
MIN_FLEX = 10


def cut(text: str, width: int, keep: str | None = None) -> str:
    """`text` in at most `width` characters, with `…` where it was cut.

    With `keep`, the part from its last occurrence on stays whole: `kundendienst-anfr…@3`.
    """
    if len(text) <= width:
        return text
    tail = text[text.rfind(keep):] if keep and keep in text else ""
    if tail and len(tail) < width - 1:
        return text[:width - 1 - len(tail)] + "…" + tail
    return text[:max(0, width - 1)] + "…"


def ago(ts: datetime | None, now: datetime | None = None) -> str:
    """`40s ago`, `5m ago`, `3h ago`, `6d ago`, or the date for anything older than 30 days."""
    if ts is None:
        return "-"
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - aware).total_seconds())
    if seconds < 0:
        return aware.strftime("%Y-%m-%d")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago" if unit != "d" or seconds < 30 * 86400 else aware.strftime("%Y-%m-%d")
    return f"{seconds}s ago"


def took(start: datetime | None, end: datetime | None) -> str:
    """`850ms`, `42s`, `3m 05s`, `2h 14m`; `-` while running."""
    if start is None or end is None:
        return "-"
    seconds = (end - start).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m {s % 60:02d}s" if s < 3600 else f"{s // 3600}h {s % 3600 // 60:02d}m"


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None = None,
           caps: dict[int, int] | None = None, flex: int | None = None, keep: str | None = None) -> list[str]:
    """The lines of a column listing.

    Args:
        headers: Column titles.
        rows: Cells, one sequence per line.
        width: Most characters per line (None: no limit, the `--wide` listing).
        caps: Most characters of a column (index -> width), cells cut with `…`.
        flex: The column that shrinks (down to `MIN_FLEX`) so that a line fits `width`.
        keep: What the cut cells keep at their end (see `cut`), e.g. `@` for the version of a name.
    """
    caps = dict(caps or {}) if width is not None else {}
    cells = [[cut(c, caps[i], keep) if i in caps else c for i, c in enumerate(row)] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if width is not None and flex is not None:
        over = sum(widths) + len(GAP) * (len(widths) - 1) - width
        if over > 0:
            widths[flex] = max(MIN_FLEX, len(headers[flex]), widths[flex] - over)
            cells = [[cut(c, widths[flex], keep) if i == flex else c for i, c in enumerate(r)] for r in cells]
    return [GAP.join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in [list(headers), *cells]]


def terminal_width() -> int:
    """`COLUMNS` if set, else the terminal's width, else 80."""
    return shutil.get_terminal_size().columns


def echo(line: str) -> None:
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def show(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wide: bool,
         caps: dict[int, int] | None = None, flex: int | None = None, keep: str | None = None) -> None:
    """Print a listing fitted to the terminal, or in full with `wide`."""
    for line in render(headers, rows, width=None if wide else terminal_width(), caps=caps, flex=flex, keep=keep):
        echo(line)
