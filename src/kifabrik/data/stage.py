"""Recipe stage `data`: import the recipe's datasets (its `datasets:` section and/or the step's own).

    datasets:
      schmidt-service:
        path: kifabrik:data/demo/schmidt-service-train.jsonl
        test_path: kifabrik:data/demo/schmidt-service-test.jsonl
        policy_preset: internal-only
    stages:
      - stage: data            # imports every dataset above; later steps name them by key
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import validation_messages
from kifabrik.data.importer import import_dataset
from kifabrik.data.options import DatasetSpec, ImportOptions
from kifabrik.errors import KifabrikError
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions


class DataOptions(StageOptions):
    """Import datasets: those named in `only` (default: all of the recipe's `datasets:`), plus `datasets` here."""

    stage: Literal["data"] = Field(description="`data`.")
    datasets: dict[str, DatasetSpec] = Field(default_factory=dict, description="Datasets to import, by name "
                                             "(in addition to the recipe's top-level `datasets:`).")
    only: list[str] | None = Field(default=None, description="Import only these of the recipe's datasets.")


def specs(ctx: StageContext, opts: DataOptions) -> dict[str, ImportOptions]:
    """Validate every dataset spec before importing any (one error lists all problems)."""
    raw = dict(ctx.recipe.datasets)
    if opts.only is not None:
        unknown = [n for n in opts.only if n not in raw]
        if unknown:
            raise KifabrikError(f"data step: datasets {unknown} are not in the recipe's `datasets:`",
                                hint=f"known: {', '.join(sorted(raw)) or 'none'}")
        raw = {n: raw[n] for n in opts.only}
    merged = {**{k: dict(v) for k, v in raw.items()}, **{k: v.model_dump(exclude_unset=True) for k, v in opts.datasets.items()}}
    if not merged:
        raise KifabrikError("the data step has no datasets to import",
                            hint="add a `datasets:` section to the recipe or to the step")
    out, problems = {}, []
    for name, spec in merged.items():
        try:
            out[name] = ImportOptions.model_validate({**spec, "name": name})
        except ValidationError as exc:
            problems += validation_messages(exc, spec, "recipe", prefix=("datasets", name))
    if problems:
        raise KifabrikError("invalid datasets:\n  " + "\n  ".join(problems), hint="fix the recipe; nothing was imported")
    return out


def _run(ctx: StageContext, opts: DataOptions) -> list[ArtifactRecord]:
    return [import_dataset(ctx.ws, o, actor=f"pipeline:{ctx.pipeline_id[:12]}").record for o in specs(ctx, opts).values()]


register("stage", "data")(StageDef("data", DataOptions, _run, "import datasets with usage policies, PII protection, dedup and cards"))
