"""A Fach-LLM: a model or adapter plus a knowledge base, deployable under one model name.

The record (kind `fach-llm`) holds no weights: it names the model (lineage `grounded_model`) and
the knowledge base (lineage `knowledge`) and how many passages each answer gets. Served, evaluated
or asked through `generate`, it answers from its sources (see `kb.grounding`).

Policies: the model's own lineage is checked for the asking purpose as for any model; the
knowledge base's datasets are checked passage by passage at retrieval, so one dataset that may
not be shown never blocks the others.
"""

from __future__ import annotations

import json
import re
import typing

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models.runtime import Dtype
from kifabrik.workspace import Workspace

KIND = "fach-llm"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def create_fach_llm(ws: Workspace, name: str, model: ArtifactRecord, kb: ArtifactRecord, *, k: int = 3,
                    min_score: float | None = None, relative: float = 0.0, focus: bool = True,
                    known_names: bool = True, refuse_withheld: bool = True, dtype: str = "auto",
                    pipeline_id: str | None = None) -> ArtifactRecord:
    """Record `model` + `kb` as the Fach-LLM `name` (a new version if the name exists)."""
    if not _NAME.match(name):
        raise KifabrikError(f"invalid Fach-LLM name {name!r}", hint="use letters, digits, '.', '_' and '-'")
    if model.kind not in ("model", "adapter"):
        raise KifabrikError(f"{model.ref} is a {model.kind}; a Fach-LLM needs a model or an adapter",
                            hint="list them with `kifabrik models list` and `kifabrik adapters list`")
    if kb.kind != "index":
        raise KifabrikError(f"{kb.ref} is a {kb.kind}, not a knowledge base", hint="build one with `kifabrik kb build`")
    if k < 1:
        raise KifabrikError(f"k must be at least 1 (got {k})", hint="3 passages per answer is a good start")
    if not 0.0 <= relative <= 1.0:
        raise KifabrikError(f"relative must lie between 0 and 1 (got {relative})",
                            hint="0 keeps the k best sources; 0.7 drops those under 70 % of the best score")
    if dtype not in typing.get_args(Dtype):
        raise KifabrikError(f"dtype {dtype!r} is not known", hint=f"use one of {', '.join(typing.get_args(Dtype))}")
    spec = {"model_id": model.id, "model": model.ref, "kb_id": kb.id, "kb": kb.ref, "k": k, "min_score": min_score,
            "relative": relative, "focus": focus, "known_names": known_names, "refuse_withheld": refuse_withheld,
            **({"dtype": dtype} if dtype != "auto" else {})}
    with ws.create(KIND, name, parents=[(model.id, "grounded_model"), (kb.id, "knowledge")], config=spec,
                   meta={**spec, **({"pipeline_id": pipeline_id} if pipeline_id else {})}) as draft:
        draft.write_text("fach-llm.json", json.dumps(spec, indent=2, ensure_ascii=False) + "\n")
    return draft.record


def parts(ws: Workspace, record: ArtifactRecord) -> tuple[ArtifactRecord, ArtifactRecord]:
    """(model or adapter, knowledge base) of a Fach-LLM record."""
    if record.kind != KIND:
        raise KifabrikError(f"{record.ref} is a {record.kind}, not a Fach-LLM")
    return ws.catalog.get_artifact(record.meta["model_id"]), ws.catalog.get_artifact(record.meta["kb_id"], "index")


# --------------------------------------------------------------------------- recipe stage `fach-llm`
from typing import Literal  # noqa: E402

from pydantic import Field  # noqa: E402

from kifabrik.registry import register  # noqa: E402
from kifabrik.stages import StageContext, StageDef, StageOptions  # noqa: E402


class FachLlmOptions(StageOptions):
    """Put a model or adapter and a knowledge base together as one deployable Fach-LLM."""

    stage: Literal["fach-llm"] = Field(description="`fach-llm`.")
    model: str = Field(description="`base`, an earlier step (train/merge) or a registered model or adapter.")
    kb: str = Field(description="An earlier `kb` step or a registered knowledge base.")
    k: int = Field(default=3, ge=1, le=20, description="Passages retrieved per answer.")
    min_score: float | None = Field(default=None, ge=0.0, description="Retrieval score under which a passage is "
                                    "irrelevant (default: the knowledge base's calibrated threshold).")
    relative: float = Field(default=0.0, ge=0.0, le=1.0, description="Drop sources scoring under this share of "
                            "the best one (0 keeps the k best).")
    focus: bool = Field(default=True, description="Show a long document section cut down to its headings and the "
                        "lines (table rows, items, sentences) that match the question (`kb.focus`).")
    known_names: bool = Field(default=True, description="A question naming a machine or code of a kind the "
                              "documents use but never this one (\"E999\" where they list E101 ... E840) is "
                              "answered as not found, without running the model.")
    refuse_withheld: bool = Field(default=True, description="A question whose best match is a passage its "
                                  "policy withholds for the asking purpose (a confidential price list behind a "
                                  "price question) is answered as not found, not from the lesser passages left.")
    dtype: Dtype = Field(default="auto", description="Precision the Fach-LLM runs in wherever it is evaluated, "
                         "asked or served (transformers backend): auto is float32 on CPUs; bfloat16 is about twice "
                         "as fast on CPUs with AMX and is then what the evaluation measured.")
    release_name: str | None = Field(default=None, description="Name of the Fach-LLM record (default: "
                                     "`<recipe>-<step>`); the served model name.")


def _run(ctx: StageContext, opts: FachLlmOptions) -> list[ArtifactRecord]:
    model, kb = ctx.resolve(opts.model), ctx.resolve(opts.kb, "index")
    name = opts.release_name or ctx.artifact_name(opts.name or opts.stage)
    return [create_fach_llm(ctx.ws, name, model, kb, k=opts.k, min_score=opts.min_score, relative=opts.relative,
                            focus=opts.focus, known_names=opts.known_names, refuse_withheld=opts.refuse_withheld,
                            dtype=opts.dtype, pipeline_id=ctx.pipeline_id)]


register("stage", "fach-llm")(StageDef("fach-llm", FachLlmOptions, _run, "a model plus a knowledge base as one Fach-LLM",
                                              reusable=True))
