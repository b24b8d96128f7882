"""Accounting per project: each run records what it used; `kifabrik usage` sums it per project and stage.

Slurm's answers for the sums come from a stand-in `scontrol` on PATH that prints what `scontrol show
job -o` prints for three finished jobs (a day of 8 cpus is not a test's to spend); one test reads a real
job of the test set-up's Slurm where it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kifabrik.catalog import schema as t
from kifabrik.usage import gpus_of_tres, local_resources, seconds
from kifabrik.workspace import Workspace

#: job id -> (RunTime, NumCPUs, AllocTRES, Account), as `scontrol show job -o ID` prints them.
JOBS = {
    "101": ("00:30:00", 4, "cpu=4,mem=8G,node=1,billing=4,gres/gpu=1", "acme"),
    "102": ("00:15:00", 2, "cpu=2,mem=4G,node=1,billing=2", "acme"),
    "103": ("1-00:00:00", 8, "cpu=8,mem=16G,node=1,gres/gpu=2,gres/gpu:h100=2", "beta"),
}


@pytest.fixture
def scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cases = "\n".join(f'  {job}) echo "JobId={job} JobName=kf-demo Account={acct} JobState=COMPLETED RunTime={rt} '
                      f'NumNodes=1 NumCPUs={cpus} AllocTRES={tres} NodeList=node1" ;;'
                      for job, (rt, cpus, tres, acct) in JOBS.items())
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\ncase "$4" in\n{cases}\n  *) echo "slurm_load_jobs error: Invalid job id" >&2; '
                      f"exit 1 ;;\nesac\n", encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _job_run(ws: Workspace, job_id: str, stage: str = "train", project: str | None = None) -> str:
    """A run as the Slurm executor records it, finished by its job."""
    run_id = ws.catalog.start_run(stage, {}, name=f"step-{job_id}", executor={"kind": "slurm", "script": "x.sh"},
                                  project=project)
    ws.catalog.update_executor(run_id, {"job_id": job_id, "state": "PENDING"})
    ws.catalog.claim_run(run_id)
    ws.catalog.finish_run(run_id, "succeeded")
    return run_id


def test_a_local_run_records_its_wall_time_and_cpu_seconds(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIFABRIK_PROJECT", "werkstatt")
    run_id = ws.catalog.start_run("train", {"x": 1}, name="local")
    assert ws.catalog.get_run(run_id).usage is None  # running: nothing counted yet
    sum(i * i for i in range(200_000))  # some work
    ws.catalog.finish_run(run_id, "succeeded")
    run = ws.catalog.get_run(run_id)
    assert run.project == "werkstatt"
    assert run.ended_at is not None and run.usage is not None
    cpus, gpus = local_resources()
    assert cpus == len(os.sched_getaffinity(0)) and run.usage["cpus"] == cpus and run.usage["gpus"] == gpus
    assert run.usage["source"] == "local"
    assert run.usage["wall_s"] == pytest.approx((run.ended_at - run.started_at).total_seconds(), abs=1e-3)
    assert run.usage["wall_s"] > 0
    assert run.usage["cpu_s"] == pytest.approx(run.usage["wall_s"] * cpus, abs=1e-2)


def test_a_slurm_run_records_the_job_s_allocation_and_account(ws: Workspace, scontrol: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIFABRIK_PROJECT", raising=False)
    monkeypatch.delenv("SLURM_JOB_ACCOUNT", raising=False)
    run = ws.catalog.get_run(_job_run(ws, "103"))
    # 24 h x 8 cpus, 2 gpus (gres/gpu is the total; the typed h100 entry repeats it)
    assert run.usage == {"wall_s": 86400.0, "cpus": 8, "gpus": 2, "cpu_s": 691200.0, "gpu_s": 172800.0,
                         "source": "slurm"}
    assert run.project == "beta"  # no project given: the job's Slurm account
    named = ws.catalog.get_run(_job_run(ws, "103", project="gamma"))
    assert named.project == "gamma"  # a project given wins over the account


def test_usage_sums_runs_per_project_and_filters_since(ws: Workspace, cli, scontrol: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIFABRIK_PROJECT", raising=False)
    monkeypatch.delenv("SLURM_JOB_ACCOUNT", raising=False)
    _job_run(ws, "101")  # acme: 0.5 h x 4 cpus, 1 gpu
    old = _job_run(ws, "102")  # acme: 0.25 h x 2 cpus
    _job_run(ws, "103", stage="evaluate")  # beta: 24 h x 8 cpus, 2 gpus
    ws.catalog.start_run("train", {}, name="still-running", project="acme")  # not counted until it ends

    r = cli("usage", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == [
        {"project": "acme", "stage": "train", "runs": 2, "wall_hours": 0.75, "cpu_hours": 2.5, "gpu_hours": 0.5},
        {"project": "beta", "stage": "evaluate", "runs": 1, "wall_hours": 24.0, "cpu_hours": 192.0, "gpu_hours": 48.0},
    ]
    r = cli("usage", "--project", "acme", "--json")
    assert [row["project"] for row in json.loads(r.out)] == ["acme"]

    # one acme run started long ago: --since leaves it out
    with ws.catalog._writer.begin() as s:
        s.get(t.Run, old).started_at = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    r = cli("usage", "--project", "acme", "--since", "2026-02-01", "--json")
    assert json.loads(r.out) == [
        {"project": "acme", "stage": "train", "runs": 1, "wall_hours": 0.5, "cpu_hours": 2.0, "gpu_hours": 0.5}]

    r = cli("usage")  # the table, 80 columns (COLUMNS unset: not a terminal)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["project", "stage", "runs", "wall", "h", "cpu", "h", "gpu", "h"]
    assert lines[1].split() == ["acme", "train", "2", "0.750", "2.500", "0.500"]
    assert lines[2].split() == ["beta", "evaluate", "1", "24.000", "192.000", "48.000"]
    assert all(len(line) <= 80 for line in lines)


def test_a_bad_since_date_is_one_clear_error(cli) -> None:
    r = cli("usage", "--since", "31.01.2026")
    assert r.code == 1
    assert "--since '31.01.2026' is not a date" in r.err and "YYYY-MM-DD" in r.err
    assert "Traceback" not in r.err


def test_slurm_figures_parse() -> None:
    assert seconds("05:07") == 307.0 and seconds("01:00:00") == 3600.0 and seconds("2-00:00:01") == 172801.0
    assert seconds("UNLIMITED") is None
    assert gpus_of_tres("cpu=4,mem=8G") == 0
    assert gpus_of_tres("cpu=4,gres/gpu:a100=1,gres/gpu:h100=2") == 3  # only typed entries: their sum


def test_the_project_flag_accounts_the_command_s_runs(ws: Workspace, cli, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("KIFABRIK_PROJECT", "from-env")  # restored after the test; --project overrides it
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Hallo?"}, {"role": "assistant", "content": "Hallo!"}]}\n',
                    encoding="utf-8")
    r = cli("--project", "acme", "data", "import", str(data), "--name", "chats", "--policy-preset", "internal-only")
    assert r.code == 0, r.err
    assert ws.scoped("acme").catalog.get_artifact("chats").project == "acme"  # the command worked in acme
    assert os.environ["KIFABRIK_PROJECT"] == "from-env"  # the flag is the command's only
    assert ws.catalog.get_run(ws.catalog.start_run("data", {})).project == "from-env"
    monkeypatch.delenv("KIFABRIK_PROJECT")
    assert ws.catalog.get_run(ws.catalog.start_run("data", {})).project == "default"


def _slurm_missing() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return "Slurm is not installed (run `bash scripts/slurm.sh` as root, or `make services`)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    return None if ping.returncode == 0 and "UP" in ping.stdout else f"no Slurm controller answers: {ping.stdout.strip()}"


@pytest.mark.skipif(_slurm_missing() is not None, reason=str(_slurm_missing()))
def test_a_run_in_a_real_slurm_job_records_the_job_s_cpus(ws: Workspace) -> None:
    job = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", "--job-name=kf-usage-test",
                          "--output=/dev/null", "--wrap", "sleep 20"],
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        for _ in range(150):  # until it runs (the node may be busy with another test's job a moment)
            state = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=False)
            if "JobState=RUNNING" in state.stdout:
                break
            time.sleep(0.2)
        else:
            pytest.skip(f"Slurm job {job} did not start within 30 s (the node is busy)")
        run_id = ws.catalog.start_run("train", {}, executor={"kind": "slurm", "job_id": job})
        time.sleep(2.2)
        ws.catalog.finish_run(run_id, "succeeded")
    finally:
        subprocess.run(["scancel", job], capture_output=True, check=False)
    usage = ws.catalog.get_run(run_id).usage
    assert usage is not None and usage["source"] == "slurm"
    assert usage["cpus"] == 1 and usage["gpus"] == 0  # what the job was given, not this machine's cpus
    assert usage["wall_s"] >= 2.0  # the job's RunTime (whole seconds)
    assert usage["cpu_s"] == usage["wall_s"]
