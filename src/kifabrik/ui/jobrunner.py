"""The runner of one background job: `python -m kifabrik.ui.jobrunner $KIFABRIK_HOME/ui/jobs/<id>.json`.

Started detached by `kifabrik.ui.jobs.start_job` (a session of its own, stdout and stderr in the
job's log). It runs `kifabrik ARGV...` (this environment's console script) as its child, records
`running`, looks up the catalog run the command records (the run whose pid is the child's), waits,
and records the exit code and the final status:

- exit 0: `succeeded`;
- `cancel_job` asked for it: `cancelled`;
- a signal stopped the runner or the command (SIGTERM from outside the UI, a shutdown): `interrupted`;
- anything else: `failed`.

SIGTERM and SIGINT are forwarded to the child, so a training finishes its step, saves a
checkpoint and stops. The child also gets SIGTERM when the runner dies (`PR_SET_PDEATHSIG`), so a
command never trains on unseen after its runner was killed.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kifabrik.ui import jobs

_PR_SET_PDEATHSIG = 1
#: How often the runner looks for the command's catalog run while it has none.
LOOKUP_S = 1.0


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the runner dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def kifabrik_command() -> list[str]:
    """The `kifabrik` console script of this interpreter's environment (its messages then say `kifabrik`),
    else the same entry point as a module."""
    script = Path(sys.executable).parent / "kifabrik"
    return [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "kifabrik.cli.main"]


def say(job: jobs.Job, text: str) -> None:
    print(f"[job {job.id}] {text}", flush=True)


def run(path: Path) -> int:
    """Run the job recorded at `path` to its end; returns the runner's exit code (0: it recorded the end)."""
    job = jobs.read_record(path)
    stopped: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: Any) -> None:
        stopped.append(signum)
        if child and child[0].poll() is None:
            child[0].send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    say(job, f"kifabrik {shlex.join(job.argv)}")
    began = datetime.now(UTC)
    try:
        proc = subprocess.Popen([*kifabrik_command(), *job.argv], stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509  # the runner has one thread
    except OSError as exc:
        jobs.update(path, status="failed", ended_at=jobs.now(), error=f"could not start kifabrik: {exc}")
        say(job, f"could not start kifabrik: {exc}")
        return 0
    child.append(proc)
    if stopped:  # a signal that came before the child existed
        proc.send_signal(stopped[0])
    job = jobs.update(path, status="running", pid=os.getpid(), host=socket.gethostname(), started_at=began.isoformat())
    run_id = job.run_id
    ws = None
    try:
        while True:
            try:
                code = proc.wait(timeout=LOOKUP_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if run_id is None:
                ws = ws or _workspace(path)
                run_id = _lookup(ws, job, proc.pid, began, path)
        if run_id is None:  # a command that recorded its run and ended between two looks
            ws = ws or _workspace(path)
            run_id = _lookup(ws, job, proc.pid, began, path)
    finally:
        if ws is not None:
            ws.close()
    job = jobs.read_record(path)
    if code == 0:
        status = "succeeded"
    elif job.cancel_requested:
        status = "cancelled"
    elif stopped or code in (-signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL):
        status = "interrupted"
    else:
        status = "failed"
    jobs.update(path, status=status, exit_code=code, ended_at=jobs.now())
    say(job, f"{status} (exit code {code})")
    return 0


def _workspace(path: Path) -> Any:
    from kifabrik.workspace import Workspace

    return Workspace.open(path.parent.parent.parent)  # $KIFABRIK_HOME/ui/jobs/<id>.json


def _lookup(ws: Any, job: jobs.Job, pid: int, began: datetime, path: Path) -> str | None:
    try:
        run_id = jobs.find_run_id(ws, job, pid, began)
    except Exception as exc:  # noqa: BLE001  # a busy or locked catalog: look again later, never stop the runner
        say(job, f"could not look up the run yet: {exc}")
        return None
    if run_id is not None:
        jobs.update(path, run_id=run_id)
        say(job, f"run {run_id}")
    return run_id


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m kifabrik.ui.jobrunner $KIFABRIK_HOME/ui/jobs/<id>.json")
    sys.exit(run(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
