"""Helpers for the evaluation tests: task files, a dataset with personal data, a LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.workspace import Workspace

MC_ITEMS = [
    {"id": "1", "lang": "de", "question": "Die Maschine braucht alle 500", "choices": ["Betriebsstunden einen Ölwechsel.", "Kundenportal"], "answer": 0},
    {"id": "2", "lang": "en", "question": "Please check the hydraulic", "choices": ["pressure before starting.", "portal", "oil change every week"], "answer": "pressure before starting."},
    {"id": "3", "lang": "de", "question": "Ersatzteile bestellen Sie über das", "choices": ["Kundenportal.", "Hydraulikdruck", "Start"], "answer": 0},
    {"id": "4", "lang": "en", "question": "Order spare parts through the", "choices": ["customer portal.", "machine"], "answer": 0},
]
GEN_ITEMS = [
    {"id": "g1", "lang": "de", "question": "Wie oft braucht die Maschine einen Ölwechsel?", "answer": "alle 500 Betriebsstunden"},
    {"id": "g2", "lang": "en", "question": "How often does the machine need an oil change?", "answer": ["every 500 operating hours", "500 hours"]},
]


def write_task(folder: Path, name: str, body: str, items: list[dict[str, Any]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if items is not None:
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items),
                                             encoding="utf-8")
    path = folder / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


PII_ROWS = [
    {"messages": [{"role": "user", "content": "Wer ist mein Ansprechpartner?"},
                  {"role": "assistant", "content": "Ihr Ansprechpartner ist Frau Berger, erreichbar unter berger@schmidt-maschinenbau.de oder 0711 4455667."}]},
    {"messages": [{"role": "user", "content": "Wohin soll ich die Rechnung überweisen?"},
                  {"role": "assistant", "content": "Bitte überweisen Sie auf das Konto DE89 3704 0044 0532 0130 00 bei der Sparkasse."}]},
    {"messages": [{"role": "user", "content": "Wie oft wechsle ich das Öl der Fräse?"},
                  {"role": "assistant", "content": "Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel, bitte prüfen Sie vorher den Hydraulikdruck."}]},
]


def make_dataset(ws: Workspace, name: str, rows: list[dict[str, Any]], policy: dict[str, Any] | None = None,
                 test_rows: list[dict[str, Any]] | None = None) -> ArtifactRecord:
    policies = [ws.catalog.add_policy(f"{name}-policy", policy)] if policy else []
    test_rows = test_rows or []
    meta = {"format": "chat", "rows": {"train": len(rows), "test": len(test_rows)}, "policy_ids": policies}
    with ws.create("dataset", name, meta=meta, policies=policies) as draft:
        draft.write_text("train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        draft.write_text("test.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows))
        draft.write_json("card.json", {"name": name})
        draft.write_text("card.md", f"# {name}\n")
    return draft.record


def make_adapter(ws: Workspace, base: ArtifactRecord, datasets: list[ArtifactRecord], seed: int = 1) -> ArtifactRecord:
    """A random (non-zero) LoRA adapter on the tiny model, recorded like the train stage records one."""
    import torch
    from peft import LoraConfig, get_peft_model

    from kifabrik.models.loading import load_model
    from kifabrik.models.sources import model_path

    torch.manual_seed(seed)
    model = get_peft_model(load_model(model_path(ws, base)), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # PEFT starts B at zero; make the adapter change the outputs
    parents: list[Any] = [(base.id, "base_model")] + [(d.id, "trained_on") for d in datasets]
    with ws.create("adapter", "tiny-lora", parents=parents, meta={"base_model": base.ref, "base_model_id": base.id}) as draft:
        model.save_pretrained(draft.dir, safe_serialization=True)
    return draft.record


ONLY_TRAINING = {
    "@context": "http://www.w3.org/ns/odrl.jsonld", "@type": "Set", "@id": "urn:test:only-training",
    "permission": [{"action": "use", "constraint": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": "training"}]}],
}
