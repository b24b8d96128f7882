"""Builders for the train tests: dataset artifacts written directly in the dataset format."""

from __future__ import annotations

import json
from typing import Any

from kifabrik.workspace import Workspace

QA = [
    ("Wie oft braucht die Maschine einen Ölwechsel?", "Alle 500 Betriebsstunden."),
    ("How often does the machine need an oil change?", "Every 500 operating hours."),
    ("Was prüfe ich vor dem Start?", "Bitte prüfen Sie den Hydraulikdruck."),
    ("What do I check before starting?", "Please check the hydraulic pressure."),
    ("Wo bestelle ich Ersatzteile?", "Über das Kundenportal."),
    ("Where do I order spare parts?", "Through the customer portal."),
]


def chat_rows(n: int, *, system: bool = True) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        q, a = QA[i % len(QA)]
        msgs = ([{"role": "system", "content": "Sie sind der Service-Assistent."}] if system and i % 2 else [])
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i % 3 == 0:  # some multi-turn conversations
            msgs += [{"role": "user", "content": "Danke!"}, {"role": "assistant", "content": "Gern geschehen."}]
        rows.append({"messages": msgs})
    return rows


def text_rows(n: int) -> list[dict[str, Any]]:
    return [{"text": " ".join(q + " " + a for q, a in QA[: 1 + i % len(QA)])} for i in range(n)]


def make_dataset(ws: Workspace, name: str, train: list[dict[str, Any]], test: list[dict[str, Any]] | None = None,
                 *, fmt: str = "chat", policy: dict[str, Any] | None = None) -> Any:
    """A dataset artifact as the data stage writes it (train/test JSONL, card, meta, policy)."""
    test = test or []
    policy_ids = [ws.catalog.add_policy(f"{name}-policy", policy)] if policy else []
    meta = {"format": fmt, "rows": {"train": len(train), "test": len(test)}, "policy_ids": policy_ids}
    with ws.create("dataset", name, meta=meta, policies=policy_ids) as draft:
        draft.write_text("train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train))
        draft.write_text("test.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test))
        draft.write_text("card.md", f"# {name}\n")
        draft.write_json("card.json", {"name": name})
    return draft.record


#: Small, fast options for the 2-layer tiny model.
FAST = {"max_steps": 6, "epochs": 3, "batch_size": 2, "save_steps": 3, "eval_steps": 3, "learning_rate": 5e-3,
        "max_seq_length": 128, "lora": {"rank": 4, "alpha": 8}}
