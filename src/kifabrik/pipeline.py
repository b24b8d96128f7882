"""The recipe runner: validate the whole recipe first, then run stage by stage.

Stages register themselves with `@register("stage", NAME)` on a `StageDef`. The runner
imports a stage's module only when a recipe names it (see `kifabrik.registry`), and a stage
that is planned but not built yet is refused at validation, never silently skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kifabrik import registry
from kifabrik.catalog import ArtifactRecord
from kifabrik.config import (
    Recipe,
    apply_overrides,
    load_yaml,
    validation_messages,
)
from kifabrik.errors import KifabrikError
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


def validate_recipe(data: Any, source: str = "<recipe>") -> ValidatedRecipe:
    """Check a raw recipe mapping completely; raise one error listing every problem."""
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
    if problems:
        raise KifabrikError(f"{source}: the recipe is invalid ({len(problems)} problem"
                            f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems),
                            hint="fix these and run again; nothing was run")
    assert recipe is not None
    return ValidatedRecipe(recipe, steps, source)


def load_recipe(path: Path, overrides: list[str] | None = None) -> ValidatedRecipe:
    """Read, override (`--set`) and validate a recipe file."""
    data = load_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            raise KifabrikError(f"{path}: a recipe must be a YAML mapping")
        apply_overrides(data, overrides)
    return validate_recipe(data, str(path))


def run_recipe(ws: Workspace, validated: ValidatedRecipe, *, online: bool = False,
               on_step: Callable[[StepResult], None] | None = None) -> PipelineResult:
    """Register the base model, then run every step in order, recording a run for each."""
    from kifabrik.models.sources import preflight_model_source, resolve_model_source

    recipe = validated.recipe
    preflight_model_source(ws, recipe.model.source, online=online)
    pipeline_id = uuid.uuid4().hex
    model = _recorded(ws, pipeline_id, recipe.name, "model", "model", recipe.model.model_dump(),
                      lambda run_id: [resolve_model_source(ws, recipe.model.source, name=recipe.model.name,
                                                           online=online,
                                                           trust_remote_code=recipe.model.trust_remote_code)])[0]
    ctx_outputs: dict[str, list[ArtifactRecord]] = {}
    results = []
    for i, opts in enumerate(validated.steps):
        step = validated.step_name(i)
        sdef = stage_def(opts.stage)

        def work(run_id: str, sdef: StageDef = sdef, opts: StageOptions = opts) -> list[ArtifactRecord]:
            ctx = StageContext(ws, recipe, pipeline_id, run_id, model, ctx_outputs, online)
            return sdef.run(ctx, opts)

        run_id, outputs = _recorded(ws, pipeline_id, recipe.name, opts.stage, step, opts.model_dump(), work, with_id=True)
        ctx_outputs[step] = outputs
        result = StepResult(step, opts.stage, run_id, outputs)
        results.append(result)
        if on_step:
            on_step(result)
    return PipelineResult(pipeline_id, model, results)


def _recorded(ws: Workspace, pipeline_id: str, recipe: str, stage: str, step: str, config: dict[str, Any],
              work: Callable[[str], list[ArtifactRecord]], with_id: bool = False) -> Any:
    """Run `work` inside a run record: succeeded with its outputs, or failed with the error."""
    run_id = ws.catalog.start_run(stage, config, name=step, pipeline_id=pipeline_id, recipe=recipe)
    with ws.catalog.recording(run_id) as ids:
        outputs = work(run_id)
        ids.extend(o.id for o in outputs)
    return (run_id, outputs) if with_id else outputs
