"""The Slurm executor against a real single-node Slurm (scripts/slurm.sh, started by `make services`).

The dry run and the errors need no Slurm; the others submit real jobs and skip, with the reason,
only where no Slurm controller answers or its node is not idle.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kifabrik.workspace import Workspace

RECIPE = """\
name: shop
model:
  source: {source}
  name: tiny
executor:
  kind: {kind}
  time: "00:10:00"
  cpus: 1
  env: {{KF_TEST_NOTE: "two words"}}
stages:
  - stage: generate
    name: ask
    prompts: ["Wann ist der nächste Ölwechsel fällig?"]
    max_new_tokens: 4
    executor: {{mem: 400M, extra: ["--comment=kifabrik-test"]}}
  - stage: generate
    name: ask-again
    model: base
    prompts: ["Ersatzteile?"]
    max_new_tokens: 3
"""


@contextmanager
def _ws(home: Path) -> Iterator[Workspace]:
    ws = Workspace.open(home)
    try:
        yield ws
    finally:
        ws.close()


def slurm_missing() -> str | None:
    """Why the tests that submit jobs cannot run here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm is not installed (run `bash scripts/slurm.sh` as root, or `make services`)"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"no Slurm controller answers: {proc.stderr.strip()}"
    if not {"idle", "mixed"} & set(proc.stdout.split()):
        return f"the Slurm node is not idle (sinfo: {proc.stdout.strip() or 'no nodes'})"
    return None


needs_slurm = pytest.mark.skipif(slurm_missing() is not None, reason=str(slurm_missing()))


#: Stages that document the base model and release it, as the demo recipe ends.
DOCUMENT_AND_RELEASE = """\
  - stage: document
    name: docs
    model: base
  - stage: release
    name: ship
    model: base
    documents: docs
    release_name: shop-base
    version: "1.0"
    license: Apache-2.0
organisation: {provider: Schmidt GmbH, intended_purpose: Service answers.}
"""


def _recipe(tmp_path: Path, source: Path, kind: str = "slurm", more: str = "") -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(RECIPE.format(source=source, kind=kind) + more, encoding="utf-8")
    return path


def _wait(home: Path, pipeline: str, timeout: float = 150.0) -> list:
    """The pipeline's runs once none is queued or running and their jobs ended (read as `runs list` does)."""
    from kifabrik.executors.slurm import DONE, refresh

    deadline = time.monotonic() + timeout
    while True:
        with _ws(home) as ws:
            runs = refresh(ws, ws.catalog.list_runs(pipeline))
        if all(r.status not in ("queued", "running") and r.executor["state"] in DONE for r in runs) \
                or time.monotonic() > deadline:
            return runs
        time.sleep(1)


def _pipeline(out: str) -> str:
    found = re.search(r"pipeline ([0-9a-f]{32}) submitted", out)
    assert found, out
    return found.group(1)


def _facts(home: Path) -> tuple[list, list, dict, dict]:
    """What a run leaves: artifacts (kind, name@version), lineage edges by name, the generated answers
    and the files of every artifact (documents among them)."""
    with _ws(home) as ws:
        arts = ws.catalog.list_artifacts()
        names = {a.id: a.ref for a in arts}
        edges = sorted((names[e.parent_id], e.relation, names[e.child_id]) for e in ws.catalog.edges())
        answers = {a.ref: [json.loads(line)["answer"] for line in (ws.path(a) / "answers.jsonl").read_text().splitlines()]
                   for a in arts if a.kind == "generations"}
        files = {a.ref: sorted(str(p.relative_to(ws.path(a))) for p in ws.path(a).rglob("*") if p.is_file())
                 for a in arts}
        return sorted((a.kind, a.ref) for a in arts), edges, answers, files


