"""Ways around a usage policy that once worked, each closed: weights or rows registered again under a
fresh name keep the restrictions of what they copy; exports and release bundles carry the attribution duties."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.policy import PolicyDenied, preset, require, restrictions
from kifabrik.workspace import Workspace


def dataset(ws: Workspace, name: str, policy: str, rows: list[dict] | None = None) -> ArtifactRecord:
    policy_id = ws.catalog.add_policy(policy.split(":")[0], preset(policy))
    rows = rows or [{"messages": [{"role": "user", "content": f"Frage {i}"}, {"role": "assistant", "content": f"Antwort {i}"}]}
                    for i in range(4)]
    with ws.create("dataset", name, policies=[policy_id], meta={"policy_ids": [policy_id], "policy": policy}) as draft:
        draft.write_text("train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        draft.write_text("test.jsonl", "")
    return draft.record


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's architecture with other weights: what merging an adapter into it gives."""
    from helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("merged") / "merged", seed=7)


def merged_model(ws: Workspace, folder: Path, data: ArtifactRecord, name: str = "fach") -> ArtifactRecord:
    """A model as `merge --into-base` records it: its own weights folder, made from `data`."""
    from kifabrik.models.folder import derived_model_facts
    from kifabrik.models.sources import record_weights_hash

    base = ws.catalog.get_artifact("tiny", "model")
    with ws.create("model", name, parents=[(base.id, "base_model"), (data.id, "trained_on")],
                   config={"merged": True}) as draft:
        shutil.copytree(folder, draft.dir / "weights")
        draft.meta = {**derived_model_facts(draft.dir / "weights", base, source="merge:test"), "base_model_id": base.id}
    return record_weights_hash(ws, draft.record)


# --------------------------------------------------------------------------- 1. weights registered again

def test_a_merged_models_weights_added_again_keep_its_restrictions(cli, ws, tiny_model, other_weights):
    data = dataset(ws, "intern", "internal-only")
    merged = merged_model(ws, other_weights, data)
    r = cli("models", "add", str(ws.path(merged) / "weights"), "--copy", "--name", "clean")
    assert r.code == 0, r.err
    assert "same weights as model fach@1" in r.out
    clean = ws.catalog.get_artifact("clean", "model")
    assert clean.meta["weights_sha256"] == merged.meta["weights_sha256"]
    assert [(e.parent_id, e.relation) for e in ws.catalog.edges(child=clean.id)] == [(merged.id, "same_content")]
    assert {"model.safetensors"} == set(ws.catalog.edges(child=clean.id)[0].attributes["files"])
    carried = [(r["kind"], r["action"], r["policy"]) for r in restrictions(ws, clean.id)]
    assert ("prohibition", "distribute", "internal-only") in carried
    shown = cli("models", "show", "clean")
    assert "same_content" in shown.out and merged.id in shown.out and "internal-only" in shown.out

    r = cli("export", "clean", "--out", str(ws.settings.home.parent / "out"))
    assert r.code == 1 and "usage policy forbids release" in r.err and "[inherited by clean@1]" in r.err
    assert not (ws.settings.home.parent / "out").exists()
    r = cli("release", "clean", "--name", "clean", "--version", "1.0.0", "--license", "Apache-2.0")
    assert r.code == 1 and "refused by usage policy (release)" in r.err and "dataset intern@1" in r.err
    assert ws.catalog.list_artifacts("release") == []


def test_the_same_folder_under_the_same_name_is_not_linked_to_itself(ws, tiny_model, tiny_model_dir):
    from kifabrik.models.sources import add_model

    again = add_model(ws, str(tiny_model_dir), name="tiny")
    assert again.id == tiny_model.id and ws.catalog.edges(child=again.id) == []


def test_an_adapters_weights_in_a_model_folder_keep_its_restrictions(ws, tiny_model, tiny_model_dir, tmp_path):
    from safetensors.torch import save_file
    import torch

    from kifabrik.models.sources import add_model

    data = dataset(ws, "intern", "internal-only")
    with ws.create("adapter", "lora", parents=[(tiny_model.id, "base_model"), (data.id, "trained_on")]) as draft:
        draft.write_json("adapter_config.json", {"peft_type": "LORA", "r": 2})
        save_file({"lora_A": torch.ones(2, 32)}, str(draft.dir / "adapter_model.safetensors"))
    adapter = draft.record
    folder = shutil.copytree(tiny_model_dir, tmp_path / "disguised")
    shutil.copy(ws.path(adapter) / "adapter_model.safetensors", folder / "model.safetensors")
    rec = add_model(ws, str(folder), name="disguised")
    assert [(e.parent_id, e.relation) for e in ws.catalog.edges(child=rec.id)] == [(adapter.id, "same_content")]
    assert rec.meta["same_content"] == [{"id": adapter.id, "ref": "lora@1", "kind": "adapter",
                                         "files": ["model.safetensors"]}]
    with pytest.raises(PolicyDenied, match=r"dataset intern@1 .*\[inherited by disguised@1\]"):
        require(ws, [rec.id], "release")
    assert ws.catalog.audit_entries("model.add")[-1].details["same_content"] == [adapter.id]


def test_a_path_in_the_store_that_is_no_model_is_refused(ws, tiny_model, tiny_model_dir):
    from kifabrik.models.sources import add_model

    with ws.create("release", "bundle", parents=[(tiny_model.id, "released")]) as draft:
        shutil.copytree(tiny_model_dir, draft.dir / "weights")
    bundle = draft.record
    before = ws.catalog.list_artifacts("model")
    with pytest.raises(KifabrikError, match=r"lies inside the artifact store .* belongs to release bundle@1") as info:
        add_model(ws, str(ws.path(bundle) / "weights"), name="unbundled", copy=True)
    assert "by name" in info.value.hint
    assert ws.catalog.list_artifacts("model") == before
