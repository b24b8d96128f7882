"""The recipe runner: validate the whole recipe first, then run stage by stage.

Stages register themselves with `@register("stage", NAME)` on a `StageDef`. The runner
imports a stage's module only when a recipe names it (see `kifabrik.registry`), and a stage
that is planned but not built yet is refused at validation, never silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kifabrik import registry
from kifabrik.catalog import ArtifactRecord
from kifabrik.config import (
    Recipe,
    apply_overrides,
    format_loc,
    line_of,
    load_yaml,
    validation_messages,
)
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.executor_options import SlurmOptions
from kifabrik.stages import StageContext, StageDef, StageOptions
from kifabrik.workspace import Workspace

__all__ = ["StageContext", "StageDef", "StageOptions", "load_recipe", "run_recipe", "validate_recipe"]

#: Stages on the roadmap that this version cannot run yet.
PLANNED_STAGES: dict[str, str] = {
    "serve": "the OpenAI-compatible server",
}


@dataclass(frozen=True)
class ValidatedRecipe:
    recipe: Recipe
    steps: list[StageOptions]
    source: str
    data: Any = None  # the raw mapping, for the file lines of later checks
    #: Each step's own `executor:` section (None: the recipe's), kept out of the step's options and config.
    executors: list[SlurmOptions | None] = dc_field(default_factory=list)

    def step_name(self, i: int) -> str:
        return self.steps[i].name or self.steps[i].stage


@dataclass(frozen=True)
class StepResult:
    name: str
    stage: str
    run_id: str
    outputs: list[ArtifactRecord]


@dataclass(frozen=True)
class PipelineResult:
    pipeline_id: str
    model: ArtifactRecord
    steps: list[StepResult]


def stage_def(name: str) -> StageDef:
    if name in PLANNED_STAGES and name not in registry.names("stage"):
        raise KifabrikError(f"stage {name!r} ({PLANNED_STAGES[name]}) is not built yet in this version of kifabrik",
                            hint=f"remove it from the recipe; stages you can use now: {', '.join(registry.names('stage'))}")
    return registry.lookup("stage", name)


def validate_recipe(data: Any, source: str = "<recipe>", ws: Workspace | None = None) -> ValidatedRecipe:
    """Check a raw recipe mapping completely; raise one error listing every problem.

    Every reference a step makes (`data:`, `model:`, `kb:`, ...) must name an earlier step, a
    dataset an earlier data step imports, or `base`; with a workspace `ws`, also a registered
    artifact. Without one, a name that is none of these may still be in the catalog and is
    left to `run_recipe`, which checks every reference again before it runs anything.
    """
    if not isinstance(data, dict):
        raise KifabrikError(f"{source}: a recipe must be a YAML mapping with name, model and stages",
                            hint="see kifabrik/recipes/demo.yaml for an example")
    problems: list[str] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems += validation_messages(exc, data, source)
    datasets = data.get("datasets")
    if isinstance(datasets, dict) and datasets:  # typed at load (file:line), not first when the data step runs
        from kifabrik.data.options import DatasetSpec

        for name, spec in datasets.items():
            try:
                DatasetSpec.model_validate(spec)
            except ValidationError as exc:
                problems += validation_messages(exc, data, source, prefix=("datasets", name))
    steps: list[StageOptions] = []
    executors: list[SlurmOptions | None] = []
    seen: list[str] = []
    for i, raw in enumerate(data.get("stages") or [] if isinstance(data.get("stages"), list) else []):
        where = f"{source}:{getattr(data['stages'], 'lines', [None] * (i + 1))[i] or '?'}: stages[{i}]"
        if not isinstance(raw, dict) or "stage" not in raw:
            problems.append(f"{where}: each stage needs a `stage:` key naming it (e.g. `stage: generate`)")
            continue
        try:
            sdef = stage_def(str(raw["stage"]))
        except KifabrikError as exc:
            problems.append(f"{where}.stage: {exc.message} ({exc.hint})")
            continue
        executor = None
        if "executor" in raw:  # where the step runs, not what it does: not one of the stage's options
            raw = {k: v for k, v in raw.items() if k != "executor"}
            try:
                executor = SlurmOptions.model_validate(data["stages"][i]["executor"])
            except ValidationError as exc:
                problems += validation_messages(exc, data, source, prefix=("stages", i, "executor"))
        try:
            opts = sdef.options.model_validate(raw)
        except ValidationError as exc:
            problems += validation_messages(exc, data, source, prefix=("stages", i))
            continue
        step = opts.name or opts.stage
        if step in seen or step == "base":
            problems.append(f"{where}.name: step name {step!r} is used twice (or is the reserved name 'base'); "
                            "give each step a unique `name:`")
        if sdef.check:
            problems += [f"{where}: {p}" for p in sdef.check(opts, seen)]
        seen.append(step)
        steps.append(opts)
        executors.append(executor)
    if not problems:  # every step is valid, so `steps[i]` is `stages[i]` of the file
        problems += reference_problems(data, source, steps, ws)
    if problems:
        raise _invalid(source, problems)
    assert recipe is not None
    return ValidatedRecipe(recipe, steps, source, data, executors)


# --------------------------------------------------------------------------- references between steps
@dataclass(frozen=True)
class Reference:
    """One name a step uses: where (inside the step), what it must be, and how it is resolved."""

    loc: tuple[int | str, ...]
    what: str  # "dataset", "model", "knowledge base", ...
    ref: str
    kind: str | None  # the artifact kind a catalog ref must have (None: any)
    steps: bool  # resolved through earlier steps (`StageContext.resolve`), not only the catalog


#: Option fields that name one model, adapter or artifact: resolved like `StageContext.resolve`.
_ONE = {"model": ("model", None), "base": ("model", None), "baseline": ("model", None),
        "merged": ("merge step or artifact", None), "kb": ("knowledge base", "index"),
        "documents": ("documents", "document")}


def references(opts: StageOptions) -> Iterator[Reference]:
    """Every reference of a step's options, found by field name the same way in every stage."""
    for field, (what, kind) in _ONE.items():
        value = getattr(opts, field, None)
        if isinstance(value, str) and not value.startswith(("http://", "https://")):
            yield Reference((field,), what, value, kind, True)
    for j, ref in enumerate(getattr(opts, "data", None) or []):  # train and kb: earlier steps or catalog
        yield Reference(("data", j), "dataset", ref, "dataset", True)
    for j, item in enumerate(getattr(opts, "adapters", None) or []):
        yield Reference(("adapters", j, "adapter"), "adapter", item.adapter, None, True)
    for ref in getattr(opts, "metrics", None) or {}:  # merge-gate: parent -> metric key
        yield Reference(("metrics", ref), "adapter", ref, None, True)
    context = getattr(opts, "context", None)
    for j, ref in enumerate(getattr(context, "passages_from", None) or []):  # train: catalog refs only
        yield Reference(("context", "passages_from", j), "dataset", ref, "dataset", False)
    for j, ref in enumerate(getattr(opts, "train_data", None) or []):  # evaluate: catalog refs only
        yield Reference(("train_data", j), "dataset", ref, "dataset", False)
    judge = getattr(opts, "judge", None)
    if isinstance(judge, str) and not judge.startswith(("http://", "https://")):
        yield Reference(("judge",), "judge model", judge, None, False)


