"""The model runtime: a catalog record -> its base and adapters -> a loaded model that answers.

Serve, evaluate, generate, agents, merge and the knowledge base run models only through
this module (and `models.prompts` for prompt rendering), so they load the same weights, send
the same token ids for the same messages and obey the same context-length rule. Two backends
run the weights: transformers (`LoadedModel`, the default) and llama.cpp (`models.llamacpp.LlamaModel`,
a GGUF on the CPU); both have the surface of `PromptFace`.

    runnable = resolve(ws, ws.catalog.get_artifact("fach-llm"), purpose="serving")  # policy-checked, audited
    loaded = load(runnable)                        # cached per process; backend="llama.cpp" for a GGUF
    [answer] = loaded.generate([messages], GenerationOptions(max_new_tokens=64))
"""

from __future__ import annotations

import threading
import typing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models import prompts
from kifabrik.models.structured import Constraint
from kifabrik.workspace import Workspace

if TYPE_CHECKING:
    from kifabrik.models.gguf_convert import GgufType
    from kifabrik.models.llamacpp import LlamaModel


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate, shared by every face (recipe `generate`, evaluation tasks, serve, agents)."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy decoding (reproducible)
    seed: int = 0
    stop: tuple[str, ...] = ()  # the answer is cut before the first of these strings
    top_p: float = 1.0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


def recorded_base(ws: Workspace, record: ArtifactRecord) -> ArtifactRecord | None:
    """The model `record` was trained or merged on (its `base_model` edge, else `meta.base_model_id`); None if none."""
    bases = [e.parent_id for e in ws.catalog.edges(child=record.id) if e.relation == "base_model"]
    base_id = bases[0] if bases else record.meta.get("base_model_id")
    return ws.catalog.get_artifact(base_id, "model") if base_id else None


def base_of(ws: Workspace, adapter: ArtifactRecord) -> ArtifactRecord:
    """The base model an adapter runs on; raises when none is recorded."""
    base = recorded_base(ws, adapter)
    if base is None:
        raise KifabrikError(f"adapter {adapter.ref} has no recorded base model",
                            hint="adapters made by `kifabrik train` or `kifabrik merge` record it")
    return base


@dataclass(frozen=True)
class Runnable:
    """What must be loaded to run a record: a base model folder and the adapters on top of it."""

    record: ArtifactRecord  # the model or adapter that runs (what policies are checked against)
    base: ArtifactRecord
    path: Path  # the base model's folder
    adapters: tuple[tuple[str, Path], ...]  # (adapter name, folder)
    fach_llm: ArtifactRecord | None = None  # when a Fach-LLM (model + knowledge base) was asked for

    @property
    def knowledge(self) -> tuple[str, int, float | None] | None:
        """(knowledge base id, passages per answer, min_score) of a Fach-LLM; None for a plain model."""
        if self.fach_llm is None:
            return None
        m = self.fach_llm.meta
        return str(m["kb_id"]), int(m.get("k") or 3), m.get("min_score")

    @property
    def dtype(self) -> str:
        """The precision a Fach-LLM was measured and is served with (its record's `dtype`); else `auto`."""
        return str((self.fach_llm.meta if self.fach_llm is not None else {}).get("dtype") or "auto")

    @property
    def trust_remote_code(self) -> bool:
        return bool(self.base.meta.get("trust_remote_code")
                    or self.base.manifest.get("config", {}).get("trust_remote_code"))


def resolve(ws: Workspace, record: ArtifactRecord, *, purpose: str | None = None, actor: str = "cli") -> Runnable:
    """Check cheaply (record kind, files, base) what running `record` needs, before any weights load.

    Args:
        purpose: What the model is run for (`serving` to answer prompts, `evaluation`, ...): the usage
            policies along its lineage must permit it (`policy.require`: raises `PolicyDenied`, and every
            decision is audited). Of a Fach-LLM the model part is checked here; its knowledge base's
            passages are checked one by one at retrieval. Only callers that check for themselves leave it out.
        actor: Who asks, for the audit log.
    """
    runnable = _resolve(ws, record)
    if purpose is not None:
        from kifabrik.policy import require

        require(ws, [runnable.record.id], purpose, actor=actor)
    return runnable


