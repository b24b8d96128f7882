"""Dataset artifacts as knowledge-base passages.

- Chat rows: one passage per assistant answer, together with the user question before it
  (questions are what users ask, so they help matching); `question` and `answer` are kept
  separately too. Instruction records (`instruction`/`input`/`output`) are read the same way;
  the data stage already stores them as chat rows.
- Text rows (text, Markdown, PDF chunks of the data stage): cut by `chunking.chunk_text`, so a
  heading stays with its text and a table stays whole.

A passage's source names the dataset, the split file and the line in it (the dataset
artifact is what was recorded and PII-protected; the original files are never read again),
plus the heading path for documents. Identical passages are stored once with all sources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kifabrik.catalog import ArtifactRecord
from kifabrik.errors import KifabrikError
from kifabrik.files import iter_jsonl
from kifabrik.kb.chunking import Heading, chunk_text
from kifabrik.workspace import Workspace

SPLITS = ("train", "test")


@dataclass
class Passage:
    """One retrievable unit. `sources` lists every place its exact text occurs (first = primary)."""

    id: str
    kind: Literal["answer", "section"]
    text: str
    sources: list[dict[str, Any]]
    question: str | None = None
    answer: str | None = None
    heading: str | None = None
    path: list[str] = field(default_factory=list)

    @property
    def dataset_id(self) -> str:
        return str(self.sources[0]["dataset_id"])

    @property
    def dataset_ref(self) -> str:
        return str(self.sources[0]["dataset_ref"])

    def dataset_ids(self) -> list[str]:
        """Every dataset the text occurs in; each one's policy must permit showing it."""
        return list(dict.fromkeys(str(s["dataset_id"]) for s in self.sources))

    def index_text(self) -> str:
        """What BM25 sees: the parent headings add the context a section's own title lacks."""
        return "\n".join(self.path[:-1] + [self.text]) if self.path else self.text

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "kind": self.kind, "text": self.text, "sources": self.sources}
        out.update({k: v for k, v in (("question", self.question), ("answer", self.answer),
                                      ("heading", self.heading), ("path", self.path)) if v})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Passage:
        return cls(data["id"], data["kind"], data["text"], data["sources"], data.get("question"),
                   data.get("answer"), data.get("heading"), list(data.get("path", [])))


def passage_id(kind: str, text: str) -> str:
    return "p" + hashlib.sha256(f"{kind}\0{' '.join(text.split())}".encode()).hexdigest()[:16]


def _qa(record: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(question, answer) for every assistant answer of a chat or instruction record."""
    if "instruction" in record:
        ask = str(record["instruction"]).strip()
        if str(record.get("input") or "").strip():
            ask += "\n\n" + str(record["input"]).strip()
        return [(ask, str(record.get("output", "")).strip())]
    out: list[tuple[str | None, str]] = []
    question: str | None = None
    for message in record.get("messages", []):
        if message.get("role") == "user":
            question = str(message.get("content", "")).strip()
        elif message.get("role") == "assistant" and str(message.get("content", "")).strip():
            out.append((question, str(message["content"]).strip()))
    return out


def _split_documents(ws: Workspace, record: ArtifactRecord) -> dict[str, str]:
    """split -> original file name, where the split came from exactly one file (else unknown)."""
    card = ws.path(record) / "card.json"
    if not card.exists():
        return {}
    sources = json.loads(card.read_text(encoding="utf-8")).get("sources", [])
    out = {}
    for split in SPLITS:
        files = [s["path"] for s in sources if s.get("role") == split]
        if len(files) == 1:
            out[split] = Path(files[0]).name
    return out


def dataset_passages(ws: Workspace, record: ArtifactRecord, *, size: int,
                     splits: Sequence[str] = ("train",)) -> tuple[list[Passage], dict[str, Any]]:
    """The passages of one dataset artifact, and counts (rows read per split, passages made).

    Args:
        ws: The workspace.
        record: A dataset artifact.
        size: Most words per document passage (tables longer than this stay whole).
        splits: Which split files to read; the test split is left out by default, so that
            evaluating a model with this knowledge base does not look up held-out answers.
    """
    root = ws.path(record)
    documents = _split_documents(ws, record)
    base = {"dataset_id": record.id, "dataset_ref": record.ref}
    out: list[Passage] = []
    rows: dict[str, int] = {}
    for split in splits:
        path = root / f"{split}.jsonl"
        if not path.exists():
            raise KifabrikError(f"dataset {record.ref}: {path} is missing (the artifact is incomplete)",
                                hint=f"check it with `kifabrik verify {record.ref}`")
        carried: list[Heading] = []
        rows[split] = 0
        for line_no, record_row in iter_jsonl(path):
            rows[split] += 1
            where = {**base, "split": split, "line": line_no}
            if "text" in record_row and "messages" not in record_row:
                if split in documents:  # the document's name; chat rows are cited by their line alone
                    where["document"] = documents[split]
                chunks, carried = chunk_text(str(record_row["text"]), size, carried)
                for c in chunks:
                    heading = " > ".join(c.path) or None
                    out.append(Passage(passage_id("section", c.text), "section", c.text,
                                       [{**where, **({"heading": heading} if heading else {})}],
                                       heading=heading, path=list(c.path)))
                continue
            for question, answer in _qa(record_row):
                if not answer:
                    continue
                text = f"Frage: {question}\nAntwort: {answer}" if question else answer
                out.append(Passage(passage_id("answer", text), "answer", text, [dict(where)],
                                   question=question, answer=answer))
    return out, {"rows": rows, "passages": len(out)}


def dedup(passages: list[Passage]) -> tuple[list[Passage], int]:
    """Identical passages once, in first-seen order, with the sources of all copies; and how many were merged."""
    kept: dict[str, Passage] = {}
    for p in passages:
        if p.id in kept:
            kept[p.id].sources.extend(s for s in p.sources if s not in kept[p.id].sources)
        else:
            kept[p.id] = Passage(p.id, p.kind, p.text, list(p.sources), p.question, p.answer, p.heading, list(p.path))
    return list(kept.values()), len(passages) - len(kept)


def source_label(source: dict[str, Any]) -> str:
    """A source in German for citations: `handbuch.md, Abschnitt Wartung > Öl, Zeile 3`."""
    parts = []
    if source.get("document"):
        parts.append(str(source["document"]))
    if source.get("heading"):
        parts.append(f"Abschnitt {source['heading']}")
    split = "" if source.get("split", "train") == "train" else f" ({source['split']})"
    parts.append(f"Zeile {source['line']}{split}")
    return ", ".join(parts)
