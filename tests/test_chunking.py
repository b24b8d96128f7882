"""The one chunker: headings stay with their text, every chunk carries its heading path, tables are
cut between rows with their header repeated, and no chunk spans two top-level sections."""

from __future__ import annotations

from importlib.resources import files
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from kifabrik.chunking import HEADING, PASSAGES, TRAINING, Measure, chunk

HANDBOOK = files("kifabrik").joinpath("data/demo/schmidt-handbuch.md").read_text(encoding="utf-8")
TITLE = "# Servicehandbuch der Schmidt Maschinenbau GmbH"


@given(st.integers(300, 2500))
@settings(max_examples=40, deadline=None)
def test_handbook_chunks_follow_its_structure(size: int) -> None:
    chunks, trailing = chunk(HANDBOOK, Measure(size, "characters"), TRAINING)
    lines = HANDBOOK.splitlines()
    source_lines = set(lines)
    headers = {a for a, b in pairwise(lines) if a.startswith("|") and b.startswith("|---")}
    assert len(headers) == 5  # the five tables of the handbook
    for c in chunks:
        paragraphs = c.text.split("\n\n")
        assert c.text.startswith(TITLE)  # the heading path opens every chunk
        assert not HEADING.match(paragraphs[-1])  # a heading never ends a chunk ...
        assert not all(HEADING.match(p) for p in paragraphs)  # ... nor is a chunk only titles
        for line in c.text.splitlines():
            if line.startswith("|"):  # a table row is never cut: each is a whole line of the handbook
                assert line in source_lines
        for piece in paragraphs:
            if piece.startswith("|"):  # every piece of a table starts with the table's header row
                assert piece.split("\n")[0] in headers
        # longer than the size only where one table row with its header and path does not fit
        assert len(c.text) <= size or (c.is_table and paragraphs[-1].count("\n") == 2)
    assert trailing == []
    # all 8 error codes are in chunks of the section Fehlercodes, each exactly once
    codes = [line[2:6] for c in chunks if c.section == "Fehlercodes" for line in c.text.splitlines()
             if line.startswith("| E")]
    assert codes == ["E101", "E205", "E310", "E422", "E508", "E615", "E733", "E840"]


def test_table_is_cut_between_rows_and_repeats_its_header() -> None:
    table = ["| Code | Abhilfe |", "|---|---|"] + [f"| E{i:03} | Maßnahme {i} |" for i in range(10)]
    text = "# Handbuch\n\n## Fehler\n\nDie Codes:\n\n" + "\n".join(table) + "\n\n## Ende\n\nSchluss."
    chunks, _ = chunk(text, Measure(110, "characters"), TRAINING)
    # 110 characters: the path "# Handbuch\n\n## Fehler\n\n" (24) and the header (29) leave room for
    # two rows of 21; the first piece shares its chunk with the text before the table
    path, head = "# Handbuch\n\n## Fehler\n\n", "\n".join(table[:2]) + "\n"
    assert [c.text for c in chunks] == [
        path + "Die Codes:\n\n" + head + "\n".join(table[2:4]),
        *(path + head + "\n".join(table[i:i + 2]) for i in (4, 6, 8, 10)),
        "# Handbuch\n\n## Ende\n\nSchluss.",
    ]
    assert max(len(c.text) for c in chunks) == 107
    assert [(c.line, c.section, c.path, c.is_table) for c in chunks] == [
        *((line, "Fehler", ("Handbuch", "Fehler"), True) for line in (1, 11, 13, 15, 17)),
        (20, "Ende", ("Handbuch", "Ende"), False)]


def test_subsections_share_a_chunk_but_top_level_sections_never_do() -> None:
    text = "# H\n\n## A\n\neins\n\n### A1\n\nzwei\n\n## B\n\ndrei"
    chunks, _ = chunk(text, Measure(1000, "characters"), TRAINING)
    assert [(c.text, c.section) for c in chunks] == [("# H\n\n## A\n\neins\n\n### A1\n\nzwei", "A"),
                                                     ("# H\n\n## B\n\ndrei", "B")]
    # passages of the knowledge base: one per (sub)section, each opened by its own heading
    passages, _ = chunk(text, Measure(1000, "words"), PASSAGES)
    assert [(p.text, p.path) for p in passages] == [("## A\n\neins", ("H", "A")), ("### A1\n\nzwei", ("H", "A", "A1")),
                                                    ("## B\n\ndrei", ("H", "B"))]


def test_a_heading_moves_to_the_chunk_of_its_text() -> None:
    # the heading alone would still fit after the first paragraph, its text would not: it opens the next chunk
    text = "# W\n\n" + "Wort " * 12 + "\n\n### Wöchentliche Wartung\n\n" + "Öl prüfen. " * 5
    chunks, _ = chunk(text, Measure(100, "characters"), TRAINING)
    assert [c.text.split("\n\n")[-1][:4] for c in chunks] == ["Wort", "Öl p"]
    assert chunks[1].text.startswith("# W\n\n### Wöchentliche Wartung\n\nÖl prüfen.")


def test_a_long_list_is_cut_between_its_items() -> None:
    items = [f"- Maschine {i}: Filter alle {100 * i} Betriebsstunden tauschen" for i in range(1, 9)]
    text = "## Filter\n\nDie Intervalle:\n" + "\n".join(items)
    chunks, _ = chunk(text, Measure(200, "characters"), TRAINING)
    # the paragraph and its list (one block) is longer than a chunk: cut between items, never inside one
    assert [c.text.split("\n")[2:] for c in chunks] == [["Die Intervalle:", *items[:3]], items[3:6], items[6:]]
