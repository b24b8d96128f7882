"""Recipe stage `kb`: index datasets (catalog refs or earlier steps' outputs) as a knowledge base.

    stages:
      - stage: data
        name: import
      - stage: kb
        name: wissen
        data: [schmidt-wartung, schmidt-teile]   # dataset names, or `import` for all it imported
        chunk_tokens: 200

The artifact is named `<recipe>-<step>` like every stage output.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.kb.build import KbOptions, build_kb, resolve_dataset
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions


class KbStageOptions(StageOptions, KbOptions):
    """Build a knowledge base (recipe form of `kifabrik kb build`)."""

    stage: Literal["kb"] = Field(description="`kb`.")
    data: list[str] = Field(min_length=1, description="Datasets to index: catalog refs (name, name@version, id) "
                                                      "or names of earlier steps that produced datasets.")

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    def kb_options(self) -> KbOptions:
        return KbOptions.model_validate(self.model_dump(include=set(KbOptions.model_fields)))


def resolve_datasets(ctx: StageContext, refs: list[str]) -> list[ArtifactRecord]:
    """Every dataset an earlier step named in `refs` produced, else the catalog's dataset of that ref."""
    out: list[ArtifactRecord] = []
    for ref in refs:
        if ref in ctx.outputs:
            found = [r for r in ctx.outputs[ref] if r.kind == "dataset"]
            if not found:
                raise KifabrikError(f"kb.data: step {ref!r} produced no dataset",
                                    hint="name a data step or a dataset artifact")
            out += found
        else:
            out.append(resolve_dataset(ctx.ws, ref))
    return out


def _run(ctx: StageContext, opts: KbStageOptions) -> list[ArtifactRecord]:
    name = ctx.artifact_name(opts.name or opts.stage)
    return [build_kb(ctx.ws, name, resolve_datasets(ctx, opts.data), opts.kb_options(),
                     actor=f"pipeline:{ctx.pipeline_id[:12]}")]


register("stage", "kb")(StageDef("kb", KbStageOptions, _run, "index datasets as a policy-checked knowledge base",
                                    reusable=True))
