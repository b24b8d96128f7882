"""The content-addressed artifact store.

An artifact is a directory `<store>/<id>/` where `id` is the sha256 of its content
manifest (kind, name, inputs, resolved config, and the sha256 of every file). Files are
written into a hidden temporary directory; `manifest.json` is written last and the
directory is renamed into place, so a visible artifact is always complete and a crash
leaves at most a `.tmp-*` directory behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kifabrik

MANIFEST = "manifest.json"
CHUNK = 1 << 20


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, read in 1 MiB chunks; `progress(n)` is called with each chunk size."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def hash_tree(root: Path, progress: Callable[[int], None] | None = None) -> dict[str, dict[str, Any]]:
    """`{relative/path: {"sha256", "size"}}` for every regular file below `root` but the manifest."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        files[rel] = {"sha256": sha256_file(path, progress), "size": path.stat().st_size}
    return files


def content_id(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@functools.cache
def code_version() -> dict[str, str | None]:
    """kifabrik's version and, when run from a git checkout, its commit (with `+dirty`)."""
    src = Path(kifabrik.__file__).resolve().parent
    commit = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            commit = out.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=src,
                                   capture_output=True, text=True, timeout=5)
            if dirty.returncode == 0 and dirty.stdout.strip():
                commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"kifabrik_version": kifabrik.__version__, "git_hash": commit}


@dataclass
class Draft:
    """An artifact being written. Put files under `dir`; the store publishes it on success."""

    kind: str
    name: str
    dir: Path
    inputs: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    external_root: Path | None = None
    project: str = "default"  # outside `default` part of the content, so two projects never share an id
    record: Any = None  # the catalog record, set once published

    def write_json(self, rel: str, data: Any) -> Path:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        return path

    def write_text(self, rel: str, text: str) -> Path:
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


@dataclass(frozen=True)
class Verification:
    """Outcome of re-hashing an artifact. `problems` is empty when nothing changed."""

    artifact_id: str
    files_checked: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class ArtifactStore:
    """Directories under `root`, one per artifact id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, artifact_id: str) -> Path:
        return self.root / artifact_id

    def new_draft(self, kind: str, name: str) -> Draft:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        return Draft(kind=kind, name=name, dir=tmp)

    def discard(self, draft: Draft) -> None:
        shutil.rmtree(draft.dir, ignore_errors=True)

    def publish(self, draft: Draft, progress: Callable[[int], None] | None = None) -> tuple[str, dict[str, Any], bool]:
        """Hash, write the manifest last, rename into place.

        Returns `(id, manifest, created)`; `created` is False when an identical artifact
        already existed (the draft is then discarded).
        """
        files = hash_tree(draft.dir, progress)
        external = None
        if draft.external_root is not None:
            external = {"root": str(draft.external_root), "files": hash_tree(draft.external_root, progress)}
        content = {"kind": draft.kind, "name": draft.name, "inputs": sorted(draft.inputs),
                   "config": draft.config, "files": files, "external": external}
        if draft.project != "default":
            content["project"] = draft.project
        artifact_id = content_id(content)
        manifest = {
            "id": artifact_id, **content,
            "policies": sorted(draft.policies), "meta": draft.meta,
            "created_at": datetime.now(UTC).isoformat(), **code_version(),
        }
        target = self.path(artifact_id)
        if (target / MANIFEST).exists():
            self.discard(draft)
            return artifact_id, json.loads((target / MANIFEST).read_text()), False
        mpath = draft.dir / MANIFEST
        with open(mpath, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, ensure_ascii=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists() and not (target / MANIFEST).exists():  # a leftover without manifest: incomplete
            shutil.rmtree(target)
        try:
            os.replace(draft.dir, target)
        except OSError:
            # Another process published the same content since the check above (the target is a
            # complete, non-empty directory now): keep theirs, never delete a published artifact.
            if not (target / MANIFEST).exists():
                raise
            self.discard(draft)
            return artifact_id, json.loads((target / MANIFEST).read_text()), False
        return artifact_id, manifest, True

    def verify(self, artifact_id: str, progress: Callable[[int], None] | None = None) -> Verification:
        """Re-hash every file (and every external file) and compare with the manifest."""
        root = self.path(artifact_id)
        mpath = root / MANIFEST
        if not mpath.exists():
            return Verification(artifact_id, 0, [f"{mpath}: manifest missing (the artifact is incomplete or was deleted)"])
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return Verification(artifact_id, 0, [f"{mpath}: not valid JSON ({exc})"])
        problems = []
        checked = 0
        sections = [(root, manifest.get("files", {}))]
        if manifest.get("external"):
            sections.append((Path(manifest["external"]["root"]), manifest["external"]["files"]))
        for base, expected in sections:
            actual = hash_tree(base, progress) if base.is_dir() else {}
            if not base.is_dir():
                problems.append(f"{base}: directory missing")
            for rel, info in expected.items():
                checked += 1
                if rel not in actual:
                    problems.append(f"{base / rel}: missing")
                elif actual[rel]["sha256"] != info["sha256"]:
                    problems.append(f"{base / rel}: content changed (sha256 {actual[rel]['sha256'][:12]}, "
                                    f"expected {info['sha256'][:12]})")
            for rel in sorted(set(actual) - set(expected)):
                problems.append(f"{base / rel}: file added after the artifact was made")
        content = {k: manifest.get(k) for k in ("kind", "name", "inputs", "config", "files", "external")}
        if "project" in manifest:
            content["project"] = manifest["project"]
        if content_id(content) != artifact_id:
            problems.append(f"{mpath}: manifest does not hash to the artifact id (the manifest was edited)")
        return Verification(artifact_id, checked, problems)

    def remove(self, artifact_id: str) -> None:
        """Move the directory aside first, so a half-deleted artifact is never visible."""
        target = self.path(artifact_id)
        if target.exists():
            trash = self.root / f".tmp-rm-{uuid.uuid4().hex}"
            os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def leftovers(self) -> list[Path]:
        """Temporary directories of drafts that never finished (a crash, kill -9)."""
        return sorted(self.root.glob(".tmp-*")) if self.root.exists() else []