def reference_problems(data: Any, source: str, steps: list[StageOptions], ws: Workspace | None) -> list[str]:
    """`file:line: stages[i].field: unknown ... 'x'; known: ...` for every reference that cannot resolve.

    Mirrors the run: `base` is the recipe's model, an earlier step's name is its output (for a
    dataset: what an earlier data step imported), a dataset a data step imports is registered
    under its key by the time later steps run; anything else is looked up in the catalog.
    """
    recipe_datasets = data.get("datasets") if isinstance(data.get("datasets"), dict) else {}
    names = [o.name or o.stage for o in steps]
    problems: list[str] = []
    earlier: dict[str, str] = {}  # step name -> stage
    imported: list[str] = []  # datasets earlier data steps import
    for i, opts in enumerate(steps):
        for r in references(opts):
            why = _unresolved(r, earlier, imported, names[i + 1:], ws)
            if why and r.what == "dataset" and r.ref in recipe_datasets:
                why = (f"dataset {r.ref!r} is in the recipe's datasets:, but no data step before this step "
                       "imports it (put a `- stage: data` step first)")
            if why:
                line = line_of(data, ("stages", i, *r.loc))
                where = f"{source}:{line}" if line else source
                problems.append(f"{where}: {format_loc(('stages', i, *r.loc))}: {why}"
                                + _known(r, earlier, imported, ws))
        if opts.stage == "data":
            only = getattr(opts, "only", None)
            for j, name in enumerate(only or []):
                if name not in recipe_datasets:
                    line = line_of(data, ("stages", i, "only", j))
                    problems.append(f"{source}:{line or '?'}: stages[{i}].only[{j}]: unknown dataset {name!r}; known "
                                    f"(the recipe's datasets:): {', '.join(recipe_datasets) or 'none'}")
            imported += [n for n in (recipe_datasets if only is None else only)
                         if n in recipe_datasets and n not in imported]
            imported += [n for n in getattr(opts, "datasets", {}) if n not in imported]
        earlier[names[i]] = opts.stage
    return problems


