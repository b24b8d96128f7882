"""The Python API of the release stage: `release()` — gated, policy-checked release bundles.

    from kifabrik.release import ReleaseOptions, release
    rec = release(ws, "service-lora", ReleaseOptions(name="schmidt-service", version="1.0.0",
                                                     license="Apache-2.0", gate_file="gates.yaml"))

Order: every input is checked first (name, version, licence, gates, documents); then the
usage policies are asked (`release`, and `commercialUse` unless the licence forbids commercial
use), then the quality gates; only then are the documents of this release generated (its name,
version, date, licence, audience and gates stated in them, the provider facts and data-source
categories carried over from the documents it starts from) and the bundle written (kind
`release`; its manifest last), the two recorded together. A refusal names the policy or gate,
the dataset or evaluation and the failing value; it is written to the audit log and, as the
run's error, to a failed run record.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

import kifabrik
from kifabrik.catalog import ArtifactRecord
from kifabrik.config import Organisation, StrictModel
from kifabrik.errors import KifabrikError
from kifabrik.release.bundle import write_bundle
from kifabrik.release.gates import Gate, check_gates, load_gates
from kifabrik.workspace import Workspace

KIND = "release"


class ReleaseOptions(StrictModel):
    """A release: what to call it, under which licence, and the gates it must pass."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Release name (letters, digits, . _ -).")
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$", description="Release version, e.g. 1.0.0.")
    license: str | None = Field(default=None, description="SPDX licence id of the release (default: the licence the "
                                                          "documents state, i.e. the model's).")
    gates: list[Gate] = Field(default_factory=list, description="Quality gates on recorded evaluation metrics.")
    gate_file: str | None = Field(default=None, description="YAML file with more gates (a list, or `gates:`).")
    documents: str | None = Field(default=None, description="Documents to start from: the release bundles documents "
                                  "made for itself, with the provider facts, data-source categories and format of "
                                  "these (default: the newest documents of the model).")
    data_sources: dict[str, str] = Field(default_factory=dict, description="Source category of a training dataset "
                                         "for the bundled training-content summary (as `kifabrik document "
                                         "--data-source`; added to those of the documents it starts from).")
    audience: Literal["public", "internal"] = Field(
        default="public",
        description="public: distributed under `license` (the policies must permit `release`, and `commercialUse` "
        "for a commercial licence). internal: a bundle for deployment inside the organisation only (the policies "
        "must permit `serving`; the licence must be a proprietary LicenseRef-...).")


class ReleaseRefused(KifabrikError):
    """A policy or a quality gate forbids the release; `details` is what the audit log records."""

    def __init__(self, message: str, hint: str, details: dict[str, Any]) -> None:
        super().__init__(message, hint)
        self.details = details


@cache
def non_commercial() -> frozenset[str]:
    data = yaml.safe_load((Path(__file__).parent / "licences.yaml").read_text(encoding="utf-8"))
    return frozenset(x.lower() for x in data["non_commercial"])


def spdx_licence(name: str) -> str:
    """The SPDX id of `name` (case-insensitive), or a `LicenseRef-...` as given; else an error."""
    if name.startswith("LicenseRef-"):
        return name
    from cyclonedx.spdx import fixup_id

    spdx = fixup_id(name)
    if spdx is None:
        raise KifabrikError(f"licence {name!r} is not an SPDX licence id",
                            hint="use an SPDX id such as Apache-2.0, MIT, CC-BY-NC-4.0, or LicenseRef-<your-name>")
    return spdx


def newest_documents(ws: Workspace, target: ArtifactRecord, ref: str | None) -> ArtifactRecord | None:
    """The documents `ref` names (they must document `target`), else the newest of `target`, else None."""
    docs = [ws.catalog.get_artifact(e.child_id) for e in ws.catalog.edges(parent=target.id) if e.relation == "documents"]
    if ref is not None:
        rec = ws.catalog.get_artifact(ref, "document")
        if rec.id not in {d.id for d in docs}:
            raise KifabrikError(f"document {rec.ref} does not document {target.ref}",
                                hint=f"generate them with `kifabrik document {target.ref}`")
        return rec
    docs = sorted((d for d in docs if d.kind == "document" and d.status == "ok"), key=lambda d: d.created_at)
    return docs[-1] if docs else None


