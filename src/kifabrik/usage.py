"""What a run used, and for whom: wall time x cpus (and gpus), per project, as an AI factory bills it.

A run records, when it ends, `{wall_s, cpus, gpus, cpu_s, gpu_s, source}`: the cpus and gpus it had
(not how busy it kept them, as Slurm bills an allocation), so `cpu_s = wall_s * cpus`.

- In this process (`source: local`): wall time from the run's record, cpus from the CPU affinity of
  the process (`os.sched_getaffinity`, what `taskset`, cgroups or a Slurm step leave it), gpus from
  `torch.cuda.device_count()` when torch is loaded already (a run that never loaded torch used none).
- As a Slurm job (`source: slurm`, the run's `executor` holds the job id): the job's own figures from
  `scontrol show job` (NumCPUs, the gres/gpu of its TRES, RunTime), or `sacct` once the controller
  forgot the job; its Account names the project when none was given.

The project of a run: `kifabrik --project P ...`, else `$KIFABRIK_PROJECT`, else the Slurm account
of the job it runs in (`$SLURM_JOB_ACCOUNT`), else `default`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

DEFAULT_PROJECT = "default"
_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?$")


def project_from_env() -> str | None:
    """The project named by `--project` / `$KIFABRIK_PROJECT`, else the Slurm job's account; None: neither."""
    for var in ("KIFABRIK_PROJECT", "SLURM_JOB_ACCOUNT"):
        if value := os.environ.get(var, "").strip():
            return value
    return None


def local_resources() -> tuple[int, int]:
    """(cpus, gpus) this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    gpus = 0
    torch = sys.modules.get("torch")  # never import torch just to count: a run without it used no gpu
    if torch is not None:
        try:
            gpus = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        except RuntimeError:  # a broken driver: count none rather than fail the run's record
            gpus = 0
    return cpus, gpus


def seconds(text: str) -> float | None:
    """Seconds of a Slurm duration: `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`; None when it is not one."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, secs = (int(g) if g else 0 for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + secs)


def gpus_of_tres(tres: str) -> int:
    """The gpus of a TRES string such as `cpu=4,mem=8G,node=1,gres/gpu=2` (0 without any).

    `gres/gpu` is the total; typed entries (`gres/gpu:a100=2`) repeat it, so they count only without it.
    """
    total, typed = None, 0
    for part in tres.split(","):
        key, _, value = part.partition("=")
        if not value.isdigit():
            continue
        if key == "gres/gpu":
            total = int(value)
        elif key.startswith("gres/gpu:"):
            typed += int(value)
    return total if total is not None else typed


def scontrol_fields(text: str) -> dict[str, str]:
    """`Key=Value` pairs of one `scontrol show job -o` line."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def slurm_job(job_id: str) -> dict[str, Any] | None:
    """`{wall_s, cpus, gpus, account}` of a Slurm job from scontrol, else sacct; None when neither knows it."""
    if shutil.which("scontrol") is not None:
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            f = scontrol_fields(proc.stdout)
            wall = seconds(f.get("RunTime", ""))
            if wall is not None and f.get("NumCPUs", "").isdigit():
                return {"wall_s": wall, "cpus": int(f["NumCPUs"]),
                        "gpus": gpus_of_tres(f.get("AllocTRES") or f.get("TRES", "")),
                        "account": _account(f.get("Account"))}
    if shutil.which("sacct") is not None:
        proc = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "ElapsedRaw,NCPUS,AllocTRES,Account"],
                              capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.count("|") == 3]
        if proc.returncode == 0 and lines:
            elapsed, ncpus, tres, account = lines[0].split("|")
            if elapsed.isdigit() and ncpus.isdigit():
                return {"wall_s": float(elapsed), "cpus": int(ncpus), "gpus": gpus_of_tres(tres),
                        "account": _account(account)}
    return None


def _account(value: str | None) -> str | None:
    return value if value and value not in ("(null)", "None") else None


def measure(started_at: datetime, ended_at: datetime, executor: dict[str, Any] | None, *,
            here: bool) -> tuple[dict[str, Any], str | None]:
    """(the usage record of a run that ends now, the Slurm account it ran under or None).

    A Slurm job's figures come from Slurm. A run of this process (`here`; also a job Slurm no longer
    knows) is measured here. Anything else never ran for us to see (a job refused by sbatch, or
    cancelled from the submitting machine before it started and forgotten since): it used nothing.
    """
    job_id = (executor or {}).get("job_id")
    job = slurm_job(str(job_id)) if job_id else None
    if job is not None:
        wall, cpus, gpus, source = job["wall_s"], job["cpus"], job["gpus"], "slurm"
    elif here:
        start = started_at if started_at.tzinfo else started_at.replace(tzinfo=UTC)
        end = ended_at if ended_at.tzinfo else ended_at.replace(tzinfo=UTC)
        wall = max(0.0, (end - start).total_seconds())
        cpus, gpus = local_resources()
        source = "local"
    else:
        wall, cpus, gpus, source = 0.0, 0, 0, "none"
    usage = {"wall_s": round(wall, 3), "cpus": cpus, "gpus": gpus, "cpu_s": round(wall * cpus, 3),
             "gpu_s": round(wall * gpus, 3), "source": source}
    return usage, (job or {}).get("account")


@dataclass(frozen=True)
class UsageRow:
    """The sums of one project's runs of one stage."""

    project: str
    stage: str
    runs: int
    wall_hours: float
    cpu_hours: float
    gpu_hours: float


def parse_since(text: str) -> datetime:
    """The start of `text` (`YYYY-MM-DD` or an ISO date-time) in UTC.

    Raises:
        KifabrikError: `text` is neither.
    """
    from kifabrik.errors import KifabrikError

    try:
        day = datetime.fromisoformat(text) if "T" in text or " " in text.strip() else None
        if day is None:
            d = date.fromisoformat(text)
            day = datetime(d.year, d.month, d.day)
    except ValueError:
        raise KifabrikError(f"--since {text!r} is not a date", hint="give a date as YYYY-MM-DD, e.g. --since 2026-01-31") from None
    return day if day.tzinfo else day.replace(tzinfo=UTC)


def summarise(runs: list[Any], *, project: str | None = None, since: datetime | None = None) -> list[UsageRow]:
    """Sum the usage of ended runs per (project, stage), ordered by project then stage.

    Runs still going (no usage yet) are left out; `since` keeps the runs that started then or later.
    """
    sums: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r.usage is None or (project is not None and r.project != project):
            continue
        started = r.started_at if r.started_at.tzinfo else r.started_at.replace(tzinfo=UTC)
        if since is not None and started < since:
            continue
        acc = sums.setdefault((r.project, r.stage), [0, 0.0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += float(r.usage.get("wall_s", 0.0))
        acc[2] += float(r.usage.get("cpu_s", 0.0))
        acc[3] += float(r.usage.get("gpu_s", 0.0))
    return [UsageRow(p, s, int(a[0]), a[1] / 3600, a[2] / 3600, a[3] / 3600) for (p, s), a in sorted(sums.items())]