def _unresolved(r: Reference, earlier: dict[str, str], imported: list[str], later: list[str],
                ws: Workspace | None) -> str | None:
    """Why `r` does not resolve at this point of the recipe, or None when it does (or may, without `ws`)."""
    if r.steps and r.what != "dataset" and r.ref == "base":
        return None
    if r.steps and r.ref in earlier:
        if r.what == "dataset" and earlier[r.ref] != "data":
            return f"step {r.ref!r} ({earlier[r.ref]}) produces no dataset; name a data step or a dataset"
        return None
    if r.what == "dataset" and r.ref in imported:
        return None
    if ws is not None:
        try:
            ws.catalog.get_artifact(r.ref, r.kind)
            return None
        except NotFoundError:
            pass
        except KifabrikError as exc:  # e.g. an ambiguous id prefix
            return exc.message
    if r.steps and r.ref in later:
        return f"step {r.ref!r} runs later; a step can only use the steps before it"
    if ws is None:
        return None  # may be a registered artifact: checked against the catalog before the run
    return f"unknown {r.what} {r.ref!r}"


def _known(r: Reference, earlier: dict[str, str], imported: list[str], ws: Workspace | None) -> str:
    """`; known: ...`: what `r` could name at this point of the recipe."""
    if r.what == "dataset":
        known = imported + ([n for n, stage in earlier.items() if stage == "data"] if r.steps else [])
        text = f"; known: {', '.join(known) or 'none'}"
    else:
        known = (["base"] + list(earlier)) if r.steps else []
        text = f"; known: {', '.join(known)}" if known else ""
    if ws is not None:
        listing = "kifabrik data list" if r.kind == "dataset" else "kifabrik artifacts list"
        text += f" (or a registered {r.what}: {listing})"
    return text


def _invalid(source: str, problems: list[str]) -> KifabrikError:
    return KifabrikError(f"{source}: the recipe is invalid ({len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems),
                         hint="fix these and run again; nothing was run")


def load_recipe(path: Path, overrides: list[str] | None = None, ws: Workspace | None = None) -> ValidatedRecipe:
    """Read, override (`--set`) and validate a recipe file (references against `ws`'s catalog, when given)."""
    data = load_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise KifabrikError(f"{path}: a recipe must be a YAML mapping")
        apply_overrides(data, overrides)
    return validate_recipe(data, str(path), ws)


#: The step name of the base model's registration, the first run of every pipeline.
MODEL_STEP = "model"