def release(ws: Workspace, ref: str, opts: ReleaseOptions, *, org: Organisation | None = None,
            org_label: str | None = None, actor: str = "cli", run_id: str | None = None) -> ArtifactRecord:
    """Release model or adapter `ref` as a bundle; see the module docstring.

    Args:
        org: Provider facts for the bundled documents (`--org FILE`, a recipe's `organisation:`);
            default: those the documents it starts from were made with.
        org_label: Where `org` came from, cited in the documents.
        run_id: A run record the caller (the recipe runner) started and finishes; without
            one, `release` records its own run (failed with the reason when refused).

    Raises:
        ReleaseRefused: a usage policy or a quality gate forbids the release.
        KifabrikError: bad input (name, licence, gates, missing documents).
    """
    target = ws.catalog.get_artifact(ref)
    own = run_id is None
    if run_id is None:
        run_id = ws.catalog.start_run(KIND, {"target": target.id, **opts.model_dump(mode="json")}, name=opts.name)
    try:
        record = _release(ws, target, opts, actor, run_id, org, org_label)
    except BaseException as exc:
        details = getattr(exc, "details", None) or {"error": str(exc) if isinstance(exc, KifabrikError)
                                                    else "".join(traceback.format_exception_only(exc)).strip()}
        ws.catalog.audit("release", actor=actor, subject=target.id, decision="deny",
                         details={"name": opts.name, "version": opts.version, "run_id": run_id, **details})
        if own:
            ws.catalog.finish_run(run_id, "failed", error=str(exc) if isinstance(exc, KifabrikError) else
                                  "".join(traceback.format_exception_only(exc)).strip())
        raise
    if own:
        ws.catalog.finish_run(run_id, "succeeded", outputs=[record.id])
    return record


def _release(ws: Workspace, target: ArtifactRecord, opts: ReleaseOptions, actor: str, run_id: str,
             org: Organisation | None, org_label: str | None) -> ArtifactRecord:
    from kifabrik.policy import PolicyDenied, require
    from kifabrik.registry import lookup

    gated = target  # the quality gates read the evaluations of what was asked for
    knowledge: ArtifactRecord | None = None
    if target.kind == "fach-llm":
        # The bundle carries the model part; the knowledge base stays in the catalog, where every passage's own
        # policy is checked at retrieval (one dataset that may not be shown must not block the release).
        from kifabrik.kb.fachllm import parts

        target, knowledge = parts(ws, target)
    if target.kind not in ("model", "adapter"):
        raise KifabrikError(f"{target.ref} is a {target.kind}; a release bundles a model, an adapter or a Fach-LLM")
    gates = list(opts.gates) + (load_gates(Path(opts.gate_file)) if opts.gate_file else [])
    licence = spdx_licence(opts.license) if opts.license else None
    for rec in ws.catalog.list_artifacts(KIND):
        if rec.name == opts.name and rec.meta.get("release_version") == opts.version:
            raise KifabrikError(f"release {opts.name} {opts.version} exists already ({rec.id[:12]})",
                                hint="give a new --version")
    earlier = newest_documents(ws, target, opts.documents)
    stated: str | None = (earlier.meta.get("license") if earlier else None) or target.meta.get("license")
    if licence is None:
        if not stated:
            raise KifabrikError(f"no licence is recorded for {target.ref}", hint="choose one: --license SPDX-ID")
        licence = spdx_licence(str(stated))
    if opts.audience == "internal":
        if not licence.startswith("LicenseRef-"):
            raise KifabrikError(f"an internal release cannot carry the public licence {licence}",
                                hint="give a proprietary licence such as LicenseRef-internal, or release publicly")
        purposes = ["serving"]  # deployed inside the organisation, never distributed
    else:
        purposes = ["release"] + ([] if licence.lower() in non_commercial() else ["commercialUse"])
    for purpose in purposes:
        try:
            require(ws, [target.id], purpose, actor=actor)
        except PolicyDenied as exc:
            refusals: list[dict[str, Any]] = [
                {"policy": c.policy_name, "policy_id": c.policy_id, "dataset": c.source.ref, "kind": c.source.kind,
                 "dataset_id": c.source.id, "rule": c.decision.rule, "constraint": c.decision.constraint,
                 "reason": c.decision.reason} for c in exc.denials]
            lines = [f"{r['kind']} {r['dataset']} ({r['dataset_id'][:12]}), policy {r['policy']!r}: {r['reason']}"
                     for r in refusals]
            raise ReleaseRefused(
                f"{opts.audience} release {opts.name} {opts.version} of {target.ref} under {licence} refused by usage policy "
                f"({purpose}):\n  " + "\n  ".join(lines),
                hint=("choose a non-commercial licence (e.g. CC-BY-NC-4.0), or " if purpose == "commercialUse"
                      else "") + "ask the data owner for a policy that permits it; see `kifabrik policy show REF`",
                details={"refused_by": "policy", "purpose": purpose, "license": licence, "denials": refusals}) from None
    results = check_gates(ws, gated, gates)
    failed = [r for r in results if not r.passed]
    if failed:
        raise ReleaseRefused(
            f"release {opts.name} {opts.version} of {target.ref} refused by quality gate:\n  "
            + "\n  ".join(f"{r.gate}: {r.reason}" for r in failed),
            hint="improve the model and evaluate it again, or change the gate deliberately (it is recorded)",
            details={"refused_by": "gate", "gates": [r.as_dict() for r in results]})
    from kifabrik.models.runtime import recorded_base

    base = recorded_base(ws, target)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    fach = ({"fach_llm": {"id": gated.id, "ref": gated.ref, "knowledge_base": {"id": knowledge.id,
                                                                                "ref": knowledge.ref}}}
            if knowledge is not None else {})
    facts = {"name": opts.name, "version": opts.version, "license": licence, "audience": opts.audience,
             "created_at": created, "gates": [r.as_dict() for r in results], "purposes": purposes, **fach}
    with ws.catalog.transaction():  # the documents of this release, the record, policies and audit entry commit together
        docs: ArtifactRecord = lookup("documents", "release")(
            ws, target, facts, earlier=earlier, org=org, org_label=org_label, data_sources=dict(opts.data_sources),
            actor=actor)
        return _bundle(ws, target, gated, knowledge, base, docs, results, purposes, created, licence, opts, actor,
                       run_id, earlier)


