"""What an evaluation talks to: a local model (base, merged, or base + PEFT adapter) or an endpoint.

Both answer the same two questions: log-likelihoods of choices (multiple choice) and
generated answers. `open_target` checks everything cheap first (the record exists, its files
are there, an adapter's base is known) so that a bad target fails before compute is spent.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.evaluate.loglik import ChoiceScore, Mode
from kifabrik.workspace import Workspace

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class GenOptions:
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()


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


def plain_prompt(messages: Messages) -> str:
    """A conversation as plain text for models without a chat template."""
    return "\n\n".join(m["content"] for m in messages)


@dataclass
class LocalBackend:
    """A transformers model, optionally with a PEFT adapter applied on the fly (never merged)."""

    name: str
    kind: str
    record: ArtifactRecord | None
    model: Any
    tokenizer: Any
    mode: Mode = "shared"
    batch_tokens: int = 4096
    gen_batch: int = 8
    notes: list[str] = field(default_factory=list)

    def max_length(self) -> int:
        from kifabrik.evaluate.loglik import causal_lm

        cfg = causal_lm(self.model).config
        return int(getattr(cfg, "max_position_embeddings", None) or 2048)

    def render(self, prompt: str | Messages, chat: bool, *, generation_prompt: bool = True) -> str:
        if isinstance(prompt, str):
            return prompt
        if chat and getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(prompt, add_generation_prompt=generation_prompt, tokenize=False))
        return plain_prompt(prompt)

    def loglikelihoods(self, items: Sequence[tuple[str | Messages, list[str]]], *, chat: bool, delimiter: str,
                       progress: Callable[[int], None] | None = None) -> list[list[ChoiceScore]]:
        from kifabrik.evaluate.loglik import build_request, score

        reqs = [build_request(self.tokenizer, self.render(p, chat), [delimiter + c for c in choices], self.max_length())
                for p, choices in items]
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
        import torch

        tok = self.tokenizer
        texts = [self.render(p, chat) for p in prompts]
        templated = chat and bool(getattr(tok, "chat_template", None))
        encoded = [tok.encode(t, add_special_tokens=not templated) for t in texts]
        limit = max(8, self.max_length() - opts.max_new_tokens)
        encoded = [e[-limit:] for e in encoded]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths pad little
        out: list[str] = [""] * len(encoded)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        sample = opts.temperature > 0
        for start in range(0, len(order), self.gen_batch):
            idx = order[start:start + self.gen_batch]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: generation continues at the right edge
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            torch.manual_seed(opts.seed + start)
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                          max_new_tokens=opts.max_new_tokens, do_sample=sample,
                                          temperature=opts.temperature if sample else None,
                                          top_p=None, top_k=None, pad_token_id=pad)
            for row, i in enumerate(idx):
                text = str(tok.decode(gen[row, width:], skip_special_tokens=True))
                out[i] = cut_at_stop(text, opts.stop).strip()
            if progress:
                progress(len(idx))
        return out


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
        url = self.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the user names the URL
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise KifabrikError(f"{url}: HTTP {exc.code}: {detail}", hint="check the endpoint URL, model name and API key") from None
        except (urllib.error.URLError, OSError) as exc:
            raise KifabrikError(f"{url}: cannot reach the endpoint ({exc})", hint="is the server running?") from None

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
            context = prompt if isinstance(prompt, str) else plain_prompt(prompt)
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
                mode: Mode = "shared", device: str | None = None) -> Backend:
    """A backend for `ref`: an http(s) URL, or a registered model / adapter (name, name@version or id)."""
    if ref.startswith(("http://", "https://")):
        return EndpointBackend(name=f"{endpoint_model or 'default'}@{ref}", base_url=ref,
                               model_name=endpoint_model or "default", api_key=api_key)
    if ws is None:
        raise KifabrikError(f"{ref}: a registered model needs a workspace")
    record = ws.catalog.get_artifact(ref)
    if record.kind not in ("model", "adapter"):
        raise KifabrikError(f"{record.ref} is a {record.kind}; evaluation needs a model, an adapter or an endpoint URL",
                            hint="list models with `kifabrik models list`")
    base = resolve_base(ws, record) if record.kind == "adapter" else record
    return load_local(ws, record, base, mode=mode, device=device)


def resolve_base(ws: Workspace, adapter: ArtifactRecord) -> ArtifactRecord:
    """The base model of an adapter, after checking that the adapter's files are there."""
    from kifabrik.models.adapters import base_of

    adapter_dir = ws.path(adapter)
    if not (adapter_dir / "adapter_config.json").exists():
        raise KifabrikError(f"adapter {adapter.ref}: adapter_config.json is missing in {adapter_dir}",
                            hint=f"check it with `kifabrik verify {adapter.ref}`")
    return base_of(ws, adapter)


def load_local(ws: Workspace, record: ArtifactRecord, base: ArtifactRecord, *, mode: Mode = "shared",
               device: str | None = None) -> LocalBackend:
    from kifabrik.models.loading import load_model, load_tokenizer
    from kifabrik.models.sources import model_path

    path = model_path(ws, base)
    if not path.exists():
        raise KifabrikError(f"model {base.ref}: its folder {path} is missing", hint=f"kifabrik verify {base.ref}")
    trust = bool(base.meta.get("trust_remote_code"))
    tokenizer = load_tokenizer(path, trust_remote_code=trust)
    model = load_model(path, trust_remote_code=trust, device=device)
    if record.kind == "adapter":
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(ws.path(record)), is_trainable=False).eval()
        except Exception as exc:
            raise KifabrikError(f"adapter {record.ref}: cannot apply it to {base.ref} ({type(exc).__name__}: {exc})",
                                hint="was it trained on this base model?") from None
    return LocalBackend(name=record.ref, kind=record.kind, record=record, model=model, tokenizer=tokenizer, mode=mode)
