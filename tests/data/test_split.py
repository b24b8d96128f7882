"""The test split of documents takes whole documents or whole top-level sections, never single chunks."""

from __future__ import annotations

import json
from pathlib import Path

from kifabrik.data import ImportOptions, import_dataset
from kifabrik.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
HANDBOOK = ROOT / "src" / "kifabrik" / "data" / "demo" / "schmidt-handbuch.md"


def rows(ws: Workspace, record, split: str) -> list[str]:
    return [json.loads(line)["text"] for line in (ws.path(record) / f"{split}.jsonl").read_text().splitlines()]


def test_one_document_is_split_by_whole_top_level_sections(ws: Workspace) -> None:
    res = import_dataset(ws, ImportOptions(name="hb", path=str(HANDBOOK), policy_preset="internal-only",
                                           chunk_size=500, test_fraction=0.2, seed=0))
    train, test = rows(ws, res.record, "train"), rows(ws, res.record, "test")
    assert len(train) + len(test) == 33 and len(test) == 7  # 33 chunks of at most 500 characters; 20 % ≈ 6.6

    def section(text: str) -> str:
        return text.split("\n\n")[1] if text.count("\n\n") > 1 and text.split("\n\n")[1].startswith("## ") else ""

    held = {section(t) for t in test}
    assert held == {"## Kühlmittel", "## Schmierung und Ölwechsel"}  # the seeded choice of whole sections
    assert not held & {section(t) for t in train}  # no section lies in both splits
    # every row of the error-code table is trained on, each once, none held out
    codes = [line[2:6] for t in train for line in t.splitlines() if line.startswith("| E") and line[3].isdigit()]
    assert codes == ["E101", "E205", "E310", "E422", "E508", "E615", "E733", "E840"]
    split = res.card["split"]
    assert split["unit"] == "section" and split["units"] == 9  # 8 sections and the text before the first
    assert split["held_out"] == ["schmidt-handbuch.md § Kühlmittel", "schmidt-handbuch.md § Schmierung und Ölwechsel"]
    card = (ws.path(res.record) / "card.md").read_text()
    assert ("- split: whole top-level sections, seeded: 2 of 9 held out, seed 0, test fraction 0.2. The test split "
            "holds whole sections, never single chunks of one") in card


def test_several_documents_are_split_by_whole_documents(ws: Workspace, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(10):
        (docs / f"anleitung-{i}.md").write_text(f"# Anleitung {i}\n\n## Teil A\n\nSchritt eins der Maschine {i}.\n\n"
                                                f"## Teil B\n\nSchritt zwei der Maschine {i}.\n", encoding="utf-8")
    res = import_dataset(ws, ImportOptions(name="docs", path=str(docs), policy_preset="internal-only",
                                           test_fraction=0.2, seed=0))
    split = res.card["split"]
    assert split["unit"] == "document" and split["units"] == 10 and len(split["held_out"]) == 2
    test = rows(ws, res.record, "test")
    assert len(test) == 4 and {t.split("\n")[0] for t in test} == {f"# {n.removesuffix('.md').title().replace('-', ' ')}"
                                                                    for n in split["held_out"]}
    assert "whole documents, seeded: 2 of 10 held out" in (ws.path(res.record) / "card.md").read_text()


def test_a_document_without_sections_holds_nothing_out(ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "notiz.txt"
    path.write_text(" ".join(f"Maschine {i} braucht alle {500 + i} Betriebsstunden einen Ölwechsel." for i in range(80)),
                    encoding="utf-8")
    res = import_dataset(ws, ImportOptions(name="notiz", path=str(path), policy_preset="internal-only"))
    assert res.card["rows"]["test"] == 0 and res.card["rows"]["train"] == 3  # 5,000 characters in rows of 2,000
    assert res.card["split"]["method"].startswith("none held out: one document without top-level sections")


def test_the_import_says_how_it_split(cli, tmp_path: Path) -> None:
    r = cli("data", "import", str(HANDBOOK), "--name", "hb", "--policy-preset", "internal-only", "--chunk-size", "500",
            "--test-fraction", "0.2")
    assert r.code == 0, r.err
    assert ("  split: whole top-level sections, seeded: 2 of 9 held out (schmidt-handbuch.md § Kühlmittel, "
            "schmidt-handbuch.md § Schmierung und Ölwechsel)") in r.out


def test_text_rows_of_a_jsonl_file_are_documents_of_their_own() -> None:
    from kifabrik.data.dedup import split_documents
    from kifabrik.data.rows import Row

    rows = [Row("a.md", f"chunk {i}", {"text": f"a{i}"}, "Teil A" if i < 3 else "Teil B") for i in range(6)]
    rows += [Row("notes.jsonl", i, {"text": f"n{i}"}) for i in range(1, 5)]
    train, test, facts = split_documents(rows, 0.3, seed=1)
    assert len(train) == 7
    # 5 documents: a.md (6 chunks) and 4 JSONL rows; 3 of 10 rows asked for: 3 JSONL rows (seeded) hit it
    assert facts["unit"] == "document" and facts["units"] == 5
    assert sorted(r.line for r in test) == [2, 3, 4] and all(r.source == "notes.jsonl" for r in test)
    assert facts["held_out"] == ["notes.jsonl:2", "notes.jsonl:3", "notes.jsonl:4"]


def test_a_short_document_does_not_lose_half_of_itself_to_the_test_split(ws: Workspace, tmp_path: Path) -> None:
    doc = tmp_path / "kurz.md"
    doc.write_text("# Handbuch\n\n## Reinigung\n\n| Anlage | Reinigung |\n|---|---|\n| BO 12 | täglich |\n\n"
                   "## Sicherheit\n\nVor jeder Reinigung trennen Sie die Anlage vom Netz.\n", encoding="utf-8")
    res = import_dataset(ws, ImportOptions(name="kurz", path=str(doc), policy_preset="internal-only",
                                           test_fraction=0.1, seed=0))
    assert rows(ws, res.record, "test") == [] and len(rows(ws, res.record, "train")) == 2
    assert res.card["split"]["method"].startswith("none held out: the smallest whole section holds more than twice")
