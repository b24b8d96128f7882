"""Try a model: answer prompts with it (`kifabrik generate`, recipe stage `generate`)."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from kifabrik.catalog import ArtifactRecord
from kifabrik.config import StrictModel
from kifabrik.models.backend import BackendOptions
from kifabrik.models.generate import Generation, GenerationOptions
from kifabrik.registry import register
from kifabrik.stages import StageContext, StageDef, StageOptions
from kifabrik.workspace import Workspace


class Prompt(StrictModel):
    text: str = Field(min_length=1, description="The question or instruction.")
    lang: str | None = Field(default=None, description="Language code (de, en, ...), recorded with the answer.")
    id: str | None = Field(default=None, description="Optional id of the prompt.")


class GenerateOptions(StageOptions, BackendOptions):
    """Answer a list of prompts with one model and keep the answers as an artifact."""

    stage: Literal["generate"] = Field(description="`generate`.")
    model: str = Field(default="base", description="`base`, the name of an earlier step, or a registered model, "
                       "adapter or Fach-LLM (a Fach-LLM answers from its knowledge base).")
    prompts: list[Prompt | str] = Field(min_length=1, description="Prompts: strings or {text, lang, id}.")
    system: str | None = Field(default=None, description="System message for chat models.")
    max_new_tokens: int = Field(default=128, ge=1, le=8192, description="Most tokens to generate per answer.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy (reproducible).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass when temperature > 0.")
    seed: int = Field(default=0, description="Random seed for sampling.")

    def prompt_list(self) -> list[Prompt]:
        return [p if isinstance(p, Prompt) else Prompt(text=p) for p in self.prompts]

    def generation_options(self) -> GenerationOptions:
        return GenerationOptions(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                                 seed=self.seed)


def generate_text(ws: Workspace, ref: str, prompts: list[str], *, system: str | None = None,
                  options: GenerationOptions | None = None, backend: BackendOptions | None = None,
                  actor: str = "cli") -> list[Generation]:
    """Answer `prompts` with the registered model or adapter `ref` (name, name@version or id).

    `backend` chooses what runs it (transformers unless told otherwise).

    Raises:
        PolicyDenied: a usage policy along the model's lineage does not permit `serving` (answering
            prompts); the decision is in the audit log either way.
    """
    answered, _ = _answer(ws, ws.catalog.get_artifact(ref), prompts, system, options or GenerationOptions(),
                          backend or BackendOptions(), actor)
    return [g for g, _ in answered]


def _answer(ws: Workspace, record: ArtifactRecord, prompts: list[str], system: str | None,
            options: GenerationOptions, backend: BackendOptions,
            actor: str) -> tuple[list[tuple[Generation, list[dict[str, object]]]], dict[str, object]]:
    """(answer, sources) per prompt, and what ran the model; a Fach-LLM answers from its knowledge base."""
    from kifabrik.kb.grounding import Grounding
    from kifabrik.models.generate import chat, messages_of
    from kifabrik.models.runtime import load, resolve

    runnable = resolve(ws, record, purpose="serving", actor=actor)  # answering prompts is serving the model
    loaded = load(runnable, home=ws.settings.home, **backend.load_args())
    grounding = Grounding.of(ws, runnable, purpose="serving", actor=actor)
    if grounding is None:
        return [(chat(loaded, p, system=system, options=options), []) for p in prompts], loaded.describe()
    answers = grounding.answer(loaded, [messages_of(p, system) for p in prompts], options, batch_size=1)
    return [(Generation(p, a.text, a.prompt_tokens, a.completion_tokens, a.finish_reason, loaded.chat_template is not None),
             [s.as_dict() for s in a.sources]) for p, a in zip(prompts, answers, strict=True)], loaded.describe()


def _run(ctx: StageContext, opts: GenerateOptions) -> list[ArtifactRecord]:
    record = ctx.resolve(opts.model)
    prompt_list = opts.prompt_list()
    rows = []
    answered, runtime = _answer(ctx.ws, record, [p.text for p in prompt_list], opts.system, opts.generation_options(),
                                BackendOptions(backend=opts.backend, gguf_type=opts.gguf_type), f"recipe:{ctx.recipe.name}")
    for p, (g, sources) in zip(prompt_list, answered, strict=True):
        rows.append({"id": p.id, "lang": p.lang, "prompt": p.text, "answer": g.text,
                     "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                     "finish_reason": g.finish_reason, "chat_template": g.chat_template,
                     **({"sources": sources} if sources else {})})
    step = opts.name or opts.stage
    with ctx.ws.create("generations", ctx.artifact_name(step), parents=[(record.id, "generated_by")],
                       config=opts.model_dump(), meta={"model": record.ref, "count": len(rows), "runtime": runtime,
                                                       "pipeline_id": ctx.pipeline_id}) as draft:
        draft.write_text("answers.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        ran = f"{runtime['backend']}" + (f", {runtime['gguf']}" if runtime.get("gguf") else "")
        md = [f"# Answers of {record.ref}\n", f"Run with {ran}.\n"]
        for r in rows:
            md.append(f"## {r['prompt']}\n\n{r['answer']}\n")
        draft.write_text("answers.md", "\n".join(md))
    return [draft.record]


register("stage", "generate")(StageDef("generate", GenerateOptions, _run, "answer prompts with a model"))
