"""`export --format gguf --quant`: llama.cpp's quantiser, the quantisation recorded in export.json, the audit log and on a model registered from the file."""

from __future__ import annotations

import json

import pytest

from kifabrik.merge.export import converter_dir, export

pytestmark = pytest.mark.embedded


def test_q4_k_m_export_is_recorded_and_registers_as_a_q4_k_m_model(embedded, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp)")
    from kifabrik.artifacts import sha256_file
    from kifabrik.models.sources import add_model

    ws, base, _, _ = embedded
    if converter_dir(ws) is None:
        pytest.skip("GGUF converter not installed (make install puts it into .venv/tools)")
    out = export(ws, base.ref, tmp_path / "q4", "gguf", quant="q4_k_m")
    gguf = out / f"{base.name}.q4_k_m.gguf"
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".gguf", ".json")) == ["export.json", gguf.name]
    record = json.loads((out / "export.json").read_text())
    assert record == {"model": base.ref, "model_id": base.id, "weights_sha256": base.meta["weights_sha256"],
                      "format": "gguf", "quantization": "q4_k_m", "file": gguf.name, "sha256": sha256_file(gguf)}
    assert 90e6 < gguf.stat().st_size < 120e6  # 135M parameters at ~6.2 bits (SmolLM2's 576-wide rows fall back)
    [entry] = [a for a in ws.catalog.audit_entries("model.export") if a.details.get("path") == str(out)]
    assert entry.details["quantization"] == "q4_k_m"
    model = add_model(ws, str(gguf), name="smollm2-q4km")
    assert model.meta["quantization"] == "q4_k_m"


def test_unknown_quantisation_is_refused_before_anything_is_written(embedded, tmp_path):
    from kifabrik.errors import KifabrikError

    ws, base, _, _ = embedded
    with pytest.raises(KifabrikError, match="quantisation 'q3_x' is not known"):
        export(ws, base.ref, tmp_path / "bad", "gguf", quant="q3_x")
    assert not (tmp_path / "bad").exists()


def test_an_adapter_exports_as_a_gguf_lora_that_llama_cpp_applies_like_peft(embedded, tmp_path):
    """The exported file is llama.cpp's --lora format: loaded on the base's f32 GGUF, it gives PEFT's greedy tokens."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp)")
    from kifabrik.models.gguf_convert import lora_tools_dir
    from kifabrik.models.runtime import GenerationOptions, load, resolve
    from tests.merge.conftest import make_adapter

    ws, tiny_model, _, _ = embedded
    service = make_adapter(ws, tiny_model, "export-lora", seed=3, rank=4)
    if lora_tools_dir(ws.settings.home) is None or converter_dir(ws) is None:
        pytest.skip("llama.cpp's converters are not installed (make llama-cpp)")
    out = export(ws, service.ref, tmp_path / "lora", "gguf", quant="f32")
    info = json.loads((out / "export.json").read_text())
    assert (info["kind"], info["quantization"], info["base_model_id"]) == ("lora-adapter", "f32", tiny_model.id)
    assert (out / "NOTICE").exists()
    [entry] = [a for a in ws.catalog.audit_entries("model.export") if a.details.get("path") == str(out)]
    assert entry.subject == service.id and entry.details["quantization"] == "f32"

    # the same bytes as the conversion the llama.cpp runtime applies, whose greedy tokens are PEFT's
    from kifabrik.artifacts import sha256_file
    from kifabrik.models.gguf_convert import adapter_gguf
    from kifabrik.models.sources import model_path

    applied = adapter_gguf(service.name, ws.path(service), model_path(ws, tiny_model), ws.settings.home)
    assert sha256_file(out / info["file"]) == sha256_file(applied) == info["sha256"]
    runnable = resolve(ws, service)
    opts = GenerationOptions(max_new_tokens=8)
    want = [c.text for c in load(runnable).generate(["Hallo Welt", "Die Pumpe"], opts)]
    llama = load(runnable, backend="llama.cpp", gguf_type="f32", home=ws.settings.home)
    assert [c.text for c in llama.generate(["Hallo Welt", "Die Pumpe"], opts)] == want


def test_an_adapter_is_not_k_quantised(ws, tiny_model, adapters, tmp_path):
    from kifabrik.errors import KifabrikError

    service, _ = adapters
    with pytest.raises(KifabrikError, match="cannot be quantised as 'q4_k_m'"):
        export(ws, service.ref, tmp_path / "bad", "gguf", quant="q4_k_m")
    assert not (tmp_path / "bad").exists()
