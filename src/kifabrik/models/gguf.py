"""GGUF files: validate, then convert once to a safetensors folder.

transformers dequantises a GGUF on every load (~30 s for 135M parameters on 2 cores) and
a model loaded from GGUF keeps a `quantization_config` that stops `save_pretrained`.
So the weights are copied into a fresh model built `from_config` without it and saved
as safetensors; later loads take seconds.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

from kifabrik.errors import KifabrikError

MAGIC = b"GGUF"


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Check that `path` is a complete GGUF file and return a few header fields.

    Raises:
        KifabrikError: missing, not GGUF, or truncated (tensor data past the end of file).
    """
    if not path.is_file():
        raise KifabrikError(f"{path}: no such file", hint="check the path of the .gguf file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != MAGIC:
        raise KifabrikError(f"{path}: not a GGUF file (it starts with {magic!r}, not {MAGIC!r})",
                            hint="give a .gguf model file, or a Hugging Face folder")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # the reader raises ValueError/IndexError/struct errors on damage
        raise KifabrikError(f"{path}: damaged or truncated GGUF file ({type(exc).__name__}: {exc})",
                            hint="download the file again; its size or checksum does not match the original") from None
    size = os.path.getsize(path)
    if end > size:
        raise KifabrikError(f"{path}: truncated GGUF file ({size} bytes, tensor data needs {end})",
                            hint="download the file again")

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        if f is None or not f.data:
            return None
        value = f.parts[f.data[0]]
        return bytes(value).decode("utf-8", "replace") if value.dtype.kind == "u" and value.dtype.itemsize == 1 else value.tolist()[0]

    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "license": field("general.license"),
        "tensors": len(reader.tensors),
        "quantization": FILE_TYPES.get(field("general.file_type")),  # type: ignore[arg-type]
    }


#: `general.file_type` (llama.cpp's `llama_ftype`) -> the name llama.cpp's tools use.
FILE_TYPES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k", 12: "q3_k_m",
              14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s", 17: "q5_k_m", 18: "q6_k", 32: "bf16"}


def convert_gguf(path: Path, out_dir: Path, *, dtype: str = "float32") -> None:
    """Dequantise `path` into a safetensors model folder `out_dir` (weights + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kifabrik.models.loading import quiet_transformers

    quiet_transformers()

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    folder, name = str(path.parent), path.name
    # transformers' GGUF reader draws its own tqdm bar under kifabrik's progress display; silence it.
    own_bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(own_bar, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    except Exception as exc:
        raise KifabrikError(f"{path}: transformers cannot load this GGUF ({type(exc).__name__}: {exc})",
                            hint="transformers supports GGUF for llama, mistral, qwen2, gemma3 and a few more architectures") from None
    finally:
        gguf_utils.tqdm = own_bar
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
