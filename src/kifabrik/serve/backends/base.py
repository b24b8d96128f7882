"""The one interface every serving backend implements, and how a backend is chosen.

A backend serves one base model and any number of adapters on it. The HTTP layer renders
no prompts itself: it asks the backend (which knows the tokenizer and chat template) for
token ids, checks the context limit, and submits a `GenRequest`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.registry import lookup, names
from kifabrik.serve.engine import GenRequest


@dataclass(frozen=True)
class EngineOptions:
    """Batching and limits shared by every backend."""

    max_batch: int = 16
    max_queue: int = 64
    batch_wait: float | None = None  # seconds to gather requests before a batch; None: the backend's default
    device: str | None = None
    home: Path | None = None  # $KIFABRIK_HOME: where backends keep caches (GGUF conversions)
    gguf_type: str = "auto"  # llama.cpp backend: which GGUF runs (`models.gguf_convert.gguf_for`)
    dtype: str = "auto"  # transformers backend: precision (`ModelTable` resolves auto per base model)
    prompt_cache_mb: int = 1024  # llama.cpp backend: host memory for the saved KV states of earlier prompts


@dataclass(frozen=True)
class AdapterSpec:
    name: str  # the served model name of the adapter
    path: Path  # folder with adapter_config.json + adapter_model.safetensors
    record: ArtifactRecord


class Backend(ABC):
    """One base model (+ adapters) loaded for serving."""

    #: Registry name, e.g. "transformers".
    kind: str = ""

    def __init__(self, base: ArtifactRecord, path: Path, adapters: list[AdapterSpec], options: EngineOptions,
                 on_batch: Any = None) -> None:
        self.base = base
        self.path = path
        self.adapters = adapters
        self.options = options

    @classmethod
    def check_available(cls) -> None:
        """Raise a `KifabrikError` naming the extra to install when the backend's package is missing."""

    #: Set by each backend when it loads: the tokenizer and the context length it serves with.
    tokenizer: Any = None
    _context: int = 0

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + completion) one sequence may hold."""
        return self._context

    @property
    def chat_template(self) -> str | None:
        """The chat template text (decides whether tools go to the template natively)."""
        return getattr(self.tokenizer, "chat_template", None)

    #: Whether `grammar` works: requests can be decoded under a constraint (JSON Schema, tool-call format).
    constrains: bool = False

    def grammar(self, constraint: Any) -> Any:
        """`constraint` (a `models.structured.Constraint`) compiled for this backend's tokenizer, for `GenRequest.grammar`.

        Raises `structured.UnsupportedSchema` for a schema the grammar cannot enforce.
        """
        raise NotImplementedError(f"the {self.kind} backend does not decode under constraints")

    @abstractmethod
    def chat_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, prefill: str) -> list[int]:
        """Token ids of a chat prompt: template with generation prompt, then `prefill` text."""

    @abstractmethod
    def text_ids(self, text: str) -> list[int]:
        """Token ids of a raw prompt (for /v1/completions)."""

    @abstractmethod
    def submit(self, req: GenRequest) -> None:
        """Queue `req`; raises `QueueFull` / `ShuttingDown`. Output goes to `req.emit`."""

    @abstractmethod
    def close(self) -> None:
        """Finish queued and running requests, then free the model."""

    def stats(self) -> dict[str, Any]:
        return {}


def backend_class(kind: str) -> type[Backend]:
    """The backend class registered as `kind` (its module is imported only now)."""
    cls: type[Backend] = lookup("serve-backend", kind)
    return cls


def backend_names() -> list[str]:
    return names("serve-backend")


def choose_backend(ws: Any, served: list[Any], gguf_type: str = "auto") -> tuple[str, str]:
    """`--backend auto`: (backend name, why) for the served models (`serve.models.Served`) on this machine.

    vLLM on a CUDA GPU (when installed); llama.cpp on a CPU when the binding is installed and every base
    model has a GGUF or converts to one, and every served adapter converts too (the conversions are made
    now, once, and kept for the backend); transformers otherwise.
    """
    import importlib.util

    import torch

    from kifabrik.errors import KifabrikError

    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        if importlib.util.find_spec("vllm") is not None:
            return "vllm", f"a CUDA GPU ({gpu}) and vllm are present"
        return "transformers", f"a CUDA GPU ({gpu}) is present but vllm is not installed"
    if importlib.util.find_spec("llama_cpp") is None:
        return "transformers", "no CUDA GPU, and llama-cpp-python is not installed (make llama-cpp)"
    from kifabrik.models.gguf_convert import adapter_gguf, gguf_for
    from kifabrik.models.sources import model_path

    whys = []
    for base in {s.base.id: s.base for s in served}.values():
        try:
            _, why = gguf_for(base, model_path(ws, base), ws.settings.home, gguf_type)  # type: ignore[arg-type]
        except KifabrikError as exc:
            return "transformers", f"no CUDA GPU, but {base.ref} has no GGUF and none can be made ({exc.message})"
        whys.append(f"{base.name}: {why}")
    for s in served:
        if s.record.kind == "adapter":
            try:
                adapter_gguf(s.record.name, ws.path(s.record), model_path(ws, s.base), ws.settings.home)
            except KifabrikError as exc:
                return "transformers", f"no CUDA GPU, but adapter {s.record.ref} does not convert to GGUF ({exc.message})"
    return "llama.cpp", f"no CUDA GPU; llama-cpp-python is installed and every model has a GGUF ({'; '.join(whys)})"
