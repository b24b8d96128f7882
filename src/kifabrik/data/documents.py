"""Plain text, Markdown and PDF files as text rows, chunked for continued pre-training.

Chunks follow paragraphs (blank lines; Markdown headings start a new paragraph) and are
packed up to `size` units: tokens of the base model's tokenizer when one is given,
characters otherwise. A paragraph longer than a chunk is split at sentence ends, and a
sentence longer than a chunk at token (or character) boundaries. Each row records where
it starts: `line 12` for text, `page 3` for PDFs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from kifabrik.data.readers import decode_hint
from kifabrik.data.rows import Problem, Row

SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+")


@dataclass
class Chunker:
    """Packs paragraphs into chunks of at most `size` tokens (with a tokenizer) or characters."""

    size: int
    unit: Literal["tokens", "characters"] = "characters"
    tokenizer: Any = None

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _hard_split(self, text: str) -> list[str]:
        if self.tokenizer is None:  # cut at the last space that fits, inside a word only if it must
            out = []
            while len(text) > self.size:
                cut = text.rfind(" ", 1, self.size + 1)
                cut = cut if cut > 0 else self.size
                out.append(text[:cut])
                text = text[cut:].lstrip(" ")
            return out + ([text] if text.strip() else [])
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        cuts = [offsets[i][0] for i in range(0, len(offsets), self.size)] + [len(text)]
        return [text[a:b] for a, b in pairwise(cuts) if text[a:b].strip()]

    def pieces(self, paragraph: str) -> list[tuple[str, int]]:
        """A paragraph as (piece, size) pieces that each fit into one chunk."""
        n = self.count(paragraph)
        if n <= self.size:
            return [(paragraph, n)]
        out = []
        for sentence in SENTENCE_END.split(paragraph):
            m = self.count(sentence)
            out += [(sentence, m)] if m <= self.size else [(p, self.count(p)) for p in self._hard_split(sentence)]
        return out

    def chunks(self, paragraphs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`[(where, paragraph)]` -> `[(where the chunk starts, chunk text)]`."""
        out: list[tuple[str, str]] = []
        current: list[str] = []
        used, start = 0, ""
        for where, paragraph in paragraphs:
            for piece, n in self.pieces(paragraph):
                sep = 2 if self.tokenizer is None and current else 0  # the "\n\n" joining pieces
                if current and used + n + sep > self.size:
                    out.append((start, "\n\n".join(current)))
                    current, used = [], 0
                if not current:
                    start = where
                current.append(piece)
                used += n + (2 if self.tokenizer is None and len(current) > 1 else 0)
        if current:
            out.append((start, "\n\n".join(current)))
        return out


def paragraphs(text: str, where: Callable[[int], str]) -> list[tuple[str, str]]:
    """Split at blank lines and before Markdown headings; `where(line)` names a paragraph's start."""
    out, current, first = [], [], 1
    for i, line in enumerate(text.splitlines(), 1):
        heading = line.lstrip().startswith("#")
        if (not line.strip() or heading) and current:
            out.append((where(first), "\n".join(current).strip()))
            current = []
        if line.strip():
            if not current:
                first = i
            current.append(line.rstrip())
    if current:
        out.append((where(first), "\n".join(current).strip()))
    return [(w, p) for w, p in out if p]


def read_text(path: Path, encoding: str) -> tuple[str | None, list[Problem]]:
    data = path.read_bytes()
    try:
        return data.decode(encoding).lstrip("\ufeff"), []
    except UnicodeDecodeError:
        pass
    bad = []
    for i, line in enumerate(data.split(b"\n"), 1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as exc:
            bad.append(Problem(str(path), i, f"byte 0x{line[exc.start]:02x} at column {exc.start + 1} is "
                                             f"{decode_hint(encoding)}"))
    return None, bad


def read_pdf(path: Path) -> tuple[list[tuple[int, str]], list[Problem]]:
    """(page number, text) of every page with text."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:  # pragma: no cover - pypdf is a core dependency
        return [], [Problem(str(path), None, "reading PDFs needs pypdf: pip install pypdf")]
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            return [], [Problem(str(path), None, "the PDF is encrypted; save an unencrypted copy")]
        pages = [(i, page.extract_text() or "") for i, page in enumerate(reader.pages, 1)]
    except (PdfReadError, ValueError, OSError, KeyError, TypeError) as exc:
        return [], [Problem(str(path), None, f"not a readable PDF ({type(exc).__name__}: {exc})")]
    pages = [(i, t) for i, t in pages if t.strip()]
    if not pages:
        return [], [Problem(str(path), None, "no extractable text (a scanned PDF? run OCR on it first)")]
    return pages, []


def document_rows(path: Path, kind: Literal["text", "pdf"], chunker: Chunker,
                  encoding: str) -> tuple[list[Row], list[Problem]]:
    """Chunked text rows of one text/Markdown or PDF file."""
    src = str(path)
    if kind == "pdf":
        pages, problems = read_pdf(path)
        paras = [pp for page, text in pages for pp in paragraphs(text, lambda _l, p=page: f"page {p}")]
    else:
        text, problems = read_text(path, encoding)
        paras = paragraphs(text, lambda line: f"line {line}") if text is not None else []
    if problems:
        return [], problems
    if not paras:
        return [], [Problem(src, None, "no text in the file")]
    return [Row(src, f"chunk {i} ({where})", {"text": chunk})
            for i, (where, chunk) in enumerate(chunker.chunks(paras), 1)], []
