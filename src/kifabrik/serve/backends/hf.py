"""The transformers backend (always available; CPU and GPU).

One process-wide copy of the base weights per base model; every adapter trained on that
base is loaded into the same `PeftModel` (through the model runtime) and chosen per request
row through PEFT's mixed-batch `adapter_names`, so adapters cost only their LoRA weights.
Prompts and the context length come from the runtime, so the server sends exactly the ids
that evaluation scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.registry import register
from kifabrik.serve.backends.base import AdapterSpec, Backend, EngineOptions
from kifabrik.serve.engine import GenRequest, Scheduler


@register("serve-backend", "transformers")
class TransformersBackend(Backend):
    kind = "transformers"

    def __init__(self, base: ArtifactRecord, path: Path, adapters: list[AdapterSpec], options: EngineOptions,
                 on_batch: Any = None) -> None:
        super().__init__(base, path, adapters, options, on_batch)
        from kifabrik.models.runtime import Runnable, load
        from kifabrik.serve.backends.decode import BatchDecoder

        runnable = Runnable(base, base, path, tuple((a.name, a.path) for a in adapters))
        # not cached: a server owns its copy for its lifetime and frees it on close
        self.loaded = load(runnable, device=options.device, dtype=options.dtype, cache=False)
        self.tokenizer = self.loaded.tokenizer
        self.model = self.loaded.model
        self._context = self.loaded.context_length
        self.decoder = BatchDecoder(self.model, self.tokenizer, context_length=self._context,
                                    max_batch=options.max_batch, peft=bool(adapters), eos_ids=self.loaded.eos_ids,
                                    pad_id=self.loaded.pad_id)
        self.scheduler = Scheduler(base.name, self.decoder.run, max_batch=options.max_batch,
                                   max_queue=options.max_queue,
                                   batch_wait=0.005 if options.batch_wait is None else options.batch_wait,
                                   on_batch=on_batch)

    constrains = True

    def grammar(self, constraint: Any) -> Any:
        return self.loaded.grammar(constraint)

    def chat_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, prefill: str) -> list[int]:
        return self.loaded.chat_ids(messages, tools, prefill)

    def text_ids(self, text: str) -> list[int]:
        return self.loaded.text_ids(text)

    def submit(self, req: GenRequest) -> None:
        self.scheduler.submit(req)

    def close(self) -> None:
        self.scheduler.close()

    def stats(self) -> dict[str, Any]:
        return self.scheduler.stats()
