"""What an evaluation talks to: a local model (base, merged, or base + PEFT adapter) or an endpoint.

Both answer the same two questions: log-likelihoods of choices (multiple choice) and
generated answers. `open_target` checks everything cheap first (the record exists, its files
are there, an adapter's base is known) so that a bad target fails before compute is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.evaluate.loglik import ChoiceScore, Mode
from kifabrik.models.prompts import fallback_text
from kifabrik.models.runtime import GenerationOptions, Loaded
from kifabrik.workspace import Workspace

Messages = list[dict[str, str]]
#: Generation options are the runtime's one type (max_new_tokens, temperature, seed, stop, top_p).
GenOptions = GenerationOptions


class Backend(Protocol):
    name: str
    kind: str  # "model" | "adapter" | "endpoint"
    record: ArtifactRecord | None

    def loglikelihoods(self, items: Sequence[tuple[str | Messages, list[str]]], *, chat: bool, delimiter: str,
                       progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]: ...

    def generate(self, prompts: Sequence[str | Messages], opts: GenOptions, *, chat: bool,
                 progress: Callable[[int], None] | None = None) -> list[str]:
        """Answers to conversations (or, for a plain string, a raw completion of that text)."""


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


@dataclass
class LocalBackend:
    """A model of the runtime (base, merged, or base + PEFT adapter applied on the fly, never merged).

    On llama.cpp (`loaded.backend`), choices are scored from llama.cpp's logits (`LlamaModel.loglikelihoods`:
    the same requests, the context decoded once per item); the prefix-sharing self-check is transformers'.
    """

    name: str
    kind: str
    record: ArtifactRecord | None
    loaded: Loaded
    mode: Mode = "shared"
    batch_tokens: int = 4096
    gen_batch: int = 8
    notes: list[str] = field(default_factory=list)
    grounding: Any = None  # a Fach-LLM's knowledge base (`kb.grounding.Grounding`); None for a plain model

    @property
    def model(self) -> Any:
        return getattr(self.loaded, "model", None)

    def describe(self) -> dict[str, Any]:
        """What ran the model (backend; with llama.cpp the GGUF file, its type and quantisation)."""
        return self.loaded.describe()

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def max_length(self) -> int:
        return self.loaded.context_length

    def render(self, prompt: str | Messages, chat: bool, *, generation_prompt: bool = True) -> str:
        if isinstance(prompt, str):
            return prompt
        if chat:
            return self.loaded.render(prompt, generation_prompt=generation_prompt)
        return fallback_text(prompt, generation_prompt=generation_prompt)

    def loglikelihoods(self, items: Sequence[tuple[str | Messages, list[str]]], *, chat: bool, delimiter: str,
                       progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
        from kifabrik.evaluate.loglik import build_request, score

        reqs = [build_request(self.tokenizer, self.render(p, chat), [delimiter + c for c in choices], self.max_length())
                for p, choices in items]
        if self.loaded.backend == "llama.cpp":
            rows = self.loaded.loglikelihoods(reqs, progress=progress)  # type: ignore[union-attr]
            return [[ChoiceScore(*s) for s in row] for row in rows]
        if self.mode == "shared" and reqs and not self._shared_ok(reqs[0]):
            self.mode = "naive"
            self.notes.append("prefix sharing disagreed with the per-choice computation on this model; "
                              "fell back to scoring each choice separately")
        return score(self.model, reqs, mode=self.mode, batch_tokens=self.batch_tokens, progress=progress)

    def _shared_ok(self, req: Any) -> bool:
        """Self-check once per backend: the shared-prefix scores must equal the per-choice ones."""
        from kifabrik.evaluate.loglik import score

        a = score(self.model, [req], mode="shared")[0]
        b = score(self.model, [req], mode="naive")[0]
        tol = 1e-3 if str(next(self.model.parameters()).dtype) == "torch.float32" else 5e-2
        return all(abs(x.loglik - y.loglik) <= tol * max(1.0, abs(y.loglik)) for x, y in zip(a, b, strict=True))

    def generate(self, prompts: Sequence[str | Messages], opts: GenOptions, *, chat: bool,
                 progress: Callable[[int], None] | None = None) -> list[str]:
        # chat=False sends a conversation as plain fallback text (a raw completion of it)
        if self.grounding is not None and chat and all(not isinstance(p, str) for p in prompts):
            answers = self.grounding.answer(self.loaded, prompts, opts, batch_size=self.gen_batch, progress=progress)
            return [a.text for a in answers]
        sendable = [p if chat or isinstance(p, str) else fallback_text(p) for p in prompts]
        done = self.loaded.generate(sendable, opts, batch_size=self.gen_batch, progress=progress)
        return [c.text for c in done]


@dataclass
class EndpointBackend:
    """An OpenAI-compatible server: /v1/chat/completions for answers, /v1/completions for log-likelihoods."""

    name: str
    base_url: str
    model_name: str
    api_key: str | None = None
    timeout: float = 120.0
    kind: str = "endpoint"
    record: ArtifactRecord | None = None
    notes: list[str] = field(default_factory=list)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from kifabrik.models.http import post_json

        return post_json(self.base_url.rstrip("/") + path, body, api_key=self.api_key, timeout=self.timeout)

    def generate(self, prompts: Sequence[str | Messages], opts: GenOptions, *, chat: bool,
                 progress: Callable[[int], None] | None = None) -> list[str]:
        out = []
        for i, prompt in enumerate(prompts):
            body: dict[str, Any] = {"model": self.model_name, "max_tokens": opts.max_new_tokens,
                                    "temperature": opts.temperature, "seed": opts.seed + i}
            if opts.stop:
                body["stop"] = list(opts.stop)[:4]
            raw = isinstance(prompt, str)  # a raw completion (memorisation probes) goes to /completions
            body["prompt" if raw else "messages"] = prompt
            data = self._post("/completions" if raw else "/chat/completions", body)
            try:
                choice = data["choices"][0]
                text = (choice["text"] if raw else choice["message"]["content"]) or ""
            except (KeyError, IndexError, TypeError):
                raise KifabrikError(f"{self.base_url}: unexpected chat completion response: {str(data)[:200]}") from None
            out.append(cut_at_stop(text, opts.stop).strip())
            if progress:
                progress(1)
        return out

    def loglikelihoods(self, items: Sequence[tuple[str | Messages, list[str]]], *, chat: bool, delimiter: str,
                       progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
        results = []
        for prompt, choices in items:
            context = prompt if isinstance(prompt, str) else fallback_text(prompt)
            row = []
            for choice in choices:
                row.append(self._score(context, delimiter + choice))
            results.append(row)
            if progress:
                progress(1)
        return results

    def _score(self, context: str, continuation: str) -> ChoiceScore:
        body = {"model": self.model_name, "prompt": context + continuation, "max_tokens": 0, "echo": True,
                "logprobs": 1, "temperature": 0}
        try:
            data = self._post("/completions", body)
            lp = data["choices"][0]["logprobs"]
            offsets, token_lps, tops = lp["text_offset"], lp["token_logprobs"], lp.get("top_logprobs")
        except (KifabrikError, KeyError, IndexError, TypeError) as exc:
            raise KifabrikError(
                f"{self.base_url}: this endpoint cannot score multiple choice (no prompt log-probabilities from "
                f"/v1/completions with echo=true, logprobs=1: {exc})",
                hint="multiple-choice tasks need a server that returns prompt logprobs (e.g. vLLM); "
                     "run generation or judge tasks against this endpoint, or evaluate the model locally") from None
        start = len(context)
        idx = [i for i, off in enumerate(offsets) if off >= start]
        if not idx or any(token_lps[i] is None for i in idx):
            raise KifabrikError(f"{self.base_url}: the echoed log-probabilities do not cover the answer tokens",
                                hint="multiple-choice needs prompt logprobs; evaluate the model locally instead")
        total = float(sum(token_lps[i] for i in idx))
        greedy = bool(tops) and all(
            tops[i] and max(tops[i].values()) <= token_lps[i] + 1e-6 for i in idx)
        return ChoiceScore(total, greedy, len(idx))


def open_target(ws: Workspace | None, ref: str, *, endpoint_model: str | None = None, api_key: str | None = None,
                mode: Mode = "shared", device: str | None = None, actor: str = "cli", backend: str = "transformers",
                gguf_type: str = "auto", dtype: str = "auto") -> Backend:
    """A backend for `ref`: an http(s) URL, or a registered model / adapter (name, name@version or id).

    `backend`, `gguf_type` and `dtype` choose what runs a registered model (`models.runtime.load`).

    A registered model (the one evaluated, a baseline or a judge) runs only where the usage policies
    along its lineage permit `evaluation` (raises `PolicyDenied`; audited).
    """
    if ref.startswith(("http://", "https://")):
        return EndpointBackend(name=f"{endpoint_model or 'default'}@{ref}", base_url=ref,
                               model_name=endpoint_model or "default", api_key=api_key)
    if ws is None:
        raise KifabrikError(f"{ref}: a registered model needs a workspace")
    from kifabrik.kb.grounding import Grounding
    from kifabrik.models.runtime import load, resolve

    record = ws.catalog.get_artifact(ref)
    if record.kind not in ("model", "adapter", "fach-llm"):
        raise KifabrikError(f"{record.ref} is a {record.kind}; evaluation needs a model, an adapter, a Fach-LLM or an "
                            "endpoint URL", hint="list models with `kifabrik models list`")
    runnable = resolve(ws, record, purpose="evaluation", actor=actor)
    loaded = load(runnable, device=device, backend=backend, gguf_type=gguf_type,  # type: ignore[arg-type]
                  dtype=dtype, home=ws.settings.home)
    return LocalBackend(name=record.ref, kind=record.kind, record=record, loaded=loaded, mode=mode,
                        grounding=Grounding.of(ws, runnable, purpose="serving", actor="evaluate"))
