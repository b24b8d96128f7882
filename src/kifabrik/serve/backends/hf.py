"""The transformers backend (always available; CPU and GPU).

One process-wide copy of the base weights per base model; every adapter trained on that
base is loaded into the same `PeftModel` (`load_adapter`) and chosen per request row
through PEFT's mixed-batch `adapter_names`, so adapters cost only their LoRA weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.registry import register
from kifabrik.serve.backends.base import AdapterSpec, Backend, EngineOptions
from kifabrik.serve.engine import GenRequest, Scheduler


@register("serve-backend", "transformers")
class TransformersBackend(Backend):
    kind = "transformers"

    def __init__(self, base: ArtifactRecord, path: Path, adapters: list[AdapterSpec], options: EngineOptions,
                 on_batch: Any = None) -> None:
        super().__init__(base, path, adapters, options, on_batch)
        from kifabrik.models.loading import load_model, load_tokenizer
        from kifabrik.serve.backends.decode import BatchDecoder

        trust = bool(base.meta.get("trust_remote_code") or base.manifest.get("config", {}).get("trust_remote_code"))
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust)
        model = load_model(path, trust_remote_code=trust, device=options.device)
        if adapters:
            model = self._attach(model, adapters)
        self.model = model
        self._context = _context_length(base, model)
        eos = _eos_ids(model, self.tokenizer)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos, default=0)
        self.decoder = BatchDecoder(model, self.tokenizer, context_length=self._context, max_batch=options.max_batch,
                                    peft=bool(adapters), eos_ids=eos, pad_id=pad)
        self.scheduler = Scheduler(base.name, self.decoder.run, max_batch=options.max_batch,
                                   max_queue=options.max_queue, batch_wait=options.batch_wait, on_batch=on_batch)

    @staticmethod
    def _attach(model: Any, adapters: list[AdapterSpec]) -> Any:
        from peft import PeftModel

        try:
            peft_model = PeftModel.from_pretrained(model, str(adapters[0].path), adapter_name=adapters[0].name)
            for spec in adapters[1:]:
                peft_model.load_adapter(str(spec.path), adapter_name=spec.name)
        except Exception as exc:
            raise KifabrikError(f"cannot load adapter(s) onto {model.name_or_path}: {type(exc).__name__}: {exc}",
                                hint="check the adapter with `kifabrik verify ADAPTER`") from None
        return peft_model.eval()

    def chat_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, prefill: str) -> list[int]:
        if not self.chat_template:  # a base model without template: plain "role: text" lines
            text = "".join(f"{m['role']}: {m.get('content') or ''}\n" for m in messages) + "assistant:"
        else:
            kwargs: dict[str, Any] = {"tools": tools} if tools else {}
            text = str(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                          **kwargs))
        return list(self.tokenizer(str(text) + prefill, add_special_tokens=False)["input_ids"])

    def text_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def submit(self, req: GenRequest) -> None:
        self.scheduler.submit(req)

    def close(self) -> None:
        self.scheduler.close()

    def stats(self) -> dict[str, Any]:
        return self.scheduler.stats()


def _context_length(record: ArtifactRecord, model: Any) -> int:
    for value in (record.meta.get("context_length"), getattr(model.config, "max_position_embeddings", None)):
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
