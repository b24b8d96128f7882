"""llama.cpp's C API through `llama-cpp-python`: one model + context of many sequences, and its quantiser.

The binding is `llama-cpp-python` (pinned below), built from its sdist because PyPI has no CPU
wheel; `make llama-cpp` builds the wheel once into `~/.cache/kifabrik/wheels` and installs it.
Everything that calls the binding is here: the runtime's `llamacpp.LlamaModel` and the served
llama.cpp backend decode through `LlamaContext`, `kifabrik export --quant` quantises with `quantize`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError

#: The binding version the Makefile builds (0.3.36 vendors the llama.cpp whose API this module calls).
LLAMA_CPP_PIN = "llama-cpp-python==0.3.36"


def require_llama_cpp() -> None:
    """Raise with the install command when the binding is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise KifabrikError(
            "the llama.cpp backend needs llama-cpp-python, which is not installed",
            hint="run `make llama-cpp` (builds its wheel once, ~40 minutes on 2 cores, then reuses it), "
                 "or use --backend transformers")


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

    def save(self, seq: int) -> Any:
        """The state of sequence `seq` (its KV cells and their positions) as a byte buffer, for `restore`."""
        import ctypes

        size = int(self.lc.llama_state_seq_get_size(self.ctx, seq))
        buf = (ctypes.c_uint8 * size)()
        if int(self.lc.llama_state_seq_get_data(self.ctx, buf, size, seq)) != size:
            raise RuntimeError(f"llama_state_seq_get_data wrote less than {size} bytes of sequence {seq}")
        return buf

    def restore(self, seq: int, state: Any) -> bool:
        """Put a `save`d state into the empty sequence `seq`; False if llama.cpp refuses it (no room)."""
        return int(self.lc.llama_state_seq_set_data(self.ctx, state, len(state), seq)) != 0

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
