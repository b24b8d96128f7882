"""Batched decoding with transformers: one forward pass per step for every running request.

Why not `model.generate`: requests in one batch differ in temperature, top_p, seed, stop
sequences, max_tokens and adapter, and each must stream its own tokens. So this loop
keeps a left-padded batch with one KV cache, samples each row with its own settings and
generator, drops finished rows from the cache, and (continuous batching) pre-fills
requests that arrived meanwhile and appends them to the running batch by left-padding
the shorter cache. Adapters are mixed in one batch through PEFT's `adapter_names`.
A request with a grammar (`GenRequest.grammar`: JSON Schema, tool-call format) gets its own
`models.structured.Matcher`, which masks its row's logits before each token is sampled.
"""

from __future__ import annotations

import functools
import inspect
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kifabrik.models.structured import Matcher
from kifabrik.serve.engine import Event, GenRequest

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class Detokenizer:
    """Incremental decoding that never splits a multi-byte character (the TGI offsets method)."""

    def __init__(self, tokenizer: Any, context: list[int]) -> None:
        self.tok = tokenizer
        self.ids = list(context[-4:])  # a little prompt context keeps leading spaces right
        self.prefix = 0
        self.read = len(self.ids)

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        before = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""


@dataclass
class Row:
    req: GenRequest
    detok: Detokenizer
    gen: torch.Generator | None
    position: int  # position id of the next input token
    next_token: int = 0
    generated: int = 0
    text: str = ""
    sent: int = 0
    done: bool = False
    stop_len: int = field(default=0)
    matcher: Matcher | None = None  # the row's grammar state, when its request is constrained


def sample(logits: torch.Tensor, row: Row) -> int:
    """One token from a row's last-position logits with its temperature / top_p / generator."""
    req = row.req
    if row.matcher is not None:
        row.matcher.mask(logits)  # in place: tokens the grammar forbids get -inf
    if req.temperature <= 0:
        return int(torch.argmax(logits))
    # shifted so the best logit is 0, and in float64: a tiny temperature (1e-30) then gives a one-hot
    # distribution instead of inf / inf = nan
    probs = torch.softmax((logits.double() - logits.max().double()) / req.temperature, dim=-1)
    if req.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        drop = torch.cumsum(sorted_p, dim=-1) - sorted_p > req.top_p  # keep the smallest set reaching top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=row.gen))


