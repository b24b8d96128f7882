"""Small file helpers (core): one JSONL reader, the limits on user input, one way to write a file atomically.

A reader of a file that is being replaced sees the old or the new content, never half of it:
every write goes to a hidden temporary file in the same folder, is flushed, then renamed.

Every JSON or YAML document a user gives (recipes, train configs, policies, tasks, organisation
files, dataset rows) is read under the same two limits, `MAX_DEPTH` and `MAX_FILE_BYTES`: a
policy nested thousands of levels deep is refused with one message naming the file, instead of
ending in Python's `RecursionError`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError

#: Deepest nesting of lists and mappings accepted in JSON or YAML input (real recipes and policies stay under 10).
MAX_DEPTH = 64
#: Largest JSON or YAML file read whole (recipes, configs, policies, task files); dataset rows are limited per line.
MAX_FILE_BYTES = 4 * 2**20


class NestingError(ValueError):
    """JSON or YAML input nested deeper than `MAX_DEPTH` (or, through YAML aliases, too large);
    the message says so without the place."""

    def __init__(self, limit: int = MAX_DEPTH, message: str | None = None) -> None:
        super().__init__(message or f"nested deeper than {limit} levels (the limit for JSON and YAML input, "
                                    "kifabrik.files.MAX_DEPTH)")


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise `NestingError` when lists/mappings in `value` nest deeper than `limit`."""
    stack = [(value, 1)]  # iterative: the check itself must not hit the recursion limit
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            raise NestingError(limit)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def parse_json(text: str | bytes) -> Any:
    """`json.loads` under `MAX_DEPTH`: `NestingError` for deep input, `json.JSONDecodeError` for bad syntax.

    Python's json parser recurses once per level and raises `RecursionError` near 1,000 levels;
    that case is the same error as any other input over the limit.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise NestingError() from None
    check_depth(value)
    return value


def load_json_text(text: str, source: str) -> Any:
    """`parse_json`, with a too-deep document reported as a `KifabrikError` naming `source`."""
    try:
        return parse_json(text)
    except NestingError as exc:
        raise KifabrikError(f"{source}: {exc}", hint="flatten the document; nothing was read from it") from None


def read_input(path: Path) -> str:
    """The UTF-8 text of a JSON/YAML file a user gives, refused when it is larger than `MAX_FILE_BYTES`.

    `FileNotFoundError` and `UnicodeDecodeError` pass through, so callers keep their own messages.
    """
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise KifabrikError(f"{path}: the file is {size:,} bytes, more than the limit of {MAX_FILE_BYTES:,} bytes "
                            "for a recipe, config, policy or task file (kifabrik.files.MAX_FILE_BYTES)",
                            hint="is it the right file? put large data in a dataset (JSONL) instead")
    return path.read_text(encoding="utf-8")


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
    """(line number, object) for every non-empty line; a bad or too deeply nested line raises naming file:line."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = parse_json(line)
            except json.JSONDecodeError as exc:
                raise KifabrikError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})",
                                    hint="each line must be one JSON object") from None
            except NestingError as exc:
                raise KifabrikError(f"{path}:{number}: {exc}", hint="each line must be one flat JSON object") from None
            if not isinstance(value, dict):
                raise KifabrikError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}",
                                    hint="each line must be one JSON object")
            yield number, value


def read_jsonl(path: Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every object of a JSONL file (an empty list for a missing file when `missing_ok`)."""
    if missing_ok and not path.exists():
        return []
    return [obj for _, obj in iter_jsonl(path)]
