"""Same seed, same loss curve: every step's loss of a short run on the tiny model, against stored values.

The stored curve was written by this test on CPU in fp32. Regenerate it after a deliberate change to
training (data order, loss masking, optimizer, LoRA init) or to the tiny model:
KIFABRIK_REGEN_GOLDEN=1 pytest tests/train/test_golden_losses.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from train_builders import FAST

from kifabrik import files
from kifabrik.train import TrainOptions, train

GOLDEN = Path(__file__).parent / "golden" / "losses.json"
OPTIONS = {**FAST, "seed": 7, "learning_rate": 3e-2, "max_steps": 8, "eval_steps": 4}
RTOL = 1e-4  # CPU fp32: runs agree to ~1e-6; kernels of another torch build may move the last digits


def test_every_step_loss_matches_the_stored_curve(ws, tiny_model, chat_ds):
    import torch
    import transformers

    rec = train(ws, "tiny", [chat_ds.id], TrainOptions(**OPTIONS), name="golden")
    rows = files.read_jsonl(ws.path(rec) / "metrics.jsonl")  # the curve the adapter ships with
    curve = {"train_loss": {str(m["step"]): m["loss"] for m in rows if "loss" in m},
             "eval_loss": {str(m["step"]): m["eval_loss"] for m in rows if "eval_loss" in m}}
    if os.environ.get("KIFABRIK_REGEN_GOLDEN"):
        files.write_json_atomic(GOLDEN, {"options": OPTIONS, "device": "cpu", "precision": "fp32",
                                         "torch": torch.__version__, "transformers": transformers.__version__,
                                         **curve})
    stored = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert stored["options"] == OPTIONS, f"{GOLDEN} was written for other options (KIFABRIK_REGEN_GOLDEN=1)"
    for key in ("train_loss", "eval_loss"):
        assert curve[key].keys() == stored[key].keys(), key
        for step, loss in stored[key].items():
            assert curve[key][step] == pytest.approx(loss, rel=RTOL), (
                f"{key} at step {step}: {curve[key][step]} != stored {loss} (torch {stored['torch']} wrote it; "
                f"this is torch {torch.__version__}); KIFABRIK_REGEN_GOLDEN=1 after a deliberate change")
