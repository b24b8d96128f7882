"""Log-likelihood of choices with the shared context computed once (prefix sharing).

lm-evaluation-harness scores a 4-choice item as four sequences `context + choice_i`, so the
context runs through the model four times. Here one sequence per item holds the context
once, followed by every choice; a 4-D attention mask lets each choice see the context and
its own earlier tokens but never another choice, and each choice's position ids restart
where the context ends. Shape of one row (context c1..c3, choices a, b):

    tokens     c1 c2 c3 a1 a2 b1          (the last token of each choice is only predicted)
    positions   0  1  2  3  4  3
    a2 attends c1 c2 c3 a1 a2;  b1 attends c1 c2 c3 b1

The log-probabilities equal the naive per-choice computation up to float rounding
(tests/evaluate/test_loglik.py checks |diff| < 1e-4 in float32). Logits are computed only
at the positions that predict a choice token: the vocabulary projection is a large share
of a small model's compute.

Tokenisation follows lm-evaluation-harness exactly: trailing spaces of the context move to
the continuation; the continuation's tokens are `encode(context + continuation)` minus the
tokens of `encode(context)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from kifabrik.models.loading import causal_lm, output_logits

Mode = Literal["shared", "naive"]


class ChoiceScore(NamedTuple):
    """Log-likelihood of one continuation: the sum, whether greedy decoding picks it, its token count."""

    loglik: float
    is_greedy: bool
    tokens: int


@dataclass(frozen=True)
class Request:
    """One multiple-choice item in tokens: the shared context and each choice's continuation."""

    context: list[int]
    choices: list[list[int]]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness's `_encode_pair` for causal models."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


def build_request(tokenizer: Any, context: str, choices: Sequence[str], max_length: int) -> Request:
    """Tokenise an item; an empty context is replaced by the BOS (else EOS) token, as lm-eval does."""
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx, conts = [prefix], [tokenizer.encode(c) for c in choices]
    else:
        pairs = [encode_pair(tokenizer, context, c) for c in choices]
        ctx, conts = pairs[0][0], [p[1] for p in pairs]
    conts = [c if c else [tokenizer.eos_token_id] for c in conts]  # never score an empty continuation
    longest = max(len(c) for c in conts)
    if len(ctx) + longest - 1 > max_length:  # keep the end of the context, like lm-eval's left truncation
        ctx = ctx[-max(1, max_length - longest + 1):]
    return Request(ctx, conts)


def score(model: Any, requests: Sequence[Request], *, mode: Mode = "shared", batch_tokens: int = 4096,
          max_batch: int = 64, progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
    """Score every choice of every request; returns one list of `ChoiceScore` per request.

    Requests are sorted by length (longest first, so memory trouble shows at once) and packed
    into batches of at most `batch_tokens` padded tokens.
    """
    import torch

    rows: list[tuple[int, list[int], list[tuple[int, int, list[int]]]]] = []  # (request, tokens, choice spans)
    for r, req in enumerate(requests):
        if mode == "shared":
            rows.append((r, *_shared_row(req)))
        else:
            for c, cont in enumerate(req.choices):
                tokens = req.context + cont[:-1]
                rows.append((r, tokens, [(c, len(req.context), cont)]))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][1]))
    out: list[list[ChoiceScore | None]] = [[None] * len(req.choices) for req in requests]
    done_requests: set[int] = set()
    start = 0
    with torch.inference_mode():
        while start < len(order):
            width = len(rows[order[start]][1])
            size = max(1, min(max_batch, batch_tokens // max(width, 1)))
            batch = [rows[i] for i in order[start:start + size]]
            for (r, _, spans), scores in zip(batch, _forward(model, batch, shared=mode == "shared"), strict=True):
                for (c, _, _), s in zip(spans, scores, strict=True):
                    out[r][c] = s
                if progress and r not in done_requests and all(x is not None for x in out[r]):
                    done_requests.add(r)
                    progress(1)
            start += size
    return [[s for s in row if s is not None] for row in out]


def _shared_row(req: Request) -> tuple[list[int], list[tuple[int, int, list[int]]]]:
    """Context once, then each choice without its last token; spans are (choice, start, continuation)."""
    tokens = list(req.context)
    spans = []
    for c, cont in enumerate(req.choices):
        spans.append((c, len(tokens), cont))
        tokens += cont[:-1]
    return tokens, spans


def _forward(model: Any, batch: list[tuple[int, list[int], list[tuple[int, int, list[int]]]]],
             shared: bool) -> list[list[ChoiceScore]]:
    import torch

    device = model.device
    width = max(len(t) for _, t, _ in batch)
    n = len(batch)
    ids = torch.zeros((n, width), dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)  # allowed[b, query, key]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for b, (_, tokens, spans) in enumerate(batch):
        length = len(tokens)
        ids[b, :length] = torch.tensor(tokens)
        ctx_len = spans[0][1] if shared else length
        pos[b, :ctx_len] = torch.arange(ctx_len)
        allowed[b, :length, :ctx_len] = causal[:length, :ctx_len]
        if shared:
            for _, start, cont in spans:
                end = start + len(cont) - 1
                pos[b, start:end] = torch.arange(ctx_len, ctx_len + end - start)
                allowed[b, start:end, start:end] = causal[: end - start, : end - start]
        if length < width:  # padding rows attend to the first token only, so softmax stays finite
            allowed[b, length:, 0] = True
    hidden = _hidden(model, ids.to(device), pos.to(device), allowed.to(device))
    # positions whose logits predict a choice token: the context's last token, then the choice's own tokens
    where: list[tuple[int, int]] = []
    targets: list[int] = []
    for b, (_, _, spans) in enumerate(batch):
        ctx_end = spans[0][1]  # every choice of a row continues the same context
        for _, start, cont in spans:
            prev = [ctx_end - 1] + list(range(start, start + len(cont) - 1))
            where += [(b, p) for p in prev]
            targets += cont
    bi = torch.tensor([w[0] for w in where], device=device)
    pi = torch.tensor([w[1] for w in where], device=device)
    logits = output_logits(model, hidden[bi, pi]).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    tgt = torch.tensor(targets, device=device)
    token_lp = logprobs.gather(1, tgt[:, None])[:, 0].cpu()
    greedy = (logprobs.argmax(-1) == tgt).cpu()
    results: list[list[ChoiceScore]] = []
    k = 0
    for _, _, spans in batch:
        row = []
        for _, _, cont in spans:
            m = len(cont)
            row.append(ChoiceScore(float(token_lp[k:k + m].sum()), bool(greedy[k:k + m].all()), m))
            k += m
        results.append(row)
    return results


def _hidden(model: Any, ids: Any, pos: Any, allowed: Any) -> Any:
    import torch

    lm = causal_lm(model)
    dtype = next(lm.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    decoder = lm.get_decoder()
    out = decoder(input_ids=ids, position_ids=pos, attention_mask=mask[:, None], use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
