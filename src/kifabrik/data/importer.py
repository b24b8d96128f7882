"""`import_dataset`: files -> validated, PII-checked, deduplicated, split dataset artifact with a card.

Everything is read and checked before anything is written; a bad row, an invalid or
expired policy or a missing column stops the import with every problem listed, unless
`skip_invalid` is set. The artifact appears only complete (the store writes its manifest last).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from kifabrik import progress
from kifabrik.artifacts import sha256_file
from kifabrik.catalog import ArtifactRecord
from kifabrik.config import resolve_path
from kifabrik.data import card as cards
from kifabrik.data import provenance
from kifabrik.data.dedup import (
    DedupReport,
    contamination,
    dedup,
    split,
    split_documents,
)
from kifabrik.data.documents import Measure, document_rows
from kifabrik.data.names import name_detector
from kifabrik.data.options import ImportOptions
from kifabrik.data.pii import PII_TYPES, Scanner
from kifabrik.data.readers import (
    binary_problem,
    parse_csv_map,
    read_csv,
    read_json_array,
    read_jsonl,
)
from kifabrik.data.rows import Problem, Row, map_text, row_text
from kifabrik.data.stats import languages, token_counts
from kifabrik.errors import KifabrikError
from kifabrik.policy import (
    expired,
    load_policy_file,
    parse_policy,
    policy_words,
    preset,
)
from kifabrik.workspace import Workspace

KIND = "dataset"
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv", ".txt": "text",
            ".md": "text", ".markdown": "text", ".rst": "text", ".pdf": "pdf"}


@dataclass(frozen=True)
class ImportResult:
    record: ArtifactRecord
    card: dict[str, Any]


class Expanded(NamedTuple):
    """The files an import reads, and the symbolic links in its folders that it did not follow."""

    files: list[Path]
    links: list[dict[str, str]]  # {"path", "target", "reason"}


def expand(specs: list[str], fmt: str, *, follow_links: bool = False) -> Expanded:
    """Files named directly, plus every supported file below named folders (sorted, hidden ones skipped).

    Inside a folder no symbolic link is followed (a link to /etc/shadow must not end up in a
    dataset): each is skipped and reported. With `follow_links`, a link is followed when its
    target, resolved, stays inside the folder. A file or folder named directly is read as named.
    """
    files: list[Path] = []
    links: list[dict[str, str]] = []
    for spec in specs:
        path = resolve_path(spec)
        if not path.exists():
            raise KifabrikError(f"{path}: no such file or folder", hint="check the path")
        if path.is_dir():
            found = _walk(path, follow_links, links)
            if not found:
                raise KifabrikError(f"{path}: no importable files in the folder",
                                    hint=f"supported: {', '.join(sorted(SUFFIXES))}"
                                    + ("; symbolic links are not followed (see --follow-links)" if links else ""))
            files += found
        else:
            if fmt == "auto" and path.suffix.lower() not in SUFFIXES:
                raise KifabrikError(f"{path}: cannot tell the format from the extension {path.suffix!r}",
                                    hint="pass --format chat|instruction|text-jsonl|csv|text|pdf")
            files.append(path)
    return Expanded(files, links)


def _walk(root: Path, follow_links: bool, links: list[dict[str, str]]) -> list[Path]:
    """Supported, non-hidden regular files below `root`; links skipped (or followed, see `expand`) into `links`."""
    inside = root.resolve()
    found: dict[Path, Path] = {}  # real path -> first path (sorted) to it: a followed link never reads a file twice
    seen_dirs, folders = {inside}, [root]
    while folders:
        folder = folders.pop()
        for entry in os.scandir(folder):
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                why = _unfollowed(target, inside, follow_links, seen_dirs)
                if why is not None:
                    links.append({"path": str(path), "target": os.readlink(path), "reason": why})
                elif target.is_dir():
                    seen_dirs.add(target)
                    folders.append(path)
                elif path.suffix.lower() in SUFFIXES:
                    found[target] = min(found.get(target, path), path)
            elif entry.is_dir(follow_symlinks=False):
                seen_dirs.add(path.resolve())
                folders.append(path)
            elif entry.is_file(follow_symlinks=False) and path.suffix.lower() in SUFFIXES:
                real = path.resolve()
                found[real] = min(found.get(real, path), path)
    links.sort(key=lambda link: link["path"])
    return sorted(found.values())


def _unfollowed(target: Path, inside: Path, follow_links: bool, seen_dirs: set[Path]) -> str | None:
    """Why a link to `target` (resolved) is not followed, or None to follow it."""
    if not follow_links:
        return "symbolic link, not followed (--follow-links follows links that stay inside the folder)"
    if not target.is_relative_to(inside):
        return "symbolic link to outside the imported folder, not followed"
    if target in seen_dirs:
        return "symbolic link to a folder that is read already, not followed"
    if not (target.is_dir() or target.is_file()):
        return "broken symbolic link, or not to a regular file"
    return None


def load_policy(opts: ImportOptions, now: datetime) -> tuple[str, dict[str, Any]]:
    """(name, ODRL document), validated and not expired."""
    if opts.policy:
        doc, policy = load_policy_file(resolve_path(opts.policy))
        name = Path(opts.policy).stem
    else:
        assert opts.policy_preset
        doc, name = preset(opts.policy_preset), opts.policy_preset
        policy = parse_policy(doc, f"preset {name}")
    why = expired(policy, now)
    if why:
        raise KifabrikError(f"the usage policy {name!r} has expired ({why}): data under it may not be used any more",
                            hint="ask the data owner for a current policy; nothing was imported")
    return name, doc


def read_file(path: Path, opts: ImportOptions, chunker: Measure, csv_map: dict[str, str] | None) -> tuple[list[Row], list[Problem]]:
    if path.stat().st_size == 0:
        return [], [Problem(str(path), None, "the file is empty")]
    kind = {"chat": "jsonl", "instruction": "jsonl", "text-jsonl": "jsonl"}.get(opts.format, opts.format)
    if kind == "auto":
        kind = SUFFIXES.get(path.suffix.lower(), "text")
    row_fmt = {"chat": "chat", "instruction": "instruction", "text-jsonl": "text"}.get(opts.format, "auto")
    if kind != "pdf" and (binary := binary_problem(path, opts.encoding)):
        return [], [binary]
    if kind == "jsonl":
        return read_jsonl(path, row_fmt, opts.encoding, opts.max_line_bytes)
    if kind == "json":
        return read_json_array(path, row_fmt, opts.encoding)
    if kind == "csv":
        return read_csv(path, csv_map, opts.encoding, opts.max_line_bytes)
    return document_rows(path, "pdf" if kind == "pdf" else "text", chunker, opts.encoding)


def make_chunker(ws: Workspace, opts: ImportOptions) -> tuple[Measure, dict[str, Any] | None]:
    if not opts.model:
        return Measure(opts.chunk_size or 2000, "characters"), None
    from kifabrik.models.loading import load_tokenizer
    from kifabrik.models.sources import model_path

    record = ws.catalog.get_artifact(opts.model, "model")
    tokenizer = load_tokenizer(model_path(ws, record), trust_remote_code=bool(record.meta.get("trust_remote_code")))
    return Measure(opts.chunk_size or 512, "tokens", tokenizer), {"id": record.id, "ref": record.ref}


def _refuse(problems: list[Problem], opts: ImportOptions) -> KifabrikError:
    shown = "\n  ".join(str(p) for p in problems[:opts.max_errors])
    more = f"\n  ... and {len(problems) - opts.max_errors} more" if len(problems) > opts.max_errors else ""
    return KifabrikError(f"{len(problems)} invalid row{'s' if len(problems) > 1 else ''} or file"
                         f"{'s' if len(problems) > 1 else ''}; nothing was imported:\n  {shown}{more}",
                         hint="fix them, or pass --skip-invalid to import the valid rows (the card lists the skipped ones)")


def import_dataset(ws: Workspace, opts: ImportOptions, *, actor: str = "cli") -> ImportResult:
    """Import files as a dataset artifact (see the module docstring)."""
    now = datetime.now(UTC)
    policy_name, policy_doc = load_policy(opts, now)
    csv_map = parse_csv_map(opts.csv_map)
    train_found = expand(opts.paths(), opts.format, follow_links=opts.follow_links)
    test_found = expand(opts.test_paths(), opts.format, follow_links=opts.follow_links)
    train_files, test_files = train_found.files, test_found.files
    chunker, tokenizer_model = make_chunker(ws, opts)
    sources, rows, test_rows, problems = [], [], [], []
    with progress.bar(f"reading {len(train_files) + len(test_files)} file(s)", len(train_files) + len(test_files)) as step:
        for role, files, into in (("train", train_files, rows), ("test", test_files, test_rows)):
            for path in files:
                got, bad = read_file(path, opts, chunker, csv_map)
                into += got
                problems += bad
                sources.append({"path": str(path), "role": role, "sha256": sha256_file(path),
                                "bytes": path.stat().st_size, "rows_valid": len(got), "rows_invalid": len(bad)})
                step(1)
    if problems and not opts.skip_invalid:
        raise _refuse(problems, opts)
    if not rows:
        raise KifabrikError("no valid rows to import" + (f" ({len(problems)} invalid)" if problems else ""),
                            hint="check the files and --format")
    kinds = Counter(r.kind for r in rows + test_rows)
    if len(kinds) > 1:
        raise KifabrikError(f"the files mix chat rows ({kinds['chat']}) and text rows ({kinds['text']}); "
                            "a dataset holds one kind", hint="import them as two datasets")
    fmt = next(iter(kinds))
    valid_read = len(rows) + len(test_rows)
    policy_id = ws.catalog.add_policy(policy_name, policy_doc)
    recorded_sources = [{"path": s["path"], "sha256": s["sha256"]} for s in sources]

    def same_import(d: ArtifactRecord) -> bool:  # this very import run again: the same files, name and policy
        return d.name == opts.name and d.meta.get("sources") == recorded_sources and d.meta.get("policy_ids") == [policy_id]

    config = json.loads(json.dumps(opts.model_dump(), default=str))
    for earlier in reversed(ws.catalog.list_artifacts(KIND)):  # importing the same thing twice records it once
        if same_import(earlier) and earlier.manifest.get("config") == config and (ws.path(earlier) / "card.json").exists():
            progress.info(f"{opts.name}: the same files, options and policy as {earlier.ref}; nothing new to import")
            ws.catalog.audit("data.import", actor=actor, subject=earlier.id, decision="reused",
                             details={"name": earlier.ref, "sources": recorded_sources, "policy_id": policy_id})
            return ImportResult(earlier, json.loads((ws.path(earlier) / "card.json").read_text(encoding="utf-8")))

    names, names_note = name_detector()
    scanner = Scanner(PII_TYPES, names, region=opts.pii_region)
    pii_counts: Counter[str] = Counter()
    pii_rows = dropped = 0

    def protect(group: list[Row]) -> list[Row]:
        nonlocal pii_rows, dropped
        out = []
        for row in group:
            found: Counter[str] = Counter()

            def scrub(text: str, found: Counter[str] = found) -> str:
                redacted, counts = scanner.redact(text)
                found.update(counts)
                return redacted if opts.pii == "redact" else text

            record = map_text(row.record, scrub)
            pii_counts.update(found)
            pii_rows += bool(found)
            if found and opts.pii == "drop":
                dropped += 1
                continue
            out.append(row._replace(record=record))
        return out

    with progress.bar("scanning for personal data", None):
        rows, test_rows = protect(rows), protect(test_rows)
    report = DedupReport(threshold=opts.near_duplicate_threshold)
    if opts.dedup:
        with progress.bar("removing duplicates", None):
            # Held-out rows come first so that a duplicate is removed from training, never from the test set.
            kept, report = dedup(test_rows + rows, threshold=opts.near_duplicate_threshold)
        held = {id(r) for r in test_rows}
        test_rows, rows = [r for r in kept if id(r) in held], [r for r in kept if id(r) not in held]
    if test_files:
        train, test = rows, test_rows
        split_info = {"method": "given held-out files", "test_files": [str(p) for p in test_files]}
    elif fmt == "text" and any(r.section is not None for r in rows):
        # Chunks of documents: whole documents or top-level sections, never single chunks.
        train, test, split_info = split_documents(rows, opts.test_fraction, opts.seed)
        if opts.test_fraction > 0 and not test:
            progress.info(f"{opts.name}: {split_info['method']}")
    else:
        train, test = split(rows, opts.test_fraction, opts.seed)
        split_info = {"method": "seeded random, by row", "unit": "row", "seed": opts.seed,
                      "test_fraction": opts.test_fraction}
    if not train:
        raise KifabrikError("no training rows are left after PII handling, deduplication and the split",
                            hint="check --pii drop and --test-fraction")
    facts = {
        "name": opts.name, "description": opts.description, "format": fmt,
        "collected": opts.collected or f"{now.date().isoformat()} (import date; the collection date was not given)",
        "sources": sources, "split": split_info,
        "rows": {"train": len(train), "test": len(test), "valid_read": valid_read, "invalid_skipped": len(problems), "pii_dropped": dropped,
                 "duplicates_exact": report.exact, "duplicates_near": report.near},
        "skipped": [{"source": p.source, "line": p.line, "reason": p.reason} for p in problems[:1000]],
        "skipped_links": train_found.links + test_found.links,
        "size": _size(train, test, chunker, tokenizer_model, fmt),
        "languages": languages(train + test, seed=opts.seed),
        "pii": {"mode": opts.pii, "counts": {k: pii_counts.get(k, 0) for k in PII_TYPES}, "rows_with_pii": pii_rows,
                "names": names_note, "name_detector": names.method if names else None,
                "checks": "IBAN mod-97, payment cards issuer prefix + Luhn, Steuer-IdNr MOD 11,10, "
                          "SV-Nummer check digit, phone numbers libphonenumber, IP addresses parsed"},
        "dedup": {"enabled": opts.dedup, "threshold": report.threshold, "method": report.method,
                  "exact": report.exact, "near": report.near, "examples": report.examples},
        "contamination": contamination(train, test, opts.contamination_ngram),
        "policy": {"name": policy_name, "words": policy_words(parse_policy(policy_doc)), "document": policy_doc},
    }
    facts["policy"]["id"] = policy_id
    # rows copied from a dataset in the catalog keep its restrictions
    origin = provenance.trace(ws, train + test, same_import=same_import)
    facts["provenance"] = origin.facts(ws)
    meta = {"format": fmt, "rows": {"train": len(train), "test": len(test)}, "policy_ids": [policy_id],
            "policy": policy_name, "pii": {k: v for k, v in facts["pii"]["counts"].items() if v},
            "pii_mode": opts.pii, "languages": facts["languages"]["shares"], "size": facts["size"],
            "sources": recorded_sources}
    with ws.catalog.transaction():  # record, policies and audit entry commit together
        with ws.create(KIND, opts.name, parents=origin.parents(), config=opts.model_dump(), meta=meta,
                       policies=[policy_id]) as draft:
            for split_name, group in (("train", train), ("test", test)):
                draft.write_text(f"{split_name}.jsonl", "".join(json.dumps(r.record, ensure_ascii=False) + "\n" for r in group))
            draft.write_json("card.json", facts)
            draft.write_text("card.md", cards.markdown(facts))
        record = draft.record
        ws.catalog.audit("data.import", actor=actor, subject=record.id, decision="ok",
                         details={"name": record.ref, "rows": meta["rows"], "policy_id": policy_id, "pii": meta["pii"],
                                  "invalid_skipped": len(problems), "sources": meta["sources"]})
    return ImportResult(record, facts)


def _size(train: list[Row], test: list[Row], chunker: Measure, model: dict[str, Any] | None, fmt: str) -> dict[str, Any]:
    size: dict[str, Any] = {"characters": {"train": sum(len(row_text(r.record)) for r in train),
                                           "test": sum(len(row_text(r.record)) for r in test)}}
    if chunker.tokenizer is not None:
        size["tokens"] = {"train": token_counts(train, chunker.tokenizer), "test": token_counts(test, chunker.tokenizer),
                          "tokenizer": model}
    else:
        size["tokens"] = {"train": None, "test": None, "tokenizer": None,
                          "note": "unknown: no base model was given (--model), so characters were counted"}
    if fmt == "text":
        size["chunking"] = {"unit": chunker.unit, "size": chunker.size,
                            "by": f"tokens of {model['ref']}" if model else "characters (no base model given)"}
    return size
