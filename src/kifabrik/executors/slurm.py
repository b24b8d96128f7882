"""The Slurm executor: every step of a recipe becomes one sbatch job, chained with `afterok`.

Each job runs `kifabrik run RECIPE --pipeline-id P --only-stage STEP` against the submitting
workspace, so it continues the run recorded for it here and leaves the same records, lineage and
documents as a local run. Slurm's own tools are the truth about a job: `sbatch --parsable`,
`scontrol show job` (sites without an accounting database have no `sacct` history), `scancel`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from kifabrik.catalog import RunRecord
from kifabrik.errors import KifabrikError
from kifabrik.executor_options import SlurmOptions
from kifabrik.pipeline import MODEL_STEP, ValidatedRecipe, check_run
from kifabrik.workspace import Workspace

#: Stages that save a checkpoint on USR1 and continue from it when their job is requeued.
CHECKPOINTING_STAGES = {"train"}

#: Job states after which Slurm runs nothing more for the job.
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
        "DEADLINE"}


@dataclass(frozen=True)
class Job:
    """One step's job: what it runs and the script sbatch gets."""

    step: str
    stage: str
    config: dict[str, object]
    script_path: Path
    script: str


def require(tool: str = "sbatch") -> str:
    """The path of Slurm's `tool`, or one error that says how to get it."""
    path = shutil.which(tool)
    if path is None:
        raise KifabrikError(f"--executor slurm needs Slurm's `{tool}`, which is not on PATH",
                            hint="run on a login node of the cluster (there often after `module load slurm`); "
                                 "for one machine install Slurm (as root: bash scripts/slurm.sh, or apt-get install "
                                 "slurm-wlm munge); or run with --executor local")
    return path


def log_dir(ws: Workspace) -> Path:
    return ws.settings.home / "runs" / "slurm"


def _kifabrik_command(options: SlurmOptions) -> list[str]:
    if options.container:  # the image brings its own kifabrik
        return ["kifabrik"]
    exe = Path(sys.executable).parent / "kifabrik"
    return [str(exe)] if exe.exists() else ["kifabrik"]


def plan(ws: Workspace, validated: ValidatedRecipe, recipe_path: Path, pipeline_id: str, *,
         overrides: list[str], reuse: bool = True) -> list[Job]:
    """The jobs of a pipeline, in order: the base model's registration first, then every step."""
    recipe = validated.recipe
    base = recipe.executor.slurm() if recipe.executor else SlurmOptions()
    steps = [(MODEL_STEP, "model", base, recipe.model.model_dump())]
    for i, opts in enumerate(validated.steps):
        own = validated.executors[i] if i < len(validated.executors) else None
        steps.append((validated.step_name(i), opts.stage, own.over(base) if own else base, opts.model_dump()))
    template = Template((resources.files("kifabrik.executors") / "slurm_job.sh.tmpl").read_text(encoding="utf-8"))
    path = recipe_path.resolve()
    jobs = []
    for n, (step, stage, options, config) in enumerate(steps):
        script_path = log_dir(ws) / f"{pipeline_id[:12]}-{n}-{step}.sh"
        args = [*_kifabrik_command(options), "run", str(path), "--pipeline-id", pipeline_id, "--only-stage", step]
        args += [a for o in overrides for a in ("--set", o)] + ([] if reuse else ["--no-reuse"])
        command = " ".join(shlex.quote(a) for a in args)
        if options.container:
            c = options.container
            binds = [str(ws.settings.home), str(path.parent), *c.bind]
            command = " ".join([shlex.quote(c.apptainer), "exec", *(["--nv"] if c.nv else []),
                                *(f"--bind {shlex.quote(b)}" for b in binds), shlex.quote(c.image), command])
        script = template.substitute(
            step=step, stage=stage, recipe=recipe.name, pipeline_id=pipeline_id, script=shlex.quote(str(script_path)),
            job_name=f"kf-{recipe.name}-{step}"[:64].replace(" ", "_"), log_dir=log_dir(ws),
            sbatch_lines="\n".join(f"#SBATCH {line}" for line in _sbatch_lines(options)),
            home=shlex.quote(str(ws.settings.home)), workdir=shlex.quote(str(path.parent)),
            checkpoints="1" if stage in CHECKPOINTING_STAGES else "",
            env_lines="\n".join(f"export {k}={shlex.quote(v)}" for k, v in options.env.items()), command=command)
        jobs.append(Job(step, stage, config, script_path, script))
    return jobs


