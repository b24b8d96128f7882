"""Small file helpers (core): one JSONL reader and one way to write a file atomically.

A reader of a file that is being replaced sees the old or the new content, never half of it:
every write goes to a hidden temporary file in the same folder, is flushed, then renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` whole or not at all (temporary file, fsync, rename)."""
    tmp = _tmp(path)
    with open(tmp, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` so that `dst` is complete whenever it exists."""
    tmp = _tmp(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-empty line; a bad line raises naming file:line."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise KifabrikError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})",
                                    hint="each line must be one JSON object") from None
            if not isinstance(value, dict):
                raise KifabrikError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}",
                                    hint="each line must be one JSON object")
            yield number, value


def read_jsonl(path: Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every object of a JSONL file (an empty list for a missing file when `missing_ok`)."""
    if missing_ok and not path.exists():
        return []
    return [obj for _, obj in iter_jsonl(path)]
