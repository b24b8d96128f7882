"""Benchmark: does a Fach-LLM know the company? Plain SFT vs context-trained SFT vs retrieval alone.

    python bench/bench_fach.py                 # the demo's data, model and training budget
    python bench/bench_fach.py --steps 24      # a larger budget for both trainings
    python bench/bench_fach.py --model /path/to/model-folder --batch 4 --grad-accum 2
    python bench/bench_fach.py --limit 10 --evaluate base-kb,context-kb   # a quick look: 10 items, two models

Runs one recipe in a temporary workspace on the embedded model (or `--model`): the demo data and knowledge base,
then two LoRA adapters with the same budget (steps x batch size), one on the plain chats (plain SFT)
and one on grounded rows (`context:`), and evaluates on the held-out facts task:

  base model alone | plain SFT alone | base + knowledge base (retrieval alone) |
  plain SFT + knowledge base | context-trained SFT + knowledge base (the demo's Fach-LLM)

Prints facts accuracy and hallucination rate with 95 % Wilson intervals and n, the training tokens
and wall time of each adapter, the wall time of each evaluation, and the ratio of each accuracy to
retrieval alone. Not a test.

A base model without a chat template cannot be trained on chats (the train stage refuses it, although
evaluation and serving render such a model's prompts with `prompts.fallback_text`). `--chat-template
FILE` gives the model one for this run: the model folder is linked into the temporary workspace with
FILE as its `chat_template.jinja`. A template that writes the fallback's `role: content` lines (after
the BOS token the fallback's tokenization adds) gives evaluation the same prompt ids as the fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

#: The evaluations, in the order they are printed: model alone, then with the knowledge base.
EVALUATIONS = ("base", "plain-sft", "base-kb", "plain-kb", "context-kb")


def recipe(steps: int, batch: int, *, grad_accum: int = 1, model: dict[str, Any] | None = None, k: int | None = None,
           limit: int | None = None, evaluate: tuple[str, ...] = EVALUATIONS, seed: int | None = None) -> dict[str, Any]:
    """The bench recipe: the demo's data and knowledge base, two adapters, five evaluations.

    `k` sets both the sources per training row (`context.k`) and the passages retrieved per answer
    (`fach-llm` `k`), so the model is trained on as many sources as it is later given.
    `evaluate` names the evaluations to run (a subset of EVALUATIONS); the plain-SFT adapter is trained
    only when one of them needs it.
    """
    demo = yaml.safe_load((resources.files("kifabrik") / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    train = next(s for s in demo["stages"] if s["stage"] == "train")
    common = {k: v for k, v in train.items() if k not in ("name", "context")} | {
        "max_steps": steps, "batch_size": batch, "grad_accum": grad_accum, "save_steps": steps} | (
        {"seed": seed} if seed is not None else {})
    context = dict(train.get("context", {"k": 3, "unanswerable": 0.2}))
    retrieval: dict[str, int] = {}
    if k is not None:
        context["k"], retrieval = k, {"k": k}
    task = "kifabrik:recipes/tasks/schmidt-fakten.yaml"
    plain = [{**common, "name": "plain-sft"}] if {"plain-sft", "plain-kb"} & set(evaluate) else []
    stages = demo["stages"][:2] + plain + [
        {**common, "name": "context-sft", "context": context},
        {"stage": "fach-llm", "name": "base-kb", "model": "base", "kb": "wissen", "release_name": "base-kb", **retrieval},
    ] + ([] if not plain else [
        {"stage": "fach-llm", "name": "plain-kb", "model": "plain-sft", "kb": "wissen", "release_name": "plain-kb",
         **retrieval}]) + [
        {"stage": "fach-llm", "name": "context-kb", "model": "context-sft", "kb": "wissen", "release_name": "context-kb",
         **retrieval},
    ] + [{"stage": "evaluate", "name": f"eval-{m}", "model": m, "tasks": [task], **({"limit": limit} if limit else {})}
         for m in EVALUATIONS if m in evaluate]
    return {**demo, "name": "bench-fach", "stages": stages, **({"model": model} if model else {})}


def with_template(folder: Path, template: Path, into: Path) -> Path:
    """A folder `into` that links every file of the model folder `folder`, with `template` as its chat template."""
    if not folder.is_dir():
        raise SystemExit(f"--chat-template needs --model to be a model folder; {folder} is not one")
    into.mkdir(parents=True)
    for f in folder.iterdir():
        if f.is_file() and f.name != "chat_template.jinja":
            (into / f.name).symlink_to(f.resolve())
    # transformers reads a tokenizer_config.json `chat_template` before chat_template.jinja: drop it there.
    config = into / "tokenizer_config.json"
    if config.exists():
        data = json.loads(config.read_text(encoding="utf-8"))
        if data.pop("chat_template", None) is not None:
            config.unlink()
            config.write_text(json.dumps(data, indent=2), encoding="utf-8")
    (into / "chat_template.jinja").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    return into


def seconds(ws: Any, run_id: str) -> float:
    """Wall time of a recorded run (start to end)."""
    run = ws.catalog.get_run(run_id)
    return (run.ended_at - run.started_at).total_seconds() if run.ended_at else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of each adapter (default: the demo's)")
    parser.add_argument("--batch", type=int, default=None, help="rows per micro-batch (default: the demo's)")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per optimizer step; --batch 4 --grad-accum 2 keeps 8 rows per step in less memory")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                        help="base model instead of the demo's: embedded:NAME, a .gguf file or a model folder")
    parser.add_argument("--chat-template", type=Path, default=None, metavar="FILE",
                        help="Jinja chat template for a --model folder that has none (see the module docstring)")
    parser.add_argument("--k", type=int, default=None, help="sources per training row and per answer (default: the demo's)")
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed of both adapters (data order, LoRA init, which rows get which sources; default: the demo's)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N facts items only (default: all 109)")
    parser.add_argument("--evaluate", default=",".join(EVALUATIONS),
                        help=f"comma-separated evaluations to run (default: all of {','.join(EVALUATIONS)})")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="run in DIR (new or empty) instead of a temporary folder and keep it, e.g. to read the samples")
    args = parser.parse_args()
    evaluate = tuple(e for e in args.evaluate.split(",") if e)
    if unknown := set(evaluate) - set(EVALUATIONS):
        parser.error(f"--evaluate: unknown {', '.join(sorted(unknown))} (choose from {', '.join(EVALUATIONS)})")
    demo = yaml.safe_load((resources.files("kifabrik") / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    train = next(s for s in demo["stages"] if s["stage"] == "train")
    steps, batch = args.steps or train["max_steps"], args.batch or train["batch_size"]
    from kifabrik.pipeline import run_recipe, validate_recipe
    from kifabrik.workspace import Workspace

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            parser.error(f"--keep: {args.keep} is not empty")
    with contextlib.nullcontext(str(args.keep.resolve())) if args.keep else tempfile.TemporaryDirectory() as home:
        os.environ["KIFABRIK_HOME"] = home
        model, label = None, "embedded model"
        if args.model:
            source = Path(args.model).expanduser()
            # a registered model's folder is called `weights`: name the bench's copy after the file or folder instead
            name = source.stem if source.suffix == ".gguf" else source.resolve().name
            name = name if source.exists() and name != "weights" else "bench-model"
            if args.chat_template:
                source = with_template(source, args.chat_template, Path(home) / "model-with-template" / name)
            model = {"source": str(source) if source.exists() else args.model, "name": name}
            label = f"model {args.model}" + (f" with chat template {args.chat_template}" if args.chat_template else "")
        ws = Workspace.open(home)
        spec = recipe(steps, batch, grad_accum=args.grad_accum, model=model, k=args.k, limit=args.limit,
                      evaluate=evaluate, seed=args.seed)
        result = run_recipe(ws, validate_recipe(spec, "bench-fach"))
        rows = []
        tokens, times = {}, {}
        for step in result.steps:
            if step.stage in ("train", "evaluate"):
                times[step.name] = seconds(ws, step.run_id)
            for rec in step.outputs:
                if rec.kind == "adapter":
                    tokens[step.name] = (rec.meta.get("accounting") or {}).get("tokens_seen")
                if rec.kind != "evaluation":
                    continue
                res = json.loads((Path(ws.path(rec)) / "results.json").read_text(encoding="utf-8"))
                task = res["tasks"][0]
                rows.append((step.name.removeprefix("eval-"), task["metrics"], task["stats"], times[step.name]))
        print(f"facts task, {label}, {steps} steps x {batch} rows x {args.grad_accum} micro-batches per adapter, "
              f"k={args.k or train.get('context', {}).get('k', 3)}, seed {args.seed if args.seed is not None else train.get('seed', 42)}; training tokens: {tokens}")
        print("training time: " + ", ".join(f"{n} {times[n]:.0f} s" for n in tokens))
        reference = next((m["facts"] for name, m, _, _ in rows if name == "base-kb"), None)
        for name, m, st, sec in rows:
            f, h = st["facts"], st.get("hallucination_rate", {})
            print(f"{name:12s} facts {m['facts']:.0%} [{f['ci_low']:.0%}-{f['ci_high']:.0%}] n={f['n']}   "
                  f"hallucinations {m.get('hallucination_rate', float('nan')):.0%} "
                  f"[{h.get('ci_low', float('nan')):.0%}-{h.get('ci_high', float('nan')):.0%}] n={h.get('n')}   "
                  f"ratio to retrieval alone {m['facts'] / reference if reference else float('nan'):.2f}   eval {sec:.0f} s")
        ws.close()


if __name__ == "__main__":
    main()
