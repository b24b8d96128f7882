"""Writing a release bundle into an artifact draft: weights, documents, lineage, release.json, SHA256SUMS.

    weights/            the model folder, or the adapter's files (base_model.json names its base)
    documents/          the document artifact's files (model card, AI Act documents, ML-BOM, ...)
    lineage.json        every ancestor and descendant of the model, with the edges
    release.json        name, version, licence, model, gates, policy decisions
    NOTICE              every attribution duty along the lineage, the licences of the models it derives from
    SHA256SUMS          `sha256sum -c SHA256SUMS` checks the bundle without kifabrik
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kifabrik.artifacts import MANIFEST, hash_tree
from kifabrik.catalog import ArtifactRecord
from kifabrik.catalog.lineage import as_json, lineage
from kifabrik.errors import KifabrikError
from kifabrik.policy.notice import write_notice
from kifabrik.workspace import Workspace


def _place(src: Path, dst: Path, link: bool) -> None:
    """Hard-link files that already live in the (immutable) store; copy everything else."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another filesystem, or links not allowed
            pass
    shutil.copy2(src, dst)


def copy_tree(src: Path, dst: Path, *, link: bool) -> None:
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if rel.as_posix() == MANIFEST:
            continue
        _place(path, dst / rel, link)


def write_weights(ws: Workspace, target: ArtifactRecord, base: ArtifactRecord | None, root: Path) -> dict[str, Any]:
    """Put the weights under `root/weights`; return the facts release.json records about them."""
    from kifabrik.models.folder import weights_sha256

    weights = root / "weights"
    if target.kind == "model":
        from kifabrik.models.sources import model_path

        src = model_path(ws, target)
        copy_tree(src, weights, link=src.resolve().is_relative_to(ws.store.root.resolve()))
        shards = {p.name: h["sha256"] for p, h in ((Path(k), v) for k, v in hash_tree(weights).items())
                  if p.suffix == ".safetensors"}
        digest = weights_sha256(shards) if shards else None
        if target.meta.get("weights_sha256") and digest != target.meta["weights_sha256"]:
            raise KifabrikError(f"the weights of {target.ref} no longer match their record "
                                f"(sha256 {str(digest)[:12]}, recorded {target.meta['weights_sha256'][:12]})",
                                hint=f"check them with `kifabrik verify {target.ref}`; nothing was released")
        return {"kind": "model", "weights_sha256": digest}
    copy_tree(ws.path(target), weights, link=False)
    if base is None:
        raise KifabrikError(f"adapter {target.ref} names no base model in its record",
                            hint="an adapter is released together with a reference to its base model")
    return {"kind": "adapter", "base_model": {
        "id": base.id, "ref": base.ref, "weights_sha256": base.meta.get("weights_sha256"),
        "source": base.meta.get("source"), "upstream": base.meta.get("hub_id") or base.meta.get("upstream"),
        "license": base.meta.get("license")}}


#: Where a bundle carries the licence terms its base model was accepted under (Gemma's: they must travel with
#: every model derived from it).
TERMS_FILE = "BASE-MODEL-TERMS.html"


def write_terms(model: ArtifactRecord | None, root: Path) -> dict[str, Any] | None:
    """Copy the terms a base model was registered under (`meta.terms`) into the bundle; None if it has none."""
    from kifabrik.artifacts import sha256_file

    terms = (model.meta.get("terms") if model is not None else None) or None
    if terms is None or model is None:
        return None
    src = Path(terms["file"])
    if not src.is_file() or sha256_file(src) != terms["sha256"]:
        raise KifabrikError(f"the {terms['name']} that {model.ref} was registered under are no longer at {src} "
                            "as accepted; a model derived from it may only be passed on with them",
                            hint=f"reinstall the package of {model.meta.get('source')} (`make gemma`); nothing was released")
    name = TERMS_FILE if src.suffix == ".html" else f"BASE-MODEL-TERMS{src.suffix}"
    shutil.copy2(src, root / name)
    return {"name": terms["name"], "file": name, "sha256": terms["sha256"]}


def write_bundle(ws: Workspace, target: ArtifactRecord, base: ArtifactRecord | None, docs: ArtifactRecord,
                 root: Path, release: dict[str, Any]) -> dict[str, Any]:
    """Write every file of the bundle into `root` (a draft directory); SHA256SUMS last."""

    weights = write_weights(ws, target, base, root)
    if (terms := write_terms(base if weights["kind"] == "adapter" else target, root)) is not None:
        (weights["base_model"] if weights["kind"] == "adapter" else weights)["terms"] = terms
    if weights["kind"] == "adapter":
        (root / "base_model.json").write_text(json.dumps(weights["base_model"], indent=2) + "\n", encoding="utf-8")
    copy_tree(ws.path(docs), root / "documents", link=True)
    # The attribution duties of the data travel with the bundle (and a NOTICE the weights came with stays in it).
    write_notice(ws, target, root, licence=release.get("license"), upstream=root / "weights")
    if terms is not None:  # the notice the terms ask for, next to the data's attribution duties
        with (root / "NOTICE").open("a", encoding="utf-8") as f:
            f.write(f"\nThe base model is provided under and subject to the {terms['name']} ({terms['file']} in this "
                    "bundle); their use restrictions apply to this model and to everything derived from it.\n")
    head = ws.catalog.audit_head()  # pins the audit log as it was at this release (`audit verify --head`)
    if head is not None:
        (root / "audit-head.json").write_text(json.dumps(head, indent=2) + "\n", encoding="utf-8")
    (root / "lineage.json").write_text(as_json(lineage(ws.catalog, target.id)) + "\n", encoding="utf-8")
    release = {**release, "weights": weights}
    (root / "release.json").write_text(json.dumps(release, indent=2, ensure_ascii=False, default=str) + "\n",
                                       encoding="utf-8")
    files = hash_tree(root)
    (root / "SHA256SUMS").write_text("".join(f"{v['sha256']}  {k}\n" for k, v in sorted(files.items())),
                                     encoding="utf-8")
    return {"files": len(files) + 1, "bytes": sum(v["size"] for v in files.values()), "weights": weights}
