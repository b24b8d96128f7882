"""transformers Trainer callbacks: checkpoint markers, metrics JSONL, accounting, progress, Ctrl-C."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from kifabrik import files, progress
from kifabrik.train import rundir
from kifabrik.train.accounting import EnergyMeter, peak_memory_bytes


class RunFolder(TrainerCallback):
    """Marks finished checkpoints COMPLETE, appends metrics, keeps this session's accounting."""

    def __init__(self, folder: Path, session: int, meter: EnergyMeter, fingerprint: str, *, writes: bool = True) -> None:
        self.folder = folder
        self.writes = writes  # False on ranks other than 0 of a multi-process run: rank 0 keeps the folder
        self.device = meter.device
        self.session = session
        self.meter = meter
        self.fingerprint = fingerprint
        self.t0 = time.monotonic()
        self.first_step: int | None = None
        self.tokens0 = 0
        self.last_tokens = (time.monotonic(), 0)
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.first_step = state.global_step
        self.tokens0 = state.num_input_tokens_seen
        self.last_tokens = (time.monotonic(), state.num_input_tokens_seen)

    def snapshot(self, state: Any, status: str) -> dict[str, Any]:
        energy = self.meter.read()
        peak, _ = peak_memory_bytes(self.device)
        return {"session": self.session, "status": status, "from_step": self.first_step, "to_step": state.global_step,
                "peak_memory_bytes": peak,
                "wall_time_s": round(time.monotonic() - self.t0, 3),
                "tokens": state.num_input_tokens_seen - self.tokens0, "energy": energy}

    def write_session(self, state: Any, status: str) -> None:
        if not self.writes:
            return
        files.write_json_atomic(self.folder / f"session-{self.session}.json", self.snapshot(state, status))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        logs = dict(logs or {})
        now = time.monotonic()
        t, tok = self.last_tokens
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 6),
                               "tokens_seen": state.num_input_tokens_seen}
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
            if now > t:
                row["tokens_per_s"] = round((state.num_input_tokens_seen - tok) / (now - t), 2)
            self.last_tokens = (now, state.num_input_tokens_seen)
        if "eval_loss" in logs:
            self.last_eval_loss = float(logs["eval_loss"])
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if not self.writes:
            return
        rundir.append_jsonl(self.folder / "metrics.jsonl", row)
        self.write_session(state, "running")

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        ckpt = rundir.checkpoints_dir(self.folder) / f"{rundir.PREFIX}{state.global_step}"
        if self.writes and ckpt.is_dir():
            # The Trainer pickles its arguments here for reference; resume never reads them, so drop the pickle.
            (ckpt / "training_args.bin").unlink(missing_ok=True)
            rundir.mark_complete(ckpt, {"step": state.global_step, "fingerprint": self.fingerprint,
                                        "tokens_seen": state.num_input_tokens_seen})
        self.write_session(state, "running")


class ProgressBar(TrainerCallback):
    """A rich progress bar: step, loss, eval loss, tokens/s and time remaining."""

    def __init__(self, run: RunFolder, description: str) -> None:
        self.run = run
        self.description = description
        self._cm: Any = None
        self._progress: Any = None
        self._task: Any = None
        self._t0, self._tok0 = time.monotonic(), 0
        self.loss: float | None = None
        self.eval_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if progress._quiet():
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=progress.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=state.max_steps, completed=state.global_step,
                                             stats="")
        self._t0, self._tok0 = time.monotonic(), state.num_input_tokens_seen

    def stats(self, state: Any) -> str:
        """`loss 2.3456 eval 2.4567 1,234 tok/s`: the newest logged losses and the throughput."""
        dt = time.monotonic() - self._t0
        tps = (state.num_input_tokens_seen - self._tok0) / dt if dt > 0 else 0.0
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"eval {self.eval_loss:.4f}")
        parts.append(f"{tps:,.0f} tok/s")
        return " ".join(parts)

    def _show(self, state: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step, stats=self.stats(state))

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._show(state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        # The Trainer logs a step's loss after `on_step_end`: without this, the bar would show the loss
        # of the step before, and after the last step never the last loss.
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "eval_loss" in logs:
            self.eval_loss = float(logs["eval_loss"])
        self._show(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self._progress is not None:
            self._show(state)
            self._progress.stop()
            self._progress = None


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C, SIGTERM or SIGUSR1: finish the current step, save a checkpoint, stop. A second Ctrl-C: stop now.

    Slurm sends SIGUSR1 before the time limit (`--signal=B:USR1@...`, forwarded by the job script)
    and SIGTERM to every process of a job it preempts, requeues or cancels, then SIGKILL after
    `KillWait` (30 s by default): one step and a checkpoint fit into that. Only Ctrl-C escalates,
    because Slurm may deliver its signal to a process twice (to the process and through the script).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None  # the signal that asked to stop: "SIGINT", "SIGTERM", "SIGUSR1"
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            if signum == signal.SIGINT and self.signal_name == "SIGINT":
                raise KeyboardInterrupt
            return
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            progress.console.print("[yellow]stopping after this step and saving a checkpoint "
                                   "(Ctrl-C again to stop at once, without one)[/yellow]")
        else:
            progress.console.print(f"[yellow]{self.signal_name}: stopping after this step and saving a "
                                   "checkpoint[/yellow]")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # Several processes stop after the same step, or the ones still training would wait forever for the
        # others' gradients: a signal reaches them at slightly different moments, so they agree on it first.
        if _any_rank(self.requested):
            self.requested = True
            self.signal_name = self.signal_name or "a signal to another process"
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def _any_rank(flag: bool) -> bool:
    """`flag` of any process of a multi-process run (one all-reduce of one number); `flag` alone without one."""
    from kifabrik.train import distributed

    if distributed.world_size() <= 1:
        return flag
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")  # nccl: GPU tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
