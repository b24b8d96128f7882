"""The datasets of a project, and importing files as a dataset (what `kifabrik data import` does).

The uploaded files are saved under `$KIFABRIK_HOME/uploads/<project>/<digest of their names and
contents>/` and imported from there with the same `import_dataset` the CLI calls; the folder is
removed afterwards. The folder's name comes from the content, so uploading the same files with
the same options again records the dataset once (as the CLI does for the same paths). Errors are
the CLI's messages, with the upload folder taken out of the file names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import time
import uuid
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, get_args

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from kifabrik.data import ImportOptions, import_dataset
from kifabrik.data.options import Format
from kifabrik.data.readers import human_bytes
from kifabrik.errors import KifabrikError
from kifabrik.policy import parse_policy, policy_words, preset, preset_names
from kifabrik.policy.presets import ARGUMENTS
from kifabrik.ui import i18n
from kifabrik.ui.pages.records import page_of_kinds
from kifabrik.ui.web import Page, ProjectPage, redirect

router = APIRouter()
MAX_UPLOAD = 200 * 2**20         # all files of one upload together
MAX_FILES = 100
DATA_SUFFIXES = (".jsonl", ".csv", ".pdf", ".txt", ".md")
FORMATS: tuple[str, ...] = get_args(Format)                               # as `--format` takes them
PII_MODES: tuple[str, ...] = get_args(ImportOptions.model_fields["pii"].annotation)  # as `--pii` takes them
ENCODINGS = ("utf-8", "cp1252", "latin-1", "utf-16")
_CHUNK = 2**20
#: one import at a time per upload folder (two identical uploads at once share the folder)
_LOCKS: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)


class UploadError(Exception):
    """An upload that cannot be imported: shown above the form (status 400, or 413 when too large)."""

    def __init__(self, message: str, hint: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.hint, self.status = message, hint, status


def presets() -> list[dict[str, Any]]:
    """The presets as `kifabrik policy presets` lists them: name, usage, what they allow in words."""
    out = []
    for name in preset_names():
        arg = ARGUMENTS.get(name)
        example = f"{name}:2099-12-31" if name == "expires-on" else name
        words = policy_words(parse_policy(preset(example), name))
        out.append({"name": name, "argument": arg[0] if arg else None, "required": bool(arg and arg[1]),
                    "words": words})
    return out


def safe_name(filename: str | None, taken: set[str]) -> str:
    """A file name without folders, odd characters or a leading dot; unique among `taken`."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = re.sub(r"[^\w.\- ]", "_", base).strip(" .") or "upload"
    stem, dot, suffix = base.rpartition(".")
    name, n = base, 2
    while name.lower() in taken:
        name = f"{stem}-{n}.{suffix}" if dot else f"{base}-{n}"
        n += 1
    taken.add(name.lower())
    return name


def _save(upload: UploadFile, target: Path, budget: list[int], digest: Any) -> None:
    """Copy an upload (spooled by the form parser) to `target`, counting its bytes against the upload's limit."""
    upload.file.seek(0)
    with open(target, "wb") as out:
        while chunk := upload.file.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise UploadError(f"the upload is larger than {human_bytes(MAX_UPLOAD)}",
                                  hint="import the data in several smaller parts, or with `kifabrik data import` "
                                       "on the server", status=413)
            digest.update(chunk)
            out.write(chunk)


def _files(form: FormData, field: str) -> list[UploadFile]:
    return [f for f in form.getlist(field) if isinstance(f, UploadFile) and (f.filename or f.size)]


def receive(ctx: Page, form: FormData, staging: Path) -> tuple[list[Path], list[Path], Path | None, str]:
    """Save the data files, held-out files and policy file into `staging`; (data, test, policy, digest)."""
    data, test, policy_file = _files(form, "files"), _files(form, "test_files"), _files(form, "policy_file")
    if not data:
        raise UploadError("no file was chosen", hint="choose one or more files (.jsonl, .csv, .pdf, .txt or .md)")
    if len(data) + len(test) > MAX_FILES:
        raise UploadError(f"{len(data) + len(test)} files were chosen; one upload takes at most {MAX_FILES}",
                          hint="import them in several datasets, or pack the text into fewer files")
    budget, digest, taken = [MAX_UPLOAD], hashlib.sha256(ctx.project.encode() if ctx.project else b""), set()
    saved: dict[str, list[Path]] = {"files": [], "test_files": []}
    for field, uploads in (("files", data), ("test_files", test)):
        folder = staging / ("test" if field == "test_files" else "data")
        folder.mkdir(parents=True, exist_ok=True)
        for upload in uploads:
            name = safe_name(upload.filename, taken)
            if Path(name).suffix.lower() not in DATA_SUFFIXES:
                raise UploadError(f"{name}: files of this type cannot be imported",
                                  hint=f"choose {', '.join(DATA_SUFFIXES)} files")
            digest.update(f"\0{field}\0{name}\0".encode())
            _save(upload, folder / name, budget, digest)
            saved[field].append(folder / name)
    policy = None
    if policy_file:
        (staging / "policy").mkdir()
        policy = staging / "policy" / safe_name(policy_file[0].filename, set())
        digest.update(f"\0policy\0{policy.name}\0".encode())
        _save(policy_file[0], policy, budget, digest)
    return saved["files"], saved["test_files"], policy, digest.hexdigest()[:24]


