"""The recipe stage `train`.

    stages:
      - stage: train
        name: specialise
        model: base                 # base | an earlier step | a registered model
        data: [service-chats]       # dataset artifacts: catalog refs or earlier steps' names
        max_steps: 60
        lora: {rank: 8, alpha: 16}

Every other key is a `TrainOptions` field. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions
from kifabrik.train.options import TrainOptions


class TrainStageOptions(StageOptions, TrainOptions):
    """Train a LoRA adapter (or fully fine-tune a small model) on dataset artifacts."""

    stage: Literal["train"] = Field(description="`train`.")
    model: str = Field(default="base", description="`base`, the name of an earlier step, or a registered model.")
    data: list[str] = Field(min_length=1, description="Datasets to train on: catalog refs (name, name@version, id) "
                                                      "or names of earlier steps that produced datasets.")

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    def train_options(self) -> TrainOptions:
        fields = set(TrainOptions.model_fields) & self.model_fields_set
        return TrainOptions.model_validate(self.model_dump(include=fields))


def resolve_data(ctx: StageContext, refs: list[str]) -> list[ArtifactRecord]:
    """Dataset records for `refs`: every dataset an earlier step produced, or a catalog ref."""
    out: list[ArtifactRecord] = []
    for ref in refs:
        if ref in ctx.outputs:
            found = [r for r in ctx.outputs[ref] if r.kind == "dataset"]
            if not found:
                raise KifabrikError(f"step {ref!r} produced no dataset", hint="name a data step or a dataset artifact")
            out += found
        else:
            out.append(ctx.ws.catalog.get_artifact(ref, "dataset"))
    return out


def _run(ctx: StageContext, opts: TrainStageOptions) -> list[ArtifactRecord]:
    from kifabrik.train.api import train

    base = ctx.resolve(opts.model, "model")
    if base.kind != "model":
        raise KifabrikError(f"train.model {opts.model!r} is a {base.kind}; training starts from a model",
                            hint="merge the adapter into a model first, or train from `base`")
    datasets = resolve_data(ctx, opts.data)
    step = opts.name or opts.stage
    record = train(ctx.ws, base.id, [d.id for d in datasets], opts.train_options(), name=ctx.artifact_name(step),
                   run_id=ctx.run_id)
    return [record]


register("stage", "train")(StageDef("train", TrainStageOptions, _run,
                                    "LoRA fine-tuning and continued pre-training", reusable=True))
