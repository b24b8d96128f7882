"""Recipe stage `merge`: combine adapters named by earlier steps or catalog refs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.merge.api import MergeOptions, merge
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions


class MergeStageOptions(StageOptions, MergeOptions):
    """Merge adapters (recipe form of `kifabrik merge`)."""

    stage: Literal["merge"] = Field(description="`merge`.")


def _run(ctx: StageContext, opts: MergeStageOptions) -> list[ArtifactRecord]:
    name = ctx.artifact_name(opts.name or opts.stage)
    return [merge(ctx.ws, MergeOptions.model_validate(opts.model_dump(exclude={"stage", "name"})), name,
                  actor=f"recipe:{ctx.recipe.name}", resolve=lambda ref: ctx.resolve(ref))]


register("stage", "merge")(StageDef("merge", MergeStageOptions, _run, "recombine adapters", reusable=True))


class GateOptions(StageOptions):
    """Require a merged artifact to keep a share of each parent's evaluated score."""

    stage: Literal["merge-gate"] = Field(description="`merge-gate`.")
    merged: str = Field(description="The merge step (or a catalog ref) whose output is checked.")
    metrics: dict[str, str] = Field(min_length=1, description="Parent adapter (step or ref) -> metric key of its "
                                    "evaluation task, e.g. `task.service.acc`.")
    min_retention: float = Field(default=0.9, gt=0.0, le=2.0, description="Required fraction of each parent's score.")


def _gate(ctx: StageContext, opts: GateOptions) -> list[ArtifactRecord]:
    from kifabrik.merge.gate import check_gate

    merged = ctx.resolve(opts.merged)
    metrics = {ctx.resolve(parent).id: metric for parent, metric in opts.metrics.items()}
    check_gate(ctx.ws, merged.id, metrics, opts.min_retention, actor=f"recipe:{ctx.recipe.name}")
    return [ctx.ws.catalog.get_artifact(merged.id)]


register("stage", "merge-gate")(StageDef("merge-gate", GateOptions, _gate, "check a merge's quality gate"))
