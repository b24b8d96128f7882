"""The AI factory's costs: the Slurm executor per stage against a local run, and gloo training on 1 vs 2 processes.

    python bench/bench_factory.py [--home /tmp/kifabrik-factory] [--stages 3] [--steps 6]

1. Executor overhead: the same recipe (the embedded SmolLM2-135M-Instruct answering a few
   prompts in `--stages` generate stages) runs once with `--executor local` and once with
   `--executor slurm` (one sbatch job per stage, chained with afterok, on the single-node Slurm
   that `scripts/slurm.sh` starts); wall time from the command's start until the last stage's run
   record is finished. The difference per stage is what Slurm and a fresh process per stage cost
   (job start, Python and model load again); stages are new runs each time (`--no-reuse`).
2. Data-parallel training: `kifabrik train` of the same LoRA on the same rows and the same global
   batch, `--batch-size 8` in one process vs `--batch-size 4 --nproc 2` (gloo); tokens/s from the
   adapter's accounting (training loop only).

Prints seconds and ratios. Needs `sbatch` and an idle Slurm node for part 1 (else skipped with the
reason). Not a test: a shared machine moves these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KF = [sys.executable, "-m", "kifabrik.cli.main"]
DATA = Path(__file__).resolve().parents[1] / "src" / "kifabrik" / "data" / "demo" / "schmidt-wartung-train.jsonl"


def kf(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KIFABRIK_HOME": str(home), "KIFABRIK_QUIET": "1"}
    proc = subprocess.run([*KF, *args], env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        sys.exit(f"kifabrik {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc


def recipe(stages: int, kind: str) -> str:
    lines = ["name: factory-bench", "model:", "  source: embedded:smollm2-135m-instruct", "  name: smollm2",
             "executor:", f"  kind: {kind}", "  cpus: 2", "stages:"]
    for i in range(stages):
        lines += ["  - stage: generate", f"    name: ask-{i}", "    model: base",
                  "    prompts: [\"Wann ist der nächste Ölwechsel fällig?\", \"Was bedeutet E205?\"]",
                  "    max_new_tokens: 16"]
    return "\n".join(lines) + "\n"


def finished_runs(home: Path) -> list[dict]:
    out = kf(home, "runs", "list", "--json").stdout
    return [r for r in json.loads(out) if r.get("status") in ("succeeded", "failed", "cancelled")]


def slurm_missing() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "Slurm is not installed (bash scripts/slurm.sh)"
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not {"idle", "mixed"} & set(proc.stdout.split()):
        return f"no idle Slurm node ({proc.stderr.strip() or proc.stdout.strip()})"
    return None


def executor_overhead(home: Path, stages: int) -> None:
    why = slurm_missing()
    if why:
        print(f"executor overhead: skipped: {why}")
        return
    results = {}
    for kind in ("local", "slurm"):
        path = home / f"recipe-{kind}.yaml"
        path.write_text(recipe(stages, kind), encoding="utf-8")
        before = len(finished_runs(home))
        t0 = time.monotonic()
        kf(home, "run", str(path), "--no-reuse", "--executor", kind)
        while len(finished_runs(home)) < before + stages + 1:  # + the model registration step
            time.sleep(0.5)
            if time.monotonic() - t0 > 1800:
                sys.exit(f"{kind}: the runs did not finish within 30 minutes")
        results[kind] = time.monotonic() - t0
        failed = [r for r in finished_runs(home)[: stages + 1] if r["status"] != "succeeded"]
        if failed:
            sys.exit(f"{kind}: runs did not succeed: {failed}")
    local, slurm = results["local"], results["slurm"]
    print(f"executor, {stages} generate stages (+ model step): local {local:.1f} s, slurm {slurm:.1f} s; "
          f"slurm / local {slurm / local:.2f}x; overhead {(slurm - local) / (stages + 1):.1f} s per stage")


def training_scaling(home: Path, steps: int) -> None:
    common = ["train", "--base", "smollm2", "--data", "bench-chats", "--max-steps", str(steps), "--no-packing",
              "--max-seq-length", "256", "--seed", "1", "--dropout", "0", "--save-steps", str(steps)]
    rates = {}
    for label, extra in (("1 process", ["--batch-size", "8"]), ("2 processes", ["--batch-size", "4", "--nproc", "2"])):
        name = "bench-" + label.replace(" ", "-")
        kf(home, *common, *extra, "--name", name)
        from kifabrik.workspace import Workspace

        ws = Workspace.open(home)
        acc = ws.catalog.get_artifact(name, "adapter").meta["accounting"]
        ws.close()
        rates[label] = acc["tokens_seen"] / acc["wall_time_s"]
        print(f"train {label}: {acc['tokens_seen']} tokens in {acc['wall_time_s']:.1f} s = {rates[label]:.0f} tokens/s")
    print(f"gloo training, 2 / 1 processes (same global batch 8, {steps} steps): "
          f"{rates['2 processes'] / rates['1 process']:.2f}x tokens/s on {os.cpu_count()} cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("/tmp/kifabrik-factory"))
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--no-slurm", action="store_true", help="only the training part")
    args = ap.parse_args()
    shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True)
    kf(args.home, "models", "add", "embedded:smollm2-135m-instruct", "--name", "smollm2")
    kf(args.home, "data", "import", str(DATA), "--name", "bench-chats", "--policy-preset", "internal-only")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    if not args.no_slurm:
        executor_overhead(args.home, args.stages)
    training_scaling(args.home, args.steps)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
