"""Answering one prompt with a loaded model (`kifabrik generate`, the recipe stage `generate`)."""

from __future__ import annotations

from dataclasses import dataclass

from kifabrik.models.runtime import GenerationOptions, LoadedModel

__all__ = ["Generation", "GenerationOptions", "chat", "messages_of"]


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    chat_template: bool


def messages_of(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def chat(loaded: LoadedModel, prompt: str, *, system: str | None = None,
         options: GenerationOptions | None = None) -> Generation:
    """Generate one answer to `prompt` (rendered by the one prompt path of `models.prompts`)."""
    [c] = loaded.generate([messages_of(prompt, system)], options or GenerationOptions(), batch_size=1)
    return Generation(prompt=prompt, text=c.text, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                      finish_reason=c.finish_reason, chat_template=loaded.chat_template is not None)
