"""Cutting a document into chunks along its structure: headings, paragraphs, table rows.

The one chunker of kifabrik: the data stage cuts text, Markdown and PDF files into text rows
with it (continued pre-training), and the knowledge base cuts those rows into passages with it.
A text is read as blocks (Markdown headings, tables, paragraphs) and packed into chunks of at
most `Measure.size` units (tokens of a tokenizer, characters or words):

- A heading is never the end of a chunk and never a chunk of its own: it goes into the chunk
  of the text that follows it, and a section without text only lends its title to the path of
  the sections below it.
- Every chunk starts with its heading path (`Layout.prefix="path"`: all headings above it, as
  Markdown heading lines) or with its own section's heading (`"heading"`), so a chunk always
  says what it is about.
- A paragraph longer than a chunk is cut at sentence ends (a list between its items), a sentence
  longer than a chunk at unit boundaries. A table longer than a chunk is cut between rows, and every piece repeats
  the header row (`Layout.tables="rows"`), or is kept whole (`"whole"`); a cell is never cut.
- A chunk never spans two top-level sections (the outermost heading level that occurs more
  than once: `## ...` in a handbook with one `# Title`), so a split by section takes whole
  chunks; with `Layout.boundary="heading"` every heading starts a new chunk.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+")
LIST_ITEM = re.compile(r"^\s{0,3}([-*+]|\d{1,3}[.)])\s+")

Heading = tuple[int, str]  # (level 1-6, title)


@dataclass(frozen=True)
class Block:
    """A heading, a table or a paragraph, and the line (from 1) where it starts."""

    kind: Literal["heading", "table", "text"]
    text: str
    level: int = 0
    line: int = 1


@dataclass(frozen=True)
class Chunk:
    """One chunk: its text, the heading titles above its start (outermost first), where it starts.

    `section` is the title of the top-level section the chunk lies in ("" before the first one);
    a test split by section holds out every chunk of a section or none.
    """

    text: str
    path: tuple[str, ...] = ()
    is_table: bool = False
    line: int = 1
    section: str = ""


@dataclass(frozen=True)
class Layout:
    """How chunks are cut; `TRAINING` for the data stage's rows, `PASSAGES` for the knowledge base."""

    tables: Literal["rows", "whole"] = "rows"
    boundary: Literal["section", "heading"] = "section"
    prefix: Literal["path", "heading"] = "path"


#: Rows for training: a sequence has a hard length, so tables are cut between rows; chunks fill up
#: within a top-level section and start with their whole heading path.
TRAINING = Layout()
#: Knowledge-base passages: one (sub)section at a time, starting with its heading; tables stay whole
#: (a retrieved table answers every question about its rows), the parent headings are in `Chunk.path`.
PASSAGES = Layout(tables="whole", boundary="heading", prefix="heading")


@dataclass
class Measure:
    """How long a text is: tokens of `tokenizer`, characters or words; `size` is the most per chunk."""

    size: int
    unit: Literal["tokens", "characters", "words"] = "characters"
    tokenizer: Any = None

    def count(self, text: str) -> int:
        if self.unit == "tokens":
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(text.split()) if self.unit == "words" else len(text)

    def cut(self, text: str, budget: int) -> list[str]:
        """A text without sentence ends as pieces of at most `budget` units."""
        if self.unit == "words":
            tokens = text.split()
            return [" ".join(tokens[i:i + budget]) for i in range(0, len(tokens), budget)]
        if self.unit == "tokens":
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            cuts = [offsets[i][0] for i in range(0, len(offsets), budget)] + [len(text)]
            return [text[a:b].strip() for a, b in pairwise(cuts) if text[a:b].strip()]
        out = []  # characters: cut at the last space that fits, inside a word only if it must
        while len(text) > budget:
            at = text.rfind(" ", 1, budget + 1)
            at = at if at > 0 else budget
            out.append(text[:at])
            text = text[at:].lstrip(" ")
        return out + ([text] if text.strip() else [])


def _table_starts(lines: list[str], i: int) -> bool:
    line = lines[i]
    if "|" not in line or not line.strip():
        return False
    if line.lstrip().startswith("|"):
        return True
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    return "|" in nxt and bool(TABLE_DELIMITER.match(nxt))


def _has_header(table: str) -> bool:
    rows = table.split("\n")
    return len(rows) > 1 and bool(TABLE_DELIMITER.match(rows[1]))


