"""Ways around a usage policy that once worked, each closed: weights or rows registered again under a
fresh name keep the restrictions of what they copy; exports and release bundles carry the attribution duties."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kifabrik.catalog import ArtifactRecord, EdgeRecord
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
    import torch
    from safetensors.torch import save_file

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


# --------------------------------------------------------------------------- 2. rows imported again

def chat_line(q: str, a: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                      ensure_ascii=False) + "\n"


def service_chats(path: Path, n: int = 12, offset: int = 0) -> Path:
    path.write_text("".join(chat_line(f"Welches Drehmoment braucht Schraube {i} an Baugruppe {i * 3} der Presse?",
                                      f"Schraube {i} an Baugruppe {i * 3} ziehen Sie mit {20 + i} Nm an, danach "
                                      f"prüfen Sie die Dichtung {i} auf Risse.")
                            for i in range(offset, offset + n)), encoding="utf-8")
    return path


def imported(ws: Workspace, name: str, path: Path, policy: str):
    from kifabrik.data import ImportOptions, import_dataset

    return import_dataset(ws, ImportOptions(name=name, path=str(path), policy_preset=policy, test_fraction=0.25))


def test_the_stores_own_rows_imported_under_an_open_policy_keep_the_restrictions(ws, tmp_path):
    first = imported(ws, "pruefung", service_chats(tmp_path / "eval.jsonl"), "evaluation-only").record
    stored = ws.path(first) / "train.jsonl"  # 9 of the 12 rows; the other 3 are the test split
    again = imported(ws, "offen", stored, "open-with-attribution:Schmidt GmbH")
    rec = again.record
    assert [(e.parent_id, e.relation) for e in ws.catalog.edges(child=rec.id)] == [(first.id, "derived_from")]
    assert ws.catalog.edges(child=rec.id)[0].attributes == {"rows": 9, "share": 1.0, "covered": 0.75,
                                                            "match": "same_content"}
    with pytest.raises(PolicyDenied, match=r"dataset pruefung@1 .*policy 'evaluation-only'.*\[inherited by offen@1\]"):
        require(ws, [rec.id], "training")
    [source] = again.card["provenance"]["sources"]
    assert (source["ref"], source["rows"], source["exact"], source["share"], source["inherited"]) == \
        ("pruefung@1", 9, 9, 1.0, True)
    card = (ws.path(rec) / "card.md").read_text(encoding="utf-8")
    assert "| inherited restrictions | from dataset pruefung@1 (100% of the rows match) |" in card
    assert f"**The restrictions of dataset pruefung@1 (`{first.id[:12]}`) apply as well**: 100% of the rows" in card
    assert "- must not use for training a model or merging models" in card


def test_near_identical_rows_keep_the_restrictions_and_unrelated_rows_do_not(ws, tmp_path):
    first = imported(ws, "intern", service_chats(tmp_path / "a.jsonl"), "evaluation-only").record
    rows = (ws.path(first) / "train.jsonl").read_text(encoding="utf-8").splitlines()
    edited = tmp_path / "edited.jsonl"  # one word more in every answer, and another system prompt
    edited.write_text("".join(
        json.dumps({"messages": [{"role": "system", "content": "Du bist der Service-Assistent."}]
                    + [{**m, "content": m["content"] + (" Danke." if m["role"] == "assistant" else "")}
                       for m in json.loads(line)["messages"]]}, ensure_ascii=False) + "\n" for line in rows),
        encoding="utf-8")
    near = imported(ws, "kopie", edited, "open-with-attribution")
    [source] = near.card["provenance"]["sources"]
    assert (source["rows"], source["exact"], source["near"], source["inherited"]) == (9, 0, 9, True)
    assert {e.parent_id for e in ws.catalog.edges(child=near.record.id)} == {first.id}
    other = imported(ws, "andere", service_chats(tmp_path / "b.jsonl", offset=100), "open-with-attribution")
    assert other.card["provenance"]["sources"] == [] and other.card["provenance"]["datasets_checked"] == 2
    assert ws.catalog.edges(child=other.record.id) == []
    require(ws, [other.record.id], "training")


def test_a_few_copied_rows_are_reported_but_not_inherited(ws, tmp_path):
    first = imported(ws, "intern", service_chats(tmp_path / "a.jsonl", n=20), "evaluation-only").record
    copied = (ws.path(first) / "train.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    mixed = service_chats(tmp_path / "b.jsonl", n=9, offset=100)
    mixed.write_text(mixed.read_text(encoding="utf-8") + "\n".join(copied) + "\n", encoding="utf-8")
    res = imported(ws, "gemischt", mixed, "open-with-attribution")
    [source] = res.card["provenance"]["sources"]  # 3 of 12 rows (25 %), 3 of the 20 rows of intern (15 %)
    assert (source["rows"], source["share"], source["covered"], source["inherited"]) == (3, 0.25, 0.15, False)
    assert ws.catalog.edges(child=res.record.id) == []
    card = (ws.path(res.record) / "card.md").read_text(encoding="utf-8")
    assert "3 of 12 rows (25%) were found there" in card and "| 25% | 15% | no |" in card


# --------------------------------------------------------------------------- 4. attribution duties travel

ATTRIBUTED = {
    "@context": ["http://www.w3.org/ns/odrl.jsonld", {"dct": "http://purl.org/dc/terms/"}],
    "@type": "Set", "@id": "urn:test:cc-by", "dct:license": "CC-BY-4.0",
    "assigner": {"@id": "urn:party:mueller", "name": "Müller Werkzeuge KG"},
    "permission": [{"action": "use", "duty": [{"action": "attribute",
                                                "dct:description": "Name Müller Werkzeuge KG as the source."}]}],
}


def attributed_dataset(ws: Workspace) -> ArtifactRecord:
    policy_id = ws.catalog.add_policy("cc-by-mueller", ATTRIBUTED)
    with ws.create("dataset", "werkzeuge", policies=[policy_id], meta={"policy_ids": [policy_id]}) as draft:
        draft.write_text("train.jsonl", chat_line("Frage", "Antwort"))
    return draft.record


def test_an_export_carries_every_attribution_duty_in_a_notice(cli, ws, tiny_model, other_weights, tmp_path):
    schmidt = dataset(ws, "service", "open-with-attribution:Schmidt GmbH")
    tools = attributed_dataset(ws)
    model = merged_model(ws, other_weights, schmidt)
    ws.catalog.add_edge(EdgeRecord(tools.id, model.id, "trained_on"))
    r = cli("export", "fach", "--out", str(tmp_path / "hf"))
    assert r.code == 0, r.err
    notice = (tmp_path / "hf" / "NOTICE").read_text(encoding="utf-8")
    assert notice.startswith(f"NOTICE\n\nmodel fach@1 (id {model.id})\nLicence: apache-2.0\n")
    assert (f"1. dataset service (version 1, id {schmidt.id[:12]})\n"
            "   Policy: open-with-attribution (id ") in notice
    assert "   Duty: Attribute the data to Schmidt GmbH.\n" in notice
    assert (f"2. dataset werkzeuge (version 1, id {tools.id[:12]})\n   Policy: cc-by-mueller (id ") in notice
    assert ("permission[0].duty[0])\n   Duty: Name Müller Werkzeuge KG as the source.\n"
            "   Party to attribute: Müller Werkzeuge KG\n   Licence of the data: CC-BY-4.0\n") in notice
    assert f"- tiny@1 (id {tiny_model.id[:12]}): licence apache-2.0" in notice


def test_a_release_bundle_carries_the_notice_under_its_checksums(cli, ws, tiny_model, other_weights):
    import subprocess

    schmidt = dataset(ws, "service", "open-with-attribution:Schmidt GmbH")
    merged_model(ws, other_weights, schmidt)
    r = cli("release", "fach", "--name", "fach-public", "--version", "1.0.0", "--license", "Apache-2.0")
    assert r.code == 0, r.err
    bundle = ws.path(ws.catalog.get_artifact("fach-public", "release"))
    notice = (bundle / "NOTICE").read_text(encoding="utf-8")
    assert "Licence: Apache-2.0\n" in notice and "   Duty: Attribute the data to Schmidt GmbH.\n" in notice
    assert "  NOTICE\n" in (bundle / "SHA256SUMS").read_text()
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle, check=False).returncode == 0


def test_without_attribution_duties_the_notice_says_so(ws, tiny_model, tmp_path):
    from kifabrik.merge.export import export

    out = export(ws, "tiny", tmp_path / "plain")
    assert "Attribution: no usage policy along the lineage asks for one." in (out / "NOTICE").read_text()
