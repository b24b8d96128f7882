"""The Python API of the document stage: `document()` writes a document artifact for a model or adapter.

    from kifabrik.document import DocumentOptions, document
    result = document(ws, "service-lora", DocumentOptions(catalogue="VCIO.json"), out=Path("docs"))

The artifact (kind `document`) holds the model card (README.md), Annex XI and XII, the public
summary of training content, the MISSION KI assessment (Markdown and HTML; PDF with the extra
`pdf`), the CycloneDX ML-BOM and facts.json (every fact with its source). Its lineage edges
lead from the documented model (`documents`) and from every evaluation it cites (`evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

import kifabrik
from kifabrik.catalog import ArtifactRecord
from kifabrik.config import Organisation, StrictModel
from kifabrik.document import bom as boms
from kifabrik.document.collect import (
    NO_TRAINING,
    adapted_facts,
    base_facts,
    collect_lineage,
    derived,
    evaluation_facts,
    merge_facts,
    model_facts,
    release_facts,
    target_record,
    this_release_facts,
    training_facts,
)
from kifabrik.document.datafacts import (
    Category,
    content_summary,
    dataset_facts,
    restriction_facts,
    training_tokens,
)
from kifabrik.document.facts import (
    Fact,
    Source,
    as_jsonable,
    not_recorded,
    organisation_facts,
)
from kifabrik.document.frontmatter import front_matter
from kifabrik.document.mission import assessment, catalogue_path
from kifabrik.document.render import render_markdown, to_html, to_pdf
from kifabrik.errors import KifabrikError
from kifabrik.files import copy_atomic
from kifabrik.workspace import Workspace

KIND = "document"
Format = Literal["md", "html", "pdf"]
#: file stem -> (template, title)
DOCUMENTS = {
    "README": ("model_card.md.j2", "Model card"),
    "annex-xi": ("annex_xi.md.j2", "AI Act Annex XI technical documentation"),
    "annex-xii": ("annex_xii.md.j2", "AI Act Annex XII information for downstream providers"),
    "training-content-summary": ("training_content.md.j2", "Public summary of training content"),
    "mission-ki": ("mission_ki.md.j2", "MISSION KI quality assessment"),
}
BOM_FILE = "ml-bom.cdx.json"


class DocumentOptions(StrictModel):
    """What the documents draw on beyond the catalog records."""

    catalogue: str | None = Field(default=None, description="MISSION KI VCIO.json (or its folder); default "
                                  "$KIFABRIK_MISSION_KI, else the catalogue the evaluation used.")
    data_sources: dict[str, Category] = Field(default_factory=dict, description="Source category of each training "
                                              "dataset for the training-content summary: public, licensed, "
                                              "third-party, private (the provider's own data), crawled, user, "
                                              "synthetic or other (key: dataset name).")
    license: str | None = Field(default=None, description="Licence chosen for releasing the model (SPDX id); "
                                "default: the licence recorded for the model (inherited from its base).")
    format: Format = Field(default="md", description="Format copied to `out`: md, html or pdf (md and html are "
                           "always in the artifact; pdf needs the extra `pdf`).")


@dataclass(frozen=True)
class DocumentResult:
    record: ArtifactRecord
    files: list[str]
    out: Path | None


def gather(ws: Workspace, ref: str, opts: DocumentOptions, org: Organisation | None,
           org_label: str, release: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every fact the templates use, read from the catalog (nothing is written).

    `release`: the release the documents are made for (the release stage's facts: name, version,
    licence, audience, date, gates); its licence is the documented licence.
    """
    target = target_record(ws, ref)
    found = collect_lineage(ws, target)
    names = {d.name for d in found["datasets"]}
    if unknown := sorted(set(opts.data_sources) - names):
        raise KifabrikError(f"data_sources names datasets that are not in the lineage of {target.ref}: "
                            f"{', '.join(unknown)}", hint=f"training datasets: {', '.join(sorted(names)) or 'none'}")
    trainings = [training_facts(ws, r) for r in found["trainings"]]
    datasets = [dataset_facts(ws, d, dict(opts.data_sources)) for d in found["datasets"]]
    evaluations = [evaluation_facts(ws, e) for e in found["evaluations"]]
    with_verdict = [e for e in evaluations if (e["verdict"] or {}).get("dimensions")]
    mission_eval = (with_verdict or evaluations)[-1] if evaluations else None
    totals_src = derived("sum over the training records of this model")
    flops = [t["flops"].value for t in trainings if t["flops"].recorded]
    walls = [t["wall_time_s"].value for t in trainings if t["wall_time_s"].recorded]
    m = model_facts(ws, target, found["base"])
    adapted_facts(m, target, found["trainings"], found["merges"])
    training_tokens(datasets, trainings)
    this = this_release_facts(release) if release else None
    if this is not None:
        m["license"] = this["license"]
    elif opts.license:
        m["license"] = Fact(opts.license, Source("options", "document options: licence chosen for the release",
                                                 field="license"))
    return {
        "target": target, "found": found,
        "doc": {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "kifabrik_version": kifabrik.__version__},
        "m": m, "base": base_facts(found["base"]),
        "org": organisation_facts(org, org_label), "trainings": trainings,
        "merges": [merge_facts(r, found["lineage"]) for r in found["merges"]],
        "datasets": datasets, "evaluations": evaluations,
        "releases": [release_facts(r) for r in found["releases"]], "release": this,
        "restrictions": restriction_facts(ws, target),
        "summary": content_summary(datasets, trainings),
        "mission": assessment(catalogue_path(opts.catalogue, mission_eval), mission_eval),
        "totals": {"flops": Fact(sum(flops), totals_src.at("flops")) if flops else not_recorded(NO_TRAINING),
                   "wall_time_s": Fact(sum(walls), totals_src.at("wall_time_s")) if walls else not_recorded(NO_TRAINING)},
        "no_training": NO_TRAINING,
    }