def _resolve(ws: Workspace, record: ArtifactRecord) -> Runnable:
    from kifabrik.models.sources import model_path

    if record.kind == "fach-llm":  # model + knowledge base: the model part runs, the caller grounds
        inner = _resolve(ws, ws.catalog.get_artifact(record.meta["model_id"]))
        return Runnable(inner.record, inner.base, inner.path, inner.adapters, fach_llm=record)
    if record.kind == "model":
        base, adapters = record, ()
    elif record.kind == "adapter":
        folder = ws.path(record)
        if not (folder / "adapter_config.json").exists():
            raise KifabrikError(f"adapter {record.ref}: adapter_config.json is missing in {folder}",
                                hint=f"check it with `kifabrik verify {record.ref}`")
        base, adapters = base_of(ws, record), ((record.name, folder),)
    else:
        raise KifabrikError(f"{record.ref} is a {record.kind}; a model, an adapter or a Fach-LLM is needed",
                            hint="list them with `kifabrik models list` and `kifabrik adapters list`")
    path = model_path(ws, base)
    if not path.exists():
        raise KifabrikError(f"model {base.ref}: its folder {path} is missing", hint=f"kifabrik verify {base.ref}")
    return Runnable(record, base, path, adapters)


def runnable_with_adapters(ws: Workspace, base: ArtifactRecord, adapters: Sequence[tuple[str, ArtifactRecord]]) -> Runnable:
    """One base with several named adapters (a server that serves them side by side)."""
    from kifabrik.models.sources import model_path

    return Runnable(base, base, model_path(ws, base), tuple((name, ws.path(rec)) for name, rec in adapters))


