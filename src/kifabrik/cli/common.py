"""Shared helpers of the CLI commands."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console

from kifabrik.workspace import Workspace

out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

_ws: Workspace | None = None


def workspace() -> Workspace:
    """The workspace of $KIFABRIK_HOME, opened (and migrated) on first use."""
    global _ws
    if _ws is None:
        _ws = Workspace.open()
    return _ws


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def when(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def human(n: int | float | None) -> str:
    if n is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
