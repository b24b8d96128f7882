"""Background jobs of the KI-Hub: kifabrik commands that outlive the browser tab and the UI server.

A job is one `kifabrik ARGV...` command started from the web UI. Its record is a JSON file,
`$KIFABRIK_HOME/ui/jobs/<id>.json`, next to its log `<id>.log`. `start_job` writes the record and
starts a detached runner (`python -m kifabrik.ui.jobrunner <record>`, a session of its own), which
runs the CLI as its child, records what happens and forwards SIGTERM to it. The UI server keeps
no state of its own: a restarted server (a new `Workspace`) reads the same records.

Every change to a record is a read-modify-write under an flock on `<id>.lock` (the runner and the
UI server both write), and lands with an atomic rename, so a reader never sees half a record.

Statuses: `queued` (the runner was started), `running`, then `succeeded` (exit 0), `failed`,
`cancelled` (`cancel_job`) or `interrupted` (stopped by a signal nobody asked for through the UI,
or the runner died: a record that says `running` while its runner is gone is ended on read).
A training stopped either way saved a checkpoint (`kifabrik.train.callbacks.StopOnInterrupt`),
and `resume_job` continues it with `kifabrik train --resume RUN_ID`.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from kifabrik import files
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.workspace import Workspace

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
#: Statuses after which a job's record no longer changes.
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
#: The statuses of a train job that `resume_job` continues.
RESUMABLE: frozenset[str] = frozenset({"cancelled", "interrupted", "failed"})
_ID = re.compile(r"^[0-9a-f]{12}$")
LOG_TAIL_LINES = 40


@dataclass
class Job:
    """One job's record (the JSON file holds exactly these fields)."""

    id: str
    project: str
    user: str
    kind: str  # "train", "recipe", "eval", ... (what the page shows and what resume_job accepts)
    title: str
    argv: list[str]  # the kifabrik CLI arguments, e.g. ["train", "--base", "tiny", ...]
    status: JobStatus
    created_at: str  # ISO 8601, UTC
    log: str  # path of the log file (stdout and stderr of the runner and the command)
    started_at: str | None = None
    ended_at: str | None = None
    pid: int | None = None  # the runner's pid, which is also its process group (a session of its own)
    host: str | None = None  # where the runner runs: its pid means something only there
    exit_code: int | None = None  # the command's; negative: killed by that signal
    run_id: str | None = None  # the catalog run of the command, once it recorded one
    resumed_from: str | None = None  # the job this one resumes
    cancel_requested: bool = False
    error: str | None = None  # why the runner itself could not run the command

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def now() -> str:
    return datetime.now(UTC).isoformat()


def jobs_dir(ws: Workspace) -> Path:
    return ws.settings.home / "ui" / "jobs"


def record_path(ws: Workspace, job_id: str) -> Path:
    return jobs_dir(ws) / f"{job_id}.json"


def read_record(path: Path) -> Job:
    return Job.from_json(json.loads(path.read_text(encoding="utf-8")))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_suffix(".lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update(path: Path, **changes: Any) -> Job:
    """Change fields of the record at `path` (under its lock); returns the new record."""
    with _locked(path):
        job = read_record(path)
        for key, value in changes.items():
            setattr(job, key, value)
        files.write_json_atomic(path, job.to_json())
    return job


def start_job(ws: Workspace, *, project: str, user: str, kind: str, title: str, argv: list[str]) -> Job:
    """Start `kifabrik ARGV...` for `project` in the background; returns its record (status `queued`).

    The command runs with `KIFABRIK_HOME` (and the catalog URL) of `ws` and `KIFABRIK_PROJECT=project`,
    so its runs are accounted to the project. Paths in `argv` should be absolute: the command runs in
    the working directory of the UI server.
    """
    return _start(ws, project=project, user=user, kind=kind, title=title, argv=argv)


def _start(ws: Workspace, *, project: str, user: str, kind: str, title: str, argv: list[str],
           run_id: str | None = None, resumed_from: str | None = None) -> Job:
    if not argv or not all(isinstance(a, str) for a in argv):
        raise KifabrikError(f"job argv must be a non-empty list of strings, got {argv!r}")
    if not project.strip():
        raise KifabrikError("a job needs a project")
    folder = jobs_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    job_id = secrets.token_hex(6)
    path = folder / f"{job_id}.json"
    log = folder / f"{job_id}.log"
    job = Job(id=job_id, project=project, user=user, kind=kind, title=title, argv=list(argv), status="queued",
              created_at=now(), log=str(log), run_id=run_id, resumed_from=resumed_from)
    files.write_json_atomic(path, job.to_json())
    env = {**os.environ, "KIFABRIK_HOME": str(ws.settings.home), "KIFABRIK_DATABASE_URL": ws.settings.database_url,
           "KIFABRIK_PROJECT": project, "PYTHONUNBUFFERED": "1"}  # unbuffered: the page shows the log as it grows
    with _locked(path):
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "kifabrik.ui.jobrunner", str(path)], env=env,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # Ctrl-C or SIGTERM to the UI server spares it
        except OSError as exc:
            job.status, job.ended_at, job.error = "failed", now(), f"could not start the job runner: {exc}"
            files.write_json_atomic(path, job.to_json())
            raise KifabrikError(job.error) from None
        job.pid, job.host = proc.pid, socket.gethostname()
        files.write_json_atomic(path, job.to_json())
    # Reap the runner when it ends, so that a long-lived UI server collects no zombies.
    threading.Thread(target=proc.wait, name=f"job-{job_id}", daemon=True).start()
    return job


