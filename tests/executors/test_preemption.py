"""A training job requeued mid-training resumes from its checkpoint and ends with the same adapter.

Against a real single-node Slurm (scripts/slurm.sh); skipped, with the reason, where none answers.

`scontrol requeue JOBID` in Slurm 22.05 sends SIGTERM to every process of the job (the batch
script and the step alike; SIGKILL follows after KillWait, 30 s), not the USR1 of `--signal`: the
train stage treats SIGTERM as it treats USR1 and Ctrl-C (finish the step, save a checkpoint, stop),
so this is what the test sends. The time-limit warning is the other flow: `scancel --signal=USR1
--batch JOBID` is what Slurm does at `--signal=B:USR1@120`, the job script passes it on to the step
and requeues the job itself once the step has stopped.

A requeued batch job waits about two minutes before Slurm starts it again (its BeginTime); the test
sets its StartTime to now, as an administrator would, to stay short, but only once the first run's
processes are gone (`scontrol listpids`) and the second of the requeue has passed: slurmd refuses
a credential issued within the second its predecessor was revoked (the two-minute wait hides this).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
sys.path.insert(0, str(Path(__file__).parent))

from test_slurm import _pipeline, _wait, _ws, needs_slurm
from train_builders import chat_rows, make_dataset

from kifabrik import files
from kifabrik.train import rundir

STEPS = 24

RECIPE = f"""\
name: shop
model:
  source: {{source}}
  name: tiny
executor:
  kind: slurm
  time: "00:10:00"
  cpus: 1
stages:
  - stage: train
    name: fit
    data: [service-chats]
    max_steps: {STEPS}
    epochs: 20
    batch_size: 2
    save_steps: 1
    keep_checkpoints: 2
    eval_steps: 100
    learning_rate: 5.0e-3
    max_seq_length: 128
    seed: 7
    lora: {{{{rank: 4, alpha: 8}}}}
  - stage: generate
    name: ask
    model: fit
    prompts: ["Wann ist der nächste Ölwechsel fällig?"]
    max_new_tokens: 4
"""


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                         check=False).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


def _pids(job_id: str) -> list[str]:
    """The job's processes on this node (`scontrol listpids`; it fails once the job runs nowhere)."""
    proc = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()[1:] if proc.returncode == 0 else []


def _until(what: str, ok, timeout: float = 60.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := ok()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)
    return value


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _steps_logged(folder: Path) -> int:
    rows = files.read_jsonl(folder / "metrics.jsonl", missing_ok=True) if folder.exists() else []
    return max((m["step"] for m in rows if "loss" in m), default=0)


def _interrupt_and_resume(home: Path, job_id: str, folder: Path, send: list[str]) -> int:
    """Once training logged a step, `send` (a Slurm command); wait until the job is requeued and start it
    again; return the step the interrupted session stopped at (its checkpoint)."""
    _until("a training step", lambda: _steps_logged(folder) >= 1)
    subprocess.run([*send, job_id], check=True, capture_output=True)
    _until("the job requeued", lambda: _job(job_id).get("JobState") == "PENDING"
           and _job(job_id).get("Restarts") == "1", every=0.2)
    _until("the first run's processes gone", lambda: len(_pids(job_id)) == 0, every=0.2)
    # slurmd refuses a job credential issued in the same second as the one the requeue revoked ("Killing
    # non-startable batch job: Job credential revoked", and the job FAILS): start it a second later.
    time.sleep(2)
    sessions = sorted(folder.glob("session-*.json"))
    last = _read_json(sessions[-1])
    assert last["status"] == "interrupted", last
    with _ws(home) as w:
        run = w.catalog.get_run(folder.name)
    signal = "SIGUSR1" if "--signal=USR1" in send else "SIGTERM"
    assert run.status == "interrupted" and run.error.startswith(
        f"training interrupted ({signal}) at step {last['to_step']} of {STEPS}; a checkpoint was saved"), run.error
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, capture_output=True)
    return int(last["to_step"])


