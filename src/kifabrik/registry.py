"""One registry for every pluggable thing (stages, merge methods, metrics, ...).

    @register("stage", "generate")
    def generate_stage(...): ...

Recipes name components by `(kind, name)`, never by import path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from kifabrik.errors import KifabrikError

T = TypeVar("T")

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(kind: str, name: str) -> Callable[[T], T]:
    """Register `obj` as component `name` of `kind`; a duplicate name raises."""

    def decorator(obj: T) -> T:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = obj
        return obj

    return decorator


def lookup(kind: str, name: str) -> Any:
    """Return the component `name` of `kind`, or raise with the known names."""
    table = _REGISTRY.get(kind, {})
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise KifabrikError(f"unknown {kind} {name!r}", hint=f"known {kind}s: {known}")
    return table[name]


def names(kind: str) -> list[str]:
    """All registered names of `kind`, sorted."""
    return sorted(_REGISTRY.get(kind, {}))
