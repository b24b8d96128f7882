"""kill -9 in the middle of training, then `kifabrik train --resume`: same losses, same adapter.

The killed run is a real `kifabrik train` subprocess. To make the kill land at a known
moment (after the checkpoint at step 3 is complete, with steps 4-5 trained but not saved),
the child sends SIGKILL to itself from a callback at the end of step 5: no handler, no
cleanup, no `finally` runs, exactly as with `kill -9` from outside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from kifabrik import files
from kifabrik.train import rundir

ARGS = ["--base", "tiny", "--data", "service-chats", "--max-steps", "8", "--epochs", "3", "--batch-size", "2",
        "--save-steps", "3", "--eval-steps", "4", "--lr", "5e-3", "--max-seq-length", "128", "--rank", "4",
        "--alpha", "8", "--seed", "7"]

CHILD = """
import os, signal, sys
from kifabrik.train.callbacks import RunFolder

def on_step_end(self, args, state, control, **kw):
    if state.global_step == 5:
        os.kill(os.getpid(), signal.SIGKILL)

RunFolder.on_step_end = on_step_end
sys.argv = ["kifabrik", "train", *sys.argv[1:]]
from kifabrik.cli.main import main
main()
"""


def test_kill_9_then_resume_matches_the_uninterrupted_run(cli, ws, home, tiny_model, chat_ds):
    from safetensors.torch import load_file

    r = cli("train", *ARGS, "--name", "uninterrupted")
    assert r.code == 0, r.err
    ref = ws.catalog.get_artifact("uninterrupted", "adapter")

    env = {**os.environ, "KIFABRIK_HOME": str(home), "KIFABRIK_QUIET": "1"}
    child = subprocess.run([sys.executable, "-c", CHILD, *ARGS, "--name", "resumed"], env=env, capture_output=True,
                           text=True, timeout=300, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    run = ws.catalog.list_runs()[0]
    assert run.status == "interrupted"  # nobody could record anything; its process is gone
    folder = rundir.run_dir(ws, run.id)
    assert rundir.last_checkpoint(folder).name == "checkpoint-3"
    # steps 4 and 5 were trained after the checkpoint (5 was killed before its log line)
    assert max(m["step"] for m in files.read_jsonl(folder / "metrics.jsonl", missing_ok=True)) == 4

    r = cli("train", "--resume", run.id)
    assert r.code == 0, r.err
    rec = ws.catalog.get_artifact("resumed", "adapter")
    assert ws.catalog.get_run(run.id).status == "succeeded"

    def curve(rec):
        rows = files.read_jsonl(ws.path(rec) / "metrics.jsonl", missing_ok=True)
        return [(m["step"], m["loss"]) for m in rows if "loss" in m], [m["eval_loss"] for m in rows if "eval_loss" in m]

    (ref_train, ref_eval), (train, evals) = curve(ref), curve(rec)
    assert [s for s, _ in train] == list(range(1, 9))
    assert max(abs(a[1] - b[1]) for a, b in zip(ref_train, train, strict=True)) < 1e-4
    assert max(abs(a - b) for a, b in zip(ref_eval, evals, strict=True)) < 1e-4
    a, b = load_file(ws.path(ref) / "adapter_model.safetensors"), load_file(ws.path(rec) / "adapter_model.safetensors")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    acc = rec.meta["accounting"]
    assert acc["sessions"] == 2 and acc["tokens_seen"] == ref.meta["accounting"]["tokens_seen"]
    assert acc["tokens_processed_all_sessions"] > acc["tokens_seen"]  # the lost steps 4-5 were paid for twice