class BatchDecoder:
    """Runs one batch to the end for a (PEFT-wrapped or plain) causal LM."""

    def __init__(self, model: Any, tokenizer: Any, *, context_length: int, max_batch: int, peft: bool,
                 eos_ids: set[int], pad_id: int) -> None:
        self.model = model
        self.tok = tokenizer
        self.context_length = context_length
        self.max_batch = max_batch
        self.peft = peft
        self.eos = eos_ids
        self.pad = pad_id
        self.joinable = False  # decided per batch from the cache layer types
        self.device = next(model.parameters()).device

    # -------------------------------------------------------------- one batch
    @torch.inference_mode()
    def run(self, first: list[GenRequest], take: Callable[[int], list[GenRequest]]) -> None:
        rows: list[Row] = []
        cache: Any = None
        mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        pending = first
        while True:
            if pending:
                new_rows, new_cache, new_mask = self._prefill(pending)
                rows, cache, mask = self._merge(rows, cache, mask, new_rows, new_cache, new_mask)
            rows, cache, mask = self._prune(rows, cache, mask)
            if not rows:
                return
            room = self.max_batch - len(rows)
            pending = take(room) if (self.joinable and room > 0) else []
            ids = torch.tensor([[r.next_token] for r in rows], device=self.device)
            pos = torch.tensor([[r.position] for r in rows], device=self.device)
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=self.device)], dim=1)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **{self._cache_kw: cache},
                             use_cache=True, **self._adapters(rows))
            cache = out.past_key_values
            logits = out.logits[:, -1, :]
            for i, row in enumerate(rows):
                row.position += 1
                self._accept(row, sample(logits[i], row))

    @functools.cached_property
    def _cache_kw(self) -> str:
        """The forward() keyword for the KV cache: `cache` in newer transformers 5 (which warn on the old name)."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def _adapters(self, rows: list[Row]) -> dict[str, Any]:
        return {"adapter_names": [r.req.adapter or BASE for r in rows]} if self.peft else {}

    def _prefill(self, reqs: list[GenRequest]) -> tuple[list[Row], Any, torch.Tensor]:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((len(reqs), width), self.pad, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(reqs), width), dtype=torch.long, device=self.device)
        for i, r in enumerate(reqs):  # left padding: every row's last prompt token is in the last column
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, device=self.device)
            mask[i, width - len(r.prompt_ids):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = []
        for r in reqs:
            gen = None
            if r.temperature > 0:
                gen = torch.Generator(device=self.device).manual_seed(r.seed if r.seed is not None else secrets.randbits(63))
            rows.append(Row(r, Detokenizer(self.tok, r.prompt_ids), gen, position=len(r.prompt_ids),
                            stop_len=max((len(s) for s in r.stop), default=0),
                            matcher=Matcher(r.grammar) if r.grammar is not None else None))
        # logits_to_keep=1: only the last position's logits are needed (all of them cost batch x prompt x vocab)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1,
                         **{self._cache_kw: DynamicCache(config=self.model.config)}, use_cache=True,
                         **self._adapters(rows))
        # Joining and cropping rewrite the cache along the sequence axis: only plain full-attention
        # layers allow that (sliding-window or linear-attention layers keep their own bookkeeping).
        self.joinable = all(type(layer) is DynamicLayer for layer in out.past_key_values.layers)
        logits = out.logits[:, -1, :]
        for i, row in enumerate(rows):
            self._accept(row, sample(logits[i], row))
        return rows, out.past_key_values, mask

    # -------------------------------------------------------------- per token
    def _accept(self, row: Row, token: int) -> None:
        req = row.req
        if row.done:
            return
        if req.cancelled.is_set():
            return self._finish(row, "cancelled")
        if token in self.eos:
            return self._finish(row, "stop")
        if row.matcher is not None:
            row.matcher.accept(token)
        row.generated += 1
        row.next_token = token
        row.text += row.detok.add(token)
        if self._check_stop(row):
            return
        if row.generated >= req.max_tokens or len(req.prompt_ids) + row.generated >= self.context_length:
            row.text += row.detok.flush()
            if not self._check_stop(row):
                self._finish(row, "length")
            return
        if not req.stream:  # the whole text goes out with the last event
            return
        safe = len(row.text) - max(row.stop_len - 1, 0)  # a stop sequence may be starting
        if safe > row.sent:
            req.emit(Event(text=row.text[row.sent:safe]))
            row.sent = safe

    def _check_stop(self, row: Row) -> bool:
        hits = [i for i in (row.text.find(s, max(0, row.sent - len(s) + 1)) for s in row.req.stop) if i >= 0]
        if not hits:
            return False
        row.text = row.text[:min(hits)]
        self._finish(row, "stop")
        return True

    def _finish(self, row: Row, reason: str) -> None:
        if reason == "stop" and not row.req.stop:
            row.text += row.detok.flush()
        row.done = True
        row.req.emit(Event(text=row.text[row.sent:] if reason != "cancelled" else "", finish_reason=reason,
                           prompt_tokens=len(row.req.prompt_ids), completion_tokens=row.generated))
        row.sent = len(row.text)

    # -------------------------------------------------------------- cache surgery
    def _prune(self, rows: list[Row], cache: Any, mask: torch.Tensor) -> tuple[list[Row], Any, torch.Tensor]:
        for r in rows:
            if not r.done and r.req.cancelled.is_set():
                self._finish(r, "cancelled")
        keep = [i for i, r in enumerate(rows) if not r.done]
        if len(keep) == len(rows):
            return rows, cache, mask
        if not keep:
            return [], None, mask[:0]
        idx = torch.tensor(keep, device=self.device)
        cache.batch_select_indices(idx)
        mask = mask[idx]
        dead = int((mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns that are padding everywhere
        if dead and self.joinable:
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[:, :, dead:], layer.values[:, :, dead:]
            mask = mask[:, dead:]
        return [rows[i] for i in keep], cache, mask

    def _merge(self, rows: list[Row], cache: Any, mask: torch.Tensor, new_rows: list[Row], new_cache: Any,
               new_mask: torch.Tensor) -> tuple[list[Row], Any, torch.Tensor]:
        if not rows or cache is None:
            return new_rows, new_cache, new_mask
        width = max(mask.shape[1], new_mask.shape[1])

        def pad(t: torch.Tensor) -> torch.Tensor:  # left-pad the sequence axis (-2 for k/v, -1 for masks)
            dim = -2 if t.dim() == 4 else -1
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

        for old, new in zip(cache.layers, new_cache.layers, strict=True):
            old.keys = torch.cat([pad(old.keys), pad(new.keys)], dim=0)
            old.values = torch.cat([pad(old.values), pad(new.values)], dim=0)
        return rows + new_rows, cache, torch.cat([pad(mask), pad(new_mask)], dim=0)