def _sbatch_lines(o: SlurmOptions) -> list[str]:
    lines = [f"--{flag}={value}" for flag, value in [("partition", o.partition), ("account", o.account),
                                                     ("qos", o.qos), ("time", o.time), ("cpus-per-task", o.cpus),
                                                     ("mem", o.mem), ("gpus", o.gpus)] if value is not None]
    return lines + list(o.extra)


def sbatch_command(job: Job, after: str | None) -> list[str]:
    return ["sbatch", "--parsable", *([f"--dependency=afterok:{after}"] if after else []), str(job.script_path)]


def submit(ws: Workspace, validated: ValidatedRecipe, recipe_path: Path, *, overrides: list[str], reuse: bool = True,
           dry_run: bool = False, echo: Callable[[str], None] = print) -> str:
    """Submit the pipeline's jobs (or, with `dry_run`, print them); return the pipeline id."""
    import uuid

    if not dry_run:
        require("sbatch")
    check_run(ws, validated)  # the references and the model source, before anything is submitted
    pipeline_id = uuid.uuid4().hex
    jobs = plan(ws, validated, recipe_path, pipeline_id, overrides=overrides, reuse=reuse)
    if dry_run:
        for n, job in enumerate(jobs):
            after = f"$JOB_{jobs[n - 1].step.replace('-', '_')}" if n else None  # the id sbatch prints then
            echo(f"# ---- job {n + 1}/{len(jobs)}: step {job.step}: {' '.join(sbatch_command(job, after))}")
            echo(job.script)
        echo(f"# dry run: {len(jobs)} job scripts, nothing submitted")
        return pipeline_id
    log_dir(ws).mkdir(parents=True, exist_ok=True)
    submitted: list[tuple[str, str]] = []  # (run id, job id)
    after = None
    for job in jobs:
        job.script_path.write_text(job.script, encoding="utf-8")
        run_id = ws.catalog.start_run(job.stage, job.config, name=job.step, pipeline_id=pipeline_id,
                                      recipe=validated.recipe.name,
                                      executor={"kind": "slurm", "script": str(job.script_path)})
        proc = subprocess.run(sbatch_command(job, after), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            ws.catalog.update_executor(run_id, {}, status="failed", error=f"sbatch refused the job: {proc.stderr.strip()}")
            cancel_runs(ws, [ws.catalog.get_run(r) for r, _ in submitted], reason="an earlier sbatch failed")
            raise KifabrikError(f"sbatch refused the job of step {job.step!r}: {proc.stderr.strip() or proc.stdout}",
                                hint=f"the script is {job.script_path}; the jobs submitted before it were cancelled")
        job_id = proc.stdout.strip().split(";")[0]
        ws.catalog.update_executor(run_id, {"job_id": job_id, "state": "PENDING",
                                            "log": str(log_dir(ws) / f"{job_id}.log")})
        echo(f"step {job.step}: Slurm job {job_id}" + (f" (after {after})" if after else "") + f", run {run_id[:12]}")
        submitted.append((run_id, job_id))
        after = job_id
    return pipeline_id


def job_facts(job_id: str) -> dict[str, Any] | None:
    """State, node, exit code and reason of a job from `scontrol show job`, or, once the controller
    forgot it (MinJobAge), from `sacct` where the site keeps accounting; None when neither knows it."""
    if shutil.which("scontrol") is None:
        return None
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return _sacct_facts(job_id)
    fields = dict(part.split("=", 1) for part in proc.stdout.split() if "=" in part)
    facts: dict[str, Any] = {"state": fields.get("JobState", "?"), "exit_code": fields.get("ExitCode", "?"),
                             "reason": fields.get("Reason", "None")}
    if fields.get("NodeList") not in (None, "(null)", ""):
        facts["node"] = fields["NodeList"]
    if fields.get("Restarts", "0") not in ("0", ""):  # requeued (preemption, time-limit warning, scontrol requeue)
        facts["restart_count"] = int(fields["Restarts"])
    return facts


def _sacct_facts(job_id: str) -> dict[str, str] | None:
    if shutil.which("sacct") is None:
        return None
    proc = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode,NodeList,Reason"],
                          capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines() if proc.returncode == 0 else []
    if not lines or lines[-1].count("|") != 3:  # no accounting database: sacct has nothing to say
        return None
    state, exit_code, node, reason = lines[-1].split("|")
    facts = {"state": state.split()[0], "exit_code": exit_code, "reason": reason or "None"}  # "CANCELLED by 0"
    if node and node not in ("None assigned", "(null)"):
        facts["node"] = node
    return facts


def refresh(ws: Workspace, runs: list[RunRecord]) -> list[RunRecord]:
    """The runs with their Slurm jobs' current state; a run whose job ended before it did is marked failed."""
    fresh = []
    for run in runs:
        ex = run.executor or {}
        if ex.get("kind") == "slurm" and ex.get("job_id") and (run.status in ("queued", "running")
                                                                or ex.get("state") not in DONE):
            facts = job_facts(str(ex["job_id"]))
            if facts is not None:
                status = error = None
                state = facts["state"]
                if state in DONE and state != "COMPLETED" and run.status in ("queued", "running"):
                    status = "cancelled" if state == "CANCELLED" else "failed"
                    if run.status == "queued" and "Dependency" in facts["reason"]:
                        error = (f"not run: the job of an earlier step did not succeed (Slurm job {ex['job_id']}: "
                                 f"{facts['reason']})")
                    else:
                        error = (f"Slurm job {ex['job_id']} ended {state} (exit code {facts['exit_code']}, reason "
                                 f"{facts['reason']}) before the step finished; log: {ex.get('log')}")
                ws.catalog.update_executor(run.id, facts, status=status, error=error)
                run = ws.catalog.get_run(run.id)
        fresh.append(run)
    return fresh


def cancel_runs(ws: Workspace, runs: list[RunRecord], *, reason: str = "cancelled with `kifabrik runs cancel`",
                wait_s: float = 20.0) -> list[RunRecord]:
    """`scancel` the jobs of the runs not yet ended, wait until Slurm lists none of them, mark them cancelled."""
    open_runs = [r for r in runs if r.status in ("queued", "running")]
    jobs = {r.id: str((r.executor or {}).get("job_id")) for r in open_runs if (r.executor or {}).get("job_id")}
    local = [r for r in open_runs if r.id not in jobs]
    if local:
        raise KifabrikError(f"run {local[0].id[:12]} runs in a local process, not as a Slurm job",
                            hint="stop it where it runs (Ctrl-C); `kifabrik doctor --fix` marks dead runs interrupted")
    if not jobs:
        return []
    proc = subprocess.run([require("scancel"), *jobs.values()], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KifabrikError(f"scancel failed: {proc.stderr.strip()}", hint="see `squeue --me`")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # the job's processes get SIGTERM; wait until they are gone
        q = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(jobs.values())], capture_output=True, text=True, check=False)
        if not q.stdout.strip():
            break
        time.sleep(0.5)
    for run_id, job_id in jobs.items():
        ws.catalog.update_executor(run_id, {"state": "CANCELLED"}, status="cancelled",
                                   error=f"{reason} (scancel {job_id})")
    return [ws.catalog.get_run(r) for r in jobs]


def slurm_text(run: RunRecord) -> str:
    """`slurm 123 RUNNING vm requeued 1x`: the run's job, for the run lists (empty for in-process runs)."""
    ex = run.executor or {}
    if ex.get("kind") != "slurm":
        return ""
    restarts = f"requeued {ex['restart_count']}x" if ex.get("restart_count") else ""
    return " ".join(str(p) for p in ("slurm", ex.get("job_id", "-"), ex.get("state", "?"), ex.get("node", ""),
                                     restarts) if p)


def environ_ok() -> bool:
    """True where this process can talk to a Slurm controller (`sinfo` answers)."""
    return shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True, check=False).returncode == 0


def job_environment() -> dict[str, object]:
    """What a running job knows of itself from Slurm's environment: `restart_count` (how often Slurm
    requeued it, after a preemption, a time-limit warning or `scontrol requeue`); empty outside a job."""
    if not os.environ.get("SLURM_JOB_ID"):
        return {}
    return {"restart_count": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}
