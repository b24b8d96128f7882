"""Plain text, Markdown and PDF files as text rows for continued pre-training.

The rows are cut by kifabrik's one chunker (`kifabrik.chunking`, layout `TRAINING`) along the
document's structure: a heading stays with its text, every row starts with its heading path,
a table longer than a row is cut between rows with its header repeated, and no row spans two
top-level sections. Rows hold at most `size` units: tokens of the base model's tokenizer when
one is given, characters otherwise. Each row records where it starts (`line 12` for text,
`page 3` for PDFs) and the top-level section it belongs to, the unit of the test split.
"""

from __future__ import annotations

from bisect import bisect_right
from pathlib import Path
from typing import Literal

from kifabrik.chunking import TRAINING, Measure, chunk
from kifabrik.data.readers import decode_hint
from kifabrik.data.rows import Problem, Row

__all__ = ["Measure", "document_rows", "read_pdf", "read_text"]


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


def document_rows(path: Path, kind: Literal["text", "pdf"], measure: Measure,
                  encoding: str) -> tuple[list[Row], list[Problem]]:
    """Chunked text rows of one text/Markdown or PDF file (see the module docstring)."""
    src = str(path)
    if kind == "pdf":
        read_pages, problems = read_pdf(path)
        pages = [(n, t.strip("\n")) for n, t in read_pages]
        # Pages are joined as paragraphs; `firsts[i]` is the first line of the i-th page.
        firsts, lines = [], 1
        for _, page_text in pages:
            firsts.append(lines)
            lines += len(page_text.splitlines()) + 1
        text = "\n\n".join(t for _, t in pages)

        def where(line: int) -> str:
            return f"page {pages[bisect_right(firsts, line) - 1][0]}"
    else:
        read, problems = read_text(path, encoding)
        text = read or ""

        def where(line: int) -> str:
            return f"line {line}"
    if problems:
        return [], problems
    chunks, _ = chunk(text, measure, TRAINING)
    if not chunks:
        return [], [Problem(src, None, "no text in the file" + (" (only headings)" if text.strip() else ""))]
    return [Row(src, f"chunk {i} ({where(c.line)})", {"text": c.text}, c.section)
            for i, c in enumerate(chunks, 1)], []