def _bundle(ws: Workspace, target: ArtifactRecord, gated: ArtifactRecord, knowledge: ArtifactRecord | None,
            base: ArtifactRecord | None, docs: ArtifactRecord, results: list[Any], purposes: list[str], created: str,
            licence: str, opts: ReleaseOptions, actor: str, run_id: str,
            earlier: ArtifactRecord | None) -> ArtifactRecord:
    info = {"name": opts.name, "version": opts.version, "license": licence, "audience": opts.audience,
            "created_at": created,
            "model": {"id": target.id, "ref": target.ref, "kind": target.kind},
            **({"fach_llm": {"id": gated.id, "ref": gated.ref, "knowledge_base": {"id": knowledge.id,
                                                                                   "ref": knowledge.ref}}}
               if knowledge is not None else {}),
            "documents": {"id": docs.id, "ref": docs.ref, **({"made_from": {"id": earlier.id, "ref": earlier.ref}}
                                                             if earlier is not None else {})},
            "gates": [r.as_dict() for r in results],
            "policy": {"purposes_permitted": purposes}, "run_id": run_id,
            "kifabrik_version": kifabrik.__version__,
            "distribution": "kifabrik release bundle: a folder with weights, documents, lineage.json, "
                            "release.json and SHA256SUMS"}
    evaluations = sorted({r.evaluation for r in results if r.evaluation})
    parents: list[Any] = [(target.id, "released"), (docs.id, "bundled")] + [(e, "gated_by") for e in evaluations]
    if knowledge is not None:
        parents.append((gated.id, "released_as"))
    meta = {"release_name": opts.name, "release_version": opts.version, "license": licence,
            "audience": opts.audience, "target": target.ref,
            "target_id": target.id, "documents": docs.id, "gates": [r.as_dict() for r in results],
            "purposes_permitted": purposes, "run_id": run_id,
            **({"fach_llm": gated.ref, "knowledge_base": knowledge.ref} if knowledge is not None else {})}
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(KIND, opts.name, parents=parents, config=opts.model_dump(mode="json"), meta=meta) as draft:
            facts = write_bundle(ws, target, base, docs, draft.dir, info)
            draft.meta = {**meta, "files": facts["files"], "bytes": facts["bytes"]}
        record: ArtifactRecord = draft.record
        ws.catalog.audit("release", actor=actor, subject=target.id, decision="permit",
                         details={"release": record.id, "name": opts.name, "version": opts.version, "license": licence,
                                  "gates": [r.gate for r in results], "purposes": purposes, "run_id": run_id})
    return record


def spdx_licence_or_none(name: str) -> str | None:
    try:
        return spdx_licence(name)
    except KifabrikError:
        return None


