"""Models and LoRA adapters as one thing to run: an adapter is loaded on its recorded base."""

from __future__ import annotations

from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace


def base_of(ws: Workspace, adapter: ArtifactRecord) -> ArtifactRecord:
    """The base model an adapter was trained (or merged) on, from its lineage."""
    bases = [e.parent_id for e in ws.catalog.edges(child=adapter.id) if e.relation == "base_model"]
    base_id = bases[0] if bases else adapter.meta.get("base_model_id")
    if not base_id:
        raise KifabrikError(f"adapter {adapter.ref} has no recorded base model",
                            hint="adapters made by `kifabrik train` or `kifabrik merge` record it")
    return ws.catalog.get_artifact(base_id, "model")


def load_runnable(ws: Workspace, record: ArtifactRecord, *, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a model record, or for an adapter on top of its base model."""
    from kifabrik.models.loading import load_model, load_tokenizer
    from kifabrik.models.sources import model_path

    if record.kind == "model":
        base, adapter = record, None
    elif record.kind == "adapter":
        base, adapter = base_of(ws, record), record
    else:
        raise KifabrikError(f"{record.ref} is a {record.kind}; a model or an adapter is needed",
                            hint="list them with `kifabrik models list` and `kifabrik adapters list`")
    path = model_path(ws, base)
    trust = bool(base.meta.get("trust_remote_code"))
    model, tokenizer = load_model(path, trust_remote_code=trust, device=device), load_tokenizer(path, trust_remote_code=trust)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ws.path(adapter)), is_trainable=False).eval()
    return model, tokenizer
