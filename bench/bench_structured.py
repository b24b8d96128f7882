"""Per-token cost of constrained decoding (xgrammar) against unconstrained decoding, on the embedded model.

    .venv/bin/python bench/bench_structured.py [--model smollm2-135m-instruct] [--tokens 48] [--reps 3]

Three measurements, each printed with its ratio:
  1. the grammar alone: mask + accept per token, on a fixed valid tool call (no model);
  2. decoding step by step over the same fixed tokens (teacher-forced): each step's forward pass
     and sampling, and the grammar's mask + accept, timed side by side in the same loop, so a
     busy machine slows both alike; the ratio is (forward + grammar) / forward;
  3. end to end `LoadedModel.generate_ids`: a JSON-Schema answer vs a free answer, ms per token
     after the prompt's prefill; runs alternate, but the answers differ (noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time

import torch

from kifabrik.agents import resolve as tools_of
from kifabrik.models import toolcalls
from kifabrik.models.runtime import GenerationOptions, load, resolve
from kifabrik.models.structured import Constraint, Matcher
from kifabrik.workspace import Workspace

SCHEMA = {"type": "object", "properties": {
    "order_id": {"type": "string", "pattern": "^A-[0-9]{4}$"},
    "status": {"enum": ["eingegangen", "in Fertigung", "versandbereit", "versandt", "zugestellt"]},
    "summary": {"type": "string", "maxLength": 400}}, "required": ["order_id", "status", "summary"],
    "additionalProperties": False}
CALL = 'schmidt_order_status", "arguments": {"order_id": "A-1007"}}\n</tool_call>'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="registered model name")
    ap.add_argument("--tokens", type=int, default=48, help="tokens per end-to-end answer")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each measurement")
    args = ap.parse_args()
    ws = Workspace.open()
    lm = load(resolve(ws, ws.catalog.get_artifact(args.model)))
    tools = [t.openai() for t in tools_of(["schmidt.*"])]

    start = time.perf_counter()
    call_grammar = lm.grammar(Constraint.tags(toolcalls.call_format(tools, "required")))
    lm.grammar(Constraint.json_schema(SCHEMA))  # cached for step 3
    print(f"compile (tool-call format + JSON schema, first time): {time.perf_counter() - start:.2f} s")

    # 1. the grammar alone
    ids = lm.tokenizer.encode(CALL, add_special_tokens=False)
    logits = torch.zeros(lm.vocab_size)
    per: list[float] = []
    for _ in range(args.reps * 10):
        m = Matcher(call_grammar)
        t0 = time.perf_counter()
        for t in ids:
            m.mask(logits)
            assert m.accept(t)
        per.append((time.perf_counter() - t0) / len(ids))
    mask_ms = statistics.median(per) * 1000
    print(f"1. grammar alone: {mask_ms:.3f} ms per token (mask + accept, {len(ids)} tokens, vocab {lm.vocab_size})")

    # 2. teacher-forced decoding over the same tokens: each step's forward pass and its mask timed side by side
    prefill = toolcalls.prefill("required")
    prompt = lm.chat_ids(toolcalls.prompt_messages([{"role": "user", "content": "Status of order A-1007?"}], tools,
                                                   False), None, prefill)
    forward, masking = 0.0, 0.0
    for _ in range(args.reps):
        f, m = _forced(lm, prompt, ids, call_grammar)
        forward, masking = forward + f, masking + m
    print(f"2. decoding step, same {len(ids)} tokens x {args.reps}: forward + sampling {forward / args.reps * 1000:.1f} ms, "
          f"grammar {masking / args.reps * 1000:.2f} ms per token; constrained / unconstrained "
          f"{(forward + masking) / forward:.4f}")

    # 3. end to end through the runtime
    question = [{"role": "user", "content": "Describe the status of order A-1007 as JSON with order_id, status "
                                            "and a summary."}]
    q_ids = lm.chat_ids(question)
    opts = GenerationOptions(max_new_tokens=args.tokens)
    rates: dict[str, list[float]] = {"free": [], "json_schema": []}
    for _ in range(args.reps):
        for name, constraint in (("free", None), ("json_schema", Constraint.json_schema(SCHEMA))):
            t0 = time.perf_counter()  # the prompt's prefill alone, measured right before, is taken off
            lm.generate_ids([q_ids], GenerationOptions(max_new_tokens=1), batch_size=1, constraint=constraint)
            t1 = time.perf_counter()
            [c] = lm.generate_ids([q_ids], opts, batch_size=1, constraint=constraint)
            t2 = time.perf_counter()
            rates[name].append(((t2 - t1) - (t1 - t0)) / max(c.completion_tokens - 1, 1))
    free_e2e, json_e2e = statistics.median(rates["free"]), statistics.median(rates["json_schema"])
    print(f"3. generate_ids end to end (prefill taken off): free {free_e2e * 1000:.1f} ms, json_schema "
          f"{json_e2e * 1000:.1f} ms per token; ratio {json_e2e / free_e2e:.3f} (noisy on a shared machine)")


@torch.inference_mode()
def _forced(lm, prompt: list[int], tokens: list[int], grammar) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(forward seconds, grammar seconds) per token of decoding `tokens` after `prompt` step by step (KV cache)."""
    model = lm.model
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    matcher = Matcher(grammar)
    forward = masking = 0.0
    for t in tokens:
        t0 = time.perf_counter()
        logits = out.logits[0, -1].clone()
        matcher.mask(logits)
        matcher.accept(t)
        t1 = time.perf_counter()
        int(torch.argmax(logits))  # the sampling step a decoder takes (teacher-forced: `t` is fed regardless)
        out = model(input_ids=torch.tensor([[t]]), use_cache=True, **{kw: out.past_key_values})
        forward += time.perf_counter() - t1
        masking += t1 - t0
    return forward / len(tokens), masking / len(tokens)


if __name__ == "__main__":
    main()
