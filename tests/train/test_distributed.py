"""Data-parallel training: two gloo processes on CPU give the one-process adapter with the same global batch.

Unpacked rows, so each global batch holds the same rows in both runs (a partial last batch would be
filled from the start of the data on two processes, as torch's DistributedSampler does).
"""

from __future__ import annotations

import os
import subprocess
import sys

from kifabrik import files
from kifabrik.train import rundir

ARGS = ["--base", "tiny", "--data", "service-chats", "--max-steps", "4", "--lr", "5e-3", "--max-seq-length", "128",
        "--rank", "4", "--alpha", "8", "--seed", "7", "--dropout", "0", "--no-packing", "--save-steps", "2", "--eval-steps", "2"]


def test_two_gloo_processes_train_the_adapter_of_one_process_and_record_it_once(cli, ws, home, tiny_model, chat_ds):
    from safetensors.torch import load_file

    r = cli("train", *ARGS, "--batch-size", "4", "--name", "one-process")
    assert r.code == 0, r.err
    one = ws.catalog.get_artifact("one-process", "adapter")
    runs_before = len(ws.catalog.list_runs())
    audit = [e.action for e in ws.catalog.audit_entries()]
    one_actions = sorted(a for a in audit if a != "model.add")

    env = {**os.environ, "KIFABRIK_HOME": str(home), "KIFABRIK_QUIET": "1"}
    child = subprocess.run([sys.executable, "-m", "kifabrik.cli.main", "train", *ARGS, "--batch-size", "2",
                            "--nproc", "2", "--name", "two-processes"], env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert child.returncode == 0, child.stderr[-3000:]
    [two] = [a for a in ws.catalog.list_artifacts("adapter") if a.name == "two-processes"]  # one record, not two
    assert len(ws.catalog.list_runs()) == runs_before + 1
    run = ws.catalog.get_run(two.meta["run_id"])
    assert run.status == "succeeded" and run.outputs == [two.id]
    # the run folder is rank 0's: one metrics line per step, checkpoints marked once
    metrics = files.read_jsonl(rundir.run_dir(ws, run.id) / "metrics.jsonl", missing_ok=True)
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    # the same audit entries as the one-process run (policy checks, one counted use, one adapter published)
    new = [e.action for e in ws.catalog.audit_entries()][len(audit):]
    assert sorted(new) == one_actions and new.count("train.output") == 1
    # batch 2 x 2 processes is the one-process batch of 4: gradients averaged over the same tokens
    a, b = load_file(ws.path(one) / "adapter_model.safetensors"), load_file(ws.path(two) / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # (6e-8 here: float sums in another order; no row repeats, as 24 rows fill 4 steps of 4 exactly)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert two.meta["accounting"]["tokens_seen"] == one.meta["accounting"]["tokens_seen"]
