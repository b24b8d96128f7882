"""What a training run tells the user: the data and step plan in one line, and a progress bar that
ends on the loss of the last step."""

from __future__ import annotations

import io

from rich.console import Console
from train_builders import FAST

from kifabrik import files, progress
from kifabrik.train import TrainOptions, rundir, train
from kifabrik.train.runner import describe_plan


def test_the_plan_names_rows_sequences_and_packed_sequences() -> None:
    opts = TrainOptions(**{**FAST, "batch_size": 4, "grad_accum": 1})
    # 55 imported rows, 61 training sequences (long text rows give windows), packed into 25
    assert describe_plan(55, 61, 25, 128, opts, 7, 7) == (
        "data: 55 imported rows → 61 training sequences → 25 packed sequences of ≤ 128 tokens; "
        "7 steps per epoch (batch 4 × grad_accum 1); 7 steps = 1 epoch")
    assert describe_plan(24, 24, None, 256, opts, 6, 15) == (
        "data: 24 imported rows → 24 training sequences of ≤ 256 tokens; 6 steps per epoch (batch 4 × grad_accum 1); "
        "15 steps = 2.5 epochs (the data repeats, as with transformers' Trainer)")
    assert describe_plan(24, 24, None, 256, opts, 6, 3).endswith("; 3 steps = 0.50 of an epoch")


def test_progress_bar_ends_on_the_last_steps_loss(ws, tiny_model, chat_ds, monkeypatch) -> None:
    shown = io.StringIO()
    monkeypatch.setenv("KIFABRIK_QUIET", "0")
    monkeypatch.setattr(progress, "console", Console(file=shown, width=200, force_terminal=False))
    adapter = train(ws, "tiny", ["service-chats"], TrainOptions(**{**FAST, "max_steps": 4, "save_steps": 4,
                                                                   "batch_size": 4, "grad_accum": 1}))
    metrics = files.read_jsonl(rundir.run_dir(ws, adapter.meta["run_id"]) / "metrics.jsonl", missing_ok=True)
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 4 and len({f"{x:.4f}" for x in losses[-2:]}) == 2  # the last two steps differ in loss
    text = shown.getvalue()
    final = [line for line in text.splitlines() if "4/4" in line][-1]
    assert f"loss {losses[-1]:.4f}" in final  # the last step's loss, not the one before
    acc = adapter.meta["accounting"]
    # chat_ds: 24 imported chat rows, one training sequence each, packed into fewer packed sequences
    assert (acc["imported_rows"], acc["training_sequences"]) == (24, 24) and acc["packed_sequences"] < 24
    assert f"data: 24 imported rows → 24 training sequences → {acc['packed_sequences']} packed sequences" in text