def test_dry_run_prints_every_job_script_with_the_dependency_chain(cli, home, tiny_model_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_dir)
    r = cli("run", str(recipe), "--dry-run")  # the recipe's executor: section chooses slurm
    assert r.code == 0, r.err
    parts = re.split(r"^# ---- job (\d)/3: step (\S+): (.*)$", r.out, flags=re.MULTILINE)
    headers = [(parts[i], parts[i + 1], parts[i + 2]) for i in range(1, len(parts) - 1, 4)]
    scripts = [parts[i + 3] for i in range(1, len(parts) - 1, 4)]
    assert [h[1] for h in headers] == ["model", "ask", "ask-again"]  # the base model's registration first
    assert "--dependency" not in headers[0][2]
    assert "--dependency=afterok:$JOB_model " in headers[1][2]
    assert "--dependency=afterok:$JOB_ask " in headers[2][2]
    for (_, step, _), script in zip(headers, scripts, strict=True):
        script = script.split("# dry run:")[0].lstrip("\n")
        syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
        assert syntax.returncode == 0, syntax.stderr
        assert script.startswith("#!/bin/bash\n")
        for line in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "#SBATCH --time=00:10:00",
                     "#SBATCH --cpus-per-task=1", f"#SBATCH --output={home}/runs/slurm/%j.log",
                     "export HF_HUB_OFFLINE=1", f"export KIFABRIK_HOME={home}", "export KF_TEST_NOTE='two words'"):
            assert line in script, (step, line)
        assert f"run {recipe} --pipeline-id " in script and f" --only-stage {step} &" in script
        # only `ask` has its own executor: section, over the recipe's
        assert ("#SBATCH --mem=400M" in script) == (step == "ask") == ("#SBATCH --comment=kifabrik-test" in script)
    assert "# dry run: 3 job scripts, nothing submitted" in r.out
    with _ws(home) as ws:
        assert ws.catalog.list_runs() == []
    assert not (home / "runs" / "slurm").exists()


def test_container_wraps_the_command(cli, home, tiny_model_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_dir)
    r = cli("run", str(recipe), "--dry-run", "--set", "executor.container.image=/shared/kifabrik.sif",
            "--set", "executor.container.nv=true", "--set", "executor.container.bind=[/shared/data]")
    assert r.code == 0, r.err
    assert (f"apptainer exec --nv --bind {home} --bind {tmp_path} --bind /shared/data /shared/kifabrik.sif "
            f"kifabrik run {recipe} --pipeline-id ") in r.out


def test_bad_executor_sections_name_the_field(cli, home, tiny_model_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_dir)
    text = recipe.read_text().replace("  cpus: 1\n", "  cpu: 1\n").replace("mem: 400M", "mem: lots")
    recipe.write_text(text)
    r = cli("run", str(recipe), "--dry-run")
    assert r.code == 1 and "Traceback" not in r.err
    assert "shop.yaml:8: executor.cpu" in r.err
    assert "stages[0].executor.mem" in r.err and "'lots' is not a Slurm memory size" in r.err
    assert "the recipe is invalid (2 problems)" in r.err
    bad = cli("run", str(_recipe(tmp_path, tiny_model_dir)), "--executor", "cluster")
    assert bad.code == 1 and "--executor 'cluster': unknown executor" in bad.err


