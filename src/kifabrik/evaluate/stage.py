"""Recipe stage `evaluate`: evaluate a step's model or adapter (optionally against a baseline).

    - stage: evaluate
      name: pruefung
      model: finetune            # base | an earlier step | a registered model/adapter
      baseline: base
      suites: [ve, nd, cy, da, tr, lang]
      limit: 10
      catalogue: ../shared/data/mission-ki/VCIO.json
      needs: {VE1: 2, ND1: 2, CY2: 2, DA2: 3, TR2: 2}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.evaluate.api import EvalOptions, evaluate, prepare
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions


class EvaluateOptions(StageOptions, EvalOptions):
    """Evaluate a model, adapter or endpoint with tasks and quality suites."""

    stage: Literal["evaluate"] = Field(description="`evaluate`.")
    model: str = Field(default="base", description="`base`, an earlier step's name, a registered model/adapter, or a URL.")
    baseline: str | None = Field(default=None, description="Compare with this model (`base`, a step, or a ref).")
    report: str | None = Field(default=None, description="Also write the HTML report (and .json) to this path.")


def _ref(ctx: StageContext, ref: str) -> str:
    if ref.startswith(("http://", "https://")):
        return ref
    return ctx.resolve(ref).id


def _run(ctx: StageContext, opts: EvaluateOptions) -> list[ArtifactRecord]:
    eval_opts = EvalOptions(**{k: getattr(opts, k) for k in EvalOptions.model_fields})
    prepared = prepare(ctx.ws, eval_opts)
    outcome = evaluate(ctx.ws, _ref(ctx, opts.model), eval_opts,
                       baseline=_ref(ctx, opts.baseline) if opts.baseline else None,
                       report=Path(opts.report) if opts.report else None,
                       name=ctx.artifact_name(opts.name or opts.stage), actor=f"pipeline:{ctx.pipeline_id[:12]}",
                       prepared=prepared)
    return [outcome.record] if outcome.record else []


def _check(opts: Any, earlier: list[str]) -> list[str]:
    """Static checks before anything runs (model references are resolved when the step runs)."""
    return [] if opts.tasks or opts.suites else ["give `tasks:` and/or `suites:` (e.g. suites: [all])"]


register("stage", "evaluate")(StageDef("evaluate", EvaluateOptions, _run,
                                       "evaluate with tasks and MISSION KI quality suites", _check))