def test_only_the_train_step_gets_usr1_and_is_requeued_after_it(cli, ws, home, tiny_model_dir, tmp_path):
    make_dataset(ws, "service-chats", chat_rows(4))
    recipe = tmp_path / "shop.yaml"
    recipe.write_text(RECIPE.format(source=tiny_model_dir), encoding="utf-8")
    r = cli("run", str(recipe), "--dry-run")
    assert r.code == 0, r.err
    model, fit, ask = re.split(r"^# ---- job \d/3: .*$", r.out.split("# dry run:")[0], flags=re.MULTILINE)[1:]
    for script in (model, fit, ask):
        assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0
        assert "#SBATCH --requeue\n#SBATCH --signal=B:USR1@120\n" in script
        assert 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert "\ncheckpoints=\n" in model and "\ncheckpoints=1\n" in fit and "\ncheckpoints=\n" in ask


@needs_slurm
@pytest.mark.parametrize("send", [["scontrol", "requeue"], ["scancel", "--signal=USR1", "--batch"]],
                         ids=["scontrol-requeue-sigterm", "time-limit-usr1"])
def test_requeued_training_resumes_to_the_uninterrupted_adapter(cli, ws, home, tiny_model_dir, tmp_path, send):
    from safetensors.torch import load_file

    make_dataset(ws, "service-chats", chat_rows(24), chat_rows(4))
    recipe = tmp_path / "shop.yaml"
    recipe.write_text(RECIPE.format(source=tiny_model_dir), encoding="utf-8")
    local = cli("run", str(recipe), "--executor", "local")
    assert local.code == 0, local.err
    expected = ws.catalog.get_artifact("shop-fit@1", "adapter")

    r = cli("run", str(recipe), "--no-reuse")  # the recipe's executor: slurm; a new training, not the local one reused
    assert r.code == 0, r.err
    pipeline = _pipeline(r.out)
    with _ws(home) as w:
        fit = next(x for x in w.catalog.list_runs(pipeline) if x.name == "fit")
        folder = rundir.run_dir(w, fit.id)
    job_id = fit.executor["job_id"]
    stopped_at = _interrupt_and_resume(home, job_id, folder, send)
    assert 1 <= stopped_at < STEPS  # interrupted mid-training, at the end of a step, with its checkpoint

    runs = {x.name: x for x in _wait(home, pipeline, timeout=90)}
    assert {n: x.status for n, x in runs.items()} == {"model": "succeeded", "fit": "succeeded", "ask": "succeeded"}, \
        {n: x.error for n, x in runs.items()}
    run = runs["fit"]
    assert run.executor["state"] == "COMPLETED" and run.executor["restart_count"] == 1
    assert _job(job_id).get("Restarts") == "1"
    listed = cli("runs", "list", "--pipeline", pipeline[:12])
    assert f"succeeded (slurm {job_id} COMPLETED " in listed.out and " requeued 1x" in listed.out, listed.out
    # the step after the training waited on the requeued job (afterok) and ran on its adapter
    assert runs["ask"].executor["state"] == "COMPLETED" and int(runs["ask"].executor["job_id"]) > int(job_id)
    log = Path(run.executor["log"]).read_text()
    signal = "USR1" if "USR1" in send[1] else "TERM"
    assert f"kifabrik: Slurm signals {signal}" in log
    assert f"kifabrik: job {job_id} (restart 1) on " in log and "fit ended with exit code 0" in log
    assert (f"kifabrik: requeueing job {job_id}" in log) == (signal == "USR1")  # SIGTERM: Slurm requeued it
    sessions = [_read_json(p) for p in sorted(folder.glob("session-*.json"))]
    assert [(s["status"], s["from_step"], s["to_step"]) for s in sessions] == [
        ("interrupted", 0, stopped_at), ("finished", stopped_at, STEPS)]

    with _ws(home) as w:
        adapters = [a for a in w.catalog.list_artifacts() if a.kind == "adapter"]
        assert sorted(a.ref for a in adapters) == ["shop-fit@1", "shop-fit@2"]  # the local one and one from Slurm
        assert run.outputs == [next(a.id for a in adapters if a.ref == "shop-fit@2")]
        got = w.path(w.catalog.get_artifact("shop-fit@2", "adapter")) / "adapter_model.safetensors"
    a, b = load_file(ws.path(expected) / "adapter_model.safetensors"), load_file(got)
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
