"""Records with fixed numbers for the document and release tests (no training: seconds, not minutes).

`build_facts` writes what the data, train and evaluate stages record — a dataset with its card,
an adapter with its accounting and run, an evaluation with results and a verdict — directly in
their record formats, so golden files are stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kifabrik.evaluate.stats import wilson_interval
from kifabrik.mission_ki import threshold_level
from kifabrik.policy import preset
from kifabrik.workspace import Workspace

DATA = Path(__file__).parent / "data"
CATALOGUE = DATA / "catalogue.json"

QA = [("Wie oft braucht die Maschine einen Ölwechsel?", "Alle 500 Betriebsstunden."),
      ("How often does the machine need an oil change?", "Every 500 operating hours."),
      ("Wo bestelle ich Ersatzteile?", "Über das Kundenportal.")]


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": QA[i % 3][0]}, {"role": "assistant", "content": QA[i % 3][1]}]}
            for i in range(n)]


def card(name: str, train: int, test: int, policy_name: str) -> dict[str, Any]:
    """A card.json as the data stage writes it (the fields the documents read)."""
    return {
        "name": name, "description": "Service conversations of the demo company.", "format": "chat",
        "collected": "2025-12-31",
        "sources": [{"path": "/data/service.jsonl", "role": "train", "sha256": "ab" * 32, "bytes": 4096,
                     "rows_valid": train, "rows_invalid": 1}],
        "rows": {"train": train, "test": test, "valid_read": train + test + 2, "invalid_skipped": 1,
                 "pii_dropped": 0, "duplicates_exact": 2, "duplicates_near": 0},
        "size": {"characters": {"train": 1234, "test": 321},
                 "tokens": {"train": 456, "test": 78, "tokenizer": {"id": "0" * 64, "ref": "tiny@1"}}},
        "languages": {"detector": "py3langid", "sample": train + test, "shares": {"de": 0.6667, "en": 0.3333}},
        "pii": {"mode": "redact", "counts": {"email": 3, "phone": 1, "iban": 0}, "rows_with_pii": 4,
                "checks": "IBAN mod-97, phone numbers libphonenumber",
                "names": "person names were NOT detected: no NER pipeline is installed", "name_detector": None},
        "dedup": {"enabled": True, "exact": 2, "near": 0},
        "contamination": {"ngram": 13, "test_rows": test, "rows_flagged": 0},
        "policy": {"name": policy_name},
    }


def make_dataset(ws: Workspace, name: str, policy_spec: str, train: int = 12, test: int = 3) -> Any:
    doc = preset(policy_spec)
    policy_id = ws.catalog.add_policy(policy_spec, doc)
    c = card(name, train, test, policy_spec)
    meta = {"format": "chat", "rows": {"train": train, "test": test}, "policy_ids": [policy_id],
            "policy": policy_spec, "languages": c["languages"]["shares"],
            "sources": [{"path": "/data/service.jsonl", "sha256": "ab" * 32}]}
    with ws.create("dataset", name, meta=meta, policies=[policy_id]) as draft:
        draft.write_text("train.jsonl", "".join(json.dumps(r) + "\n" for r in chat_rows(train)))
        draft.write_text("test.jsonl", "".join(json.dumps(r) + "\n" for r in chat_rows(test)))
        draft.write_json("card.json", c)
        draft.write_text("card.md", f"# {name}\n")
    return draft.record


ACCOUNTING = {"tokens_seen": 2048, "tokens_processed_all_sessions": 2048, "steps": 6, "epochs": 3.0,
              "steps_per_epoch": 2, "sequences_per_epoch": 12, "wall_time_s": 12.5, "sessions": 1,
              "device": "CPU Test CPU (2 threads)", "precision": "fp32", "peak_memory_bytes": 104857600,
              "peak_memory_basis": "peak resident set size", "flops": 3.2e9,
              "flops_basis": "(4·N + 6·N_lora)·T; test numbers", "energy_joules": 250.0, "energy_kwh": 6.9e-05,
              "energy_method": "estimate", "energy_basis": "estimate: wall time × 2 threads × 10 W"}


def make_adapter(ws: Workspace, base: Any, datasets: list[Any], name: str = "service-lora") -> Any:
    """An adapter record as the train stage writes it, with a finished run."""
    train_cfg = {"method": "lora", "epochs": 3.0, "max_steps": 6, "batch_size": 2, "grad_accum": 1,
                 "learning_rate": 0.005, "lr_scheduler": "cosine", "seed": 42, "max_seq_length": 128,
                 "packing": True, "lora": {"rank": 4, "alpha": 8.0}}
    run_id = ws.catalog.start_run("train", {"train": train_cfg}, name=name)
    meta = {"base_model": base.ref, "base_model_id": base.id, "base_weights_sha256": base.meta.get("weights_sha256"),
            "architecture": base.meta.get("architecture"), "model_type": base.meta.get("model_type"),
            "method": "lora", "objective": "sft",
            "datasets": [{"id": d.id, "ref": d.ref, "format": "chat", "rows": d.meta["rows"]} for d in datasets],
            "policy_ids": sorted({p for d in datasets for p in d.meta["policy_ids"]}),
            "trainable_parameters": 4096, "total_parameters": base.meta["parameters"] + 4096,
            "max_seq_length": 128, "packing": True, "seed": 42,
            "data": {"train": {"rows": 12, "sequences": 12, "tokens": 456, "loss_tokens": 200, "truncated": 0},
                     "test": {"rows": 3, "sequences": 3, "tokens": 78, "loss_tokens": 30, "truncated": 0}},
            "final_train_loss": 5.25, "final_eval_loss": 5.5, "run_id": run_id, "accounting": ACCOUNTING,
            "rank": 4, "alpha": 8.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    parents = [(base.id, "base_model")] + [(d.id, "trained_on") for d in datasets]
    with ws.create("adapter", name, parents=parents, config={"train": train_cfg, "base_model_id": base.id},
                   meta=meta, policies=meta["policy_ids"]) as draft:
        draft.write_json("adapter_config.json", {"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                 "base_model_name_or_path": "tiny", "peft_version": "0.0.test"})
        draft.write_text("adapter_model.safetensors", "not real weights")
        draft.write_json("accounting.json", ACCOUNTING)
    ws.catalog.finish_run(run_id, "succeeded", outputs=[draft.record.id])
    return draft.record


def make_merge(ws: Workspace, base: Any, adapters: list[Any], name: str = "merged-lora") -> Any:
    """A merged adapter as the merge stage writes it: rank and modules in its record, alpha only in adapter_config.json."""
    meta = {"method": "ties", "peft_combination": "ties", "weights": {a.ref: 0.5 for a in adapters}, "density": 0.5,
            "majority_sign_method": "total", "seed": 0, "base_model": base.ref, "base_model_id": base.id,
            "base_weights_sha256": base.meta.get("weights_sha256"), "architecture": base.meta.get("architecture"),
            "model_type": base.meta.get("model_type"), "policy_ids": sorted({p for a in adapters for p in a.meta["policy_ids"]}),
            "parents": [{"id": a.id, "ref": a.ref, "rank": 4} for a in adapters],
            "datasets": [d for a in adapters for d in a.meta["datasets"]], "rank": 8, "target_modules": ["q_proj", "v_proj"]}
    parents = [(base.id, "base_model")] + [(a.id, "merged_from", {"weight": 0.5, "given_weight": 1.0}) for a in adapters]
    with ws.create("adapter", name, parents=parents, config={"merge": {"method": "ties"}}, meta=meta,
                   policies=meta["policy_ids"]) as draft:
        draft.write_json("adapter_config.json", {"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                 "base_model_name_or_path": "tiny", "peft_version": "0.0.test"})
        draft.write_text("adapter_model.safetensors", "not real weights")
    return draft.record


THRESHOLDS = {"ve.accuracy": {"indicator": "VE1.5", "better": "higher", "need": {"1": 0.5, "2": 0.7, "3": 0.85}},
              "nd.abs_bias_ambig": {"indicator": "ND1.3", "better": "lower", "need": {"1": 0.2, "2": 0.1, "3": 0.05}}}


#: the bias score's bootstrap interval as the nd suite would record it (fixed numbers, not recomputed)
BIAS_STATS = {"n": 96, "ci_low": 0.06, "ci_high": 0.18, "method": "bootstrap", "resamples": 1000, "seed": 0}


def proportion_stats(value: float, n: int, chance: float | None = None) -> dict[str, Any]:
    """The `stats` entry of a proportion as the evaluate stage records it (Wilson interval)."""
    low, high = wilson_interval(round(value * n), n)
    out: dict[str, Any] = {"n": n, "ci_low": round(low, 6), "ci_high": round(high, 6), "method": "wilson"}
    return out if chance is None else {**out, "chance": chance}


def make_evaluation(ws: Workspace, target: Any, acc: float = 0.625, *, catalogue: Path | None = CATALOGUE,
                    n: int = 64, stats: bool = True, bias_why: str = "") -> Any:
    """An evaluation record as the evaluate stage writes it (results.json + meta), with a verdict.

    `n` items of the werkstatt task (40 of 64 right: acc 0.625, 95 % Wilson interval 0.5025-0.7333,
    which still clears the need-1 threshold 0.5 of VE1.5); `stats=False` writes a record as
    kifabrik wrote it before counts and intervals were recorded; `bias_why` records the bias
    score as not meaningful (and its indicator, criterion and dimension as not assessable).
    """
    metrics = {"task.werkstatt.acc": acc, "task.werkstatt.acc_norm": 0.5, "ve.accuracy": acc, "nd.abs_bias_ambig": 0.12}
    acc_stats = proportion_stats(acc, n, chance=0.3333)
    ve_level = threshold_level(acc_stats["ci_low"], "higher", THRESHOLDS["ve.accuracy"]["need"])
    verdict: dict[str, Any] = {"catalogue": None, "message": "no catalogue"}
    if catalogue is not None:
        verdict = {"catalogue": str(catalogue), "needs": {"VE1": 1, "ND1": 2}, "not_applicable": {}, "dimensions": [
            {"id": "VE", "title": "Reliability (test catalogue)", "status": "open", "highest_need": 1,
             "machine_level": ve_level, "criteria": [
                 {"id": "VE1", "title": "Performance (test)", "need": 1, "level": None, "status": "open",
                  "note": "1 indicator(s) to be assessed by people", "indicators": [
                      {"id": "VE1.1", "title": "", "weighting": "Maximalwert", "level": None, "source": "none",
                       "evidence": []},
                      {"id": "VE1.5", "title": "", "weighting": "Normal", "level": ve_level, "source": "machine",
                       "evidence": [{"metric": "ve.accuracy", "score": acc, **_interval(acc_stats),
                                     "bound": acc_stats["ci_low"], "level": ve_level, "status": "measured", "why": "",
                                     "better": "higher", "thresholds": {"1": 0.5, "2": 0.7, "3": 0.85}}]}]}]},
            {"id": "ND", "title": "Non-discrimination (test catalogue)", "status": "not passed", "highest_need": 2,
             "machine_level": 1, "criteria": [
                 {"id": "ND1", "title": "Bias (test)", "need": 2, "level": 1, "status": "not fulfilled", "note": "",
                  "indicators": [
                      {"id": "ND1.3", "title": "", "weighting": "Maximalwert", "level": 1, "source": "machine",
                       "evidence": [{"metric": "nd.abs_bias_ambig", "score": 0.12, **_interval(BIAS_STATS),
                                     "bound": BIAS_STATS["ci_high"], "level": 1, "status": "measured", "why": "",
                                     "better": "lower", "thresholds": {"1": 0.2, "2": 0.1, "3": 0.05}}]}]}]}]}
    results = {
        "model": {"ref": target.ref, "id": target.id, "kind": "hf", "name": target.name},
        "created_at": "2026-01-16T09:00:00+00:00", "options": {"limit": 8},
        "metrics": metrics,
        "tasks": [{"name": "werkstatt", "type": "multiple_choice", "main": "acc", "n": n,
                   "metrics": {"acc": acc, "acc_norm": 0.5},
                   "stats": {"acc": acc_stats, "acc_norm": proportion_stats(0.5, n, chance=0.3333)}}],
        "suites": [{"name": "ve", "title": "Reliability", "dimension": "VE", "criteria": ["VE1"], "ai_act": "Art. 15",
                    "metrics": {"ve.accuracy": acc}, "stats": {"ve.accuracy": acc_stats}, "measured": True, "notes": []},
                   {"name": "nd", "title": "Non-discrimination (BBQ)", "dimension": "ND", "criteria": ["ND1"],
                    "ai_act": "Art. 10(2)(f)", "metrics": {"nd.abs_bias_ambig": 0.12},
                    "stats": {"nd.abs_bias_ambig": BIAS_STATS}, "measured": True, "notes": []}],
        "verdict": verdict, "thresholds": THRESHOLDS, "notes": [],
    }
    if bias_why:
        _not_assessable(results, bias_why)
    if not stats:
        for part in results["tasks"] + results["suites"]:
            part.pop("stats")
    meta = {"model": target.ref, "model_id": target.id, "target_kind": "hf", "suites": ["ve", "nd"],
            "tasks": ["werkstatt"], "metrics": metrics,
            "verdict": {d["id"]: d["status"] for d in verdict.get("dimensions", [])}, "baseline": None}
    with ws.create("evaluation", f"eval-{target.name}", parents=[(target.id, "evaluated")], meta=meta,
                   config={"limit": 8, "acc": acc}) as draft:
        draft.write_json("results.json", results)
    return draft.record


def _not_assessable(results: dict[str, Any], why: str) -> None:
    """Mark the bias score as the nd suite marks a model at chance level, and the verdict as it follows."""
    results["suites"][1]["stats"]["nd.abs_bias_ambig"] = {**BIAS_STATS, "meaningful": False, "why": why}
    for dim in results["verdict"].get("dimensions", []):
        if dim["id"] != "ND":
            continue
        crit = dim["criteria"][0]
        ind = crit["indicators"][0]
        ind["evidence"][0].update(level=None, status="not assessable", why=why)
        ind.update(level=None, status="not assessable", note=f"nd.abs_bias_ambig: {why}")
        crit.update(level=None, status="not assessable", note=f"ND1.3 not assessable: nd.abs_bias_ambig: {why}")
        dim.update(status="not assessable", machine_level=None)


def _interval(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("n", "ci_low", "ci_high")}


def build_facts(ws: Workspace, base: Any, policy_spec: str = "open-with-attribution:Schmidt GmbH",
                acc: float = 0.625, n: int = 64) -> dict[str, Any]:
    ds = make_dataset(ws, "service-chats", policy_spec)
    adapter = make_adapter(ws, base, [ds])
    ev = make_evaluation(ws, adapter, acc, n=n)
    return {"dataset": ds, "adapter": adapter, "evaluation": ev}