def render_all(ctx: dict[str, Any]) -> dict[str, str]:
    """file name -> Markdown text of every document."""
    ctx = {**ctx, "front_matter": front_matter(ctx)}
    return {f"{stem}.md": render_markdown(template, ctx) for stem, (template, _) in DOCUMENTS.items()}


def ml_bom(ctx: dict[str, Any]) -> tuple[dict[str, Any], str]:
    found = ctx["found"]
    records = list(found["lineage"].nodes.values())
    ancestors = {e.parent_id for e in found["lineage"].ancestors}
    records = [r for r in records if r.id in ancestors]
    org = {k: v.value for k, v in ctx["org"].items() if v.recorded}
    bom = boms.build_bom(ctx["target"], records, found["edges"], ctx["evaluations"], found["trainings"], org,
                         ctx["doc"]["generated_at"], kifabrik.__version__)
    main = bom["metadata"]["component"]
    lic = ctx["m"]["license"]
    if lic.recorded and boms.licence(str(lic.value)):
        main["licenses"] = boms.licence(str(lic.value))  # the documented licence: the release's, when chosen
    if ctx["release"] is not None:
        r = ctx["release"]
        main["properties"] = main.get("properties", []) + [
            {"name": f"kifabrik:release_{k}", "value": str(r[k].value)}
            for k in ("name", "version", "license", "audience", "created_at")]
    return bom, boms.validate(bom)


def facts_json(ctx: dict[str, Any]) -> dict[str, Any]:
    keep = ("doc", "m", "base", "org", "trainings", "merges", "datasets", "releases", "restrictions", "summary", "totals")
    data = {k: ctx[k] for k in keep}
    if ctx["release"] is not None:
        data["release"] = ctx["release"]
    data["evaluations"] = [{k: v for k, v in e.items() if k not in ("results", "source")} for e in ctx["evaluations"]]
    data["mission"] = {k: v for k, v in ctx["mission"].items() if k != "evaluation"}
    return as_jsonable(data)


