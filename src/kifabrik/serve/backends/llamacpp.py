"""The llama.cpp backend (CPU; `make llama-cpp` installs the binding): GGUF models in-process.

The base model runs from a GGUF file (`models.gguf_convert.gguf_for`: the file it was registered
from, or a conversion made once). Prompts are kifabrik's token ids (the folder's tokenizer and
chat template through `models.prompts`), so the front — keys, policies, audit, AI disclosure,
metrics, tool-call rendering and parsing, streaming — is the one the transformers backend has;
stop sequences, the context limit and incremental detokenization are `decode.BatchDecoder`'s.

Continuous batching as llama-server does it: one llama.cpp context holds up to `--max-batch`
sequences, each in its own share of the KV cache (so the served context is at most 16384 /
max-batch tokens, at least 2048, when more than one request runs at a time); every step is one `llama_decode` over the next token of each
running request plus prompt chunks of the requests that just joined (`models.llama_context.LlamaContext`).
A finished request's cells stay in its sequence: the next request there computes only the part of
its prompt after the longest prefix it shares with them; a request whose prefix another sequence
holds gets a copy of that sequence's KV stream instead. Cells that a new request would mostly
overwrite are first saved to host memory (`PromptCache`, `--prompt-cache-mb`; llama-server's
`--cache-ram`), and a later prompt that shares more with a saved state than with any sequence
gets that state back instead of computing its prompt again (a returning conversation, a
repeated question).
Each request samples with its own temperature, top_p and seed (numpy, float64).
Adapters: each PEFT LoRA on the base is converted once to a GGUF adapter (llama.cpp's
convert_lora_to_gguf.py) and loaded next to the one copy of the base weights; llama.cpp sets
adapters per context, so each step runs one `llama_decode` per adapter in use. A request with a
grammar (`response_format` json_object / json_schema, the call format of its tools) has its logits
masked by xgrammar before sampling, as on the transformers backend (`models.structured`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kifabrik.catalog import ArtifactRecord
from kifabrik.registry import register
from kifabrik.serve.backends.base import AdapterSpec, Backend, EngineOptions
from kifabrik.serve.backends.decode import BatchDecoder, Detokenizer, Row
from kifabrik.serve.engine import GenRequest, Scheduler
from kifabrik.serve.errors import APIError

#: KV cache cells shared out among the sequences of one backend (about 0.4 GB f16 for SmolLM2-135M).
KV_CELLS = 16384
#: Shared prompt tokens from which a new request copies another sequence's KV stream instead of computing
#: them (the copy is the whole stream, n_ctx cells x layers; a guess, not tuned).
COPY_MIN = 16


@dataclass
class Saved:
    """The KV state of a sequence that a new request took over, kept for a prompt that shares its prefix."""

    adapter: str | None
    tokens: list[int]  # the tokens its cells hold, positions 0..len-1
    state: Any  # `LlamaContext.save`'s byte buffer


class PromptCache:
    """Saved sequence states in host memory, least recently saved dropped first over `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.entries: list[Saved] = []  # oldest first

    def put(self, entry: Saved) -> None:
        if len(entry.state) > self.limit:
            return
        # an entry whose tokens start the new one's is covered by it
        for old in [e for e in self.entries if e.adapter == entry.adapter
                    and len(e.tokens) <= len(entry.tokens) and entry.tokens[:len(e.tokens)] == e.tokens]:
            self.remove(old)
        self.entries.append(entry)
        self.size += len(entry.state)
        while self.size > self.limit:
            self.remove(self.entries[0])

    def remove(self, entry: Saved) -> None:
        self.entries.remove(entry)
        self.size -= len(entry.state)

    def best(self, shared: Callable[[str | None, list[int]], int]) -> tuple[int, Saved | None]:
        """The entry with the longest `shared` prefix (the newest of equals), and that length."""
        return max(((shared(e.adapter, e.tokens), e) for e in reversed(self.entries)),
                   key=lambda x: x[0], default=(0, None))


class _Tokens:
    """Per-token bookkeeping (stop sequences, length, cancel, streaming deltas) shared with `BatchDecoder`."""

    _accept = BatchDecoder._accept
    _check_stop = BatchDecoder._check_stop
    _finish = BatchDecoder._finish

    def __init__(self, eos: set[int], context_length: int) -> None:
        self.eos = eos
        self.context_length = context_length


@dataclass
class Slot:
    """A running request: its sequence id in the KV cache and the prompt tokens not decoded yet."""

    row: Row
    seq: int
    todo: list[int]
    pos: int = 0  # position of the next token fed to the model
    rng: np.random.Generator | None = None
    fed: list[int] = field(default_factory=list)  # the tokens in this sequence's KV cells, positions 0..pos-1


def sample(logits: np.ndarray, slot: Slot) -> int:
    """One token with the request's temperature / top_p (`models.llamacpp.sample_token`), under its grammar."""
    from kifabrik.models.llamacpp import sample_token

    req = slot.row.req
    matcher = slot.row.matcher
    if matcher is not None and not matcher.done:
        import torch

        matcher.mask(torch.from_numpy(logits))  # in place: llama.cpp's logits buffer, read once per step
    return sample_token(logits, req.temperature if slot.rng is not None else 0.0, req.top_p, slot.rng)


@register("serve-backend", "llama.cpp")
class LlamaCppBackend(Backend):
    kind = "llama.cpp"
    constrains = True

    @classmethod
    def check_available(cls) -> None:
        from kifabrik.models.llama_context import require_llama_cpp

        require_llama_cpp()

    def __init__(self, base: ArtifactRecord, path: Path, adapters: list[AdapterSpec], options: EngineOptions,
                 on_batch: Any = None) -> None:
        super().__init__(base, path, adapters, options, on_batch)
        from kifabrik.config import Settings
        from kifabrik.models import prompts
        from kifabrik.models.gguf_convert import adapter_gguf, gguf_for
        from kifabrik.models.llama_context import LlamaContext
        from kifabrik.models.loading import load_tokenizer

        trust = bool(base.meta.get("trust_remote_code"))
        self.tokenizer = load_tokenizer(path, trust_remote_code=trust)
        config = _config(path)
        self._context = prompts.context_length(base.meta, _Attrs(config))
        home = options.home or Settings.from_env().home
        self.gguf, self.gguf_reason = gguf_for(base, path, home, options.gguf_type)  # type: ignore[arg-type]
        self.n_seq = options.max_batch
        # each of the n_seq sequences gets its own share of the KV cache (llama-server's slots): the model's
        # context when one request runs at a time, else at most KV_CELLS / n_seq (and at least 2048) tokens
        per_seq = self._context if self.n_seq == 1 else min(self._context, max(2048, KV_CELLS // self.n_seq))
        self.llm = LlamaContext(self.gguf, n_ctx=per_seq, n_seq=self.n_seq)
        self._context = self.llm.n_ctx
        # every adapter on this base, converted once to GGUF and loaded next to the shared base weights
        self.loras = {a.name: self.llm.load_adapter(adapter_gguf(a.name, a.path, path, home)) for a in adapters}
        # free sequences -> (adapter, tokens their KV cells still hold): a new request reuses the longest prefix
        self._kept: dict[int, tuple[str | None, list[int]]] = {seq: (None, []) for seq in range(self.n_seq)}
        self.saved = PromptCache(options.prompt_cache_mb << 20)
        self.cached_tokens = 0  # prompt tokens not computed again because a sequence or a saved state held them
        self.copied_streams = 0  # KV streams copied to a new request from a sequence that shares its prefix
        self.restored = 0  # saved states put back for a new request
        self.tokens = _Tokens(prompts.eos_ids(_Attrs({"generation_config": _Attrs(_generation(path))}), self.tokenizer),
                              self._context)
        self.scheduler = Scheduler(base.name, self._run, max_batch=self.n_seq, max_queue=options.max_queue,
                                   batch_wait=options.batch_wait or 0.0, on_batch=on_batch)

    def chat_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, prefill: str) -> list[int]:
        from kifabrik.models import prompts

        return prompts.chat_ids(self.tokenizer, messages, tools=tools, prefill=prefill)

    def text_ids(self, text: str) -> list[int]:
        from kifabrik.models import prompts

        return prompts.text_ids(self.tokenizer, text)

    def submit(self, req: GenRequest) -> None:
        if req.adapter and req.adapter not in self.loras:
            raise APIError(400, f"adapter {req.adapter!r} is not loaded on this llama.cpp backend",
                           code="adapter_not_supported", param="model")
        self.scheduler.submit(req)

    def _run(self, first: list[GenRequest], take: Callable[[int], list[GenRequest]]) -> None:
        slots: list[Slot] = []
        pending = list(first)
        try:
            while True:
                for slot in slots:
                    if not slot.row.done and slot.row.req.cancelled.is_set():
                        self.tokens._finish(slot.row, "cancelled")  # type: ignore[arg-type]
                for slot in [s for s in slots if s.row.done]:
                    self._kept[slot.seq] = (slot.row.req.adapter, slot.fed)  # its cells stay for the next prompt
                    slots.remove(slot)
                if len(self._kept) > len(pending):
                    pending += take(len(self._kept) - len(pending))
                if pending and self._kept:
                    while pending and self._kept:
                        slots.append(self._slot(pending.pop(0), slots))
                    slots.sort(key=lambda s: s.seq)
                if not slots:
                    return
                # llama.cpp applies adapters per context, not per sequence: one decode per adapter in use
                for adapter in dict.fromkeys(s.row.req.adapter for s in slots):
                    self.llm.use(self.loras[adapter] if adapter else None)
                    self._step([s for s in slots if s.row.req.adapter == adapter])
        except BaseException:
            # the cells of the running sequences are in an unknown state: forget them
            for slot in slots:
                self.llm.drop(slot.seq)
                self._kept[slot.seq] = (None, [])
            raise

    def _slot(self, req: GenRequest, running: list[Slot]) -> Slot:
        """`req` in the free sequence whose cells hold the longest prefix of its prompt (llama-server's
        prompt cache: the chat template's system part, an earlier turn), else in the lowest free one.

        Why the lowest: with one KV stream per sequence, llama_decode makes one pass over the weights per
        run of consecutive sequence ids in the batch (llama_batch_allocr::split_equal, `sequential`), so
        running requests are kept in low, adjacent ids and each step lists them in id order.
        When another sequence (free or running) shares at least COPY_MIN more prompt tokens, its stream
        is copied into the chosen one (llama_memory_seq_cp; whole streams only, done at the next decode)
        and cut back to the shared prefix: a copy costs less than computing those tokens again.
        Cells of which the request would keep less than half are saved first (`PromptCache`, what
        llama-server does below f_keep 0.5); a saved state that shares more than both is put back instead.
        """
        prompt = req.prompt_ids

        def shared(adapter: str | None, cells: list[int]) -> int:
            if adapter != req.adapter:
                return 0
            n = 0
            for a, b in zip(cells, prompt[:-1]):  # the last prompt token is always fed: it gives the logits
                if a != b:
                    break
                n += 1
            return n

        seq = max(self._kept, key=lambda q: (shared(*self._kept[q]), -q))
        reuse = shared(*self._kept[seq])
        adapter, cells = self._kept.pop(seq)
        if len(cells) > 2 * reuse and self.saved.limit:  # most of its cells would go: keep them in memory
            self.saved.put(Saved(adapter, cells, self.llm.save(seq)))
        donors = [(shared(a, cells), q) for q, (a, cells) in self._kept.items()]
        donors += [(shared(s.row.req.adapter, s.fed), s.seq) for s in running]
        best, donor = max(donors, key=lambda d: (d[0], -d[1]), default=(0, -1))
        kept, entry = self.saved.best(shared)
        if entry is not None and kept > reuse and kept >= best:
            # a memory copy of the cells it needs: cheaper than a stream copy or computing them
            self.saved.remove(entry)
            self.llm.drop(seq)
            if self.llm.restore(seq, entry.state):
                reuse = kept
                self.restored += 1
            else:
                reuse = 0
        elif best >= reuse + COPY_MIN:
            self.llm.lc.llama_memory_seq_cp(self.llm.memory, donor, seq, -1, -1)
            reuse = best
            self.copied_streams += 1
        # cells after the shared prefix go (the binding's llama_memory_seq_rm; LlamaContext.drop removes all);
        # a memory that cannot cut a sequence (recurrent state) says False and the sequence starts empty
        if reuse and not self.llm.lc.llama_memory_seq_rm(self.llm.memory, seq, reuse, -1):
            reuse = 0
        if not reuse:
            self.llm.drop(seq)
        self.cached_tokens += reuse
        from kifabrik.models.structured import Matcher

        row = Row(req, Detokenizer(self.tokenizer, prompt), None, position=len(prompt),
                  stop_len=max((len(s) for s in req.stop), default=0),
                  matcher=Matcher(req.grammar) if req.grammar is not None else None)
        rng = None
        if req.temperature > 0:
            rng = np.random.default_rng(req.seed if req.seed is not None else secrets.randbits(63))
        return Slot(row, seq, list(prompt[reuse:]), pos=reuse, rng=rng, fed=list(prompt[:reuse]))

    def _step(self, slots: list[Slot]) -> None:
        """One llama_decode: the next token of every decoding slot, then prompt chunks, then sampling."""
        # decoding slots first claim their one token each, prompts share the rest of n_batch; the
        # batch then lists the slots in sequence order (see `_run`)
        room = self.llm.n_batch - sum(1 for s in slots if not s.todo)
        items: list[tuple[int, int, int, bool]] = []
        sampled: list[tuple[Slot, int]] = []  # slot, index of its logits in the batch
        fed: list[tuple[Slot, int]] = []  # slot, tokens fed this step
        for slot in slots:
            if not slot.todo:
                sampled.append((slot, len(items)))
                items.append((slot.row.next_token, slot.pos, slot.seq, True))
                fed.append((slot, 1))
                continue
            if room <= 0:
                continue
            chunk = slot.todo[:room]
            room -= len(chunk)
            last = len(chunk) == len(slot.todo)
            for j, token in enumerate(chunk):
                items.append((token, slot.pos + j, slot.seq, last and j == len(chunk) - 1))
            if last:
                sampled.append((slot, len(items) - 1))
            fed.append((slot, len(chunk)))
        status = self.llm.decode(items)
        if status == 1:  # no room in the KV cache: the longest request ends here, the others go on
            longest = max(slots, key=lambda s: s.pos)
            longest.row.text += longest.row.detok.flush()
            self.tokens._finish(longest.row, "length")  # type: ignore[arg-type]
            self.llm.drop(longest.seq)
            longest.pos, longest.todo, longest.fed = 0, [], []
            return
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        for slot, n in fed:
            if slot.todo:
                slot.fed += slot.todo[:n]
                slot.todo = slot.todo[n:]
            else:
                slot.fed.append(slot.row.next_token)
            slot.pos += n
        for slot, i in sampled:
            self.tokens._accept(slot.row, sample(self.llm.logits(i), slot))  # type: ignore[arg-type]

    def grammar(self, constraint: Any) -> Any:
        from kifabrik.models.structured import compile_constraint

        return compile_constraint(self.tokenizer, self.llm.n_vocab, sorted(self.tokens.eos), constraint)

    def close(self) -> None:
        self.scheduler.close()
        self.llm.close()

    def stats(self) -> dict[str, Any]:
        return {**self.scheduler.stats(), "gguf": self.gguf.name, "cached_prompt_tokens": self.cached_tokens,
                "copied_kv_streams": self.copied_streams, "restored_prompts": self.restored,
                "prompt_cache_bytes": self.saved.size}


class _Attrs:
    """A dict read as attributes (what `prompts` reads from a transformers config)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.__dict__.update(data)


def _config(path: Path) -> dict[str, Any]:
    f = path / "config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _generation(path: Path) -> dict[str, Any]:
    f = path / "generation_config.json"
    return json.loads(f.read_text()) if f.exists() else {}
