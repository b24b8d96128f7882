"""Recipe stage `merge`: combine adapters named by earlier steps or catalog refs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.merge.api import MergeOptions, merge
from kifabrik.pipeline import StageContext, StageDef, StageOptions
from kifabrik.registry import register


class MergeStageOptions(StageOptions, MergeOptions):
    """Merge adapters (recipe form of `kifabrik merge`)."""

    stage: Literal["merge"] = Field(description="`merge`.")


def _run(ctx: StageContext, opts: MergeStageOptions) -> list[ArtifactRecord]:
    name = ctx.artifact_name(opts.name or opts.stage)
    return [merge(ctx.ws, MergeOptions.model_validate(opts.model_dump(exclude={"stage", "name"})), name,
                  actor=f"recipe:{ctx.recipe.name}", resolve=lambda ref: ctx.resolve(ref))]


register("stage", "merge")(StageDef("merge", MergeStageOptions, _run, "recombine adapters"))
