"""A real server on a random loopback port, over a workspace with the tiny model and two adapters."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # serve_scripted.py

from helpers import Server, start_server  # noqa: F401  (re-exported for the serve tests)

from kifabrik.catalog import ArtifactRecord
from kifabrik.workspace import Workspace


def make_adapter(ws: Workspace, base: ArtifactRecord, model_dir: Path, name: str, seed: int) -> ArtifactRecord:
    """A LoRA adapter artifact as the train stage writes it (random, non-zero B so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                                  init_lora_weights=False))
    with ws.create("adapter", name, parents=[(base.id, "base_model")],
                   meta={"base_model": base.ref, "base_model_id": base.id, "method": "lora"}) as draft:
        peft_model.save_pretrained(draft.dir, safe_serialization=True)
    return draft.record


@pytest.fixture(scope="module")
def serve_ws(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Workspace]:
    """One workspace per test module: tiny model + adapters `tiny-a` and `tiny-b` on it."""
    from kifabrik.models.sources import add_model

    ws = Workspace.open(tmp_path_factory.mktemp("serve-home"))
    base = add_model(ws, str(tiny_model_dir), name="tiny")
    make_adapter(ws, base, tiny_model_dir, "tiny-a", seed=1)
    make_adapter(ws, base, tiny_model_dir, "tiny-b", seed=2)
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def server_factory(serve_ws: Workspace) -> Iterator[Callable[..., Server]]:
    from kifabrik.serve.keys import create_key

    started: list[Server] = []

    def factory(**options: Any) -> Server:
        srv = start_server(serve_ws, **options)
        srv.keys["all"] = create_key(serve_ws, ["*"])[1]
        srv.keys["a"] = create_key(serve_ws, ["tiny-a"])[1]
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., Server]) -> Server:
    """The default server: keys on, AI notice on, batching on."""
    return server_factory(max_batch=8, max_queue=16, default_max_tokens=16)