def check_run(ws: Workspace, validated: ValidatedRecipe, *, online: bool = False) -> None:
    """What a run checks before it records anything: every reference against `ws`'s catalog, the model source."""
    from kifabrik.models.sources import preflight_model_source

    problems = reference_problems(validated.data if isinstance(validated.data, dict) else {}, validated.source,
                                  validated.steps, ws)
    if problems:  # checked against this workspace's catalog before anything is registered
        raise _invalid(validated.source, problems)
    model = validated.recipe.model
    preflight_model_source(ws, model.source, online=online, accept_terms=model.accept_terms)


def run_recipe(ws: Workspace, validated: ValidatedRecipe, *, online: bool = False,
               on_step: Callable[[StepResult], None] | None = None, reuse: bool = True,
               pipeline_id: str | None = None, only: str | None = None) -> PipelineResult:
    """Register the base model, then run every step in order, recording a run for each.

    A reusable step (`StageDef.reusable`: train, merge, kb, fach-llm) whose options and upstream
    artifacts equal those of an earlier succeeded run reuses that run's outputs instead of running
    again (recorded as a run with `reused_from`); `reuse=False` (`kifabrik run --no-reuse`) runs all.

    With `only` (a step name, or `MODEL_STEP`), run just that step of pipeline `pipeline_id`, as an
    executor's job does: it continues the run recorded for it at submission (`Catalog.claim_run`),
    and the base model and the earlier steps' outputs are those the pipeline's runs recorded.
    """
    from kifabrik.models.sources import resolve_model_source

    recipe = validated.recipe
    upstream = None
    if only is None:
        check_run(ws, validated, online=online)
    else:
        upstream = _pipeline_state(ws, validated, pipeline_id, only)
    own_run = upstream.run_id if upstream else None  # the run recorded for the step at submission
    pipeline_id = pipeline_id or uuid.uuid4().hex
    results = []
    if only is None or only == MODEL_STEP:
        model = _recorded(ws, pipeline_id, recipe.name, "model", MODEL_STEP, recipe.model.model_dump(),
                          lambda run_id: [resolve_model_source(ws, recipe.model.source, name=recipe.model.name,
                                                               online=online,
                                                               trust_remote_code=recipe.model.trust_remote_code,
                                                               accept_terms=recipe.model.accept_terms)],
                          run_id=own_run)[0]
        if own_run:
            return PipelineResult(pipeline_id, model, [StepResult(MODEL_STEP, "model", own_run, [model])])
    else:
        assert upstream is not None and upstream.model is not None
        model = upstream.model
    ctx_outputs: dict[str, list[ArtifactRecord]] = dict(upstream.outputs) if upstream else {}
    for i, opts in enumerate(validated.steps):
        step = validated.step_name(i)
        if only is not None and step != only:
            continue
        sdef = stage_def(opts.stage)

        def work(run_id: str, sdef: StageDef = sdef, opts: StageOptions = opts) -> list[ArtifactRecord]:
            ctx = StageContext(ws, recipe, pipeline_id, run_id, model, ctx_outputs, online)
            return sdef.run(ctx, opts)

        config = opts.model_dump()
        earlier = None
        if sdef.reusable:
            config["reuse_key"] = _reuse_key(recipe, opts, model, ctx_outputs)
            earlier = ws.catalog.reusable_run(opts.stage, config["reuse_key"]) if reuse else None
        if earlier is not None:
            from kifabrik.progress import info

            info(f"{step}: same options and inputs as run {earlier.id[:12]}; reusing its outputs")
            outputs = [ws.catalog.get_artifact(i) for i in earlier.outputs]
            if own_run:
                run_id = own_run
                ws.catalog.claim_run(run_id, config={**config, "reused_from": earlier.id})
            else:
                run_id = ws.catalog.start_run(opts.stage, {**config, "reused_from": earlier.id}, name=step,
                                              pipeline_id=pipeline_id, recipe=recipe.name)
            ws.catalog.finish_run(run_id, "succeeded", outputs=earlier.outputs)
        else:
            run_id, outputs = _recorded(ws, pipeline_id, recipe.name, opts.stage, step, config, work, with_id=True,
                                        run_id=own_run)
        ctx_outputs[step] = outputs
        result = StepResult(step, opts.stage, run_id, outputs)
        results.append(result)
        if on_step:
            on_step(result)
    return PipelineResult(pipeline_id, model, results)


