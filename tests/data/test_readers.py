"""Readers: line-exact problems for bad JSONL/CSV, encodings, huge lines, chunking, PDF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kf_datafiles import chat, minimal_pdf

from kifabrik.chunking import TRAINING, chunk
from kifabrik.data.documents import Measure, document_rows
from kifabrik.data.readers import parse_csv_map, read_csv, read_jsonl
from kifabrik.errors import KifabrikError

LIMIT = 8 * 2**20


def test_jsonl_problems_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes((chat("Frage?", "Antwort.") + '{"messages": [\n' + "\n" + '{"messages": [{"role": "bot", '
                      '"content": "x"}]}\n' + '{"instruction": "Sag Hallo", "output": "Hallo"}\n' + "[1, 2]\n"
                      + '{"messages": [{"role": "user", "content": "nur Frage"}]}\n').encode()
                     + "Grüße".encode("latin-1") + b"\n" + b'{"text": "ok"}\n')
    rows, problems = read_jsonl(path, "auto", "utf-8", LIMIT)
    assert [(r.line, r.kind) for r in rows] == [(1, "chat"), (5, "chat"), (9, "text")]
    assert rows[1].record["messages"][0] == {"role": "user", "content": "Sag Hallo"}
    got = [(p.line, p.reason.split(";")[0]) for p in problems]
    assert got[0][0] == 2 and got[0][1].startswith("invalid JSON")
    assert got[1] == (4, "messages[0].role is 'bot'")
    assert got[2] == (6, "expected a JSON object, got list")
    assert got[3] == (7, "a chat needs at least one user and one assistant message")
    assert got[4][0] == 8 and "byte 0xfc at column 3 is not valid utf-8" in got[4][1]
    assert str(problems[1]) == f"{path}:4: messages[0].role is 'bot'; use system, user or assistant"


def test_latin1_file_reads_with_the_right_encoding(tmp_path: Path) -> None:
    path = tmp_path / "alt.jsonl"
    path.write_bytes(chat("Größe?", "Über 3 m.").encode("cp1252"))
    assert read_jsonl(path, "chat", "utf-8", LIMIT)[1]
    rows, problems = read_jsonl(path, "chat", "cp1252", LIMIT)
    assert not problems and rows[0].record["messages"][0]["content"] == "Größe?"


def test_a_50_mb_line_is_reported_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        fh.write(chat("a", "b").encode())
        fh.write(b'{"text": "' + b"x" * (50 * 2**20) + b'"}\n')
        fh.write(chat("c", "d").encode())
    rows, problems = read_jsonl(path, "auto", "utf-8", LIMIT)
    assert [r.line for r in rows] == [1, 3]
    assert problems[0].line == 2 and "line is 50.0 MB, longer than the limit of 8.0 MB" in problems[0].reason


def test_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + chat("a", "b").encode() + b"\n   \n")
    rows, problems = read_jsonl(path, "chat", "utf-8", LIMIT)
    assert len(rows) == 1 and not problems


@given(st.lists(st.binary(max_size=60), max_size=8))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_bytes_give_rows_or_problems_never_a_crash(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines))
    rows, problems = read_jsonl(path, "auto", "utf-8", 1024)
    nonblank = sum(1 for raw in b"\n".join(lines).split(b"\n") if raw.strip())
    assert len(rows) + len(problems) <= nonblank
    assert all(isinstance(p.line, int) for p in problems)


def test_csv_with_mapping_semicolons_and_multiline_cells(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text('Nr;Frage;Antwort\n1;Wie entlüfte ich?;"Ventil öffnen.\nDann schließen."\n2;Ölsorte?;\n'
                    "3;Garantie?;24 Monate\n", encoding="utf-8")
    rows, problems = read_csv(path, parse_csv_map("user=Frage, assistant=Antwort"), "utf-8", LIMIT)
    assert [r.line for r in rows] == [2, 5]
    assert rows[0].record["messages"][1]["content"] == "Ventil öffnen.\nDann schließen."
    assert [(p.line, p.reason) for p in problems] == [(4, "column 'Antwort' (assistant) is empty")]
    with pytest.raises(KifabrikError, match=r"faq.csv:1: column 'Answer' named in --csv-map is not in the header"):
        read_csv(path, parse_csv_map("user=Frage,assistant=Answer"), "utf-8", LIMIT)
    assert len(read_csv(path, None, "utf-8", LIMIT)[0]) == 2  # Frage/Antwort are known column names
    odd = tmp_path / "odd.csv"
    odd.write_text("Anliegen,Lösung\nx,y\n", encoding="utf-8")
    with pytest.raises(KifabrikError, match="which columns hold the data.*Anliegen, Lösung"):
        read_csv(odd, None, "utf-8", LIMIT)


def test_csv_map_errors() -> None:
    with pytest.raises(KifabrikError, match="not ROLE=COLUMN"):
        parse_csv_map("user")
    with pytest.raises(KifabrikError, match="unknown role 'bot'"):
        parse_csv_map("bot=x,user=y")
    with pytest.raises(KifabrikError, match="must map user and assistant"):
        parse_csv_map("user=Frage")


@given(st.lists(st.text(alphabet="abc defg.\n", min_size=1, max_size=300), min_size=1, max_size=6),
       st.integers(16, 200))
@settings(max_examples=150, deadline=None)
def test_character_chunks_fit_and_keep_every_word(texts: list[str], size: int) -> None:
    text = "\n\n".join(texts)
    chunks, _ = chunk(text, Measure(size, "characters"), TRAINING)
    assert all(len(c.text) <= size for c in chunks)
    assert "".join("".join(c.text.split()) for c in chunks) == "".join(text.split())


def test_markdown_rows_start_with_their_heading_path(tmp_path: Path) -> None:
    path = tmp_path / "handbuch.md"
    path.write_text("# Wartung\nÖl prüfen.\n\n## Filter\nFilter tauschen.\n\n## Ende\n", encoding="utf-8")
    rows, problems = document_rows(path, "text", Measure(60, "characters"), "utf-8")
    # "# Wartung" is the one top-level heading, so the "##" headings open the sections of the split;
    # "## Ende" has no text: it is no row of its own.
    assert not problems and [(r.line, r.section) for r in rows] == [("chunk 1 (line 1)", ""),
                                                                    ("chunk 2 (line 4)", "Filter")]
    assert [r.record for r in rows] == [{"text": "# Wartung\n\nÖl prüfen."},
                                        {"text": "# Wartung\n\n## Filter\n\nFilter tauschen."}]


def test_token_chunks_use_the_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    path = tmp_path / "t.txt"
    path.write_text(("Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel. " * 30).strip(), encoding="utf-8")
    chunker = Measure(32, "tokens", tok)
    rows, _ = document_rows(path, "text", chunker, "utf-8")
    assert len(rows) > 1 and all(chunker.count(r.record["text"]) <= 32 for r in rows)


def test_pdf_text_and_bad_pdfs(tmp_path: Path) -> None:
    good = tmp_path / "a.pdf"
    good.write_bytes(minimal_pdf(["Wartungsplan FZ 400", "Filter alle 500 Stunden tauschen."]))
    rows, problems = document_rows(good, "pdf", Measure(2000, "characters"), "utf-8")
    assert not problems and "Filter alle 500 Stunden" in rows[0].record["text"] and rows[0].line == "chunk 1 (page 1)"
    bad = tmp_path / "b.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not a pdf")
    rows, problems = document_rows(bad, "pdf", Measure(2000, "characters"), "utf-8")
    assert not rows and "PDF" in problems[0].reason
    empty = tmp_path / "c.pdf"
    empty.write_bytes(minimal_pdf([]))
    assert "no extractable text" in document_rows(empty, "pdf", Measure(100), "utf-8")[1][0].reason


def test_text_with_bad_bytes_names_the_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes(b"gut\n" + "schlecht ä\n".encode("latin-1") + b"gut\n")
    rows, problems = document_rows(path, "text", Measure(100), "utf-8")
    assert not rows and [p.line for p in problems] == [2]
    assert json.dumps([str(p) for p in problems])
