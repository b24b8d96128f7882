"""Rendering prompts: one chat-template path, one documented fallback, one context-length rule.

Every face that runs a model (serve, evaluate, generate, agents, kb-grounded answers) turns
messages into token ids here, so an evaluation scores exactly the prompt a server sends.

The fallback, for tokenizers without a chat template (base models), writes one
``role: content`` line per message, closes each assistant answer with the tokenizer's EOS token
(so that a model trained on it learns to stop) and ends with ``assistant:``; it is tokenized
*with* the tokenizer's special tokens (a base model expects its BOS token), whereas a chat
template already writes them and is tokenized without. Training renders chat rows the same way
(train/data.py), so a base model trained on chats is asked exactly as it was taught.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Messages = list[dict[str, Any]]

#: The context length used when neither the record nor the model config names one.
DEFAULT_CONTEXT = 2048


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def fallback_text(messages: Sequence[dict[str, Any]], *, generation_prompt: bool = True, eos: str = "") -> str:
    """A conversation as plain text for a model without a chat template (`eos` closes each answer)."""
    text = "".join(f"{m['role']}: {m.get('content') or ''}{eos if m['role'] == 'assistant' else ''}\n"
                   for m in messages)
    return text + ("assistant:" if generation_prompt else "")


def special_tokens_added(tokenizer: Any) -> bool:
    """Whether rendered prompt text is tokenized with the tokenizer's special tokens (the fallback: yes)."""
    return not has_chat_template(tokenizer)


def render(tokenizer: Any, messages: Sequence[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
           generation_prompt: bool = True) -> str:
    """The prompt text of `messages`: the tokenizer's chat template, else `fallback_text`."""
    if not has_chat_template(tokenizer):
        return fallback_text(messages, generation_prompt=generation_prompt, eos=getattr(tokenizer, "eos_token", None) or "")
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    return str(tokenizer.apply_chat_template(list(messages), add_generation_prompt=generation_prompt,
                                             tokenize=False, **kwargs))


def chat_ids(tokenizer: Any, messages: Sequence[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
             prefill: str = "") -> list[int]:
    """Token ids of a chat prompt with its generation prompt, followed by `prefill` text."""
    text = render(tokenizer, messages, tools=tools) + prefill
    return list(tokenizer(text, add_special_tokens=special_tokens_added(tokenizer))["input_ids"])


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a raw completion prompt (with the tokenizer's special tokens, e.g. BOS)."""
    return list(tokenizer(text)["input_ids"])


def context_length(record_meta: dict[str, Any], model_config: Any) -> int:
    """Most tokens (prompt + completion) one sequence may hold.

    The record's `context_length` (set at registration, e.g. from a GGUF header) wins over the
    config's `max_position_embeddings`; 2048 when neither is known.
    """
    for value in (record_meta.get("context_length"), getattr(model_config, "max_position_embeddings", None)):
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT


def fit_prompt(ids: list[int], context: int, max_new_tokens: int) -> list[int]:
    """Keep the last tokens of a prompt so that prompt + `max_new_tokens` fits `context` (at least 8)."""
    limit = max(8, context - max_new_tokens)
    return ids[-limit:]


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a generation (the generation config's and the tokenizer's)."""
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