def blocks(text: str) -> list[Block]:
    """Headings, tables (runs of pipe rows) and paragraphs (runs of other non-blank lines)."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if m := HEADING.match(line):
            out.append(Block("heading", line.strip(), len(m.group(1)), i + 1))
            i += 1
        elif _table_starts(lines, i):
            j = i
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                j += 1
            table = "\n".join(row.rstrip() for row in lines[i:j])
            if out and out[-1].kind == "table" and not _has_header(table):
                # Rows without a header right after a table continue it (older imports cut tables
                # into pieces separated by blank lines).
                prev = out.pop()
                out.append(Block("table", prev.text + "\n" + table, line=prev.line))
            else:
                out.append(Block("table", table, line=i + 1))
            i = j
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not HEADING.match(lines[j]) and not _table_starts(lines, j):
                j += 1
            out.append(Block("text", "\n".join(row.rstrip() for row in lines[i:j]).strip(), line=i + 1))
            i = j
    return out


def _group(items: list[str], head: list[str], joiner: str, measure: Measure, budget: int) -> Iterator[str]:
    """`items` joined greedily into pieces of at most `budget` units, each starting with `head`."""
    current: list[str] = []
    for item in items:
        if current and measure.count(joiner.join(head + current + [item])) > budget:
            yield joiner.join(head + current)
            current = []
        current.append(item)
    if current:
        yield joiner.join(head + current)


def _pieces(block: Block, measure: Measure, budget: int, layout: Layout) -> list[tuple[str, int]]:
    """A table or paragraph as (text, line) pieces that each fit into `budget` units, where they can."""
    if measure.count(block.text) <= budget or (block.kind == "table" and layout.tables == "whole"):
        return [(block.text, block.line)]
    if block.kind == "table":
        rows = block.text.split("\n")
        n_head = 2 if _has_header(block.text) else 0  # a cell is never cut: a row too long stays whole
        line = block.line + n_head  # the line of the piece's first row below the header
        out = []
        for piece in _group(rows[n_head:], rows[:n_head], "\n", measure, budget):
            out.append((piece, line if out else block.line))
            line += piece.count("\n") + 1 - n_head
        return out
    lines = block.text.split("\n")
    if len(lines) > 1 and all(LIST_ITEM.match(line) or line.startswith((" ", "\t")) for line in lines[1:]):
        # a list (or a paragraph ending in one) is cut between its items, each item whole where it fits
        items: list[str] = []
        for line in lines:
            if items and not LIST_ITEM.match(line):
                items[-1] += "\n" + line
            else:
                items.append(line)
        if all(measure.count(item) <= budget for item in items):
            return [(piece, block.line) for piece in _group(items, [], "\n", measure, budget)]
    sentences: list[str] = []
    for sentence in SENTENCE_END.split(" ".join(lines)):
        sentences += [sentence] if measure.count(sentence) <= budget else measure.cut(sentence, budget)
    return [(piece, block.line) for piece in _group(sentences, [], " ", measure, budget)]


def top_level(found: list[Block]) -> int | None:
    """The outermost heading level that occurs more than once: the level of the top-level sections."""
    levels = Counter(b.level for b in found if b.kind == "heading")
    return min((level for level, n in levels.items() if n > 1), default=None)


def chunk(text: str, measure: Measure, layout: Layout = TRAINING,
          carried: list[Heading] | None = None) -> tuple[list[Chunk], list[Heading]]:
    """The chunks of one text, and the headings that end it without text after them.

    Args:
        text: Plain text or Markdown.
        measure: How to count, and the most units per chunk (a table row or a table kept whole
            that is longer stays one chunk, longer than `measure.size`).
        layout: `TRAINING` or `PASSAGES` (see the module docstring).
        carried: Headings that ended the previous text of the same document without text after
            them (rows of older imports could end so); they open this text's path.

    Returns:
        The chunks in order, and the trailing headings (else []).
    """
    found = blocks(text)
    top = top_level(found)
    stack: list[tuple[int, str, str]] = [(lvl, title, "#" * lvl + " " + title) for lvl, title in carried or []]
    pending: list[tuple[str, int]] = [(stack[-1][2], 1)] if stack else []  # headings not yet in a chunk
    out: list[Chunk] = []
    parts: list[str] = []
    state: dict[str, Any] = {}
    section = ""

    def opening() -> list[str]:
        if layout.prefix == "path":
            return [line for _, _, line in stack]
        return [stack[-1][2]] if stack else []

    def flush() -> None:
        if parts:
            out.append(Chunk("\n\n".join(parts), **state))
        parts.clear()

    for block in found:
        if block.kind == "heading":
            if parts and (layout.boundary == "heading" or (top is not None and block.level <= top)):
                flush()
            title = HEADING.match(block.text).group(2)  # type: ignore[union-attr]
            if top is not None and block.level <= top:
                section = title if block.level == top else ""
            stack = [h for h in stack if h[0] < block.level] + [(block.level, title, block.text)]
            pending.append((block.text, block.line))
            continue
        fresh = opening()
        budget = max(1, measure.size - (measure.count("\n\n".join(fresh + ["x"])) - measure.count("x") if fresh else 0))
        for piece, line in _pieces(block, measure, budget, layout):
            if parts and measure.count("\n\n".join(parts + [h for h, _ in pending] + [piece])) > measure.size:
                flush()
            if not parts:
                parts.extend(opening())
                start = pending[0][1] if pending else line
                state = {"path": tuple(t for _, t, _ in stack), "is_table": False, "line": start, "section": section}
            else:
                parts.extend(h for h, _ in pending)
            pending.clear()
            parts.append(piece)
            state["is_table"] = state["is_table"] or block.kind == "table"
    flush()
    trailing = [(lvl, title) for lvl, title, _ in stack] if pending else []
    return out, trailing