class PromptFace:
    """What every backend's loaded model shares: the one prompt path over its tokenizer, grammars, `generate`.

    A subclass gives `tokenizer`, `context_length`, `eos_ids`, `vocab_size` and `generate_ids`.
    """

    tokenizer: Any
    context_length: int
    eos_ids: set[int]
    #: Which engine runs the weights (`transformers` or `llama.cpp`), recorded with what it produced.
    backend: str = "transformers"

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else min(self.eos_ids, default=0)

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def render(self, messages: prompts.Messages, *, generation_prompt: bool = True) -> str:
        return prompts.render(self.tokenizer, messages, generation_prompt=generation_prompt)

    def chat_ids(self, messages: prompts.Messages, tools: list[dict[str, Any]] | None = None, prefill: str = "") -> list[int]:
        return prompts.chat_ids(self.tokenizer, messages, tools=tools, prefill=prefill)

    def text_ids(self, text: str) -> list[int]:
        return prompts.text_ids(self.tokenizer, text)

    def prompt_ids(self, prompt: str | prompts.Messages) -> list[int]:
        """Chat ids for a conversation; raw-completion ids for a plain string."""
        return self.text_ids(prompt) if isinstance(prompt, str) else self.chat_ids(prompt)

    def grammar(self, constraint: Constraint) -> Any:
        """`constraint` compiled for this model's tokenizer (cached); raises `structured.UnsupportedSchema`."""
        from kifabrik.models.structured import compile_constraint

        return compile_constraint(self.tokenizer, self.vocab_size, sorted(self.eos_ids), constraint)

    def generate(self, prompt_list: Sequence[str | prompts.Messages], opts: GenerationOptions, *,
                 batch_size: int = 8, prefill: str = "", constraint: Constraint | None = None,
                 progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Answer prompts (conversations, or raw strings as completions), in batches of `batch_size`."""
        encoded = [self.prompt_ids(p) if not prefill or isinstance(p, str) else self.chat_ids(p, prefill=prefill)
                   for p in prompt_list]
        return self.generate_ids(encoded, opts, batch_size=batch_size, constraint=constraint, progress=progress)

    def generate_ids(self, encoded: Sequence[list[int]], opts: GenerationOptions, *, batch_size: int = 8,
                     constraint: Constraint | None = None,
                     progress: Callable[[int], None] | None = None) -> list[Completion]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What ran the model, for the records of what it produced (evaluations, generations)."""
        return {"backend": self.backend}


@dataclass
class LoadedModel(PromptFace):
    """A model + tokenizer (+ adapters) in memory with transformers, with the one prompt and context rule."""

    runnable: Runnable
    model: Any
    tokenizer: Any
    context_length: int
    eos_ids: set[int] = field(default_factory=set)

    @property
    def vocab_size(self) -> int:
        """Width of the model's logits (what a token mask must cover; may exceed the tokenizer's vocabulary)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    def describe(self) -> dict[str, Any]:
        param = next(self.model.parameters(), None)
        return {"backend": "transformers", "device": str(getattr(self.model, "device", "cpu")),
                "dtype": str(param.dtype).removeprefix("torch.") if param is not None else None}

    def generate_ids(self, encoded: Sequence[list[int]], opts: GenerationOptions, *, batch_size: int = 8,
                     constraint: Constraint | None = None,
                     progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Answer token-id prompts, batched with left padding; with `constraint`, every answer follows it
        (`models.structured`)."""
        import torch

        grammar = self.grammar(constraint) if constraint is not None else None
        encoded = [prompts.fit_prompt(list(e), self.context_length, opts.max_new_tokens) for e in encoded]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths pad little
        out: list[Completion | None] = [None] * len(encoded)
        sample = opts.temperature > 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: generation continues at the right edge
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            torch.manual_seed(opts.seed + start)
            extra: dict[str, Any] = {}
            if grammar is not None:
                from transformers import LogitsProcessorList

                from kifabrik.models.structured import ConstrainedLogits, Matcher

                extra["logits_processor"] = LogitsProcessorList([ConstrainedLogits([Matcher(grammar) for _ in idx])])
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                          max_new_tokens=opts.max_new_tokens, do_sample=sample,
                                          temperature=opts.temperature if sample else None,
                                          top_p=opts.top_p if sample else None, top_k=None, pad_token_id=self.pad_id,
                                          **extra)
            for row, i in enumerate(idx):
                new = [int(t) for t in gen[row, width:]]
                stopped = False
                while new and new[-1] in self.eos_ids | {self.pad_id}:  # padding after an early end
                    new.pop()
                    stopped = True
                text = str(self.tokenizer.decode(new, skip_special_tokens=True))
                cut = min((text.find(s) for s in opts.stop if s and s in text), default=-1)
                if cut >= 0:
                    text, stopped = text[:cut], True
                out[i] = Completion(text.strip(), len(encoded[i]), len(new),
                                    "stop" if stopped or len(new) < opts.max_new_tokens else "length")
            if progress:
                progress(len(idx))
        return [c for c in out if c is not None]


#: A loaded model of either backend (the surface of `PromptFace`).
Loaded = typing.Union[LoadedModel, "LlamaModel"]  # a forward reference: llama.cpp's module loads lazily

# --------------------------------------------------------------------------- loading, cached per process

_CACHE: OrderedDict[tuple[Any, ...], Loaded] = OrderedDict()
_LOCK = threading.Lock()
#: Loaded models kept per process; a model that is still referenced elsewhere stays in memory anyway.
CACHE_SIZE = 3
Backend = Literal["transformers", "llama.cpp"]
#: Precision of the transformers backend's weights and compute; `auto`: what a Fach-LLM records, else float32
#: on CPUs and the stored precision on GPUs (`models.loading.load_model`).
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
BACKENDS: tuple[str, ...] = typing.get_args(Backend)