def options(form: FormData, data: list[Path], test: list[Path], policy: Path | None) -> ImportOptions:
    """The import options of the form (validated as the CLI validates its flags)."""
    text = {k: str(form.get(k) or "").strip() for k in ("name", "format", "preset", "expires", "party", "pii",
                                                          "description", "collected", "encoding", "csv_map",
                                                          "test_fraction", "pii_region")}
    spec: str | None = None
    if policy is None:
        spec = text["preset"] or None
        if spec == "expires-on":
            spec = f"expires-on:{text['expires']}" if text["expires"] else spec
        elif spec == "open-with-attribution" and text["party"]:
            spec = f"open-with-attribution:{text['party']}"
    values: dict[str, Any] = {
        "name": text["name"], "path": [str(p) for p in data], "test_path": [str(p) for p in test] or None,
        "policy": str(policy) if policy else None, "policy_preset": spec, "format": text["format"] or "auto",
        "pii": text["pii"] or "redact", "skip_invalid": form.get("skip_invalid") == "on",
        "dedup": form.get("dedup") == "on", "encoding": text["encoding"] or "utf-8",
        "description": text["description"] or None, "collected": text["collected"] or None,
        "csv_map": text["csv_map"] or None, "pii_region": text["pii_region"] or "DE",
    }
    if text["test_fraction"]:
        values["test_fraction"] = text["test_fraction"].replace(",", ".")  # 0,1 as a German writes it
    try:
        return ImportOptions(**values)
    except ValidationError as exc:
        problems, hints = [], []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "form"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
            field = ImportOptions.model_fields.get(str(err["loc"][0])) if err["loc"] else None
            if field is not None and field.description:
                hints.append(f"{where}: {field.description}")
        raise UploadError("the form is not complete: " + "; ".join(problems),
                          hint=" ".join(hints) or "correct the fields named and send the form again") from None


def _listing(ctx: Page, request: Request, *, status: int = 200, error: UploadError | None = None,
             values: dict[str, str] | None = None) -> HTMLResponse:
    assert ctx.ws is not None
    pager = page_of_kinds(ctx, request, ("dataset",))
    defaults = {"format": "auto", "preset": "internal-only", "pii": "redact", "encoding": "utf-8", "dedup": "on",
                "test_fraction": "0.1", "pii_region": "DE"}
    return ctx.render("data_datasets.html", status=status, pager=pager, presets=presets(), formats=FORMATS,
                      pii_modes=PII_MODES, encodings=ENCODINGS, error=error, values={**defaults, **(values or {})},
                      max_size=human_bytes(MAX_UPLOAD), accept=",".join(DATA_SUFFIXES))


@router.get("/p/{project}/datasets", response_class=HTMLResponse)
def datasets(ctx: ProjectPage, request: Request) -> HTMLResponse:
    return _listing(ctx, request)


@router.post("/p/{project}/datasets")
async def upload(ctx: ProjectPage, request: Request) -> Response:
    """Import the uploaded files as a dataset; on success to its page, else the form with the CLI's message."""
    assert ctx.ws is not None and ctx.project is not None
    ctx.require("work")  # before reading a possibly large body
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_UPLOAD + 2**20:
        return _listing(ctx, request, status=413, error=UploadError(
            f"the upload is larger than {human_bytes(MAX_UPLOAD)}",
            hint="import the data in several smaller parts, or with `kifabrik data import` on the server"))
    form = await ctx.form("work")
    values = {k: str(v) for k, v in form.items() if isinstance(v, str) and k != "csrf"}
    values.setdefault("dedup", "")
    uploads = ctx.ws.settings.home / "uploads" / ctx.project
    _sweep(uploads)
    staging = uploads / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    folder: Path | None = None
    try:
        try:
            data, test, policy, digest = await run_in_threadpool(receive, ctx, form, staging)
            folder = uploads / digest
            async with _LOCKS[str(folder)]:
                shutil.rmtree(folder, ignore_errors=True)  # a leftover of an import that was killed
                staging.rename(folder)
                moved = [folder / p.relative_to(staging) for p in data], [folder / p.relative_to(staging) for p in test]
                opts = options(form, *moved, folder / policy.relative_to(staging) if policy else None)
                result = await run_in_threadpool(import_dataset, ctx.ws, opts, actor=ctx.actor())
        except UploadError as exc:
            return _listing(ctx, request, status=exc.status, error=exc, values=values)
        except KifabrikError as exc:
            inside = [str(p) + "/" for p in (folder, staging) if p is not None]
            message, hint = _strip(exc.message, inside), _strip(exc.hint, inside) if exc.hint else None
            return _listing(ctx, request, status=400, error=UploadError(message, hint), values=values)
    finally:
        for path in (staging, folder):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
    return redirect(ctx.url(f"/artifacts/{result.record.id}"))


