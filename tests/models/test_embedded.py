"""The embedded SmolLM2-135M-Instruct: converted once, exact, and the demo runs on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kifabrik.artifacts import sha256_file

pytestmark = pytest.mark.embedded
SOURCE = "embedded:smollm2-135m-instruct"


def test_record_holds_the_facts(embedded):
    ws, rec, gguf, _ = embedded
    m = rec.meta
    assert (m["architecture"], m["parameters"], m["vocab_size"]) == ("LlamaForCausalLM", 134_515_008, 49_152)
    assert m["context_length"] == 8192 and m["license"] == "Apache-2.0"
    assert "im_start" in m["chat_template"]
    assert m["source_sha256"] == sha256_file(gguf)
    assert m["weights_sha256"] == sha256_file(ws.path(rec) / "weights" / "model.safetensors")
    assert ws.verify(rec.id).ok
    from kifabrik.models.sources import add_model

    again = add_model(ws, SOURCE)  # cached: no second conversion, no new version
    assert (again.id, again.version) == (rec.id, 1)


def test_converted_weights_give_the_same_logits_as_the_gguf(embedded):
    import torch
    from transformers import AutoModelForCausalLM

    from kifabrik.models.loading import load_model, load_tokenizer
    from kifabrik.models.sources import model_path

    ws, rec, gguf, _ = embedded
    tok = load_tokenizer(model_path(ws, rec))
    ids = tok("Die Wartung der Maschine erfolgt jährlich.", return_tensors="pt")["input_ids"]
    converted = load_model(model_path(ws, rec), device="cpu")
    original = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.inference_mode():
        a, b = converted(ids).logits, original(ids).logits
    assert torch.equal(a, b)  # the same dequantised float32 weights, bit for bit


def test_greedy_answer_is_sensible(embedded):
    from kifabrik.generate import generate_text
    from kifabrik.models.generate import GenerationOptions

    ws, rec, _, _ = embedded
    gen = generate_text(ws, rec.ref, ["What is the capital of France?"], options=GenerationOptions(max_new_tokens=12))[0]
    assert "Paris" in gen.text and gen.chat_template


def test_demo_command_end_to_end(embedded):
    """The bundled demo recipe, shrunk with --set so it runs in a few minutes: every stage, in order."""
    _, _, _, home = embedded
    env = {**os.environ, "KIFABRIK_HOME": str(home), "KIFABRIK_QUIET": "1"}
    shrink = ["stages.fach-lora.max_steps=1", "stages.fach-lora.batch_size=2", "stages.fach-lora.eval_rows=2",
              "stages.fach-llm-answers.max_new_tokens=8", "stages.fakten-fach-llm.limit=3",
              "stages.fakten-base-mit-wissen.limit=3", "stages.fakten-ohne-wissen.limit=3", "stages.ship.gates=[]"]
    args = [a for item in shrink for a in ("--set", item)]
    r = subprocess.run([sys.executable, "-m", "kifabrik.cli.main", "demo", *args],
                       capture_output=True, text=True, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr
    for step in ("import (data)", "wissen (kb)", "fach-lora (train)", "fach-llm (fach-llm)", "base-kb (fach-llm)",
                 "fach-llm-answers (generate)", "fakten-fach-llm (evaluate)", "fakten-base-mit-wissen (evaluate)",
                 "fakten-ohne-wissen (evaluate)",
                 "docs (document)", "ship (release)"):
        assert f"✓ {step}" in r.stdout
    assert "Q (de): Guten Tag, welches Kühlmittel ist für die DM 320 freigegeben?" in r.stdout
    assert "documents: " in r.stdout and "results are in" in r.stdout
    # the closing table: four evaluated models on the facts task, with intervals and item counts
    assert "Fakten (95 % Konfidenzintervall, n Fragen)" in r.stdout
    assert r.stdout.count("n=") >= 4
