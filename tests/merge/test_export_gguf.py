"""Export of a merged embedded model to GGUF (llama.cpp's converter) and back into transformers."""

from __future__ import annotations

import pytest
import torch

from kifabrik.merge.api import MergeOptions, merge
from kifabrik.merge.export import converter_dir, export

from .conftest import make_adapter

pytestmark = pytest.mark.embedded


def test_merged_model_exports_to_gguf_that_loads_with_the_same_logits(embedded, tmp_path):
    from transformers import AutoModelForCausalLM

    from kifabrik.models.loading import load_model

    ws, base, _, _ = embedded
    if converter_dir(ws) is None:
        pytest.skip("GGUF converter not installed (make install puts it into .venv/tools)")
    adapter = make_adapter(ws, base, "gguf-test", seed=11, rank=4)
    merged = merge(ws, MergeOptions.model_validate({"method": "task_arithmetic", "into_base": True,
                                                    "adapters": [{"adapter": adapter.ref, "weight": 1.0}]}), "gguf-m")
    out = export(ws, merged.ref, tmp_path / "gguf", "gguf", outtype="f32")
    files = list(out.glob("*.gguf"))
    assert [f.name for f in files] == ["gguf-m.f32.gguf"]
    ids = torch.tensor([[1, 504, 3000, 42, 9000, 17]])
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=files[0].name, dtype=torch.float32).eval()
    hf = load_model(ws.path(merged) / "weights", device="cpu")
    with torch.inference_mode():
        assert torch.allclose(reloaded(ids).logits, hf(ids).logits, atol=1e-4)
