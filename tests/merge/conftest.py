"""Adapters for merge tests: PEFT LoRA with random A and B on the tiny model (no training needed)."""

from __future__ import annotations

import pytest


def make_adapter(ws, base, name, *, seed, rank=4, targets=("q_proj", "v_proj"), dora=False):
    import torch
    from peft import LoraConfig, get_peft_model

    from kifabrik.models.loading import load_model
    from kifabrik.models.sources import model_path

    model = load_model(model_path(ws, base), dtype="float32", device="cpu")
    torch.manual_seed(seed)
    # init_lora_weights=False makes B random too, so every adapter changes the logits.
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False, use_dora=dora)
    peft_model = get_peft_model(model, cfg)
    meta = {"base_model_id": base.id, "base_weights_sha256": base.meta.get("weights_sha256"), "rank": rank,
            "datasets": [], "policy_ids": []}
    with ws.create("adapter", name, parents=[(base.id, "base_model")], meta=meta, config={"seed": seed}) as draft:
        peft_model.save_pretrained(draft.dir, safe_serialization=True)
    return draft.record


@pytest.fixture
def adapters(ws, tiny_model):
    a = make_adapter(ws, tiny_model, "service", seed=1, rank=4)
    b = make_adapter(ws, tiny_model, "parts", seed=2, rank=8, targets=("q_proj", "v_proj", "o_proj"))
    return a, b
