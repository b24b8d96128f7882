"""Answering prompts with a registered model and its chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenerationOptions:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    chat_template: bool


def chat(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, *, system: str | None = None,
         options: GenerationOptions | None = None) -> Generation:
    """Generate one answer. Uses the tokenizer's chat template when it has one, else the raw prompt."""
    import torch

    options = options or GenerationOptions()
    templated = bool(getattr(tokenizer, "chat_template", None))
    if templated:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        enc: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    else:
        enc = tokenizer((system + "\n\n" if system else "") + prompt, return_tensors="pt")
    enc = {k: v.to(model.device) for k, v in enc.items()}
    torch.manual_seed(options.seed)
    sample = options.temperature > 0
    with torch.inference_mode():
        out = model.generate(  # type: ignore[operator]  # transformers types generate() as a Tensor attribute
            **enc,
            max_new_tokens=options.max_new_tokens,
            do_sample=sample,
            temperature=options.temperature if sample else None,
            top_p=options.top_p if sample else None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = out[0, enc["input_ids"].shape[1]:]
    eos = tokenizer.eos_token_id
    stopped = eos is not None and len(new) > 0 and int(new[-1]) in ([eos] if isinstance(eos, int) else eos)
    text = str(tokenizer.decode(new, skip_special_tokens=True)).strip()
    return Generation(prompt=prompt, text=text,
                      prompt_tokens=int(enc["input_ids"].shape[1]), completion_tokens=int(len(new)),
                      finish_reason="stop" if stopped or len(new) < options.max_new_tokens else "length",
                      chat_template=templated)
