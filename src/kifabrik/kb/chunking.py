"""Cutting a document text into passages: headings stay with their text, tables stay whole.

A text is read as blocks (Markdown headings, tables, paragraphs). Each heading opens a
section; a section's blocks are packed into passages of at most `size` words, and every
passage of a section starts with the section's heading, so a passage never loses the title
that says what it is about. A paragraph longer than a passage is cut at sentence ends (a
sentence longer than a passage at word boundaries); a Markdown table is never cut: one that
is longer than a passage becomes a passage of its own, longer than `size`.

The data stage stores documents as chunks in file order, and its chunks may end with a
heading whose text opens the next chunk; `chunk_text` hands such trailing headings back so
the caller can carry them into the next chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

Heading = tuple[int, str]  # (level 1-6, title)


@dataclass(frozen=True)
class Block:
    kind: Literal["heading", "table", "text"]
    text: str
    level: int = 0


@dataclass(frozen=True)
class Chunk:
    """One passage of a document: its text and the heading path above it (outermost first)."""

    text: str
    path: tuple[str, ...] = ()
    is_table: bool = False


@dataclass
class _Section:
    path: list[Heading]
    heading: str | None  # the heading line as written, e.g. "## Ölwechsel"
    body: list[Block] = field(default_factory=list)


def words(text: str) -> int:
    return len(text.split())


def _table_starts(lines: list[str], i: int) -> bool:
    line = lines[i]
    if "|" not in line or not line.strip():
        return False
    if line.lstrip().startswith("|"):
        return True
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    return "|" in nxt and bool(TABLE_DELIMITER.match(nxt))


def blocks(text: str) -> list[Block]:
    """Headings, tables (runs of pipe rows) and paragraphs (runs of other non-blank lines)."""
    lines = text.splitlines()
    out: list[Block] = []
    i, gap = 0, False
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i, gap = i + 1, True
            continue
        if m := HEADING.match(line):
            out.append(Block("heading", line.strip(), len(m.group(1))))
            i += 1
        elif _table_starts(lines, i):
            j = i
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            table = "\n".join(row.rstrip() for row in lines[i:j])
            if gap and out and out[-1].kind == "table":
                # The data stage cuts an over-long paragraph at sentence ends and joins the pieces
                # with blank lines; two tables separated only by blank lines are rejoined here.
                table = out.pop().text + "\n" + table
            out.append(Block("table", table))
            i = j
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not HEADING.match(lines[j]) and not _table_starts(lines, j):
                j += 1
            out.append(Block("text", "\n".join(row.rstrip() for row in lines[i:j]).strip()))
            i = j
        gap = False
    return out


def _pieces(block: Block, budget: int) -> list[Block]:
    """A text block as pieces of at most `budget` words; tables are returned whole."""
    if block.kind == "table" or words(block.text) <= budget:
        return [block]
    out: list[Block] = []
    for sentence in SENTENCE_END.split(block.text):
        tokens = sentence.split()
        out += [Block("text", " ".join(tokens[i:i + budget])) for i in range(0, len(tokens), budget)]
    return out


def _pack(section: _Section, size: int) -> list[Chunk]:
    head = section.heading
    budget = max(1, size - (words(head) if head else 0))
    path = tuple(title for _, title in section.path)
    chunks: list[Chunk] = []
    current: list[Block] = []
    used = 0

    def flush() -> None:
        nonlocal current, used
        if current:
            text = "\n\n".join(([head] if head else []) + [b.text for b in current])
            chunks.append(Chunk(text, path, any(b.kind == "table" for b in current)))
        current, used = [], 0

    for block in section.body:
        for piece in _pieces(block, budget):
            n = words(piece.text)
            if current and used + n > budget:
                flush()
            current.append(piece)
            used += n
    flush()
    return chunks


def chunk_text(text: str, size: int, carried: list[Heading] | None = None) -> tuple[list[Chunk], list[Heading]]:
    """Passages of one text, and the heading path to carry into the next chunk of the same document.

    Args:
        text: Plain text or Markdown.
        size: Most words per passage (a table longer than this stays whole).
        carried: Headings that ended the previous chunk without any text after them.

    Returns:
        The passages, and the headings that end this text without text after them (else []).
    """
    path: list[Heading] = list(carried or [])
    section = _Section(list(path), _line(path[-1]) if path else None)
    sections = [section]
    for block in blocks(text):
        if block.kind == "heading":
            title = HEADING.match(block.text).group(2)  # type: ignore[union-attr]
            path = [h for h in path if h[0] < block.level] + [(block.level, title)]
            section = _Section(list(path), block.text)
            sections.append(section)
        else:
            section.body.append(block)
    chunks = [c for s in sections if s.body for c in _pack(s, size)]
    return chunks, (list(section.path) if not section.body and section.path else [])


def _line(heading: Heading) -> str:
    return "#" * heading[0] + " " + heading[1]
