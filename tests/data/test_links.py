"""Folder imports do not follow symbolic links: a link to /etc/shadow once ended up in a dataset.

Every link below an imported folder is skipped and listed in the card; `--follow-links` follows
only links whose target, resolved, stays inside the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kf_datafiles import chat

from kifabrik.data import ImportOptions, import_dataset
from kifabrik.data.importer import expand
from kifabrik.errors import KifabrikError
from kifabrik.workspace import Workspace


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """`data/` with one real file, a folder, and links: to a secret outside, to a file and a folder inside, a loop."""
    outside = tmp_path / "secret.jsonl"  # stands for /etc/shadow: readable by the user, never meant for a dataset
    outside.write_text(chat("root:$6$geheim", "Passwort-Hash"), encoding="utf-8")
    data = tmp_path / "data"
    (data / "teil").mkdir(parents=True)
    (data / "a.jsonl").write_text("".join(chat(f"Frage {i} zur Wartung?", f"Antwort {i}.") for i in range(10)),
                                  encoding="utf-8")
    (data / "teil" / "b.jsonl").write_text("".join(chat(f"Teil {i} bestellen?", f"Teil {i} liefern wir.")
                                                   for i in range(10)), encoding="utf-8")
    (data / ".versteckt").mkdir()
    (data / ".versteckt" / "c.jsonl").write_text(chat("Versteckte Frage?", "Versteckte Antwort."), encoding="utf-8")
    (data / "shadow.jsonl").symlink_to(outside)
    (data / "extern").symlink_to(tmp_path, target_is_directory=True)
    (data / "kopie.jsonl").symlink_to(data / "a.jsonl")
    (data / "c.jsonl").symlink_to(data / ".versteckt" / "c.jsonl")
    (data / "teil" / "schleife").symlink_to(data, target_is_directory=True)
    return data


def test_no_link_is_followed_and_each_is_reported(folder: Path) -> None:
    found = expand([str(folder)], "auto")
    assert found.files == [folder / "a.jsonl", folder / "teil" / "b.jsonl"]
    assert [(Path(link["path"]).relative_to(folder).as_posix(), link["reason"].split(",")[0]) for link in found.links] == [
        ("c.jsonl", "symbolic link"), ("extern", "symbolic link"), ("kopie.jsonl", "symbolic link"),
        ("shadow.jsonl", "symbolic link"), ("teil/schleife", "symbolic link")]
    assert found.links[3]["target"] == str(folder.parent / "secret.jsonl")


def test_follow_links_stays_inside_the_folder(folder: Path) -> None:
    found = expand([str(folder)], "auto", follow_links=True)
    # c.jsonl reaches the hidden file through a link inside the folder; kopie.jsonl is a.jsonl, read once
    assert found.files == [folder / "a.jsonl", folder / "c.jsonl", folder / "teil" / "b.jsonl"]
    reasons = {Path(link["path"]).name: link["reason"] for link in found.links}
    assert reasons == {"extern": "symbolic link to outside the imported folder, not followed",
                       "shadow.jsonl": "symbolic link to outside the imported folder, not followed",
                       "schleife": "symbolic link to a folder that is read already, not followed"}


def test_import_lists_skipped_links_in_the_card(ws: Workspace, folder: Path) -> None:
    result = import_dataset(ws, ImportOptions(path=str(folder), name="wartung", policy_preset="internal-only",
                                              test_fraction=0.0))
    assert [s["path"] for s in result.card["sources"]] == [str(folder / "a.jsonl"), str(folder / "teil" / "b.jsonl")]
    assert result.record.meta["rows"] == {"train": 20, "test": 0}
    stored = ws.path(result.record)
    assert "geheim" not in (stored / "train.jsonl").read_text(encoding="utf-8")
    card = json.loads((stored / "card.json").read_text(encoding="utf-8"))
    assert len(card["skipped_links"]) == 5
    card_md = (stored / "card.md").read_text(encoding="utf-8")
    assert "## Skipped symbolic links" in card_md
    assert f"- {folder / 'shadow.jsonl'} -> {folder.parent / 'secret.jsonl'}: symbolic link, not followed" in card_md


def test_follow_links_through_the_cli(cli, folder: Path) -> None:
    result = cli("data", "import", str(folder), "--name", "wartung", "--policy-preset", "internal-only",
                 "--follow-links", "--test-fraction", "0")
    assert result.code == 0, result.err
    assert "21 train" in result.out  # 10 + 10 rows, and the hidden file reached through c.jsonl
    assert "skipped 3 symbolic links" in result.out


def test_a_folder_of_links_only_says_so(tmp_path: Path) -> None:
    outside = tmp_path / "x.jsonl"
    outside.write_text(chat("a", "b"), encoding="utf-8")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").symlink_to(outside)
    with pytest.raises(KifabrikError, match="no importable files in the folder") as info:
        expand([str(tmp_path / "d")], "auto")
    assert "symbolic links are not followed (see --follow-links)" in str(info.value)
