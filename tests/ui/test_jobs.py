"""Background jobs (kifabrik.ui.jobs): real detached runners training the tiny model.

Every job here is a real `python -m kifabrik.ui.jobrunner` process running the real CLI; the
tests read the records through the same functions the pages use.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "train"))

from train_builders import chat_rows, make_dataset

from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.train import rundir
from kifabrik.ui import jobs
from kifabrik.workspace import Workspace

#: The tiny model's fast options (as in tests/train); no evaluation, no checkpoint but the one a stop writes.
TRAIN = ["train", "--base", "tiny", "--data", "service-chats", "--batch-size", "2", "--lr", "5e-3",
         "--max-seq-length", "128", "--rank", "4", "--alpha", "8", "--seed", "7", "--save-steps", "1000",
         "--eval-steps", "1000"]


@pytest.fixture
def pws(ws: Workspace, tiny_model_dir: Path) -> Workspace:
    """The workspace of project `werk-a` (as the UI hands it to a request) with the tiny model and a chat dataset."""
    from kifabrik.models.sources import add_model

    w = ws.scoped("werk-a")
    add_model(w, str(tiny_model_dir), name="tiny")
    make_dataset(w, "service-chats", chat_rows(24), chat_rows(4))
    return w


def wait(home: Path, project: str, job_id: str, timeout: float = 300) -> jobs.Job:
    """The job once it has finished, read through a fresh Workspace each time (as a restarted UI would)."""
    deadline = time.monotonic() + timeout
    while True:
        w = Workspace.open(home)
        try:
            job = jobs.get_job(w, project, job_id)
        finally:
            w.close()
        if job.finished:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout} s:\n{Path(job.log).read_text()}")
        time.sleep(0.3)


def collect(ws: Workspace, project: str, job_id: str) -> list[dict[str, Any]]:
    async def gather() -> list[dict[str, Any]]:
        return [state async for state in jobs.events(ws, project, job_id, poll=0.2)]

    return asyncio.run(gather())


def test_a_detached_training_succeeds_and_a_new_workspace_reads_it(pws, home):
    job = jobs.start_job(pws, project="werk-a", user="anna", kind="train", title="Service-Chats",
                         argv=[*TRAIN, "--max-steps", "4", "--name", "detached"])
    assert job.status == "queued" and job.pid is not None and Path(job.log).name == f"{job.id}.log"
    assert (home / "ui" / "jobs" / f"{job.id}.json").exists()

    done = wait(home, "werk-a", job.id)
    log = Path(done.log).read_text()
    assert done.status == "succeeded" and done.exit_code == 0, log
    adapter = pws.catalog.get_artifact("detached", "adapter")  # made in the job's project
    assert done.run_id == adapter.meta["run_id"]
    assert pws.catalog.get_run(done.run_id).project == "werk-a"  # KIFABRIK_PROJECT reached the command

    restarted = Workspace.open(home).scoped("werk-a")  # a restarted UI server: nothing but the files and the catalog
    try:
        (listed,) = jobs.list_jobs(restarted, "werk-a")
        assert (listed.id, listed.status, listed.user, listed.started_at is not None) == (job.id, "succeeded", "anna", True)
        state = jobs.progress(restarted, listed)
    finally:
        restarted.close()
    assert [s for s, _ in state["loss"]] == [1, 2, 3, 4]  # --max-steps 4, a loss logged every step
    assert all(loss > 0 for _, loss in state["loss"])
    assert (state["step"], state["max_steps"], state["outputs"]) == (4, 4, [adapter.id])
    assert f"[job {job.id}] succeeded (exit code 0)" in state["log_tail"]
    # A finished job's events: its final state, once.
    assert collect(pws, "werk-a", job.id) == [state]


def test_cancel_stops_the_training_with_a_checkpoint_and_resume_finishes_it(pws, home):
    ws = pws
    job = jobs.start_job(ws, project="werk-a", user="anna", kind="train", title="lang",
                         argv=[*TRAIN, "--max-steps", "40", "--name", "long"])
    deadline = time.monotonic() + 300
    while not (jobs.progress(ws, jobs.get_job(ws, "werk-a", job.id))["step"] or 0) >= 1:
        assert time.monotonic() < deadline and not jobs.get_job(ws, "werk-a", job.id).finished, \
            Path(job.log).read_text()
        time.sleep(0.1)
    jobs.cancel_job(ws, "werk-a", job.id)
    stopped = wait(home, "werk-a", job.id)
    assert (stopped.status, stopped.cancel_requested, stopped.exit_code) == ("cancelled", True, 1), \
        Path(job.log).read_text()  # exit 1: the CLI reports TrainingInterrupted as a user error
    run = ws.catalog.get_run(stopped.run_id)
    # The run records the stop as its error ("training interrupted (SIGTERM) at step N of 40; a checkpoint
    # was saved"); kifabrik.catalog records a run that ends with an error as failed.
    assert run.status == "interrupted" and "interrupted (SIGTERM)" in run.error
    state = jobs.progress(ws, stopped)
    checkpoint = rundir.last_checkpoint(rundir.run_dir(ws, run.id))
    assert checkpoint is not None and int(checkpoint.name.removeprefix(rundir.PREFIX)) == state["step"] < 40
    with pytest.raises(KifabrikError, match="already ended"):
        jobs.cancel_job(ws, "werk-a", job.id)

    again = jobs.resume_job(ws, "werk-a", job.id, "bernd")
    assert (again.argv, again.resumed_from, again.run_id, again.user) == (["train", "--resume", run.id], job.id,
                                                                          run.id, "bernd")
    with pytest.raises(KifabrikError, match="being resumed already"):
        jobs.resume_job(ws, "werk-a", job.id, "bernd")
    states = collect(ws, "werk-a", again.id)
    final = states[-1]
    assert final["status"] == "succeeded", "\n".join(final["log_tail"])
    assert {s["status"] for s in states[:-1]} <= {"queued", "running"}
    assert [s for s, _ in final["loss"]] == list(range(1, 41))  # every step once: the resumed curve continues
    assert final["step"] == final["max_steps"] == 40
    assert final["outputs"] == [ws.catalog.get_artifact("long", "adapter").id]
    assert ws.catalog.get_run(run.id).status == "succeeded"
    with pytest.raises(KifabrikError, match="only a cancelled, interrupted or failed training"):
        jobs.resume_job(ws, "werk-a", again.id, "bernd")
    with pytest.raises(KifabrikError, match="already finished"):
        jobs.resume_job(ws, "werk-a", job.id, "bernd")


def test_a_job_of_another_project_is_not_found_like_an_unknown_one(ws, home):
    job = jobs.start_job(ws, project="werk-a", user="anna", kind="other", title="Version", argv=["--version"])
    assert wait(home, "werk-a", job.id).status == "succeeded"
    assert "kifabrik 0.1.0" in Path(job.log).read_text()
    for call in (lambda i: jobs.get_job(ws, "werk-b", i), lambda i: jobs.cancel_job(ws, "werk-b", i),
                 lambda i: jobs.resume_job(ws, "werk-b", i, "eve")):
        with pytest.raises(NotFoundError) as foreign:
            call(job.id)
        with pytest.raises(NotFoundError) as unknown:
            call("0" * 12)
        assert str(foreign.value).replace(job.id, "0" * 12) == str(unknown.value)
    with pytest.raises(NotFoundError):
        jobs.get_job(ws, "werk-a", "../../catalog")
    assert jobs.list_jobs(ws, "werk-b") == []
    with pytest.raises(KifabrikError, match="only training jobs can be resumed"):
        jobs.resume_job(ws, "werk-a", job.id, "anna")


def test_a_failed_command_and_a_killed_runner(ws, home):
    failed = jobs.start_job(ws, project="p", user="u", kind="train", title="kaputt",
                            argv=["train", "--base", "nope", "--data", "nothing"])
    done = wait(home, "p", failed.id)
    assert (done.status, done.exit_code, done.run_id) == ("failed", 1, None)
    assert "error: no model 'nope' in the catalog" in jobs.progress(ws, done)["log_tail"]
    with pytest.raises(KifabrikError, match="stopped before its training recorded a run"):
        jobs.resume_job(ws, "p", failed.id, "u")

    killed = jobs.start_job(ws, project="p", user="u", kind="other", title="Version", argv=["--version"])
    os.kill(killed.pid, signal.SIGKILL)  # long before it could record anything
    assert wait(home, "p", killed.id, timeout=30).status == "interrupted"
    assert [j.id for j in jobs.list_jobs(ws, "p")] == [killed.id, failed.id]  # newest first
