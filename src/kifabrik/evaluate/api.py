"""The Python API of the evaluation stage: check everything, run tasks and suites, record the evaluation.

    from kifabrik.evaluate import EvalOptions, evaluate
    outcome = evaluate(ws, "my-adapter", EvalOptions(suites=["ve", "nd"], limit=20), baseline="base-model",
                       report=Path("report.html"))

Order of work: every input is checked first (task files, suite names, thresholds, catalogue,
needs, the target and its files, usage policies for every dataset) — only then is a model
loaded. The evaluation artifact (kind `evaluation`) holds results.json, one samples JSONL per
task and the HTML report; lineage edges lead from the evaluated model/adapter (`evaluated`),
from every dataset used (`evaluated_on`) and from the baseline's evaluation (`baseline`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from kifabrik import progress
from kifabrik.catalog import ArtifactRecord
from kifabrik.config import load_yaml, resolve_path
from kifabrik.errors import KifabrikError
from kifabrik.evaluate import verdict as vd
from kifabrik.evaluate.suites import SuiteContext, SuiteResult, get_suite, ordered
from kifabrik.evaluate.tasks import Task, load_task
from kifabrik.models.backend import BackendOptions
from kifabrik.workspace import Workspace

KIND = "evaluation"


class EvalOptions(BackendOptions):
    """What to evaluate and how to judge it (the CLI, recipes and the API share this model).

    `backend` and `gguf_type` choose what runs every registered model of the evaluation (target,
    baseline, judges); results.json records what ran (`model.runtime`).
    """

    tasks: list[str] = Field(default_factory=list, description="Task YAML files (items: JSONL, inline or a dataset).")
    suites: list[str] = Field(default_factory=list, description="Quality suites: ve, nd, cy, da, tr, lang, or all.")
    limit: int | None = Field(default=None, ge=1, description="At most this many items per task and suite check.")
    judge: str | None = Field(default=None, description="Judge for LLM-as-judge tasks: a registered model or a URL.")
    needs: dict[str, int] = Field(default_factory=dict, description="Protection need per criterion: 1 low, 2 moderate, "
                                                         "3 high (e.g. VE1: 3).")
    questionnaire: str | None = Field(default=None, description="Answers to the MISSION KI protection-needs "
                                                                "questionnaire (JSON/YAML: question id -> answer).")
    catalogue: str | None = Field(default=None, description="MISSION KI VCIO.json (or its folder); "
                                                            "default $KIFABRIK_MISSION_KI. Without it: no verdicts.")
    thresholds: str | None = Field(default=None, description="YAML overriding entries of the packaged thresholds.")
    assessments: str | None = Field(default=None, description="YAML: indicator id -> level A-D assessed by people.")
    train_data: list[str] = Field(default_factory=list, description="Training datasets for the `da` suite "
                                                                    "(default: the datasets in the model's lineage).")
    seed: int = Field(default=0, description="Seed for sampling and perturbations.")
    endpoint_model: str | None = Field(default=None, description="Model name to send to an endpoint URL.")
    api_key: str | None = Field(default=None, description="API key for an endpoint (never stored).", exclude=True)


@dataclass
class Prepared:
    """Everything checked and loaded before compute."""

    tasks: list[Task]
    suites: list[str]
    thresholds: dict[str, vd.Threshold]
    catalogue: Path | None
    needs: dict[str, int]
    not_applicable: dict[str, str]
    assessments: dict[str, str]
    paths: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    record: ArtifactRecord | None
    results: dict[str, Any]
    report: Path | None = None


def prepare(ws: Workspace | None, opts: EvalOptions) -> Prepared:
    """Validate every input of an evaluation (no model is loaded)."""
    if not opts.tasks and not opts.suites:
        raise KifabrikError("nothing to evaluate: give --task FILE and/or --suite NAME",
                            hint="e.g. kifabrik eval MODEL --suite all --limit 10")
    tasks = [load_task(resolve_path(t), ws=ws).limited(opts.limit) for t in opts.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise KifabrikError(f"two tasks share a name ({', '.join(sorted({n for n in names if names.count(n) > 1}))})",
                            hint="give each task file a unique `name:`")
    suites = ordered(opts.suites) if opts.suites else []
    thresholds = vd.load_thresholds(Path(opts.thresholds) if opts.thresholds else None)
    catalogue = vd.catalogue_path(opts.catalogue)
    needs = vd.parse_needs(dict(opts.needs))
    not_applicable: dict[str, str] = {}
    if opts.questionnaire:
        if catalogue is None:
            raise KifabrikError("questionnaire answers need the catalogue (its ProtectionNeedsAnalysis.json)",
                                hint="give --catalogue PATH/TO/VCIO.json")
        answered, not_applicable = vd.needs_from_questionnaire(catalogue, _read_mapping(opts.questionnaire))
        needs = {**answered, **needs}  # needs stated explicitly win over the questionnaire
    if catalogue is not None:
        known = {c["id"] for d in vd.load_catalogue(catalogue).values() for c in d["criteria"]}
        if bad := sorted(set(needs) - known):
            raise KifabrikError(f"unknown criteria in the protection needs: {', '.join(bad)}",
                                hint=f"criteria: {', '.join(sorted(known))}")
    assessments = {k: str(v).upper() for k, v in _read_mapping(opts.assessments).items()} if opts.assessments else {}
    if bad := sorted(k for k, v in assessments.items() if v not in vd.LEVEL):
        raise KifabrikError(f"{opts.assessments}: levels must be A, B, C or D ({', '.join(bad)})")
    return Prepared(tasks, suites, thresholds, catalogue, needs, not_applicable, assessments)


def _read_mapping(path: str) -> dict[str, Any]:
    try:
        data = load_yaml(Path(path))  # YAML is a superset of JSON; read under the input limits
    except (OSError, yaml.YAMLError) as exc:
        raise KifabrikError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise KifabrikError(f"{path}: expected a mapping")
    return data


def target_record(ws: Workspace, ref: str) -> ArtifactRecord | None:
    """The catalog record of `ref` (None for an endpoint URL); checks kind and, for adapters, the base."""
    if ref.startswith(("http://", "https://")):
        return None
    from kifabrik.models.runtime import resolve

    record = ws.catalog.get_artifact(ref)
    if record.kind not in ("model", "adapter", "fach-llm"):
        raise KifabrikError(f"{record.ref} is a {record.kind}; evaluation needs a model, an adapter, a Fach-LLM or an "
                            "endpoint URL")
    resolve(ws, record)  # files and base are there before compute is spent
    return record


def training_datasets(ws: Workspace, record: ArtifactRecord | None, explicit: list[str]) -> list[ArtifactRecord]:
    if explicit:
        return [ws.catalog.get_artifact(r, "dataset") for r in explicit]
    if record is None:
        return []
    from kifabrik.policy import ancestors

    return [a for a in ancestors(ws, record.id) if a.kind == "dataset"]


def evaluate(ws: Workspace, ref: str, opts: EvalOptions, *, baseline: str | None = None, report: Path | None = None,
             name: str | None = None, actor: str = "cli", prepared: Prepared | None = None) -> Outcome:
    """Evaluate `ref` (and `baseline` first, when given); record the evaluation; write the report."""
    prep = prepared or prepare(ws, opts)
    record = target_record(ws, ref)
    base_record = target_record(ws, baseline) if baseline else None
    datasets = _policy_check(ws, prep, opts, [r for r in (record, base_record) if r is not None], actor)
    judge = None
    if opts.judge:
        from kifabrik.evaluate.backends import open_target

        judge = open_target(ws, opts.judge, endpoint_model=opts.endpoint_model, api_key=opts.api_key, actor=actor,
                            backend=opts.backend, gguf_type=opts.gguf_type)
    base_outcome = None
    if baseline:
        base_outcome = _evaluate_one(ws, baseline, base_record, opts, prep, judge, datasets, None, None, None, actor)
    return _evaluate_one(ws, ref, record, opts, prep, judge, datasets, base_outcome, report, name, actor)


def _policy_check(ws: Workspace, prep: Prepared, opts: EvalOptions, records: list[ArtifactRecord],
                  actor: str) -> dict[str, list[ArtifactRecord]]:
    """`evaluation` must be permitted for every dataset used and every model evaluated (with its lineage).

    The `da` suite reads the target's training data; a baseline is probed with the same records
    (a model that never saw them shows what chance completion looks like).
    """
    from kifabrik.policy import require

    used = {t.name: [ws.catalog.get_artifact(i) for i in t.dataset_ids] for t in prep.tasks}
    if "da" in prep.suites:
        used["train"] = training_datasets(ws, records[0] if records else None, opts.train_data)
    ids = sorted({d.id for ds in used.values() for d in ds} | {r.id for r in records})
    if ids:
        require(ws, ids, "evaluation", actor=actor)
    return used


def _evaluate_one(ws: Workspace, ref: str, record: ArtifactRecord | None, opts: EvalOptions, prep: Prepared,
                  judge: Any, datasets: dict[str, list[ArtifactRecord]], baseline: Outcome | None,
                  report: Path | None, name: str | None, actor: str) -> Outcome:
    from kifabrik.evaluate.backends import open_target
    from kifabrik.evaluate.plan import Meter, Metered, count
    from kifabrik.evaluate.runner import run_task

    progress.info(f"evaluating {ref}")
    backend = open_target(ws, ref, endpoint_model=opts.endpoint_model, api_key=opts.api_key, actor=actor,
                          backend=opts.backend, gguf_type=opts.gguf_type, dtype=opts.dtype)
    train = datasets.get("train", [])
    judges = {t.name: open_target(ws, t.spec.judge.model, endpoint_model=opts.endpoint_model, api_key=opts.api_key,
                                  actor=actor, backend=opts.backend, gguf_type=opts.gguf_type) if t.spec.judge and t.spec.judge.model else judge for t in prep.tasks}

    def run_all(target: Any, wrap: Any) -> SuiteContext:
        """Every task, then every suite, on `target`; `wrap` gives the judge to use for a judge."""
        ctx = SuiteContext(backend=target, ws=ws, tasks=prep.tasks, limit=opts.limit, judge=wrap(judge),
                           seed=opts.seed, training_datasets=train)
        steps = len(prep.tasks) + len(prep.suites)
        for i, task in enumerate(prep.tasks, 1):
            progress.info("  " + meter.line(f"task {task.name}", i, steps))
            ctx.cache[task.name] = run_task(target, task, judge=wrap(judges[task.name]), seed=opts.seed)
        for i, suite_name in enumerate(prep.suites, len(prep.tasks) + 1):
            progress.info("  " + meter.line(f"suite {suite_name}", i, steps))
            ctx.results[suite_name] = get_suite(suite_name).run(ctx)
        return ctx

    # A dry run on stand-ins counts the work first, so every step can say how much is left.
    meter = Meter(None)  # what run_all's lines read during the dry run (which shows none of them)
    meter = Meter(count(run_all, backend))
    ctx = run_all(Metered(backend, meter), lambda b: None if b is None else Metered(b, meter))
    progress.info("  " + meter.summary())
    results = assemble(ref, record, backend, opts, prep, ctx)
    if baseline is not None:
        results["baseline"] = {"model": baseline.results["model"], "metrics": baseline.results["metrics"],
                               "evaluation_id": baseline.record.id if baseline.record else None}
    return _record(ws, ref, record, opts, prep, results, ctx, datasets, baseline, report, name, actor)


def assemble(ref: str, record: ArtifactRecord | None, backend: Any, opts: EvalOptions, prep: Prepared,
             ctx: SuiteContext) -> dict[str, Any]:
    """The results.json content: metrics, tasks, suites, verdicts."""
    metrics: dict[str, float] = {}
    for task in prep.tasks:
        res = ctx.cache[task.name]
        metrics.update({f"task.{task.name}.{k}": v for k, v in res.metrics.items()})
    for res in ctx.results.values():
        metrics.update(res.metrics)
    from kifabrik.evaluate.stats import stats_of

    stats = stats_of(metrics)  # n and 95 % interval of every measured value, read by verdicts, documents, gates
    verdict: dict[str, Any]
    if prep.catalogue is None:
        verdict = {"catalogue": None, "message": "No MISSION KI catalogue was given, so no verdicts were computed. "
                   "Give the VCIO.json of the quality standard with --catalogue (or $KIFABRIK_MISSION_KI)."}
    else:
        dims = vd.verdicts(vd.load_catalogue(prep.catalogue), metrics, prep.needs, prep.thresholds,
                           prep.assessments, prep.not_applicable, stats=stats)
        verdict = {"catalogue": str(prep.catalogue), "needs": prep.needs, "dimensions": vd.as_dict(dims),
                   "not_applicable": prep.not_applicable}
    return {
        "model": {"ref": ref if record is None else record.ref, "id": record.id if record else None,
                  "kind": getattr(backend, "kind", "endpoint"), "name": backend.name,
                  "runtime": backend.describe() if hasattr(backend, "describe") else {"backend": "endpoint"}},
        "created_at": datetime.now(UTC).isoformat(),
        "options": opts.model_dump(mode="json"),
        "metrics": metrics,
        "stats": stats,
        "tasks": [ctx.cache[t.name].summary() for t in prep.tasks],
        "suites": [r.summary() for r in ctx.results.values()],
        "verdict": verdict,
        "thresholds": {k: {"indicator": t.indicator, "better": t.better, "need": t.need} for k, t in prep.thresholds.items()},
        "notes": list(getattr(backend, "notes", [])),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


def all_task_results(prep: Prepared, ctx: SuiteContext) -> list[tuple[str, Any]]:
    """(suite or "tasks", TaskResult) for every task result with samples, each once."""
    out: list[tuple[str, Any]] = [("tasks", ctx.cache[t.name]) for t in prep.tasks]
    seen = {id(r) for _, r in out}
    for suite_name, res in ctx.results.items():
        for t in res.tasks:
            if id(t) not in seen:
                seen.add(id(t))
                out.append((suite_name, t))
    return out


def _record(ws: Workspace, ref: str, record: ArtifactRecord | None, opts: EvalOptions, prep: Prepared,
            results: dict[str, Any], ctx: SuiteContext, datasets: dict[str, list[ArtifactRecord]],
            baseline: Outcome | None, report: Path | None, name: str | None, actor: str) -> Outcome:
    from kifabrik.evaluate.report import render_report

    parents: list[Any] = [(record.id, "evaluated")] if record else []
    used_ids = {d.id for ds in datasets.values() for d in ds}
    parents += [(i, "evaluated_on") for i in sorted(used_ids)]
    if baseline and baseline.record:
        parents.append((baseline.record.id, "baseline"))
    dims = results["verdict"].get("dimensions", [])
    meta = {"model": results["model"]["ref"], "model_id": results["model"]["id"], "target_kind": results["model"]["kind"],
            "suites": prep.suites, "tasks": [t.name for t in prep.tasks], "metrics": results["metrics"],
            "stats": results.get("stats", {}), "runtime": results["model"].get("runtime"),
            "verdict": {d["id"]: d["status"] for d in dims}, "baseline": results.get("baseline", {}).get("evaluation_id")}
    task_results = all_task_results(prep, ctx)
    html = render_report(results, task_results, baseline.results if baseline else None)
    label = name or f"eval-{_slug(results['model']['ref'].split('@')[0])}"
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(KIND, label, parents=parents, config=opts.model_dump(mode="json"), meta=meta) as draft:
            files = {}
            for group, res in task_results:
                rel = f"samples/{_slug(group)}--{_slug(res.name)}.jsonl"
                draft.write_text(rel, "".join(json.dumps(s, ensure_ascii=False, default=str) + "\n" for s in res.samples))
                files[f"{group}/{res.name}"] = rel
            results["samples_files"] = files
            draft.write_json("results.json", results)
            draft.write_text("report.html", html)
        rec: ArtifactRecord = draft.record
        ws.catalog.audit("evaluate", actor=actor, subject=rec.id,
                         details={"model": results["model"]["ref"], "suites": prep.suites,
                                  "tasks": [t.name for t in prep.tasks], "verdict": meta["verdict"]})
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(html, encoding="utf-8")
        report.with_suffix(".json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n",
                                               encoding="utf-8")
    return Outcome(rec, results, report)


__all__ = ["EvalOptions", "Outcome", "Prepared", "SuiteResult", "evaluate", "prepare"]
