"""The records of a project: any artifact's page and files, its lineage as a graph, models and documents.

Everything is read through `ctx.ws` (the project's scoped workspace), so an id of another project
is as unknown here as an id that does not exist (404). Listings are paginated and read the catalog
rows only; an artifact's files are read from disk only on its own page.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from kifabrik.artifacts import MANIFEST
from kifabrik.catalog import ArtifactRecord
from kifabrik.catalog import lineage as lin
from kifabrik.errors import NotFoundError
from kifabrik.policy import parse_policy, policy_words, restrictions
from kifabrik.policy.odrl import PolicyError
from kifabrik.ui import i18n
from kifabrik.ui.web import Page, ProjectPage

router = APIRouter()
PER_PAGE = 50
#: the model-like kinds of the Models page: (kind, English heading)
MODEL_KINDS = (("model", "Models"), ("adapter", "Adapters"), ("fach-llm", "Fach-LLMs"), ("index", "Knowledge bases"))
FILES_SHOWN = 300          # an artifact's page lists at most this many of its files
CARD_BYTES = 2 * 2**20     # a dataset card or document larger than this is offered for download only
GRAPH_NODES = 150          # a lineage graph larger than this is listed as text only
#: files shown in the browser; everything else is downloaded
INLINE_TEXT = {".md", ".txt", ".json", ".jsonl", ".csv", ".yaml", ".yml", ".log"}
_EMPTY_HEAD = re.compile(r"<thead>\s*<tr>\s*(?:<th[^>]*></th>\s*)+</tr>\s*</thead>\s*")
_ALIGN = re.compile(r'<(th|td) style="text-align:(left|right|center)"')
#: a document's HTML, shown in a sandboxed frame: no scripts, no forms, no requests, its own inline styles only
SANDBOX_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"


# ---------------------------------------------------------------------- shared by the pages of this package
@dataclass(frozen=True)
class Pager:
    """One page of a listing: `items` (this page's), `page`, `pages`, `total`, and `url(n)` of page n."""

    items: list[Any]
    page: int
    pages: int
    total: int
    param: str
    path: str
    query: dict[str, str]

    def url(self, n: int) -> str:
        return f"{self.path}?{urlencode({**self.query, self.param: str(n)})}"


def _page_number(request: Request, param: str) -> int:
    raw = request.query_params.get(param, "1")
    return max(int(raw), 1) if raw.isdigit() and len(raw) < 9 else 1


def _pager(request: Request, items: list[Any], page: int, total: int, per_page: int, param: str) -> Pager:
    query = {k: v for k, v in request.query_params.items() if k != param}
    return Pager(items, page, max(1, -(-total // per_page)), total, param, request.url.path, query)


def paginate(request: Request, items: list[Any], per_page: int = PER_PAGE, param: str = "page") -> Pager:
    """The page `?{param}=N` (1-based; past the end: the last page) of `items`, a list in memory."""
    pages = max(1, -(-len(items) // per_page))
    page = min(_page_number(request, param), pages)
    return _pager(request, items[(page - 1) * per_page:page * per_page], page, len(items), per_page, param)


def page_of_kinds(ctx: Page, request: Request, kinds: tuple[str, ...], param: str = "page",
                  per_page: int = PER_PAGE) -> Pager:
    """One page of the project's artifacts of `kinds`, newest first, read from the catalog page by page
    (rows without their manifests: a listing never reads all of them)."""
    assert ctx.ws is not None
    page = _page_number(request, param)
    items, total = ctx.ws.catalog.page_artifacts(kinds, limit=per_page, offset=(page - 1) * per_page)
    last = max(1, -(-total // per_page))
    if page > last:  # past the end (an old link after removals): the last page
        page = last
        items, total = ctx.ws.catalog.page_artifacts(kinds, limit=per_page, offset=(page - 1) * per_page)
    return _pager(request, items, page, total, per_page, param)


def policy_lines(name: str, document: dict[str, Any]) -> list[str]:
    """A policy in words (as `kifabrik policy show` prints it); an invalid one says why."""
    try:
        return policy_words(parse_policy(document, f"policy {name}"))
    except PolicyError as exc:
        return [exc.message]


def markdown_html(text: str, shift: int = 1) -> str:
    """Markdown as HTML for a page: raw HTML in it is escaped, links with unsafe schemes are dropped,
    and headings move `shift` levels down (the page has its one h1 already)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + shift, 6)}"
    html = str(md.renderer.render(tokens, md.options, {}))
    html = _EMPTY_HEAD.sub("", html)  # the empty header row of a two-column facts table
    html = _ALIGN.sub(lambda m: f'<{m.group(1)} class="align-{m.group(2)}"', html)  # CSP: no style attributes
    return html.replace("<th>", '<th scope="col">').replace('<th class=', '<th scope="col" class=')


# ---------------------------------------------------------------------- artifact page and files
def _files(record: ArtifactRecord) -> list[tuple[str, int]]:
    """(path, bytes) of the artifact's files as its manifest lists them, and the manifest itself."""
    listed = record.manifest.get("files") or {}
    return sorted((rel, int(info.get("size", 0))) for rel, info in listed.items()) + [(MANIFEST, -1)]


def _read_text(ctx: Page, record: ArtifactRecord, rel: str) -> str | None:
    """A text file of the artifact (None when missing or too large to show)."""
    path = safe_file(ctx, record, rel)
    if path is None or path.stat().st_size > CARD_BYTES:
        return None
    return path.read_text(encoding="utf-8", errors="replace")


def safe_file(ctx: Page, record: ArtifactRecord, rel: str) -> Path | None:
    """The file `rel` of the artifact, or None: only files its manifest lists (and the manifest), only
    inside its folder, and no symbolic link on the way (a link could point anywhere on the server)."""
    parts = PurePosixPath(rel).parts
    if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/") or any(p in ("..", ".", "") for p in parts):
        return None
    if rel != MANIFEST and rel not in (record.manifest.get("files") or {}):
        return None
    assert ctx.ws is not None
    root = ctx.ws.path(record)
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    try:
        if not path.resolve().is_relative_to(root.resolve()) or not path.is_file():
            return None
    except OSError:
        return None
    return path


def _parents(ctx: Page, record: ArtifactRecord) -> list[tuple[str, ArtifactRecord]]:
    assert ctx.ws is not None
    return [(e.relation, ctx.ws.catalog.get_artifact(e.parent_id)) for e in ctx.ws.catalog.edges(child=record.id)]


def _children(ctx: Page, record: ArtifactRecord, shown: int = 50) -> tuple[list[tuple[str, ArtifactRecord]], int]:
    """The first `shown` artifacts made from this one (a base model may have hundreds), and how many there are."""
    assert ctx.ws is not None
    edges = ctx.ws.catalog.edges(parent=record.id)
    return [(e.relation, ctx.ws.catalog.get_artifact(e.child_id)) for e in edges[:shown]], len(edges)


def document_files(record: ArtifactRecord) -> list[dict[str, str | None]]:
    """The documents of a `document` artifact: {title, md, html, pdf, file} (paths inside it; None when absent).

    From its manifest; a listing's record has none, and then from what the document stage records
    in its facts (`documents`, `formats`), which name the same files.
    """
    from kifabrik.document.api import BOM_FILE, DOCUMENTS

    listed = record.manifest.get("files")
    formats = record.meta.get("formats") or ["md", "html"]

    def has(rel: str, fmt: str | None = None) -> bool:
        return rel in listed if listed is not None else fmt is None or fmt in formats

    out: list[dict[str, str | None]] = []
    names = record.meta.get("documents") or sorted(f for f in listed or {} if f.endswith(".md") and "/" not in f)
    for md in names:
        stem = md.removesuffix(".md")
        out.append({"title": DOCUMENTS.get(stem, (None, stem))[1], "md": md if has(md) else None,
                    "html": f"html/{stem}.html" if has(f"html/{stem}.html", "html") else None,
                    "pdf": f"pdf/{stem}.pdf" if has(f"pdf/{stem}.pdf", "pdf") else None})
    for rel, title in ((BOM_FILE, "ML-BOM (CycloneDX)"), ("facts.json", "Facts with their sources")):
        if has(rel):
            out.append({"title": title, "md": None, "html": None, "pdf": None, "file": rel})
    return out


@router.get("/p/{project}/artifacts/{ref}", response_class=HTMLResponse)
def artifact(ctx: ProjectPage, ref: str) -> HTMLResponse:
    assert ctx.ws is not None
    record = ctx.ws.catalog.get_artifact(ref)
    files = _files(record)
    card = None
    if record.kind == "dataset" and (text := _read_text(ctx, record, "card.md")) is not None:
        card = markdown_html(text, shift=2)
    policies = [(pid, name, policy_lines(name, doc)) for pid, name, doc in ctx.ws.catalog.policies_of(record.id)]
    children, children_total = _children(ctx, record)
    return ctx.render("records_artifact.html", a=record, files=files[:FILES_SHOWN], files_total=len(files),
                      card=card, parents=_parents(ctx, record), children=children, children_total=children_total,
                      policies=policies,
                      documents=document_files(record) if record.kind == "document" else [],
                      meta=record.meta)


@router.get("/p/{project}/artifacts/{ref}/files/{path:path}")
def artifact_file(ctx: ProjectPage, ref: str, path: str, download: str | None = None) -> Response:
    """A file of an artifact: text shown as plain text, a document's HTML in a sandbox, the rest downloaded."""
    assert ctx.ws is not None
    record = ctx.ws.catalog.get_artifact(ref)
    found = safe_file(ctx, record, path)
    if found is None:
        raise NotFoundError(f"no file {path!r} in artifact {record.id[:12]}")
    suffix = found.suffix.lower()
    name = found.name
    if download is None and suffix == ".html":
        return FileResponse(found, media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": SANDBOX_CSP, "Cache-Control": "private, no-cache"})
    if download is None and suffix in INLINE_TEXT:
        return FileResponse(found, media_type="text/plain; charset=utf-8", content_disposition_type="inline",
                            filename=name, headers={"Content-Security-Policy": "sandbox; default-src 'none'"})
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(found, media_type=media, filename=name, content_disposition_type="attachment",
                        headers={"Content-Security-Policy": "sandbox; default-src 'none'"})


@router.get("/p/{project}/artifacts/{ref}/read/{path:path}", response_class=HTMLResponse)
def read_document(ctx: ProjectPage, ref: str, path: str) -> HTMLResponse:
    """A Markdown document of an artifact rendered in the page (its raw HTML escaped); another text file as text."""
    from kifabrik.document.render import split_front_matter

    assert ctx.ws is not None
    record = ctx.ws.catalog.get_artifact(ref)
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in INLINE_TEXT or (text := _read_text(ctx, record, path)) is None:
        raise NotFoundError(f"no document {path!r} in artifact {record.id[:12]}")
    front, body = split_front_matter(text) if suffix == ".md" else (None, text)
    doc = next((d for d in document_files(record) if path in (d.get("md"), d.get("file"))), None)
    return ctx.render("records_read.html", a=record, path=path, front_matter=front,
                      body=markdown_html(body) if suffix == ".md" else None, text=None if suffix == ".md" else body,
                      doc=doc or {"title": path, "md": path, "html": None, "pdf": None})


# ---------------------------------------------------------------------- lineage
@dataclass(frozen=True)
class Box:
    record: ArtifactRecord
    x: float
    y: float
    current: bool


@dataclass(frozen=True)
class Arrow:
    relation: str
    x1: float
    y1: float
    x2: float
    y2: float


BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, PER_ROW = 200, 54, 36, 70, 16, 5


def layers(graph: lin.Lineage) -> dict[str, int]:
    """Each node's layer: ancestors above the artifact (negative), descendants below (positive).

    A node's distance is its *longest* path to the artifact, so every arrow points strictly down,
    also when a base model reaches a model directly and through an adapter.
    """
    up, down = {graph.root.id: 0}, {graph.root.id: 0}
    for _ in range(len(graph.nodes)):  # relaxation; a DAG settles within |nodes| rounds
        changed = False
        for e in graph.ancestors:
            if e.child_id in up and up[e.child_id] + 1 > up.get(e.parent_id, 0):
                up[e.parent_id], changed = up[e.child_id] + 1, True
        for e in graph.descendants:
            if e.parent_id in down and down[e.parent_id] + 1 > down.get(e.child_id, 0):
                down[e.child_id], changed = down[e.parent_id] + 1, True
        if not changed:
            break
    return {**{n: -d for n, d in up.items()}, **down}


def layout(graph: lin.Lineage) -> tuple[list[Box], list[Arrow], int, int]:
    """Boxes in rows by layer and arrows between them: (boxes, arrows, width, height).

    Within a layer, boxes are ordered by the mean x of their neighbours already placed (fewer
    crossings); a layer of more than `PER_ROW` boxes wraps onto further rows, so that a base model
    with 40 adapters stays readable instead of shrinking to one very wide row.
    """
    depth = layers(graph)
    levels: dict[int, list[str]] = {}
    for node in graph.nodes:
        levels.setdefault(depth.get(node, 0), []).append(node)
    edges = sorted({(e.parent_id, e.child_id, e.relation) for e in graph.ancestors + graph.descendants})
    columns = min(PER_ROW, max(len(n) for n in levels.values()))
    width = MARGIN * 2 + columns * BOX_W + (columns - 1) * GAP_X
    boxes: dict[str, Box] = {}
    y = float(MARGIN)
    for level in sorted(levels):
        def key(n: str) -> tuple[float, str]:
            near = [boxes[o].x for p, c, _ in edges for o in ((p,) if c == n else (c,) if p == n else ())
                    if o in boxes]
            return (sum(near) / len(near) if near else 0.0, graph.nodes[n].created_at.isoformat())
        nodes = sorted(levels[level], key=key)
        for start in range(0, len(nodes), PER_ROW):
            row = nodes[start:start + PER_ROW]
            x0 = (width - (len(row) * BOX_W + (len(row) - 1) * GAP_X)) / 2
            for i, n in enumerate(row):
                boxes[n] = Box(graph.nodes[n], x0 + i * (BOX_W + GAP_X), y, n == graph.root.id)
            y += BOX_H + (GAP_Y if start + PER_ROW >= len(nodes) else GAP_X)
    arrows = [Arrow(relation, boxes[p].x + BOX_W / 2, boxes[p].y + BOX_H, boxes[c].x + BOX_W / 2, boxes[c].y - 4)
              for p, c, relation in edges]
    return list(boxes.values()), arrows, int(width), int(y - GAP_Y + MARGIN)


def short(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


@router.get("/p/{project}/artifacts/{ref}/lineage", response_class=HTMLResponse)
def lineage_page(ctx: ProjectPage, ref: str) -> HTMLResponse:
    """The lineage graph (inline SVG, drawn here) and the usage restrictions `kifabrik lineage` prints."""
    assert ctx.ws is not None
    record = ctx.ws.catalog.get_artifact(ref)
    graph = lin.lineage(ctx.ws.catalog, record.id)
    drawn = len(graph.nodes) <= GRAPH_NODES
    boxes, arrows, width, height = layout(graph) if drawn else ([], [], 0, 0)
    edges = [(graph.nodes[e.parent_id], e.relation, graph.nodes[e.child_id])
             for e in list(reversed(graph.ancestors)) + graph.descendants]
    return ctx.render("records_lineage.html", a=record, boxes=boxes, arrows=arrows, width=width, height=height,
                      box_w=BOX_W, box_h=BOX_H, edges=edges, drawn=drawn, nodes=len(graph.nodes),
                      restrictions=restrictions(ctx.ws, record.id), short=short)


# ---------------------------------------------------------------------- listings
@router.get("/p/{project}/models", response_class=HTMLResponse)
def models(ctx: ProjectPage, request: Request) -> HTMLResponse:
    """Models, adapters, Fach-LLMs and knowledge bases, each a table with its own pages (`?page_adapter=2`)."""
    assert ctx.ws is not None
    sections, names = [], {}
    for kind, title in MODEL_KINDS:
        pager = page_of_kinds(ctx, request, (kind,), param=f"page_{kind}")
        made_from = {r.id: [(e.relation, e.parent_id) for e in ctx.ws.catalog.edges(child=r.id)] for r in pager.items}
        sections.append((kind, title, pager, made_from))
        for pairs in made_from.values():
            for _, pid in pairs:
                if pid not in names:
                    names[pid] = ctx.ws.catalog.get_artifact(pid)
    return ctx.render("records_models.html", sections=sections, names=names)


@router.get("/p/{project}/documents", response_class=HTMLResponse)
def documents(ctx: ProjectPage, request: Request) -> HTMLResponse:
    assert ctx.ws is not None
    pager = page_of_kinds(ctx, request, ("document",))
    rows = [(r, document_files(r)) for r in pager.items]
    return ctx.render("records_documents.html", pager=pager, rows=rows)


i18n.add({
    "Artifact": "Artefakt",
    "Artifacts": "Artefakte",
    "Facts": "Fakten",
    "Files": "Dateien",
    "File": "Datei",
    "Size": "Größe",
    "Id": "ID",
    "Lineage": "Herkunft",
    "Show the lineage": "Herkunft anzeigen",
    "Lineage of {ref}": "Herkunft von {ref}",
    "Made from": "Hergestellt aus",
    "Used for": "Verwendet für",
    "Relation": "Beziehung",
    "From": "Von",
    "To": "Nach",
    "Usage policies": "Nutzungsrichtlinien",
    "No usage policy is attached to this artifact itself.":
        "Diesem Artefakt selbst ist keine Nutzungsrichtlinie zugeordnet.",
    "Usage restrictions (own and inherited along the lineage)":
        "Nutzungsbeschränkungen (eigene und entlang der Herkunft geerbte)",
    "No usage restrictions are recorded for this artifact or its ancestors.":
        "Für dieses Artefakt und seine Vorfahren sind keine Nutzungsbeschränkungen erfasst.",
    "prohibition": "Verbot",
    "duty": "Pflicht",
    "invalid": "ungültig",
    "policy {name}": "Richtlinie {name}",
    "from": "von",
    "Dataset card": "Datenkarte",
    "The dataset card is missing or too large to show here.":
        "Die Datenkarte fehlt oder ist zu groß, um sie hier zu zeigen.",
    "Documents of this artifact": "Dokumente dieses Artefakts",
    "Read": "Lesen",
    "Read (HTML)": "Lesen (HTML)",
    "PDF": "PDF",
    "Markdown": "Markdown",
    "Document": "Dokument",
    "Target": "Ziel",
    "Showing {shown} of {total} files.": "{shown} von {total} Dateien werden gezeigt.",
    "Page {page} of {pages}": "Seite {page} von {pages}",
    "Previous page": "Vorherige Seite",
    "Next page": "Nächste Seite",
    "Pages": "Seiten",
    "{n} in all": "{n} insgesamt",
    "Metadata of the document": "Metadaten des Dokuments",
    "Back to the artifact": "Zurück zum Artefakt",
    "Open the HTML version": "HTML-Fassung öffnen",
    "The HTML version, shown in a protected frame": "Die HTML-Fassung, in einem geschützten Rahmen angezeigt",
    "Lineage graph of {ref}": "Herkunftsgraph von {ref}",
    "Boxes are artifacts, arrows lead from what an artifact was made from to the artifact; the highlighted box is {ref}.":
        "Kästen sind Artefakte, Pfeile führen von dem, woraus ein Artefakt gemacht wurde, zum Artefakt; der hervorgehobene Kasten ist {ref}.",
    "All edges as a list": "Alle Beziehungen als Liste",
    "No recorded ancestors or descendants.": "Keine erfassten Vorfahren oder Nachfahren.",
    "The lineage has {n} artifacts, too many to draw; the list below has every edge.":
        "Die Herkunft umfasst {n} Artefakte, zu viele zum Zeichnen; die Liste unten enthält jede Beziehung.",
    "Source": "Quelle",
    "Licence": "Lizenz",
    "ok": "ok",
    "failed": "fehlgeschlagen",
    "this artifact": "dieses Artefakt",
    "bytes": "Bytes",
    "none": "keine",
    "yes": "ja",
    "no": "nein",
    "ML-BOM (CycloneDX)": "ML-BOM (CycloneDX)",
    "Facts with their sources": "Fakten mit ihren Quellen",
    "Model card": "Modellkarte",
    "AI Act Annex XI technical documentation": "Technische Dokumentation nach Anhang XI der KI-Verordnung",
    "AI Act Annex XII information for downstream providers":
        "Informationen für nachgelagerte Anbieter nach Anhang XII der KI-Verordnung",
    "Public summary of training content": "Öffentliche Zusammenfassung der Trainingsinhalte",
    "MISSION KI quality assessment": "MISSION-KI-Qualitätsbewertung",
    "Documents generated for a model or adapter: model card, AI Act Annex XI and XII, the training-content summary, the MISSION KI assessment and the ML-BOM.":
        "Für ein Modell oder einen Adapter erzeugte Dokumente: Modellkarte, Anhang XI und XII der KI-Verordnung, Zusammenfassung der Trainingsinhalte, MISSION-KI-Bewertung und ML-BOM.",
    "Base models registered from files or the hub, models trained or merged from them.":
        "Aus Dateien oder dem Hub registrierte Basismodelle und daraus trainierte oder zusammengeführte Modelle.",
    "LoRA adapters trained on a base model.": "Auf einem Basismodell trainierte LoRA-Adapter.",
    "A model or adapter together with a knowledge base.": "Ein Modell oder Adapter zusammen mit einer Wissensbasis.",
    "Search indexes built from datasets, used by Fach-LLMs.":
        "Aus Datensätzen gebaute Suchindizes, die Fach-LLMs verwenden.",
    "Download the manifest": "Manifest herunterladen",
    "manifest (file list with checksums)": "Manifest (Dateiliste mit Prüfsummen)",
})