def _runner_alive(job: Job, path: Path) -> bool:
    """Whether the runner of `job` still runs (its pid, on this host, is a jobrunner of this record)."""
    if job.host is not None and job.host != socket.gethostname():
        return True  # another machine's process: nothing to check from here
    if job.pid is None:
        return True  # between writing the record and starting the runner
    import psutil

    try:
        proc = psutil.Process(job.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return str(path) in proc.cmdline()  # a pid reused by another process is not our runner
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _load(path: Path) -> Job:
    """The record, ended on read when it says queued/running but its runner is gone."""
    job = read_record(path)
    if job.finished or _runner_alive(job, path):
        return job
    with _locked(path):
        job = read_record(path)
        if not job.finished:  # the runner may have ended it just now
            job.status = "cancelled" if job.cancel_requested else "interrupted"
            job.ended_at = job.ended_at or now()
            files.write_json_atomic(path, job.to_json())
    return job


def list_jobs(ws: Workspace, project: str) -> list[Job]:
    """The jobs of `project`, newest first."""
    found = []
    for path in jobs_dir(ws).glob("*.json"):
        try:
            job = _load(path)
        except (OSError, ValueError, TypeError):
            continue  # not a job record (or one being removed by hand)
        if job.project == project:
            found.append(job)
    return sorted(found, key=lambda j: j.created_at, reverse=True)


def get_job(ws: Workspace, project: str, job_id: str) -> Job:
    """Job `job_id` of `project`.

    Raises:
        NotFoundError: no such job, or a job of another project (the same message: a user of one project
            learns nothing about the jobs of another).
    """
    path = record_path(ws, job_id) if _ID.match(job_id) else None
    if path is None or not path.exists():
        raise NotFoundError(f"no job {job_id!r} in project {project!r}")
    job = _load(path)
    if job.project != project:
        raise NotFoundError(f"no job {job_id!r} in project {project!r}")
    return job


def cancel_job(ws: Workspace, project: str, job_id: str) -> Job:
    """Ask job `job_id` to stop: SIGTERM to its runner's process group. It ends `cancelled` once the
    command has stopped; a training stops after its current step, with a checkpoint to resume from."""
    job = get_job(ws, project, job_id)
    if job.finished:
        raise KifabrikError(f"job {job_id} already ended ({job.status})", hint="nothing to cancel")
    path = record_path(ws, job_id)
    job = update(path, cancel_requested=True)
    if job.pid is not None and _runner_alive(job, path):
        try:
            os.killpg(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # ended meanwhile; _load records it
    return get_job(ws, project, job_id)


def resume_job(ws: Workspace, project: str, job_id: str, user: str) -> Job:
    """Continue a stopped training job from its last checkpoint, as a new job (`resumed_from` = job_id).

    Raises:
        KifabrikError: the job is no training, has not stopped, finished successfully, recorded no run,
            stopped before training began, or is being resumed already.
    """
    from kifabrik.train import rundir

    job = get_job(ws, project, job_id)
    if job.kind != "train":
        raise KifabrikError(f"job {job_id} is a {job.kind} job; only training jobs can be resumed",
                            hint="start it again instead")
    if job.status not in RESUMABLE:
        raise KifabrikError(f"job {job_id} is {job.status}; only a cancelled, interrupted or failed training "
                            "can be resumed", hint="cancel it first" if not job.finished else "nothing to resume")
    if job.run_id is None:
        raise KifabrikError(f"job {job_id} stopped before its training recorded a run",
                            hint="start the training again")
    run = ws.catalog.get_run(job.run_id)
    if run.status == "succeeded":
        raise KifabrikError(f"the run {run.id[:12]} of job {job_id} already finished", hint="nothing to resume")
    if not (rundir.run_dir(ws, run.id) / "run.json").exists():
        raise KifabrikError(f"job {job_id} stopped before its training began (no checkpoint to resume from)",
                            hint="start the training again")
    for other in list_jobs(ws, project):
        if other.resumed_from == job_id and not other.finished:
            raise KifabrikError(f"job {job_id} is being resumed already by job {other.id}",
                                hint="wait for that job, or cancel it")
    return _start(ws, project=project, user=user, kind="train", title=job.title,
                  argv=["train", "--resume", run.id], run_id=run.id, resumed_from=job_id)


def find_run_id(ws: Workspace, job: Job, command_pid: int, since: datetime) -> str | None:
    """The catalog run that the command with pid `command_pid` (on this host) recorded since `since`:
    its first train run, else its first run (a recipe records one run per stage)."""
    mine = []
    for run in ws.catalog.list_runs(limit=20, project=job.project):
        started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
        if run.pid == command_pid and run.host == socket.gethostname() and started.timestamp() >= since.timestamp() - 2:
            mine.append(run)
    mine.sort(key=lambda r: r.started_at)
    trains = [r for r in mine if r.stage == "train"]
    return (trains or mine)[0].id if mine else None


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file that is being appended to: a line still being written is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _max_steps(folder: Path, outputs: list[str], ws: Workspace) -> int | None:
    """The steps a training will take: `max_steps` of run.json, else the newest checkpoint's
    trainer_state.json (the Trainer's own plan), else the steps the finished adapter records."""
    from kifabrik.train import rundir

    try:
        spec = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        if spec.get("options", {}).get("max_steps"):
            return int(spec["options"]["max_steps"])
    except (FileNotFoundError, ValueError):
        pass
    for ckpt in sorted(rundir.checkpoints_dir(folder).glob(f"{rundir.PREFIX}*"), reverse=True):
        try:
            return int(json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))["max_steps"])
        except (FileNotFoundError, ValueError, KeyError):
            continue
    for artifact_id in outputs:
        steps = ws.catalog.get_artifact(artifact_id).meta.get("accounting", {}).get("steps")
        if steps:
            return int(steps)
    return None