def _reuse_key(recipe: Recipe, opts: StageOptions, model: ArtifactRecord,
               upstream: dict[str, list[ArtifactRecord]]) -> str:
    """What a reusable step's outputs depend on: its options, the recipe's name and the ids of the
    base model and of every earlier step's outputs (content hashes), and the kifabrik version."""
    from kifabrik import __version__

    content = {"recipe": recipe.name, "options": opts.model_dump(mode="json"), "model": model.id,
               "upstream": {step: [r.id for r in recs] for step, recs in upstream.items()}, "kifabrik": __version__}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class _Upstream:
    run_id: str  # the run recorded for the step at submission
    model: ArtifactRecord | None
    outputs: dict[str, list[ArtifactRecord]]


def _pipeline_state(ws: Workspace, validated: ValidatedRecipe, pipeline_id: str | None, only: str) -> _Upstream:
    """The run of step `only` in pipeline `pipeline_id`, and the outputs of the steps before it."""
    names = [MODEL_STEP] + [validated.step_name(i) for i in range(len(validated.steps))]
    if only not in names:
        raise KifabrikError(f"{validated.source}: no step {only!r}; steps: {', '.join(names)}")
    if not pipeline_id:
        raise KifabrikError("running one step needs the pipeline it belongs to (--pipeline-id)")
    runs = {r.name: r for r in reversed(ws.catalog.list_runs(pipeline_id, limit=10_000))}  # newest per step wins
    if only not in runs:
        raise NotFoundError(f"pipeline {pipeline_id} has no run for step {only!r}",
                            hint="submit the recipe with `kifabrik run RECIPE --executor slurm`")
    outputs: dict[str, list[ArtifactRecord]] = {}
    model = None
    for name in names[:names.index(only)]:
        run = runs.get(name)
        if run is None or run.status != "succeeded":
            raise KifabrikError(f"step {only!r} needs step {name!r} of pipeline {pipeline_id} to have succeeded "
                                f"(it is {run.status if run else 'not recorded'})")
        records = [ws.catalog.get_artifact(i) for i in run.outputs]
        if name == MODEL_STEP:
            model = records[0]
        else:
            outputs[name] = records
    return _Upstream(runs[only].id, model, outputs)


def _recorded(ws: Workspace, pipeline_id: str, recipe: str, stage: str, step: str, config: dict[str, Any],
              work: Callable[[str], list[ArtifactRecord]], with_id: bool = False, run_id: str | None = None) -> Any:
    """Run `work` inside a run record (a new one, or `run_id` recorded at submission): succeeded with
    its outputs, or failed with the error; a Slurm job's training that Slurm stopped after a checkpoint
    is `interrupted`, and continues when the job runs again."""
    from kifabrik.executors.slurm import job_environment

    run_id_given = run_id is not None  # an executor's job continues the run recorded at submission
    if run_id is None:
        run_id = ws.catalog.start_run(stage, config, name=step, pipeline_id=pipeline_id, recipe=recipe)
    else:
        ws.catalog.claim_run(run_id, config=config)
        if facts := job_environment():  # a requeued job says so in its run record
            ws.catalog.update_executor(run_id, facts)
    try:
        with ws.catalog.recording(run_id) as ids:
            outputs = work(run_id)
            ids.extend(o.id for o in outputs)
    except KifabrikError as exc:
        from kifabrik.train.runner import TrainingInterrupted

        if isinstance(exc, TrainingInterrupted) and run_id_given and job_environment():
            # Slurm stopped the job (preemption, time limit, requeue) after a checkpoint: not failed, resumable
            ws.catalog.finish_run(run_id, "interrupted", error=str(exc))
        raise
    return (run_id, outputs) if with_id else outputs
