"""Benchmark: does a Fach-LLM know the company? Plain SFT vs context-trained SFT vs retrieval alone.

    python bench/bench_fach.py                 # the demo's data, model and training budget
    python bench/bench_fach.py --steps 24      # a larger budget for both trainings

Runs one recipe in a temporary workspace on the embedded model: the demo data and knowledge base,
then two LoRA adapters with the same budget (steps x batch size), one on the plain chats (plain SFT)
and one on grounded rows (`context:`), and evaluates on the held-out facts task:

  base model alone | plain SFT alone | base + knowledge base (retrieval alone) |
  plain SFT + knowledge base | context-trained SFT + knowledge base (the demo's Fach-LLM)

Prints facts accuracy and hallucination rate with 95 % Wilson intervals and n, the training tokens
of each adapter, and the ratio of each accuracy to retrieval alone. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

import yaml


def recipe(steps: int, batch: int) -> dict:  # noqa: ANN001
    demo = yaml.safe_load((resources.files("kifabrik") / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    train = next(s for s in demo["stages"] if s["stage"] == "train")
    common = {k: v for k, v in train.items() if k not in ("name", "context")} | {"max_steps": steps, "batch_size": batch,
                                                                                  "save_steps": steps}
    task = "kifabrik:recipes/tasks/schmidt-fakten.yaml"
    stages = demo["stages"][:2] + [
        {**common, "name": "plain-sft"},
        {**common, "name": "context-sft", "context": train.get("context", {"k": 3, "unanswerable": 0.2})},
        {"stage": "fach-llm", "name": "base-kb", "model": "base", "kb": "wissen", "release_name": "base-kb"},
        {"stage": "fach-llm", "name": "plain-kb", "model": "plain-sft", "kb": "wissen", "release_name": "plain-kb"},
        {"stage": "fach-llm", "name": "context-kb", "model": "context-sft", "kb": "wissen", "release_name": "context-kb"},
    ] + [{"stage": "evaluate", "name": f"eval-{m}", "model": m, "tasks": [task]}
         for m in ("base", "plain-sft", "base-kb", "plain-kb", "context-kb")]
    return {**demo, "name": "bench-fach", "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of each adapter (default: the demo's)")
    parser.add_argument("--batch", type=int, default=None, help="rows per step (default: the demo's)")
    args = parser.parse_args()
    demo = yaml.safe_load((resources.files("kifabrik") / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    train = next(s for s in demo["stages"] if s["stage"] == "train")
    steps, batch = args.steps or train["max_steps"], args.batch or train["batch_size"]
    from kifabrik.pipeline import run_recipe, validate_recipe
    from kifabrik.workspace import Workspace

    with tempfile.TemporaryDirectory() as home:
        os.environ["KIFABRIK_HOME"] = home
        ws = Workspace.open(home)
        result = run_recipe(ws, validate_recipe(recipe(steps, batch), "bench-fach"))
        rows = []
        tokens = {}
        for step in result.steps:
            for rec in step.outputs:
                if rec.kind == "adapter":
                    tokens[step.name] = (rec.meta.get("accounting") or {}).get("tokens_seen")
                if rec.kind != "evaluation":
                    continue
                res = json.loads((Path(ws.path(rec)) / "results.json").read_text(encoding="utf-8"))
                task = res["tasks"][0]
                rows.append((step.name.removeprefix("eval-"), task["metrics"], task["stats"]))
        print(f"facts task, embedded model, {steps} steps x {batch} rows per adapter; training tokens: {tokens}")
        reference = next(m["facts"] for name, m, _ in rows if name == "base-kb")
        for name, m, st in rows:
            f, h = st["facts"], st.get("hallucination_rate", {})
            print(f"{name:12s} facts {m['facts']:.0%} [{f['ci_low']:.0%}-{f['ci_high']:.0%}] n={f['n']}   "
                  f"hallucinations {m.get('hallucination_rate', float('nan')):.0%} "
                  f"[{h.get('ci_low', float('nan')):.0%}-{h.get('ci_high', float('nan')):.0%}] n={h.get('n')}   "
                  f"ratio to retrieval alone {m['facts'] / reference if reference else float('nan'):.2f}")
        ws.close()


if __name__ == "__main__":
    main()