def test_missing_sbatch_says_how_to_get_it(cli, home, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    r = cli("run", str(_recipe(tmp_path, tiny_model_dir, kind="local")), "--executor", "slurm")
    assert r.code == 1 and "Traceback" not in r.err
    assert "--executor slurm needs Slurm's `sbatch`, which is not on PATH" in r.err
    assert "scripts/slurm.sh" in r.err and "--executor local" in r.err
    with _ws(home) as ws:
        assert ws.catalog.list_runs() == []


@needs_slurm
def test_slurm_run_leaves_what_a_local_run_leaves(cli, home, tiny_model_dir, tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, tiny_model_dir, kind="local", more=DOCUMENT_AND_RELEASE)
    local = cli("run", str(recipe))
    assert local.code == 0, local.err
    expected = _facts(home)
    assert expected[0] == [("document", "shop-base-1.0-documents@1"), ("document", "shop-docs@1"),
                           ("generations", "shop-ask-again@1"), ("generations", "shop-ask@1"), ("model", "tiny@1"),
                           ("release", "shop-base@1")]  # the release bundles documents made for it
    assert "documents/annex-xi.md" in expected[3]["shop-base@1"]

    slurm_home = tmp_path / "slurm-home"  # a second workspace: the jobs get it from the environment sbatch passes on
    monkeypatch.setenv("KIFABRIK_HOME", str(slurm_home))
    r = cli("run", str(recipe), "--executor", "slurm")
    assert r.code == 0, r.err
    pipeline = _pipeline(r.out)
    runs = _wait(slurm_home, pipeline)
    assert sorted((x.name, x.status) for x in runs) == [
        ("ask", "succeeded"), ("ask-again", "succeeded"), ("docs", "succeeded"), ("model", "succeeded"),
        ("ship", "succeeded")], [x.error for x in runs]
    assert _facts(slurm_home) == expected
    for run in runs:
        ex = run.executor
        assert ex["kind"] == "slurm" and ex["state"] == "COMPLETED" and ex["exit_code"] == "0:0"
        assert ex["node"] == subprocess.run(["hostname", "-s"], capture_output=True, text=True,
                                            check=False).stdout.strip()
        log = Path(ex["log"]).read_text()
        assert log == (slurm_home / "runs" / "slurm" / f"{ex['job_id']}.log").read_text()
        assert f"kifabrik: {run.name} ended with exit code 0" in log
    ids = {x.name: int(x.executor["job_id"]) for x in runs}
    assert ids["model"] < ids["ask"] < ids["ask-again"] < ids["docs"] < ids["ship"]
    listed = cli("runs", "list", "--pipeline", pipeline[:12])
    assert listed.out.count("succeeded (slurm ") == 5 and f"slurm {ids['ask']} COMPLETED" in listed.out
    shown = json.loads(cli("runs", "show", runs[0].id).out)
    assert shown["executor"]["job_id"] == str(ids[runs[0].name])


@needs_slurm
def test_a_failing_step_fails_its_job_and_the_later_jobs_do_not_run(cli, home, tiny_model_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_model_dir)
    # `ask` is an earlier step, so the check passes; its output is found to be no model only when the job runs
    recipe.write_text(recipe.read_text().replace("model: base", "model: ask")
                      + "  - stage: generate\n    name: third\n    prompts: [x]\n    max_new_tokens: 2\n")
    r = cli("run", str(recipe))
    assert r.code == 0, r.err
    runs = {x.name: x for x in _wait(home, _pipeline(r.out))}
    assert {n: x.status for n, x in runs.items()} == {"model": "succeeded", "ask": "succeeded",
                                                      "ask-again": "failed", "third": "cancelled"}
    failed = runs["ask-again"]
    assert "shop-ask@1 is a generations" in failed.error  # the step's own error, recorded by the job
    assert failed.executor["state"] == "FAILED" and failed.executor["exit_code"] == "1:0"  # kifabrik's exit status 1
    assert "ended with exit code 1" in Path(failed.executor["log"]).read_text()
    third = runs["third"]
    assert third.executor["state"] == "CANCELLED" and "node" not in third.executor
    assert third.error == (f"not run: the job of an earlier step did not succeed (Slurm job "
                           f"{third.executor['job_id']}: DependencyNeverSatisfied)")


@needs_slurm
def test_cancelling_a_pipeline_ends_its_jobs(cli, home, tiny_model_dir, tmp_path):
    # A container runtime that only sleeps: the first job is running, the others wait on it, when cancelled.
    runtime = tmp_path / "sleeping-apptainer"
    runtime.write_text("#!/bin/sh\nexec sleep 300\n")
    runtime.chmod(0o755)
    r = cli("run", str(_recipe(tmp_path, tiny_model_dir)), "--set", f"executor.container.apptainer={runtime}",
            "--set", "executor.container.image=none.sif")
    assert r.code == 0, r.err
    pipeline = _pipeline(r.out)
    with _ws(home) as ws:
        jobs = {x.name: x.executor["job_id"] for x in ws.catalog.list_runs(pipeline)}
    deadline = time.monotonic() + 30
    while subprocess.run(["squeue", "-h", "-j", jobs["model"], "-o", "%T"], capture_output=True, check=False,
                         text=True).stdout.strip() != "RUNNING":
        assert time.monotonic() < deadline, "the first job did not start within 30 s"
        time.sleep(0.5)

    c = cli("runs", "cancel", pipeline[:12])
    assert c.code == 0, c.err
    assert c.out.count("cancelled run ") == 3
    queue = subprocess.run(["squeue", "-h", "-j", ",".join(jobs.values())], capture_output=True, text=True,
                           check=False)
    assert queue.stdout.strip() == ""
    runs = _wait(home, pipeline, timeout=5)
    assert {x.status for x in runs} == {"cancelled"}
    for run in runs:
        assert run.error == f"cancelled with `kifabrik runs cancel` (scancel {jobs[run.name]})"
        assert run.executor["state"] == "CANCELLED" and run.ended_at is not None
    again = cli("runs", "cancel", pipeline[:12])
    assert again.code == 0 and "nothing to cancel: 3 run(s), none queued or running" in again.out
