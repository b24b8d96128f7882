"""Knowledge-base passages, cut by kifabrik's one chunker (`kifabrik.chunking`, layout `PASSAGES`).

Each (sub)section becomes passages of at most `size` words that start with the section's
heading; a Markdown table stays whole (one longer than `size` is a passage of its own). Rows
of older imports may end with a heading whose text opens the next row: `chunk_text` hands
such trailing headings back so the caller carries them into the next row.
"""

from __future__ import annotations

from kifabrik.chunking import PASSAGES, Chunk, Heading, Measure, chunk

__all__ = ["Chunk", "Heading", "chunk_text"]


def chunk_text(text: str, size: int, carried: list[Heading] | None = None) -> tuple[list[Chunk], list[Heading]]:
    """Passages of one text, and the heading path to carry into the next row of the same document.

    Args:
        text: Plain text or Markdown.
        size: Most words per passage (a table longer than this stays whole).
        carried: Headings that ended the previous row without any text after them.
    """
    return chunk(text, Measure(size, "words"), PASSAGES, carried)
