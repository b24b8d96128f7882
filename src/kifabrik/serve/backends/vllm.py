"""The vLLM backend (GPUs; extra `vllm`). Not exercised by the test suite: it needs a GPU.

vLLM does its own continuous batching and paged attention; adapters are served through
its multi-LoRA support (`enable_lora`, one `LoRARequest` per adapter, base weights shared).
kifabrik keeps its own bounded queue in front so that overload answers 429 like the
transformers backend. Prompts are rendered with the model's own tokenizer and chat
template here, so tool rendering and parsing are identical across backends.
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.registry import register
from kifabrik.serve.backends.base import AdapterSpec, Backend, EngineOptions
from kifabrik.serve.engine import Event, GenRequest
from kifabrik.serve.errors import QueueFull, ShuttingDown


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        raise KifabrikError("the vllm backend needs the vllm package, which is not installed",
                            hint="on a CUDA machine: pip install 'kifabrik[vllm]' (or use --backend transformers)")


@register("serve-backend", "vllm")
class VllmBackend(Backend):
    kind = "vllm"

    @classmethod
    def check_available(cls) -> None:
        require_vllm()

    def __init__(self, base: ArtifactRecord, path: Path, adapters: list[AdapterSpec], options: EngineOptions,
                 on_batch: Any = None) -> None:
        require_vllm()
        super().__init__(base, path, adapters, options, on_batch)
        from vllm import EngineArgs, LLMEngine
        from vllm.lora.request import LoRARequest

        from kifabrik.models.loading import load_tokenizer

        self.tokenizer = load_tokenizer(path, trust_remote_code=bool(base.meta.get("trust_remote_code")))
        self.engine = LLMEngine.from_engine_args(EngineArgs(
            model=str(path), enable_lora=bool(adapters), max_loras=max(1, len(adapters)),
            max_num_seqs=options.max_batch, trust_remote_code=bool(base.meta.get("trust_remote_code"))))
        self._context = int(self.engine.model_config.max_model_len)
        self.loras = {a.name: LoRARequest(a.name, i + 1, str(a.path)) for i, a in enumerate(adapters)}
        self._ids = itertools.count()
        self._live: dict[str, tuple[GenRequest, int]] = {}  # request id -> (request, chars already sent)
        self._new: list[tuple[str, GenRequest]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"kifabrik-vllm-{base.name}", daemon=True)
        self._thread.start()

    def chat_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, prefill: str) -> list[int]:
        from kifabrik.models import prompts

        return prompts.chat_ids(self.tokenizer, messages, tools=tools, prefill=prefill)

    def text_ids(self, text: str) -> list[int]:
        from kifabrik.models import prompts

        return prompts.text_ids(self.tokenizer, text)

    def submit(self, req: GenRequest) -> None:
        with self._cond:
            if self._closing:
                raise ShuttingDown()
            if len(self._live) + len(self._new) >= self.options.max_batch + self.options.max_queue:
                raise QueueFull(self.base.name, self.options.max_queue)
            self._new.append((f"kf-{next(self._ids)}", req))
            self._cond.notify()

    def _loop(self) -> None:
        from vllm import SamplingParams

        while True:
            with self._cond:
                while not self._new and not self._live and not self._closing:
                    self._cond.wait()
                if self._closing and not self._new and not self._live:
                    return
                new, self._new = self._new, []
            for rid, req in new:
                params = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                        seed=req.seed, stop=req.stop or None)
                self.engine.add_request(rid, {"prompt_token_ids": req.prompt_ids}, params,
                                        lora_request=self.loras.get(req.adapter or ""))
                self._live[rid] = (req, 0)
            for rid, (req, _) in list(self._live.items()):
                if req.cancelled.is_set():
                    self.engine.abort_request(rid)
                    req.emit(Event(finish_reason="cancelled"))
                    del self._live[rid]
            for output in self.engine.step():
                if output.request_id not in self._live:
                    continue
                req, sent = self._live[output.request_id]
                out = output.outputs[0]
                delta = out.text[sent:]
                if output.finished:
                    req.emit(Event(text=delta, finish_reason=out.finish_reason or "stop",
                                   prompt_tokens=len(req.prompt_ids), completion_tokens=len(out.token_ids)))
                    del self._live[output.request_id]
                else:
                    if delta:
                        req.emit(Event(text=delta))
                    self._live[output.request_id] = (req, len(out.text))

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(120)

    def stats(self) -> dict[str, Any]:
        return {"waiting": len(self._new), "running": len(self._live)}
