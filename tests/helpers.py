"""Builders for test inputs (no network: everything is made from a config)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kifabrik.workspace import Workspace

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CORPUS = [
    "Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel.",
    "The machine needs an oil change every 500 operating hours.",
    "Bitte prüfen Sie den Hydraulikdruck vor dem Start.",
    "Please check the hydraulic pressure before starting.",
    "Ersatzteile bestellen Sie über das Kundenportal.",
    "Order spare parts through the customer portal.",
] * 4


def build_tiny_model(out: Path, *, seed: int = 0) -> Path:
    """Save a tiny random LlamaForCausalLM + BPE tokenizer as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<|end|>",
                                   pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    (out / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [de, en]\n---\n# tiny test model\n")
    return out


@dataclass
class Server:
    url: str
    ws: Workspace
    uvicorn: Any
    thread: threading.Thread
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None, **kw: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key or self.keys["all"], max_retries=0, timeout=60, **kw)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(30)


def start_server(ws: Workspace, **options: Any) -> Server:
    """Start `kifabrik.serve` in a thread on 127.0.0.1 with a free port; wait until it answers."""
    import uvicorn

    from kifabrik.serve import ServeConfig, build_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = ServeConfig(host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(uvicorn.Config(build_app(ws, config), log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    return Server(f"http://127.0.0.1:{port}", ws, server, thread)
