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
