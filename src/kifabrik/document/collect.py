"""Collecting the facts of one model or adapter from the catalog: records, lineage, runs, evaluations.

Everything here is read from catalog records and the files of recorded artifacts; nothing
is computed from the weights and nothing is assumed. Dataset facts are in `datafacts.py`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from kifabrik.catalog import ArtifactRecord
from kifabrik.catalog.lineage import Lineage, lineage
from kifabrik.document.facts import (
    Fact,
    Source,
    artifact_source,
    fact,
    get,
    meta_fact,
    not_recorded,
    run_source,
)
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.mission_ki import Measurement, interval_text, recorded_measurements
from kifabrik.workspace import Workspace

NO_TRAINING = "no training run is recorded in this model's lineage (a registered base model: its provider documents it)"
HYPER = ("learning_rate", "epochs", "max_steps", "batch_size", "grad_accum", "lr_scheduler", "warmup_ratio",
         "weight_decay", "max_seq_length", "packing", "seed", "precision")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def when(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else value.isoformat(timespec="seconds")


def target_record(ws: Workspace, ref: str) -> ArtifactRecord:
    record = ws.catalog.get_artifact(ref)
    if record.kind not in ("model", "adapter"):
        raise KifabrikError(f"{record.ref} is a {record.kind}; documents describe a model or an adapter",
                            hint="list them with `kifabrik models list` or `kifabrik artifacts list --kind adapter`")
    return record


def ancestors_of(lin: Lineage) -> list[ArtifactRecord]:
    seen: dict[str, ArtifactRecord] = {}
    for e in lin.ancestors:
        seen.setdefault(e.parent_id, lin.nodes[e.parent_id])
    return list(seen.values())


def base_of(ws: Workspace, target: ArtifactRecord) -> ArtifactRecord | None:
    """The model the target was made from (the runtime's rule); None for a registered base model or a deleted base."""
    from kifabrik.models.runtime import recorded_base

    try:
        return recorded_base(ws, target)
    except NotFoundError:
        return None


def software_versions(ws: Workspace, record: ArtifactRecord) -> dict[str, Fact]:
    """kifabrik (manifest), transformers (config.json) and PEFT (adapter_config.json) versions as recorded."""
    src = artifact_source(record)
    out = {"kifabrik": fact(record.manifest.get("kifabrik_version"), src, "manifest.kifabrik_version",
                            missing="the manifest holds no kifabrik version"),
           "git": fact(record.manifest.get("git_hash"), src, "manifest.git_hash",
                       missing="kifabrik did not run from a git checkout")}
    if record.kind == "model":
        from kifabrik.models.sources import model_path

        cfg = read_json(model_path(ws, record) / "config.json") or {}
        out["transformers"] = fact(cfg.get("transformers_version"), src, "config.json:transformers_version",
                                   missing="config.json records no transformers version")
    else:
        cfg = read_json(ws.path(record) / "adapter_config.json") or {}
        out["peft"] = fact(cfg.get("peft_version"), src, "adapter_config.json:peft_version",
                           missing="adapter_config.json records no PEFT version")
    return out


def model_facts(ws: Workspace, target: ArtifactRecord, base: ArtifactRecord | None) -> dict[str, Any]:
    src = artifact_source(target)
    arch_rec = base if (target.kind == "adapter" and base is not None) else target

    def either(path: str, missing: str) -> Fact:
        own = meta_fact(target, path, missing=missing)
        return own if own.recorded or arch_rec is target else meta_fact(arch_rec, path, missing=missing)

    if target.kind == "adapter":
        params = meta_fact(target, "total_parameters",
                           missing="the adapter record holds no total parameter count")
    else:
        params = meta_fact(target, "parameters", missing="the model record holds no parameter count")
    return {
        "name": Fact(target.name, src.at("name")), "ref": Fact(target.ref, src.at("name@version")),
        "id": Fact(target.id, src.at("id")), "kind": Fact(target.kind, src.at("kind")),
        "version": Fact(target.version, src.at("version")),
        "created_at": Fact(when(target.created_at), src.at("created_at")),
        "status": Fact(target.status, src.at("status")),
        "architecture": either("architecture", "no architecture is recorded"),
        "model_type": either("model_type", "no model type is recorded"),
        "parameters": params,
        "trainable_parameters": meta_fact(target, "trainable_parameters",
                                          missing="no training run is recorded for this model (a registered model)"),
        "hidden_size": meta_fact(arch_rec, "hidden_size", missing="config.json gives no hidden size"),
        "num_layers": meta_fact(arch_rec, "num_layers", missing="config.json gives no layer count"),
        "vocab_size": meta_fact(arch_rec, "vocab_size", missing="config.json gives no vocabulary size"),
        "context_length": meta_fact(arch_rec, "context_length", missing="config.json gives no context length"),
        "dtype": meta_fact(arch_rec, "dtype", missing="config.json gives no dtype"),
        "chat_template": fact(bool(arch_rec.meta.get("chat_template")) or None, artifact_source(arch_rec),
                              "meta.chat_template", missing="the tokenizer has no chat template (plain text in, text out)"),
        "license": either("license", "no licence is recorded for the model or its base"),
        "languages": either("languages", "the model card of the base states no languages"),
        "weights_sha256": weights_fact(target),
        "method": meta_fact(target, "method", missing="no training or merge method is recorded (a registered model)"),
        "objective": meta_fact(target, "objective", missing="no training objective is recorded"),
        "rank": lora_fact(ws, target, "rank", "r"),
        "alpha": lora_fact(ws, target, "alpha", "lora_alpha"),
        "target_modules": lora_fact(ws, target, "target_modules", "target_modules"),
        "source": meta_fact(target, "source", missing="no source is recorded (a trained or merged artifact)"),
        "software": software_versions(ws, target),
        "gguf": gguf_fact(arch_rec),
        "gguf_exports": gguf_exports(ws, target),
    }


def gguf_fact(record: ArtifactRecord) -> Fact:
    """The GGUF type (`q4_k_m`, `f16`, ...) of the file a model was registered from: its record's
    `meta.quantization` (`models add FILE.gguf`), else the header of that file (the embedded models).

    Not recorded for a model registered from a safetensors folder, trained or merged: no GGUF made it.
    """
    missing = "the model was not registered from a GGUF file"
    if record.meta.get("source_kind") not in ("gguf", "embedded"):
        return not_recorded(missing)
    if record.meta.get("quantization"):
        return meta_fact(record, "quantization", missing=missing)
    from kifabrik.models.gguf import read_gguf_metadata
    from kifabrik.models.gguf_convert import source_gguf

    found = source_gguf(record, verify=False)
    if found is None:
        return not_recorded("the GGUF file the model was registered from is no longer there, and its record holds no type")
    try:
        quant = read_gguf_metadata(found).get("quantization")
    except KifabrikError as exc:
        return not_recorded(f"the header of {found.name} cannot be read ({exc.message})")
    return fact(quant, artifact_source(record), f"GGUF header of {found.name} (general.file_type)",
                missing=f"the header of {found.name} names no known file type")


def gguf_exports(ws: Workspace, target: ArtifactRecord) -> list[Fact]:
    """Every GGUF export of the model (`kifabrik export --format gguf`), its type from the audit log."""
    out = []
    for e in ws.catalog.audit_entries("model.export", subject=target.id):
        details = e.details or {}
        if details.get("format") == "gguf" and details.get("quantization"):
            out.append(Fact(f"{details['quantization']} ({when(e.ts)})",
                            Source("audit", f"audit log: model.export of {target.ref}", e.hash, "details.quantization")))
    return out


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def weights_fact(target: ArtifactRecord) -> Fact:
    """The weights' sha256: a model's as recorded; an adapter's weights file as its manifest checksums it."""
    own = meta_fact(target, "weights_sha256", missing="the model record holds no weights hash")
    if own.recorded or target.kind != "adapter":
        return own
    digest = ((target.manifest.get("files") or {}).get(ADAPTER_WEIGHTS) or {}).get("sha256")
    return fact(f"{digest} ({ADAPTER_WEIGHTS}; the base model's weights separately)" if digest else None,
                artifact_source(target), f"manifest.files.{ADAPTER_WEIGHTS}.sha256",
                missing=f"the adapter's manifest lists no {ADAPTER_WEIGHTS}")


def lora_fact(ws: Workspace, target: ArtifactRecord, key: str, peft_key: str) -> Fact:
    """A LoRA setting from the record, else from the adapter's own adapter_config.json (a merge records the rank
    it computed there, PEFT the alpha); "not a LoRA adapter" only for a model."""
    own = meta_fact(target, key, missing="not a LoRA adapter: a full model")
    if own.recorded or target.kind != "adapter":
        return own
    cfg = read_json(ws.path(target) / "adapter_config.json") or {}
    value = cfg.get(peft_key)
    if isinstance(value, dict | set):
        value = sorted(value)
    return fact(value, artifact_source(target), f"adapter_config.json:{peft_key}",
                missing=f"neither the adapter record nor its adapter_config.json records the {key}")


def adapted_facts(m: dict[str, Any], target: ArtifactRecord, trainings: list[ArtifactRecord],
                  merges: list[ArtifactRecord]) -> None:
    """Objective and trainable parameters of a merge, from the trainings of the adapters it merged.

    A merge trains nothing; what it combines was trained, and that is what a reader of Annex XI asks.
    """
    own = [r for r in trainings if r.id == target.id]
    if own or not merges:
        return
    src = Source("derived", "training records of the merged adapters: "
                 + ", ".join(r.ref for r in trainings) if trainings else "no training record")
    objectives = sorted({r.meta["objective"] for r in trainings if r.meta.get("objective")})
    if not m["objective"].recorded and objectives:
        m["objective"] = Fact(", ".join(objectives) + f" (the objective of the merged adapters: "
                              f"{', '.join(r.ref for r in trainings)})", src.at("meta.objective"))
    counted = [(r.ref, r.meta["trainable_parameters"]) for r in trainings if r.meta.get("trainable_parameters")]
    if not m["trainable_parameters"].recorded and counted:
        m["trainable_parameters"] = Fact("none in the merge itself; the merged adapters trained "
                                         + ", ".join(f"{n:,} ({ref})" for ref, n in counted), src.at("meta.trainable_parameters"))


def base_facts(base: ArtifactRecord | None) -> dict[str, Any] | None:
    if base is None:
        return None
    src = artifact_source(base)
    upstream = base.meta.get("hub_id") or base.meta.get("upstream")
    return {
        "name": Fact(base.name, src.at("name")), "ref": Fact(base.ref, src.at("name@version")),
        "id": Fact(base.id, src.at("id")),
        "upstream": fact(upstream, src, "meta.hub_id", missing="no hub id or upstream name is recorded"),
        "source": meta_fact(base, "source", missing="no source is recorded"),
        "license": meta_fact(base, "license", missing="no licence is recorded"),
        "parameters": meta_fact(base, "parameters", missing="no parameter count is recorded"),
        "weights_sha256": meta_fact(base, "weights_sha256", missing="no weights hash is recorded"),
        "summary": not_recorded("the base model's own training-content summary is published by its provider; "
                                "kifabrik records no link to it"),
    }


def training_facts(ws: Workspace, record: ArtifactRecord) -> dict[str, Any]:
    src = artifact_source(record)
    acc = "accounting"
    out: dict[str, Any] = {
        "record": Fact(record.ref, src.at("name@version")), "id": Fact(record.id, src.at("id")),
        "method": meta_fact(record, "method", missing="no method recorded"),
        "objective": meta_fact(record, "objective", missing="no objective recorded"),
        "final_train_loss": meta_fact(record, "final_train_loss", missing="no training loss was logged"),
        "final_eval_loss": meta_fact(record, "final_eval_loss", missing="no held-out loss was logged (empty test split)"),
        "train_tokens": meta_fact(record, "data.train.tokens", missing="no token count of the training split"),
        "train_sequences": meta_fact(record, "data.train.sequences", missing="no sequence count"),
        "test_tokens": meta_fact(record, "data.test.tokens", missing="no token count of the test split"),
        "truncated": meta_fact(record, "data.train.truncated", missing="no truncation count"),
        "datasets": [d.get("ref") for d in record.meta.get("datasets", [])],
        # the settings of this training (a merge of it may have another rank)
        "rank": meta_fact(record, "rank", missing="not a LoRA training (a full fine-tune)"),
        "alpha": meta_fact(record, "alpha", missing="not a LoRA training (a full fine-tune)"),
    }
    for key in ("tokens_seen", "steps", "epochs", "flops", "flops_basis", "wall_time_s", "sessions", "device",
                "precision", "peak_memory_bytes", "peak_memory_basis", "energy_kwh", "energy_joules",
                "energy_method", "energy_basis"):
        out[key] = meta_fact(record, f"{acc}.{key}", missing=f"the training record holds no {key.replace('_', ' ')}")
    train_cfg = get(record.manifest, "config.train") or {}
    out["hyper"] = {k: fact(train_cfg.get(k), src, f"manifest.config.train.{k}", missing="not set (default)")
                    for k in HYPER}
    run_id = record.meta.get("run_id")
    out["run"] = None
    if run_id:
        try:
            run = ws.catalog.get_run(run_id)
            rs = run_source(run)
            out["run"] = {"id": Fact(run.id, rs.at("id")), "status": Fact(run.status, rs.at("status")),
                          "started_at": Fact(when(run.started_at), rs.at("started_at")),
                          "ended_at": fact(when(run.ended_at), rs, "ended_at", missing="the run has not ended"),
                          "recipe": fact(run.recipe, rs, "recipe", missing="run outside a recipe")}
        except NotFoundError:
            pass
    return out


def merge_facts(record: ArtifactRecord, lin: Lineage) -> dict[str, Any]:
    src = artifact_source(record)
    parents = [(lin.nodes[e.parent_id].ref, e.attributes.get("weight")) for e in lin.ancestors
               if e.child_id == record.id and e.relation == "merged_from"]
    return {"record": Fact(record.ref, src.at("name@version")), "id": Fact(record.id, src.at("id")),
            "method": meta_fact(record, "method", missing="no merge method recorded"),
            "density": meta_fact(record, "density", missing="the method takes no density"),
            "parents": Fact(", ".join(f"{ref} (weight {w})" for ref, w in parents), src.at("lineage: merged_from"))}


NO_STATS = "the evaluation recorded no item count or interval for this metric (recorded by an older kifabrik)"


def stat_facts(m: Measurement | None, src: Source, where: str) -> dict[str, Any]:
    """Item count and 95 % interval of one metric as recorded (`n`, `ci` facts; `why` when not meaningful)."""
    if m is None or m.n is None:
        return {"n": not_recorded(NO_STATS), "ci": not_recorded(NO_STATS), "why": ""}
    ci = (Fact(interval_text(m.ci_low, m.ci_high), src.at(where)) if m.has_interval
          else not_recorded("no interval: the metric was measured on no items"))
    return {"n": Fact(m.n, src.at(where)), "ci": ci, "why": m.why}


def evaluation_facts(ws: Workspace, record: ArtifactRecord) -> dict[str, Any]:
    """Facts of one evaluation artifact (its results.json, else the record's meta), each metric with
    the item count and 95 % interval recorded beside it."""
    src = artifact_source(record)
    results = read_json(ws.path(record) / "results.json") or {}
    where = "results.json:" if results else "meta."
    metrics = results.get("metrics") or record.meta.get("metrics") or {}
    measured = recorded_measurements({**results, "metrics": metrics})
    tasks = [{"name": t.get("name"), "type": t.get("type"), "main": t.get("main"), "n": t.get("n"),
              "metrics": {k: Fact(v, src.at(f"{where}tasks.{t.get('name')}.metrics.{k}"))
                          for k, v in (t.get("metrics") or {}).items()},
              "stats": {k: stat_facts(measured.get(f"task.{t.get('name')}.{k}"), src,
                                      f"{where}tasks.{t.get('name')}.stats.{k}") for k in (t.get("metrics") or {})}}
             for t in results.get("tasks", [])]
    suites = [{"name": s.get("name"), "title": s.get("title"), "dimension": s.get("dimension"),
               "criteria": s.get("criteria") or [], "ai_act": s.get("ai_act"), "measured": s.get("measured", True),
               "notes": s.get("notes") or [],
               "metrics": {k: Fact(v, src.at(f"{where}metrics.{k}")) for k, v in (s.get("metrics") or {}).items()},
               "stats": {k: stat_facts(measured.get(k), src, f"{where}suites.{s.get('name')}.stats.{k}")
                         for k in (s.get("metrics") or {})}}
              for s in results.get("suites", [])]
    stats_where = {**{f"task.{t['name']}.{k}": f"{where}tasks.{t['name']}.stats.{k}" for t in tasks for k in t["metrics"]},
                   **{k: f"{where}suites.{s['name']}.stats.{k}" for s in suites for k in s["metrics"]}}
    base = results.get("baseline") or {}
    return {
        "record": Fact(record.ref, src.at("name@version")), "id": Fact(record.id, src.at("id")),
        "created_at": Fact(when(record.created_at), src.at("created_at")),
        "source": src, "results": results,
        "metrics": {k: Fact(v, src.at(f"{where}metrics.{k}")) for k, v in metrics.items()},
        "stats": {k: stat_facts(measured.get(k), src, stats_where.get(k, f"{where}metrics.{k}")) for k in metrics},
        "tasks": tasks, "suites": suites,
        "limit": fact(get(results, "options.limit"), src, "results.json:options.limit", missing="no item limit: all items"),
        "baseline": fact(get(base, "model.ref"), src, "results.json:baseline.model.ref",
                         missing="evaluated without a baseline"),
        "baseline_metrics": base.get("metrics") or {},
        "verdict": results.get("verdict") or {},
        "runtime": fact(runtime_words(get(results, "model.runtime")), src, "results.json:model.runtime",
                        missing="results.json does not record what ran the model"),
    }


def runtime_words(runtime: dict[str, Any] | None) -> str | None:
    """`llama.cpp, GGUF model.q4_k_m.gguf (q4_k_m)` or `transformers (cpu, float32)`: what ran an evaluated model."""
    if not runtime or not runtime.get("backend"):
        return None
    if runtime.get("gguf"):
        quant = f" ({runtime['quantization']})" if runtime.get("quantization") else ""
        return f"{runtime['backend']}, GGUF {runtime['gguf']}{quant}"
    extra = ", ".join(str(runtime[k]) for k in ("device", "dtype") if runtime.get(k))
    return f"{runtime['backend']}" + (f" ({extra})" if extra else "")


def collect_lineage(ws: Workspace, target: ArtifactRecord) -> dict[str, Any]:
    """The records around the target: base, trainings, merges, datasets, evaluations, releases."""
    lin = lineage(ws.catalog, target.id)
    ups = ancestors_of(lin)
    chain = [target] + ups
    base = base_of(ws, target)
    evaluated = [lin.nodes[e.child_id] for e in lin.descendants
                 if e.parent_id == target.id and e.relation == "evaluated"]
    evaluations = sorted({r.id: r for r in evaluated if r.kind == "evaluation" and r.status == "ok"}.values(),
                         key=lambda r: r.created_at)
    releases = sorted({r.id: r for r in lin.nodes.values() if r.kind == "release"
                       and any(e.child_id == r.id and e.parent_id == target.id for e in lin.descendants)}.values(),
                      key=lambda r: r.created_at)
    return {
        "lineage": lin, "base": base,
        "trainings": [r for r in chain if r.meta.get("accounting")],
        "merges": [r for r in chain if any(e.child_id == r.id and e.relation == "merged_from" for e in lin.ancestors)],
        "datasets": [r for r in ups if r.kind == "dataset"],
        "evaluations": evaluations, "releases": releases,
        "edges": [(lin.nodes[e.parent_id], e.relation, lin.nodes[e.child_id]) for e in lin.ancestors],
    }


def release_facts(record: ArtifactRecord) -> dict[str, Any]:
    src = artifact_source(record)
    return {"record": Fact(record.ref, src.at("name@version")), "id": Fact(record.id, src.at("id")),
            "name": meta_fact(record, "release_name", missing="no release name"),
            "version": meta_fact(record, "release_version", missing="no version"),
            "license": meta_fact(record, "license", missing="no licence"),
            "created_at": Fact(when(record.created_at), src.at("created_at"))}


AUDIENCE = {
    "internal": "internal: deployed inside the organisation only and never distributed (the usage policies of the "
                "data were asked for `serving`)",
    "public": "public: distributed under the licence above (the usage policies of the data were asked for "
              "`release`{commercial})",
}


def this_release_facts(release: dict[str, Any]) -> dict[str, Any]:
    """Facts of the release the documents are made for, as its release.json states them.

    The documents are written before the release record (the bundle holds them, and the record's id is the
    hash of the bundle), so they cite the bundle's release.json, which holds the same values.
    """
    src = Source("release", f"release {release['name']} {release['version']}: release.json of its bundle")
    purposes = list(release.get("purposes") or [])
    words = AUDIENCE[release["audience"]].format(
        commercial=" and `commercialUse`" if "commercialUse" in purposes else "")
    gates = [{"gate": Fact(g["gate"], src.at(f"gates[{i}].gate")),
              "passed": Fact(g["passed"], src.at(f"gates[{i}].passed")),
              "reason": Fact(g["reason"], src.at(f"gates[{i}].reason"))}
             for i, g in enumerate(release.get("gates") or [])]
    fach = release.get("fach_llm")
    return {
        "name": Fact(release["name"], src.at("name")), "version": Fact(release["version"], src.at("version")),
        "license": Fact(release["license"], src.at("license")),
        "audience": Fact(release["audience"], src.at("audience")), "audience_words": Fact(words, src.at("audience")),
        "internal": release["audience"] == "internal",
        "created_at": Fact(release["created_at"], src.at("created_at")),
        "gates": gates,
        "no_gates": Fact("none: no quality gate was set for this release", src.at("gates")),
        "fach_llm": (Fact(f"{fach['ref']} (this adapter with the knowledge base {fach['knowledge_base']['ref']}; "
                          "every retrieved passage's own usage policy is checked when it is served)", src.at("fach_llm"))
                     if fach else None),
    }


def derived(label: str) -> Source:
    """A value computed from several records (e.g. a sum); the label names them."""
    return Source("derived", label)