def _sweep(uploads: Path, older_than_s: float = 86400) -> None:
    """Remove upload folders a killed server left behind (a running import is younger than a day)."""
    if not uploads.is_dir():
        return
    now = time.time()
    for entry in uploads.iterdir():
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime > older_than_s:
                shutil.rmtree(entry, ignore_errors=True)


def _strip(text: str, prefixes: list[str]) -> str:
    """The message as the CLI prints it for files named in the current folder: without the upload folder."""
    for prefix in prefixes:
        for sub in ("data/", "test/", "policy/", ""):
            text = text.replace(prefix + sub, "")
    return text


i18n.add({
    "Import data": "Daten importieren",
    "Files": "Dateien",
    "Dataset name": "Name des Datensatzes",
    "Letters, digits, '.', '_' and '-'; importing under the same name again makes a new version.":
        "Buchstaben, Ziffern, '.', '_' und '-'; ein erneuter Import unter demselben Namen ergibt eine neue Version.",
    "One or more files: chat or instruction data as JSONL, tables as CSV, documents as PDF, text or Markdown. At most {size} together.":
        "Eine oder mehrere Dateien: Chat- oder Anweisungsdaten als JSONL, Tabellen als CSV, Dokumente als PDF, Text oder Markdown. Zusammen höchstens {size}.",
    "Format": "Format",
    "auto": "automatisch",
    "Usage policy": "Nutzungsrichtlinie",
    "Every dataset carries a usage policy: choose a preset, or upload an ODRL policy file (the file wins).":
        "Jeder Datensatz trägt eine Nutzungsrichtlinie: Wählen Sie eine Vorlage oder laden Sie eine ODRL-Richtliniendatei hoch (die Datei hat Vorrang).",
    "Policy preset": "Richtlinienvorlage",
    "What the presets allow": "Was die Vorlagen erlauben",
    "Expiry date (preset expires-on)": "Ablaufdatum (Vorlage expires-on)",
    "Party to name (preset open-with-attribution)": "Zu nennende Partei (Vorlage open-with-attribution)",
    "Or an ODRL policy file (JSON)": "Oder eine ODRL-Richtliniendatei (JSON)",
    "Personal data": "Personenbezogene Daten",
    "redact": "ersetzen",
    "drop": "Zeilen entfernen",
    "report": "nur zählen",
    "redact: replace by placeholders such as [EMAIL]; drop: remove the rows; report: only count (the data keeps it).":
        "ersetzen: durch Platzhalter wie [EMAIL]; Zeilen entfernen: betroffene Zeilen weglassen; nur zählen: die Daten behalten sie.",
    "Description (for the dataset card)": "Beschreibung (für die Datenkarte)",
    "More options": "Weitere Optionen",
    "Held-out test files (instead of a random test share)": "Zurückgehaltene Testdateien (statt eines zufälligen Testanteils)",
    "Test share (0 to 0.9)": "Testanteil (0 bis 0,9)",
    "When the data was collected": "Wann die Daten erhoben wurden",
    "Text encoding": "Zeichenkodierung",
    "CSV columns (e.g. user=Frage,assistant=Antwort)": "CSV-Spalten (z. B. user=Frage,assistant=Antwort)",
    "Country of phone numbers": "Land der Telefonnummern",
    "Remove duplicates": "Duplikate entfernen",
    "Import the valid rows and list the invalid ones in the card": "Gültige Zeilen importieren und ungültige in der Karte auflisten",
    "Import": "Importieren",
    "The import can take a while for large files; the page loads the dataset when it is done.":
        "Bei großen Dateien kann der Import dauern; danach öffnet sich die Seite des Datensatzes.",
    "The import was refused": "Der Import wurde abgelehnt",
    "Rows": "Zeilen",
    "train": "Training",
    "test": "Test",
    "Policy": "Richtlinie",
    "PII mode": "Umgang mit personenbezogenen Daten",
    "Your role can read the datasets; importing needs the engineer role.":
        "Ihre Rolle darf die Datensätze lesen; für den Import ist die Rolle Entwicklung nötig.",
    "No datasets yet.": "Noch keine Datensätze.",
    "Dataset": "Datensatz",
})
