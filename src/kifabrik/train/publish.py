"""The output of a finished run: a PEFT adapter artifact (or a full model), with its accounting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kifabrik import files
from kifabrik.catalog import ArtifactRecord
from kifabrik.train.accounting import (
    device_description,
    peak_memory_bytes,
    training_flops,
)
from kifabrik.train.prepare import Prepared, RunSpec
from kifabrik.train.runner import SessionResult
from kifabrik.workspace import Workspace


def accounting(folder: Path, res: SessionResult, opts: Any, prepared: Prepared) -> dict[str, Any]:
    """Totals over every session of the run (a resumed run has several)."""
    sessions = [json.loads(p.read_text()) for p in sorted(folder.glob("session-*.json"))]
    state = res.trainer.state
    energy_j = sum(s["energy"]["joules"] for s in sessions)
    methods = sorted({s["energy"]["method"] for s in sessions})
    flops, basis = training_flops(opts.method, res.matmul_params, res.trainable, state.num_input_tokens_seen,
                                  opts.gradient_checkpointing)
    peak, peak_basis = peak_memory_bytes(res.device)
    peak = max([peak] + [s.get("peak_memory_bytes", 0) for s in sessions])
    return {
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_processed_all_sessions": sum(s["tokens"] for s in sessions),
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0.0), 4),
        "steps_per_epoch": res.steps_per_epoch,
        # the three counts of `kifabrik.train.data`: imported rows -> training sequences -> packed sequences
        "imported_rows": prepared.train_stats.rows,
        "training_sequences": len(prepared.train),
        "packed_sequences": res.batch_units if opts.packing else None,
        "sequences_per_epoch": res.batch_units,
        "wall_time_s": round(sum(s["wall_time_s"] for s in sessions), 2),
        "sessions": len(sessions),
        "device": device_description(res.device),
        "precision": res.precision,
        "peak_memory_bytes": peak,
        "peak_memory_basis": peak_basis,
        "flops": flops,
        "flops_basis": basis,
        "energy_joules": round(energy_j, 2),
        "energy_kwh": round(energy_j / 3.6e6, 6),
        "energy_method": methods[0] if len(methods) == 1 else "mixed: " + ", ".join(methods),
        "energy_basis": "; ".join(sorted({s["energy"]["basis"] for s in sessions})),
    }


def publish(ws: Workspace, run_id: str, folder: Path, spec: RunSpec, prepared: Prepared,
            res: SessionResult) -> ArtifactRecord:
    """Write the adapter (or model) artifact; the manifest is written last by the store."""
    opts = spec.options
    metrics = files.read_jsonl(folder / "metrics.jsonl", missing_ok=True)
    train_losses = [m["loss"] for m in metrics if "loss" in m]
    eval_losses = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    used = prepared.datasets + prepared.context_datasets  # grounded rows showed passages of the context datasets
    policy_ids = sorted({p[0] for d in used for p in ws.catalog.policies_of(d.id)}
                        | {p for d in used for p in d.meta.get("policy_ids", [])})
    base = prepared.base
    meta: dict[str, Any] = {
        "base_model": base.ref, "base_model_id": base.id, "base_weights_sha256": base.meta.get("weights_sha256"),
        "architecture": base.meta.get("architecture"), "model_type": base.meta.get("model_type"),
        "method": opts.method, "objective": prepared.objective,
        "datasets": [{"id": d.id, "ref": d.ref, "format": d.meta.get("format"), "rows": d.meta.get("rows")}
                     for d in prepared.datasets],
        "policy_ids": policy_ids,
        "trainable_parameters": res.trainable, "total_parameters": res.total,
        "max_seq_length": prepared.max_seq_length, "packing": opts.packing, "seed": opts.seed,
        "data": {"train": prepared.train_stats.as_dict(), "test": prepared.test_stats.as_dict(),
                 "warnings": prepared.warnings},
        "final_train_loss": train_losses[-1] if train_losses else None,
        "final_eval_loss": eval_losses[-1] if eval_losses else None,
        "run_id": run_id,
        "accounting": accounting(folder, res, opts, prepared),
    }
    if opts.method == "lora":
        meta.update({"rank": opts.lora.rank, "alpha": opts.lora.alpha, "dropout": opts.lora.dropout,
                     "target_modules": res.targets})
    parents: list[Any] = [(base.id, "base_model")] + [(d.id, "trained_on") for d in prepared.datasets] + [
        (d.id, "context_from") for d in prepared.context_datasets]
    config = {"train": opts.model_dump(mode="json"), "base_model_id": base.id,
              "dataset_ids": [d.id for d in prepared.datasets], "max_seq_length": prepared.max_seq_length}
    kind = "adapter" if opts.method == "lora" else "model"
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(kind, spec.name, parents=parents, config=config, meta=meta, policies=policy_ids) as draft:
            if kind == "adapter":
                res.model.save_pretrained(draft.dir, safe_serialization=True)
            else:
                _save_full(draft.dir / "weights", res, base, meta)
                draft.meta = meta
            draft.write_json("train_config.json", {**config, "run_id": run_id})
            draft.write_json("accounting.json", meta["accounting"])
            shutil.copy2(folder / "metrics.jsonl", draft.dir / "metrics.jsonl")
        record: ArtifactRecord = draft.record
        if kind == "model":
            weight_files = {k.removeprefix("weights/"): v["sha256"] for k, v in record.manifest["files"].items()
                     if k.startswith("weights/") and k.endswith(".safetensors")}
            from kifabrik.models.folder import weights_sha256

            ws.catalog.set_status(record.id, "ok", {"weights_sha256": weights_sha256(weight_files)})
            record = ws.catalog.get_artifact(record.id)
        ws.catalog.audit("train.output", subject=record.id,
                         details={"run_id": run_id, "kind": kind, "base": base.id,
                                  "datasets": [d.id for d in prepared.datasets]})
    return record


def _save_full(out: Path, res: SessionResult, base: Any, meta: dict[str, Any]) -> None:
    """A fully fine-tuned model as a Hugging Face folder, with the facts model records carry."""
    from kifabrik.models.folder import inspect_folder

    res.model.save_pretrained(out, safe_serialization=True)
    res.tokenizer.save_pretrained(out)
    facts = inspect_folder(out)
    facts["license"] = base.meta.get("license")
    facts["languages"] = base.meta.get("languages")
    meta.update({**facts, "source": f"trained:{base.ref}", "source_kind": "trained"})