def count_missing(tree: Any) -> int:
    if isinstance(tree, dict):
        if tree.get("recorded") is False:
            return 1
        return sum(count_missing(v) for v in tree.values())
    if isinstance(tree, list):
        return sum(count_missing(v) for v in tree)
    return 0


def document(ws: Workspace, ref: str, opts: DocumentOptions | None = None, *, org: Organisation | None = None,
             org_label: str = "organisation facts", out: Path | None = None, name: str | None = None,
             actor: str = "cli", release: dict[str, Any] | None = None) -> DocumentResult:
    """Generate every document of model or adapter `ref` from catalog records and record them.

    Args:
        ws: The workspace.
        ref: The model or adapter (name, name@version or id).
        opts: Catalogue, data-source categories and the format copied to `out`.
        org: Provider facts people gave (recipe `organisation:` or `--org FILE`).
        org_label: Where `org` came from, cited in the documents.
        out: Also copy the documents (in `opts.format`) and the ML-BOM to this folder.
        name: Name of the document artifact (default `<model>-documents`).
        actor: Who asks (audit log).
        release: The release these documents are made for (set by the release stage, which bundles
            them): its name, version, licence, audience, date and gates are stated in them.

    Raises:
        KifabrikError: not a model/adapter, unknown datasets in `data_sources`, a missing
            catalogue, or `pdf` without WeasyPrint. Nothing is written then.
    """
    opts = opts or DocumentOptions()
    ctx = gather(ws, ref, opts, org, org_label, release)
    target: ArtifactRecord = ctx["target"]
    texts = render_all(ctx)
    bom, bom_check = ml_bom(ctx)
    facts = facts_json(ctx)
    htmls = {n.replace(".md", ".html"): to_html(t, f"{DOCUMENTS[n[:-3]][1]}: {target.name}") for n, t in texts.items()}
    evaluations = [e["id"].value for e in ctx["evaluations"]]
    meta = {"target": target.ref, "target_id": target.id, "target_kind": target.kind,
            "license": ctx["m"]["license"].value, "documents": sorted(texts), "bom": bom_check,
            "catalogue": ctx["mission"]["catalogue"].value, "evaluations": evaluations,
            "not_recorded": count_missing(facts), "formats": ["md", "html"] + (["pdf"] if opts.format == "pdf" else []),
            **({"release": {k: release[k] for k in ("name", "version", "audience", "created_at")}} if release else {})}
    # What the documents were made from beyond the catalog: a release made later regenerates them from it.
    config = {**opts.model_dump(mode="json"), "organisation": org.model_dump(exclude_none=True) if org else None,
              "organisation_label": org_label if org else None, "release": release}
    parents: list[Any] = [(target.id, "documents")] + [(e, "evidence") for e in evaluations]
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(KIND, name or f"{target.name}-documents", parents=parents, config=config,
                       meta=meta) as draft:
            for rel, text in texts.items():
                draft.write_text(rel, text)
            for rel, html in htmls.items():
                draft.write_text(f"html/{rel}", html)
                if opts.format == "pdf":
                    (draft.dir / "pdf").mkdir(exist_ok=True)
                    to_pdf(html, draft.dir / "pdf" / rel.replace(".html", ".pdf"))
            draft.write_json(BOM_FILE, bom)
            draft.write_json("facts.json", facts)
        record: ArtifactRecord = draft.record
        ws.catalog.audit("document", actor=actor, subject=record.id,
                         details={"target": target.id, "documents": meta["documents"], "not_recorded": meta["not_recorded"]})
    files = [*texts, BOM_FILE, "facts.json"]
    return DocumentResult(record, files, copy_out(ws.path(record), out, opts.format) if out else None)


def copy_out(src: Path, out: Path, fmt: Format) -> Path:
    """Copy the documents in `fmt` and the ML-BOM to `out` (each file written whole, then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    folder = {"md": src, "html": src / "html", "pdf": src / "pdf"}[fmt]
    names = [p for p in sorted(folder.glob(f"*.{fmt}"))] + [src / BOM_FILE, src / "facts.json"]
    for path in names:
        copy_atomic(path, out / path.name)
    return out