def load(runnable: Runnable, *, device: str | None = None, dtype: str = "auto", cache: bool = True,
         backend: Backend = "transformers", gguf_type: GgufType = "auto", home: Path | None = None) -> Loaded:
    """Load `runnable` (base weights, tokenizer, adapters) once per process and options.

    Args:
        cache: False gives the caller its own copy (a server that frees it on close).
        backend: `transformers` (the safetensors folder; `device`, `dtype`) or `llama.cpp` (a GGUF file on
            the CPU, `models.llamacpp.LlamaModel`: same token ids, same surface).
        gguf_type: With llama.cpp, which GGUF runs (`models.gguf_convert.gguf_for`): `auto` is the file the
            model was registered from, else an f16 conversion; `f32`/`f16` a conversion of the folder.
        home: $KIFABRIK_HOME, where GGUF conversions are cached (default: from the environment).
        dtype: `auto` runs a Fach-LLM in the precision its record states (so evaluation and serving run
            alike), anything else in the stored precision on GPUs and float32 on CPUs.
    """
    if backend not in BACKENDS:
        raise KifabrikError(f"backend {backend!r} is not known", hint=f"use one of {', '.join(BACKENDS)}")
    if dtype == "auto":
        dtype = runnable.dtype
    key = (str(runnable.path), runnable.adapters, device, dtype) + ((backend, gguf_type) if backend != "transformers" else ())
    with _LOCK:
        if cache and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        loaded: Loaded
        if backend == "llama.cpp":
            from kifabrik.config import Settings
            from kifabrik.models.llamacpp import LlamaModel

            loaded = LlamaModel(runnable, home=home or Settings.from_env().home, gguf_type=gguf_type)
        else:
            loaded = _load(runnable, device=device, dtype=dtype)
        if cache:
            _CACHE[key] = loaded
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        return loaded


def load_record(ws: Workspace, record: ArtifactRecord, *, device: str | None = None) -> LoadedModel:
    """`load(resolve(ws, record))`."""
    return load(resolve(ws, record), device=device)  # type: ignore[return-value]  # transformers by default


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def _load(runnable: Runnable, *, device: str | None, dtype: str) -> LoadedModel:
    from kifabrik.models.loading import load_model, load_tokenizer

    trust = runnable.trust_remote_code
    tokenizer = load_tokenizer(runnable.path, trust_remote_code=trust)
    model = load_model(runnable.path, trust_remote_code=trust, device=device, dtype=dtype)
    if runnable.adapters:
        model = attach_adapters(model, runnable.adapters, base_ref=runnable.base.ref)
    return LoadedModel(runnable, model, tokenizer, prompts.context_length(runnable.base.meta, model.config),
                       prompts.eos_ids(model, tokenizer))


def attach_adapters(model: Any, adapters: Sequence[tuple[str, Path]], *, base_ref: str, trainable: bool = False) -> Any:
    """Wrap `model` in one `PeftModel` holding every adapter under its name (the first one active)."""
    import warnings

    from peft import PeftModel

    (first_name, first_path), rest = adapters[0], adapters[1:]
    # PEFT asks transformers 5 for renamed attributes (`is_gradient_checkpointing`); nothing the user can act on
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6", category=FutureWarning)
    try:
        peft_model = PeftModel.from_pretrained(model, str(first_path), adapter_name=first_name, is_trainable=trainable)
        for name, path in rest:
            peft_model.load_adapter(str(path), adapter_name=name)
    except Exception as exc:
        raise KifabrikError(f"cannot apply adapter(s) {', '.join(n for n, _ in adapters)} to {base_ref} "
                            f"({type(exc).__name__}: {exc})",
                            hint="was it trained on this base model? check it with `kifabrik verify ADAPTER`") from None
    return peft_model.eval() if not trainable else peft_model


def load_weights(ws: Workspace, base: ArtifactRecord, *, device: str | None = None, dtype: str = "auto") -> Any:
    """A fresh, uncached copy of a base model's weights, for callers that change them (merge, train)."""
    from kifabrik.models.loading import load_model
    from kifabrik.models.sources import model_path

    return load_model(model_path(ws, base), trust_remote_code=bool(base.meta.get("trust_remote_code")),
                      device=device, dtype=dtype)


def load_tokenizer_of(ws: Workspace, base: ArtifactRecord) -> Any:
    from kifabrik.models.loading import load_tokenizer
    from kifabrik.models.sources import model_path

    return load_tokenizer(model_path(ws, base), trust_remote_code=bool(base.meta.get("trust_remote_code")))
