"""Recipe stage `release`: a gated release of a step's model or adapter.

    - stage: release
      model: specialise          # base | an earlier step | a registered model/adapter
      release_name: schmidt-service
      version: 1.0.0
      license: Apache-2.0
      gates:
        - min: {task: werkstatt, metric: acc, value: 0.3}
      documents: docs             # optional: an earlier document step (default: the newest documents)

The release bundles documents made for itself (its version, date, licence, audience and gates),
with the recipe's `organisation:` and the data-source categories of the documents it starts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.registry import register
from kifabrik.release.api import ReleaseOptions, release
from kifabrik.release.gates import Gate
from kifabrik.stages import StageContext, StageDef, StageOptions


class ReleaseStageOptions(StageOptions):
    """Release a model or adapter as a bundle, if its data's policies and the quality gates allow it."""

    stage: Literal["release"] = Field(description="`release`.")
    model: str = Field(default="base", description="`base`, an earlier step's name, or a registered model/adapter.")
    release_name: str = Field(description="Name of the release (the step's `name` names the step).")
    version: str = Field(description="Release version, e.g. 1.0.0.")
    license: str | None = Field(default=None, description="SPDX licence id (default: the documented licence).")
    gates: list[Gate] = Field(default_factory=list, description="Quality gates on recorded evaluation metrics.")
    gate_file: str | None = Field(default=None, description="YAML file with more gates.")
    documents: str | None = Field(default=None, description="An earlier document step or a document artifact to "
                                  "start from: the bundled documents are made for this release with its provider "
                                  "facts, data-source categories and format.")
    data_sources: dict[str, str] = Field(default_factory=dict, description="Source categories of training datasets "
                                         "for the training-content summary, added to those of `documents`.")
    org: str | None = Field(default=None, description="YAML file with provider facts for the bundled documents "
                            "(default: the recipe's `organisation:` section, else those of `documents`).")
    audience: Literal["public", "internal"] = Field(default="public", description="public (distributed under "
                                                    "`license`) or internal (deployed inside the organisation only).")
    if_exists: Literal["refuse", "next-patch"] = Field(default="refuse", description="When this name and version "
                                                       "were released before: refuse, or release as the next free "
                                                       "patch version (1.0.0 -> 1.0.1), e.g. for a recipe run again.")


def next_free_version(ws: Any, name: str, version: str) -> str:
    """`version`, or the next patch version that `name` has not been released under."""
    taken = {r.meta.get("release_version") for r in ws.catalog.list_artifacts("release") if r.name == name}
    if version not in taken:
        return version
    head, _, patch = version.rpartition(".")
    if not patch.isdigit():
        raise KifabrikError(f"release {name} {version} exists already and {version!r} has no numeric patch part",
                            hint="give a new version")
    n = int(patch)
    while f"{head}.{n}" in taken:
        n += 1
    return f"{head}.{n}"


def _run(ctx: StageContext, opts: ReleaseStageOptions) -> list[ArtifactRecord]:
    target = ctx.resolve(opts.model)
    docs = ctx.resolve(opts.documents, "document").id if opts.documents else None
    version = next_free_version(ctx.ws, opts.release_name, opts.version) if opts.if_exists == "next-patch" else opts.version
    ropts = ReleaseOptions(name=opts.release_name, version=version, license=opts.license, gates=opts.gates,
                           gate_file=opts.gate_file, documents=docs, audience=opts.audience,
                           data_sources=opts.data_sources)
    org = ctx.recipe.organisation
    given, label = (org if org.model_dump(exclude_none=True) else None), f"recipe {ctx.recipe.name}: organisation section"
    if opts.org:
        from kifabrik.registry import lookup

        # the organisation file format belongs to the document stage: its reader is found by name, not imported
        given, label = lookup("documents", "organisation")(Path(opts.org)), f"organisation file {Path(opts.org).name}"
    return [release(ctx.ws, target.id, ropts, org=given, org_label=label,
                    actor=f"pipeline:{ctx.pipeline_id[:12]}", run_id=ctx.run_id)]


register("stage", "release")(StageDef("release", ReleaseStageOptions, _run,
                                      "gated release bundles (policies + quality gates)"))
