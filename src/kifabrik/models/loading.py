"""Loading registered models with transformers (safetensors only, local files only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kifabrik.errors import KifabrikError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def quiet_transformers() -> None:
    """transformers' own tqdm bars would interleave with kifabrik's progress display."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def best_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16).

    Elsewhere torch emulates bfloat16 matmuls, about four times slower than float32 (measured on a
    2-core AVX-512 Xeon without BF16: a 8 x 576 x 1536 matmul 0.23 s vs 0.055 s for 200 calls).
    """
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if check is not None)


def cpu_dtype(dtype: str, device: str) -> str:
    """The precision a model actually runs in: bfloat16 on a CPU that only emulates it becomes float32.

    Said once on stderr; what ran is recorded where results are (evaluation records the parameters'
    dtype), so a measurement names the precision it was made in.
    """
    if dtype == "bfloat16" and device == "cpu" and not native_cpu_bf16():
        _say_once("bfloat16 on this CPU is emulated (no AMX or AVX-512 BF16) and about four times slower than "
                  "float32: running in float32 (what runs is recorded)")
        return "float32"
    return dtype


_SAID: set[str] = set()


def _say_once(text: str) -> None:
    from kifabrik.progress import info

    if text not in _SAID:
        _SAID.add(text)
        info(text)


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise KifabrikError(f"{path}: cannot load the tokenizer ({type(exc).__name__}: {exc})",
                            hint="check the folder with `kifabrik verify MODEL`") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # batching needs a pad token; eos is the usual stand-in
    return tok


def load_model(path: Path, *, trust_remote_code: bool = False, dtype: str = "auto",
               device: str | None = None) -> PreTrainedModel:
    """Load a causal LM from a model folder.

    `dtype="auto"` keeps the stored precision on GPUs and uses float32 on CPUs, where
    half-precision matmuls are slow or missing; bfloat16 asked on a CPU that only emulates it runs
    in float32 (`cpu_dtype`).
    """
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    device = device or best_device()
    dtype = cpu_dtype(dtype, device)
    torch_dtype: Any = torch.float32 if (dtype == "auto" and device == "cpu") else (
        "auto" if dtype == "auto" else getattr(torch, dtype))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code, dtype=torch_dtype)
    except Exception as exc:
        raise KifabrikError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})",
                            hint="check the folder with `kifabrik verify MODEL`") from None
    return model.to(device).eval()  # type: ignore[arg-type]  # transformers' stub types .to() oddly


def causal_lm(model: Any) -> Any:
    """The transformers CausalLM inside a PEFT wrapper (LoRA layers stay active, nothing is merged)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_logits(model: Any, hidden: Any) -> Any:
    """The output head on final hidden states (after the decoder's last norm), as the CausalLM's forward applies it.

    For callers that run the decoder themselves and need logits only at some positions.
    """
    import torch

    lm = causal_lm(model)
    logits = lm.get_output_embeddings()(hidden)
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:  # Gemma-style soft-capping happens in the CausalLM's forward, which such callers bypass
        logits = torch.tanh(logits / cap) * cap
    return logits
