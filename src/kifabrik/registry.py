"""One registry for every pluggable thing (stages, quality suites, serve backends, agent tools, ...).

    register("stage", "generate")(StageDef(...))

Recipes name components by `(kind, name)`, never by import path. Components are found lazily:
the package metadata declares, per kind, which module provides which name (entry points in the
group `kifabrik.<kind>` (`-` written `_`), see pyproject.toml); that module is imported the first time its name is
looked up, and registers the component on import. The entry points are the only name -> module
map, and a plugin package adds its own components the same way, without touching kifabrik.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
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


@functools.cache
def declared(kind: str) -> dict[str, EntryPoint]:
    """The lazy factories of `kind`: name -> entry point whose module registers that name."""
    return {ep.name: ep for ep in entry_points(group="kifabrik." + kind.replace("-", "_"))}


def _import_provider(kind: str, name: str) -> None:
    """Import the module declared for `name` (or for its group, `group.tool` -> `group`)."""
    if name in _REGISTRY.get(kind, {}):
        return
    found = declared(kind)
    ep = found.get(name) or found.get(name.split(".", 1)[0])
    if ep is not None:
        ep.load()


def lookup(kind: str, name: str) -> Any:
    """Return the component `name` of `kind` (importing its module now), or raise with the known names."""
    _import_provider(kind, name)
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise KifabrikError(f"unknown {kind} {name!r}", hint=f"known {kind}s: {', '.join(names(kind)) or 'none'}")
    return table[name]


def load_all(kind: str, group: str | None = None) -> None:
    """Import every declared provider of `kind` (only those of `group`, when given)."""
    for name, ep in declared(kind).items():
        if group is None or name == group:
            ep.load()


def names(kind: str) -> list[str]:
    """All names of `kind`, registered or declared (nothing is imported), sorted."""
    return sorted(set(_REGISTRY.get(kind, {})) | set(declared(kind)))


def registered(kind: str) -> list[str]:
    """The names of `kind` whose modules are imported already, sorted."""
    return sorted(_REGISTRY.get(kind, {}))
