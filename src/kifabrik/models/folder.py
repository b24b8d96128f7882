"""Facts about a Hugging Face model folder, read without loading the weights."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import yaml

from kifabrik.errors import KifabrikError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KifabrikError(f"{path}: not valid JSON ({exc})", hint="the model folder is damaged; download it again") from None


def safetensors_parameters(path: Path) -> tuple[int, dict[str, str]]:
    """(number of values, dtypes by tensor) from a safetensors header; no weights are read."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise KifabrikError(f"{path}: truncated safetensors file", hint="download the file again")
        (size,) = struct.unpack("<Q", raw)
        if size > 100_000_000:
            raise KifabrikError(f"{path}: not a safetensors file (header size {size})", hint="download the file again")
        try:
            header = json.loads(fh.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise KifabrikError(f"{path}: corrupt safetensors header", hint="download the file again") from None
    total = 0
    dtypes = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in info["shape"]:
            n *= dim
        total += n
        dtypes[name] = info["dtype"]
    return total, dtypes


def model_card_front_matter(folder: Path) -> dict[str, Any]:
    """The YAML metadata block of the folder's README.md (licence, languages), if any."""
    readme = folder / "README.md"
    if not readme.exists():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.exists():
        tpl = _read_json(cfg).get("chat_template")
        if isinstance(tpl, str):
            return tpl
        if isinstance(tpl, list):  # named templates: [{"name": ..., "template": ...}]
            return json.dumps(tpl, ensure_ascii=False)
    return None


def inspect_folder(folder: Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Validate a model folder and return the facts the model record holds.

    Raises:
        KifabrikError: no config.json, no safetensors weights (pickled weights are never
            loaded), no tokenizer, or custom code without `trust_remote_code`.
    """
    if not folder.is_dir():
        raise KifabrikError(f"{folder}: no such directory", hint="give the path of a Hugging Face model folder")
    config_path = folder / "config.json"
    if not config_path.exists():
        raise KifabrikError(f"{folder}: no config.json, so this is not a Hugging Face model folder",
                            hint="point at the folder that holds config.json and *.safetensors")
    config = _read_json(config_path)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = ("kifabrik never unpickles weights; convert them to safetensors where you trust the source "
                "(e.g. `model.save_pretrained(dir, safe_serialization=True)`)") if pickled else "download the *.safetensors files too"
        raise KifabrikError(f"{folder}: no *.safetensors weights" + (f" (found pickled {', '.join(pickled)})" if pickled else ""),
                            hint=hint)
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise KifabrikError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)})",
                            hint="save the tokenizer into the same folder (tokenizer.save_pretrained(dir))")
    auto_map = dict(config.get("auto_map") or {})
    tok_cfg = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
    auto_map.update(tok_cfg.get("auto_map") or {} if isinstance(tok_cfg.get("auto_map"), dict) else {})
    if (auto_map or list(folder.glob("*.py"))) and not trust_remote_code:
        raise KifabrikError(f"{folder}: the model needs its own Python code to load ({', '.join(sorted(auto_map)) or 'custom *.py'})",
                            hint="read that code, then register with --trust-remote-code if you trust it")
    params = 0
    for shard in shards:
        params += safetensors_parameters(shard)[0]
    text_cfg = config.get("text_config") or {}
    card = model_card_front_matter(folder)
    languages = card.get("language")
    return {
        "architecture": (config.get("architectures") or ["unknown"])[0],
        "model_type": config.get("model_type"),
        "parameters": params,
        "vocab_size": config.get("vocab_size") or text_cfg.get("vocab_size"),
        "context_length": config.get("max_position_embeddings") or text_cfg.get("max_position_embeddings"),
        "hidden_size": config.get("hidden_size") or text_cfg.get("hidden_size"),
        "num_layers": config.get("num_hidden_layers") or text_cfg.get("num_hidden_layers"),
        "dtype": config.get("dtype") or config.get("torch_dtype"),
        "chat_template": chat_template(folder),
        "license": card.get("license"),
        "languages": [languages] if isinstance(languages, str) else languages,
        "weight_files": [s.name for s in shards],
        "trust_remote_code": trust_remote_code,
    }


def weight_file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every `*.safetensors` file directly in `folder` (the files a model or adapter loads), by name."""
    from kifabrik import progress
    from kifabrik.artifacts import sha256_file

    shards = sorted(folder.glob("*.safetensors"))
    with progress.bar(f"hashing the weights in {folder.name}", sum(s.stat().st_size for s in shards),
                      bytes_=True) as advance:
        return {s.name: sha256_file(s, advance) for s in shards}


def weights_sha256(file_hashes: dict[str, str]) -> str:
    """One hash for all weight shards: sha256 over `name:sha256` lines (a single shard: its own hash)."""
    if len(file_hashes) == 1:
        return next(iter(file_hashes.values()))
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(file_hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def derived_model_facts(folder: Path, base: Any, *, source: str) -> dict[str, Any]:
    """Record facts of a model folder made from a registered base (training, merging).

    Licence and languages are inherited from the base model's record; `base` is its
    `ArtifactRecord`.
    """
    facts = inspect_folder(folder, trust_remote_code=bool(base.meta.get("trust_remote_code")))
    facts.update({"license": base.meta.get("license"), "languages": base.meta.get("languages"),
                  "source": source, "source_kind": source.split(":", 1)[0]})
    return facts
