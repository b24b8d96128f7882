"""The run folder `$KIFABRIK_HOME/runs/<run_id>/` and its checkpoints.

    run.json                    what to train (base model id, dataset ids, options): enough to resume
    metrics.jsonl               one line per log: step, loss, eval_loss, learning rate, tokens/s
    sessions.jsonl              one line per (re)start: wall time, energy and steps of that session
    checkpoints/checkpoint-N/   written by the transformers Trainer every `save_steps`:
                                adapter_model.safetensors (or model.safetensors), optimizer.pt,
                                scheduler.pt, rng_state.pth, trainer_state.json, then COMPLETE
    lock                        held (flock) while a process trains this run

`COMPLETE` is written last, after the Trainer has finished the checkpoint, so a process
killed while saving leaves a checkpoint that resume never picks. optimizer.pt, scheduler.pt
and rng_state.pth are torch.save files that this run wrote itself; transformers (>= 5) reads
them back with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers, so nothing is unpickled. Weights are safetensors.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from kifabrik import files
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace

COMPLETE = "COMPLETE"
PREFIX = "checkpoint-"


def run_dir(ws: Workspace, run_id: str) -> Path:
    return ws.settings.home / "runs" / run_id


def checkpoints_dir(folder: Path) -> Path:
    return folder / "checkpoints"


def mark_complete(checkpoint: Path, info: dict[str, Any]) -> None:
    """Write the COMPLETE marker (fsynced) into a finished checkpoint folder."""
    with open(checkpoint / COMPLETE, "w", encoding="utf-8") as fh:
        json.dump(info, fh)
        fh.flush()
        os.fsync(fh.fileno())


def last_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint with the highest step, if any."""
    found = []
    for c in checkpoints_dir(folder).glob(f"{PREFIX}*"):
        step = c.name[len(PREFIX):]
        if step.isdigit() and (c / COMPLETE).exists():
            found.append((int(step), c))
    return max(found)[1] if found else None


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def truncate_metrics(folder: Path, step: int) -> int:
    """Drop metric lines after `step` (work lost since the checkpoint); returns how many."""
    path = folder / "metrics.jsonl"
    rows = files.read_jsonl(path, missing_ok=True)
    keep = [r for r in rows if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), encoding="utf-8")
    return len(rows) - len(keep)


class RunLock:
    """An exclusive lock on a run folder; the OS releases it when the process dies (even kill -9)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "lock"
        self._fh: Any = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise KifabrikError(f"run {self.path.parent.name} is being trained by another process right now",
                                hint="wait for it to finish, or stop that process first") from None
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
