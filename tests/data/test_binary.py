"""A binary file given as JSONL, CSV, text or Markdown is one problem, not one per line.

A binary file renamed `.jsonl` used to produce 827 "not valid utf-8" lines; the first 8 KB
are sniffed now (NUL bytes, or mostly undecodable bytes) and the file is named once.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from kf_datafiles import chat

from kifabrik.data import ImportOptions, import_dataset
from kifabrik.data.documents import Measure
from kifabrik.data.importer import read_file
from kifabrik.data.readers import binary_at
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace

#: A PNG renamed: its 8-byte signature, then the IHDR chunk whose length field 0x0000000d starts with a NUL at
#: byte 8, then 64 KB of seeded random bytes.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + random.Random(0).randbytes(64 * 2**10)
#: Three ASCII bytes, then only bytes 0x80-0xff: in UTF-8 nearly all undecodable, and no NUL at all.
HIGH = b"abc" + bytes(range(0x80, 0x100)) * 256


@pytest.mark.parametrize("name", ["export.jsonl", "export.csv", "export.txt", "export.md", "export.json"])
def test_a_binary_file_is_one_problem(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(PNG)
    opts = ImportOptions(path=str(path), name="x", policy_preset="internal-only")
    rows, problems = read_file(path, opts, Measure(2000, "characters"), None)
    assert rows == []
    assert [str(p) for p in problems] == [
        (f"{path}: not a text file (binary content at byte 8); give the JSONL, CSV, text or Markdown file itself "
         "(UTF-16 text: pass --encoding utf-16)")]


def test_undecodable_bytes_without_nul(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(HIGH)
    assert binary_at(path, "utf-8") == 3
    assert binary_at(path, "cp1252") is None  # every byte is a character in cp1252: not binary by this rule


def test_text_is_not_binary(tmp_path: Path) -> None:
    latin1 = tmp_path / "alt.jsonl"  # a few umlauts in latin-1: each bad line is still named on its own
    latin1.write_bytes("".join(chat(f"Größe {i}?", "Über 3 m.") for i in range(20)).encode("latin-1"))
    assert binary_at(latin1, "utf-8") is None
    utf16 = tmp_path / "utf16.jsonl"  # NUL bytes are part of UTF-16 text
    utf16.write_bytes("".join(chat(f"Frage {i}?", "Antwort.") for i in range(20)).encode("utf-16"))
    assert binary_at(utf16, "utf-8") == 3
    assert binary_at(utf16, "utf-16") is None


def test_import_names_the_binary_file_once(ws: Workspace, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bild.jsonl"
    good.write_text("".join(chat(f"Frage {i}?", f"Antwort {i}.") for i in range(10)), encoding="utf-8")
    bad.write_bytes(PNG)
    with pytest.raises(KifabrikError) as info:
        import_dataset(ws, ImportOptions(path=[str(good), str(bad)], name="x", policy_preset="internal-only"))
    assert str(info.value).splitlines()[:2] == [
        "1 invalid row or file; nothing was imported:",
        (f"  {bad}: not a text file (binary content at byte 8); give the JSONL, CSV, text or Markdown file itself "
         "(UTF-16 text: pass --encoding utf-16)")]
