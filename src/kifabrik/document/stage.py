"""Recipe stage `document`: the documents of a step's model or adapter.

    - stage: document
      model: specialise                 # base | an earlier step | a registered model/adapter
      catalogue: ../shared/data/mission-ki/VCIO.json
      data_sources: {schmidt-service: other}
      out: release-docs                 # optional: also copy the Markdown files here

Provider facts come from the recipe's `organisation:` section, or from the file `org:` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.document.api import DocumentOptions, document
from kifabrik.document.facts import load_organisation
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions


class DocumentStageOptions(StageOptions, DocumentOptions):
    """Generate the model card, AI Act documents, training-content summary, MISSION KI assessment and ML-BOM."""

    stage: Literal["document"] = Field(description="`document`.")
    model: str = Field(default="base", description="`base`, an earlier step's name, or a registered model/adapter.")
    out: str | None = Field(default=None, description="Also copy the documents (in `format`) to this folder.")
    org: str | None = Field(default=None, description="YAML file with provider, contact, intended_purpose and "
                            "acceptable_use (default: the recipe's `organisation:` section).")


def _run(ctx: StageContext, opts: DocumentStageOptions) -> list[ArtifactRecord]:
    target = ctx.resolve(opts.model)
    step = opts.name or opts.stage
    org, org_label = ctx.recipe.organisation, f"recipe {ctx.recipe.name}: organisation section"
    if opts.org:
        org, org_label = load_organisation(Path(opts.org)), f"organisation file {Path(opts.org).name}"
    result = document(ctx.ws, target.id, DocumentOptions.model_validate(opts.model_dump(include=set(DocumentOptions.model_fields))),
                      org=org, org_label=org_label,
                      out=Path(opts.out) if opts.out else None, name=ctx.artifact_name(step),
                      actor=f"pipeline:{ctx.pipeline_id[:12]}")
    return [result.record]


register("stage", "document")(StageDef("document", DocumentStageOptions, _run,
                                       "model card, AI Act Annex XI/XII, training-content summary, MISSION KI, ML-BOM"))