def progress(ws: Workspace, job: Job) -> dict[str, Any]:
    """What a page shows of `job` right now.

    Training progress comes from the run folder (`kifabrik.train.rundir`):
    `$KIFABRIK_HOME/runs/<run_id>/metrics.jsonl`, one line per Trainer log (`step`, `loss`,
    `eval_loss`, ...), appended by `kifabrik.train.callbacks.RunFolder.on_log`; after a resume the
    lines past the checkpoint are replaced, so the curve has each step once.

    Returns:
        {"id", "status", "step", "max_steps", "loss": [[step, loss], ...], "eval_loss": [[step, loss], ...],
        "log_tail": the last lines of the log, "run_id", "outputs": artifact ids the run recorded
        (once it succeeded), "exit_code"}.
    """
    from kifabrik.train import rundir

    state: dict[str, Any] = {"id": job.id, "status": job.status, "step": None, "max_steps": None, "loss": [],
                             "eval_loss": [], "log_tail": _log_tail(Path(job.log)), "run_id": job.run_id,
                             "outputs": [], "exit_code": job.exit_code}
    if job.run_id is None:
        return state
    try:
        run = ws.catalog.get_run(job.run_id)
    except NotFoundError:
        return state
    outputs = list(run.outputs) if run.status == "succeeded" else []
    state["outputs"] = outputs
    if run.stage != "train":
        return state
    folder = rundir.run_dir(ws, run.id)
    rows = _jsonl_rows(folder / "metrics.jsonl")
    state["loss"] = [[r["step"], r["loss"]] for r in rows if "loss" in r and "step" in r]
    state["eval_loss"] = [[r["step"], r["eval_loss"]] for r in rows if "eval_loss" in r and "step" in r]
    state["step"] = max((int(r["step"]) for r in rows if "step" in r), default=0)
    state["max_steps"] = _max_steps(folder, outputs, ws)
    return state


async def events(ws: Workspace, project: str, job_id: str, poll: float = 0.5) -> AsyncIterator[dict[str, Any]]:
    """`progress` of job `job_id` each time it changes (checked every `poll` seconds), the first at once;
    ends after the state of a finished job. Raises `NotFoundError` like `get_job`."""
    last: dict[str, Any] | None = None
    while True:
        job = await asyncio.to_thread(get_job, ws, project, job_id)
        state = await asyncio.to_thread(progress, ws, job)
        if state != last:
            yield state
            last = state
        if job.finished:
            return
        await asyncio.sleep(poll)
