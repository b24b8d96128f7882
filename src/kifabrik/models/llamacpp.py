"""llama.cpp in the model runtime: a model record -> the GGUF file it runs from -> `LlamaModel`.

The GGUF a model runs from and its conversions are in `models.gguf_convert`, the binding's model
and context (`LlamaContext`) in `models.llama_context`.
Tokenization and chat templates stay kifabrik's (`models.prompts` on the folder's tokenizer), so
both backends receive the same token ids for the same request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError
from kifabrik.models.gguf_convert import GgufType, adapter_gguf, gguf_for
from kifabrik.models.llama_context import LlamaContext, require_llama_cpp
from kifabrik.models.runtime import Completion, GenerationOptions, PromptFace, Runnable
from kifabrik.models.structured import Constraint

#: KV cache cells of one `LlamaModel`, shared out among its sequences (as the served backend does).
RUNTIME_KV_CELLS = 16384
#: Sequences one `LlamaModel` decodes side by side (`generate`'s default batch size).
RUNTIME_SEQUENCES = 8


def sample_token(logits: Any, temperature: float, top_p: float, rng: Any) -> int:
    """One token: the argmax at temperature 0, else a draw from softmax(logits / T) cut to the top_p mass (float64)."""
    import numpy as np

    if temperature <= 0:
        return int(np.argmax(logits))
    z = (logits.astype(np.float64) - float(np.max(logits))) / temperature
    probs = np.exp(z)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_p = probs[order]
        keep = np.cumsum(sorted_p) - sorted_p <= top_p  # the most likely token is always kept
        probs = np.zeros_like(probs)
        probs[order[keep]] = sorted_p[keep]
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


class _Seq:
    """One prompt of a batch in the KV cache: tokens still to feed, tokens generated, grammar state."""

    def __init__(self, seq: int, prompt: list[int], room: int, rng: Any, matcher: Any) -> None:
        self.seq, self.todo, self.room, self.rng, self.matcher = seq, list(prompt), room, rng, matcher
        self.prompt_tokens = len(prompt)
        self.pos = 0
        self.new: list[int] = []
        self.finish: str | None = None


class LlamaModel(PromptFace):
    """A runnable on llama.cpp with the surface of `runtime.LoadedModel` (`runtime.load(..., backend="llama.cpp")`).

    Token ids are kifabrik's (the folder's tokenizer and chat template through `models.prompts`, as
    `LoadedModel` and the served llama.cpp backend send them); the weights run from `gguf_for`'s GGUF
    in one `LlamaContext` holding `RUNTIME_SEQUENCES` sequences, so a batch of prompts shares each
    `llama_decode`. The runnable's adapter (a PEFT LoRA, converted once by `adapter_gguf`; one at
    most, several are refused) is applied to every decode. The context length is the model's, at most RUNTIME_KV_CELLS / sequences
    (and at least 2048) tokens: each sequence owns its share of the KV cache.

    Differences from transformers, by design: a stop string ends decoding as soon as it appears, so
    `completion_tokens` counts the tokens up to it (transformers decodes on and cuts the text);
    sampling (temperature > 0) draws with numpy from a per-prompt seed (`seed`, prompt index), so the
    same seed gives the same answers here, though not the ones torch draws.
    """

    backend = "llama.cpp"

    def __init__(self, runnable: Runnable, *, home: Path, gguf_type: GgufType = "auto",
                 n_seq: int = RUNTIME_SEQUENCES) -> None:
        import json
        import threading
        from types import SimpleNamespace

        from kifabrik.models import prompts
        from kifabrik.models.loading import load_tokenizer

        require_llama_cpp()
        if len(runnable.adapters) > 1:  # llama.cpp applies adapters per context: one model here runs one
            raise KifabrikError(f"{runnable.record.ref}: the llama.cpp runtime runs one adapter per loaded model, "
                                f"not {len(runnable.adapters)} stacked",
                                hint="merge them first (`kifabrik merge`), or use --backend transformers; "
                                     "`kifabrik serve` serves several adapters side by side, one per request")

        def read(name: str) -> dict[str, Any]:
            f = runnable.path / name
            return json.loads(f.read_text()) if f.exists() else {}

        self.runnable = runnable
        self.tokenizer = load_tokenizer(runnable.path, trust_remote_code=runnable.trust_remote_code)
        context = prompts.context_length(runnable.base.meta, SimpleNamespace(**read("config.json")))
        self.gguf, self.gguf_reason = gguf_for(runnable.base, runnable.path, home, gguf_type)
        self.gguf_type = gguf_type
        self.n_seq = n_seq
        per_seq = context if n_seq == 1 else min(context, max(2048, RUNTIME_KV_CELLS // n_seq))
        self.ctx: LlamaContext | None = LlamaContext(self.gguf, n_ctx=per_seq, n_seq=n_seq)
        self.context_length = self.ctx.n_ctx
        self.eos_ids = prompts.eos_ids(SimpleNamespace(generation_config=SimpleNamespace(**read("generation_config.json"))),
                                       self.tokenizer)
        self.adapter: Any = None
        if runnable.adapters:
            name, folder = runnable.adapters[0]
            self.adapter = self.ctx.load_adapter(adapter_gguf(name, folder, runnable.path, home))
        self._lock = threading.Lock()  # one llama.cpp context: one batch at a time

    @property
    def vocab_size(self) -> int:
        return self._context.n_vocab

    @property
    def _context(self) -> LlamaContext:
        if self.ctx is None:
            raise KifabrikError(f"the llama.cpp model {self.gguf.name} was closed")
        return self.ctx

    def quantization(self) -> str | None:
        """The GGUF's weight type as llama.cpp's tools name it (`f32`, `q4_k_m`, ...), from its header (read once)."""
        if not hasattr(self, "_quantization"):
            from kifabrik.models.gguf import read_gguf_metadata

            self._quantization: str | None = read_gguf_metadata(self.gguf).get("quantization")
        return self._quantization

    def describe(self) -> dict[str, Any]:
        return {"backend": "llama.cpp", "gguf": self.gguf.name, "gguf_type": self.gguf_type,
                "quantization": self.quantization(), "gguf_reason": self.gguf_reason,
                "adapter": self.runnable.adapters[0][0] if self.adapter is not None else None}

    def generate_ids(self, encoded: Sequence[list[int]], opts: GenerationOptions, *, batch_size: int = 8,
                     constraint: Constraint | None = None,
                     progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Answer token-id prompts, up to `batch_size` (at most the context's sequences) per run of decodes."""
        from kifabrik.models import prompts

        if any(not e for e in encoded):
            raise KifabrikError("a prompt of no tokens cannot be continued", hint="give every prompt some text")
        grammar = self.grammar(constraint) if constraint is not None else None
        fitted = [prompts.fit_prompt(list(e), self.context_length, opts.max_new_tokens) for e in encoded]
        size = max(1, min(batch_size, self.n_seq))
        out: list[Completion] = []
        with self._lock:
            ctx = self._context
            ctx.use(self.adapter)
            for start in range(0, len(fitted), size):
                out += self._batch(fitted[start:start + size], start, opts, grammar)
                if progress:
                    progress(len(fitted[start:start + size]))
        return out

    def _batch(self, batch: list[list[int]], first: int, opts: GenerationOptions, grammar: Any) -> list[Completion]:
        import numpy as np

        from kifabrik.models.structured import Matcher

        ctx = self._context
        seqs = [_Seq(s, ids, min(opts.max_new_tokens, ctx.n_ctx - len(ids)),
                     np.random.default_rng([abs(opts.seed), first + s]) if opts.temperature > 0 else None,
                     Matcher(grammar) if grammar is not None else None) for s, ids in enumerate(batch)]
        try:
            while running := [s for s in seqs if s.finish is None]:
                # in sequence order (llama.cpp then runs one pass over the weights per step): the next token
                # of each decoding sequence, prompt chunks of the others in the room they leave (n_batch)
                items: list[tuple[int, int, int, bool]] = []
                wanted: list[tuple[_Seq, int]] = []
                decoding = sum(1 for s in running if not s.todo)
                for s in running:
                    if not s.todo:
                        wanted.append((s, len(items)))
                        items.append((s.new[-1], s.pos, s.seq, True))
                        s.pos += 1
                        decoding -= 1
                        continue
                    room = ctx.n_batch - len(items) - decoding
                    if room <= 0:
                        continue
                    chunk, s.todo = s.todo[:room], s.todo[room:]
                    items += [(t, s.pos + j, s.seq, not s.todo and j == len(chunk) - 1) for j, t in enumerate(chunk)]
                    s.pos += len(chunk)
                    if not s.todo:
                        wanted.append((s, len(items) - 1))
                status = ctx.decode(items)
                if status != 0:
                    raise KifabrikError(f"llama.cpp could not decode a batch of {len(items)} tokens (status {status})",
                                        hint="lower the batch size, or use --backend transformers")
                for s, i in wanted:
                    self._advance(s, np.array(ctx.logits(i), dtype=np.float32), opts)
                for s in running:
                    if s.finish is not None:
                        ctx.drop(s.seq)
        finally:
            for s in seqs:
                ctx.drop(s.seq)
        return [self._completion(s, opts) for s in seqs]

    def _advance(self, s: _Seq, logits: Any, opts: GenerationOptions) -> None:
        """Choose the next token of `s` from its logits (masked by its grammar) and see whether it ends there."""
        if s.room <= 0:
            s.finish = "length"
            return
        if s.matcher is not None and not s.matcher.done:
            import torch

            s.matcher.mask(torch.from_numpy(logits))  # in place: the numpy array shares the tensor's memory
        token = sample_token(logits, opts.temperature, opts.top_p, s.rng)
        if token in self.eos_ids:
            s.finish = "stop"
            return
        s.new.append(token)
        grammar_done = s.matcher is not None and (not s.matcher.accept(token) or s.matcher.done)
        if grammar_done or (opts.stop and any(x and x in self.tokenizer.decode(s.new, skip_special_tokens=True)
                                              for x in opts.stop)):
            s.finish = "stop"
        elif len(s.new) >= s.room:
            s.finish = "length"

    def _completion(self, s: _Seq, opts: GenerationOptions) -> Completion:
        """The answer as `LoadedModel.generate_ids` writes it: special tokens skipped, cut at a stop, stripped."""
        text = str(self.tokenizer.decode(s.new, skip_special_tokens=True))
        cut = min((text.find(x) for x in opts.stop if x and x in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        finish = "stop" if s.finish == "stop" or len(s.new) < opts.max_new_tokens else "length"
        return Completion(text.strip(), s.prompt_tokens, len(s.new), finish)

    def loglikelihoods(self, requests: Sequence[Any], *,
                       progress: Callable[[int], None] | None = None) -> list[list[tuple[float, bool, int]]]:
        """(log-likelihood, greedy, tokens) of every choice of every request (`context`, `choices` token ids).

        The context is decoded once; each choice continues it in the KV cache and is removed again
        before the next (llama.cpp's logits of every choice position, log-softmax in float64).
        """
        import numpy as np

        out: list[list[tuple[float, bool, int]]] = []
        with self._lock:
            ctx = self._context
            ctx.use(self.adapter)
            try:
                for req in requests:
                    context = list(req.context)
                    [last] = self._feed(context, 0, want_all=False)
                    row = []
                    for cont in req.choices:
                        rows = [last, *self._feed(list(cont[:-1]), len(context), want_all=True)] if len(cont) > 1 else [last]
                        lp = [_log_softmax(r) for r in rows]
                        total = float(sum(p[t] for p, t in zip(lp, cont, strict=True)))
                        greedy = all(int(np.argmax(p)) == t for p, t in zip(lp, cont, strict=True))
                        row.append((total, greedy, len(cont)))
                        ctx.lc.llama_memory_seq_rm(ctx.memory, 0, len(context), -1)  # keep only the context
                    ctx.drop(0)
                    out.append(row)
                    if progress:
                        progress(1)
            finally:
                ctx.drop(0)
        return out

    def _feed(self, tokens: list[int], pos: int, *, want_all: bool) -> list[Any]:
        """Decode `tokens` into sequence 0 from position `pos`; copies of the logits of every token, or the last one's."""
        import numpy as np

        ctx = self._context
        if pos + len(tokens) > ctx.n_ctx:
            raise KifabrikError(f"{pos + len(tokens)} tokens do not fit llama.cpp's context of {ctx.n_ctx} per sequence",
                                hint="shorten the item, or use --backend transformers")
        got: list[Any] = []
        for start in range(0, len(tokens), ctx.n_batch):
            chunk = tokens[start:start + ctx.n_batch]
            final = start + len(chunk) == len(tokens)
            items = [(t, pos + start + j, 0, want_all or (final and j == len(chunk) - 1)) for j, t in enumerate(chunk)]
            status = ctx.decode(items)
            if status != 0:
                raise KifabrikError(f"llama.cpp could not decode {len(chunk)} tokens (status {status})")
            got += [np.array(ctx.logits(j), dtype=np.float32) for j, it in enumerate(items) if it[3]]
        return got

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None

    def __del__(self) -> None:  # the runtime's cache drops models; llama.cpp's memory is not Python's
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit the binding may be gone already
            pass


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    z = logits.astype(np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())
