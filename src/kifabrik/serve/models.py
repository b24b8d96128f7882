"""Which model names a server answers to, and the backend (loaded on first use) behind each.

Every registered model (kind "model") and every adapter (kind "adapter") is a model name.
An adapter is served by the backend of its base model (lineage edge `base_model`), so all
adapters on one base share that base's weights in memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models.runtime import base_of
from kifabrik.serve.backends.base import (
    AdapterSpec,
    Backend,
    EngineOptions,
    backend_class,
)
from kifabrik.serve.errors import model_not_found
from kifabrik.workspace import Workspace


@dataclass(frozen=True)
class Served:
    """One model name of the API."""

    name: str
    record: ArtifactRecord  # the model or adapter that runs (what policies are checked against)
    base: ArtifactRecord  # the base model whose weights are loaded
    fach_llm: ArtifactRecord | None = None  # set when the name is a Fach-LLM (model + knowledge base)

    @property
    def adapter(self) -> str | None:
        return self.record.name if self.record.kind == "adapter" else None


def discover(ws: Workspace, only: list[str] | None = None) -> dict[str, Served]:
    """The latest version of every model and adapter (or of the names in `only`)."""
    latest: dict[str, ArtifactRecord] = {}
    for kind in ("model", "adapter", "fach-llm"):
        for rec in ws.catalog.list_artifacts(kind):
            if rec.status != "ok":
                continue
            other = latest.get(rec.name)
            if other is not None and other.kind != rec.kind:
                raise KifabrikError(f"the name {rec.name!r} is both a {other.kind} and a {rec.kind}",
                                    hint="serve one of them with --models, or re-create one under another name")
            if other is None or rec.version > other.version:
                latest[rec.name] = rec
    if only:
        missing = [n for n in only if n not in latest]
        if missing:
            raise KifabrikError(f"--models: no model or adapter named {', '.join(map(repr, missing))}",
                                hint="list them with `kifabrik models list` and `kifabrik artifacts list --kind adapter`")
        latest = {n: latest[n] for n in only}
    from kifabrik.models.runtime import resolve

    served = {}
    for name, rec in sorted(latest.items()):
        if rec.kind == "fach-llm":
            runnable = resolve(ws, rec)
            served[name] = Served(name, runnable.record, runnable.base, fach_llm=rec)
        else:
            served[name] = Served(name, rec, base_of(ws, rec) if rec.kind == "adapter" else rec)
    return served


class ModelTable:
    """Model names -> backends; one backend per base model, loaded once, on first use."""

    def __init__(self, ws: Workspace, served: dict[str, Served], backend: str, options: EngineOptions,
                 on_batch: Any = None) -> None:
        self.ws = ws
        self.served = served
        self.backend_kind = backend
        self.backend_reason = "chosen with --backend"  # `--backend auto` says why it chose this one
        self.cls = backend_class(backend)
        self.cls.check_available()  # refuse at start, not at the first request
        self.options = options
        self.on_batch = on_batch
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()
        for s in served.values():  # refuse conflicting precisions at start, not at the first request
            self.options_for(s.base)

    def get(self, name: str) -> Served:
        if name not in self.served:
            raise model_not_found(name)
        return self.served[name]

    def backend(self, served: Served) -> Backend:
        """The backend of `served`'s base model (blocking load the first time; call in a thread)."""
        with self._lock:
            if served.base.id not in self._backends:
                from kifabrik.models.sources import model_path

                unique = {s.record.id: s.record for s in self.served.values()
                          if s.record.kind == "adapter" and s.base.id == served.base.id}
                adapters = [AdapterSpec(r.name, self.ws.path(r), r) for r in unique.values()]
                path: Path = model_path(self.ws, served.base)
                self._backends[served.base.id] = self.cls(served.base, path, adapters, self.options_for(served.base),
                                                          on_batch=self.on_batch)
            return self._backends[served.base.id]

    def options_for(self, base: ArtifactRecord) -> EngineOptions:
        """The engine options of one base model: `dtype` auto becomes what its served Fach-LLMs record.

        A Fach-LLM records the precision it was evaluated in; serving it in another would serve something
        other than what was measured, so Fach-LLMs on one base that record different ones are refused.
        """
        if self.options.dtype != "auto":
            return self.options
        recorded = {str(s.fach_llm.meta.get("dtype") or "auto"): s.name for s in self.served.values()
                    if s.fach_llm is not None and s.base.id == base.id}
        if len(recorded) > 1:
            names = ", ".join(f"{n} ({d})" for d, n in sorted(recorded.items()))
            raise KifabrikError(f"the Fach-LLMs on {base.ref} record different precisions: {names}",
                                hint="serve them separately (--models), or choose one with --dtype")
        return replace(self.options, dtype=next(iter(recorded), "auto"))

    def grounding(self, served: Served, actor: str) -> Any:
        """The knowledge base of a Fach-LLM name (None for a plain model), opened once."""
        if served.fach_llm is None:
            return None
        from kifabrik.kb.grounding import Grounding
        from kifabrik.models.runtime import resolve

        return Grounding.of(self.ws, resolve(self.ws, served.fach_llm), purpose="serving", actor=actor)

    def loaded(self) -> dict[str, Backend]:
        return dict(self._backends)

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
