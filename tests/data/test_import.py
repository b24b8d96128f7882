"""Importing datasets end to end through the real CLI and API: artifact, card, catalog, audit, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kf_datafiles import chat, minimal_pdf

from kifabrik.data import ImportOptions, import_dataset
from kifabrik.errors import KifabrikError
from kifabrik.policy import PolicyDenied, require
from kifabrik.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "src" / "kifabrik" / "data" / "demo"


def test_demo_import_through_the_cli(cli, home: Path) -> None:
    result = cli("data", "import", "kifabrik:data/demo/schmidt-service-train.jsonl", "--test-file",
                 "kifabrik:data/demo/schmidt-service-test.jsonl", "--name", "schmidt-service",
                 "--policy-preset", "internal-only")
    assert result.code == 0, result.err
    assert "imported dataset schmidt-service@1" in result.out
    ws = Workspace.open(home)
    try:
        rec = ws.catalog.get_artifact("schmidt-service", "dataset")
        meta = rec.meta
        assert meta["format"] == "chat" and meta["rows"]["train"] >= 300 and meta["rows"]["test"] >= 100
        assert meta["policy_ids"] == [p[0] for p in ws.catalog.policies_of(rec.id)]
        assert set(meta["pii"]) >= {"email", "iban", "payment_card", "tax_id", "social_insurance", "ipv4", "ipv6"}
        root = ws.path(rec)
        assert sorted(p.name for p in root.iterdir()) == ["card.json", "card.md", "manifest.json", "test.jsonl", "train.jsonl"]
        train = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
        assert len(train) == meta["rows"]["train"] and all(r["messages"][-1]["role"] == "assistant" for r in train)
        everything = "".join(p.read_text() for p in root.iterdir())
        for raw in ("@example.com", "4111 1111 1111 1111", "192.0.2.", "2001:db8:", " 9999 0000 "):
            assert raw not in everything  # redacted in the data and never in the card
        card = json.loads((root / "card.json").read_text())
        assert card["sources"][0]["sha256"] == __import__("hashlib").sha256(
            (DEMO / "schmidt-service-train.jsonl").read_bytes()).hexdigest()
        assert card["languages"]["shares"]["de"] > 0.9 and card["split"]["method"] == "given held-out files"
        assert "NOT detected" in card["pii"]["names"]
        audit = [e for e in ws.catalog.verify_audit()]
        assert audit == []
        require(ws, [rec.id], "training")
        with pytest.raises(PolicyDenied):
            require(ws, [rec.id], "release")
    finally:
        ws.close()
    shown = cli("data", "show", "schmidt-service")
    assert "## Personal data" in shown.out and "internal-only" in shown.out
    assert json.loads(cli("data", "list", "--json").out)[0]["name"] == "schmidt-service"
    assert cli("data", "rm", "schmidt-service").code == 0
    assert "no datasets yet" in cli("data", "list").out


def test_bad_rows_import_nothing_unless_skipped(ws: Workspace, tmp_path: Path, chats: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(chats.read_text() + "{oops\n" + '{"messages": []}\n', encoding="utf-8")
    opts = {"name": "kunden", "path": str(bad), "policy_preset": "internal-only"}
    with pytest.raises(KifabrikError) as info:
        import_dataset(ws, ImportOptions(**opts))
    assert f"{bad}:41: invalid JSON" in str(info.value) and f"{bad}:42: `messages` must be" in str(info.value)
    assert "nothing was imported" in str(info.value)
    assert ws.catalog.list_artifacts("dataset") == [] and ws.store.leftovers() == []
    result = import_dataset(ws, ImportOptions(**opts, skip_invalid=True))
    assert result.card["rows"]["invalid_skipped"] == 2
    assert [s["line"] for s in result.card["skipped"]] == [41, 42]
    assert "## Skipped rows" in (ws.path(result.record) / "card.md").read_text()


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    ("Größe".encode("latin-1") + b"\n", "not valid utf-8"),
])
def test_broken_files_are_refused(ws: Workspace, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(KifabrikError, match=message):
        import_dataset(ws, ImportOptions(name="x", path=str(path), policy_preset="internal-only"))
    assert ws.catalog.list_artifacts("dataset") == []


def test_policy_problems_stop_the_import(ws: Workspace, tmp_path: Path, chats: Path) -> None:
    with pytest.raises(KifabrikError, match="has expired"):
        import_dataset(ws, ImportOptions(name="x", path=str(chats), policy_preset="expires-on:2020-01-01"))
    odrl = tmp_path / "p.json"
    odrl.write_text(json.dumps({"permission": [{"action": "use", "constraint": [
        {"leftOperand": "purpose", "operator": "gt", "rightOperand": "training"}]}]}))
    with pytest.raises(KifabrikError, match="invalid ODRL policy"):
        import_dataset(ws, ImportOptions(name="x", path=str(chats), policy=str(odrl)))
    with pytest.raises(ValueError, match="exactly one of policy"):
        ImportOptions(name="x", path=str(chats))
    assert ws.catalog.list_artifacts("dataset") == []


def test_pii_modes_dedup_and_split(ws: Workspace, tmp_path: Path, chats: Path) -> None:
    dup = tmp_path / "dup.jsonl"
    lines = chats.read_text().splitlines(keepends=True)
    punct = lines[5].replace("Betriebsstunden.", "Betriebsstunden!!")  # same words: an exact duplicate
    long = " ".join(f"Schritt {i}: Schraube {i} lösen und Dichtung {i} prüfen." for i in range(30))
    near = [chat("Wie zerlege ich die Spindel?", long), chat("Wie zerlege ich die Spindel?", long + " Fertig.")]
    dup.write_text("".join(lines) + lines[0] + lines[1].replace("Wie oft wechsle", "WIE  OFT wechsle") + punct
                   + "".join(near), encoding="utf-8")
    drop = import_dataset(ws, ImportOptions(name="a", path=str(dup), policy_preset="internal-only", pii="drop",
                                            test_fraction=0.25, seed=7))
    rows = drop.card["rows"]
    assert rows["pii_dropped"] == 1 and rows["duplicates_exact"] == 3 and rows["duplicates_near"] == 1
    assert rows["train"] + rows["test"] == 40 and rows["test"] == 10
    again = import_dataset(ws, ImportOptions(name="b", path=str(dup), policy_preset="internal-only", pii="drop",
                                             test_fraction=0.25, seed=7))
    assert (ws.path(again.record) / "test.jsonl").read_text() == (ws.path(drop.record) / "test.jsonl").read_text()
    report = import_dataset(ws, ImportOptions(name="c", path=str(dup), policy_preset="internal-only", pii="report"))
    assert "max@example.com" in (ws.path(report.record) / "train.jsonl").read_text() + \
        (ws.path(report.record) / "test.jsonl").read_text()
    assert "max@example.com" not in (ws.path(report.record) / "card.json").read_text()


def test_csv_text_folder_and_pdf(ws: Workspace, tmp_path: Path, tiny_model) -> None:
    faq = tmp_path / "faq.csv"
    faq.write_text("Kundenfrage;Lösung\nWie entlüfte ich?;Ventil öffnen.\nÖlsorte?;HLP 46\n", encoding="utf-8")
    res = import_dataset(ws, ImportOptions(name="faq", path=str(faq), policy_preset="evaluation-only",
                                           csv_map="user=Kundenfrage,assistant=Lösung", test_fraction=0.0))
    assert res.card["rows"]["train"] == 2 and res.record.meta["format"] == "chat"
    with pytest.raises(KifabrikError, match="column 'Antwort' named in --csv-map is not in the header"):
        import_dataset(ws, ImportOptions(name="faq", path=str(faq), policy_preset="internal-only",
                                         csv_map="user=Kundenfrage,assistant=Antwort"))
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "handbuch.md").write_text("# Wartung\n" + "Die Maschine braucht alle 500 Betriebsstunden einen Ölwechsel. " * 20)
    (docs / "sub" / "plan.pdf").write_bytes(minimal_pdf(["Wartungsplan", "Filter alle 500 Stunden tauschen."]))
    (docs / ".hidden.txt").write_text("nicht importieren")
    res = import_dataset(ws, ImportOptions(name="handbuch", path=str(docs), policy_preset="internal-only",
                                           model=tiny_model.ref, chunk_size=64, test_fraction=0.0))
    card = res.card
    assert card["format"] == "text" and len(card["sources"]) == 2
    assert card["size"]["chunking"] == {"unit": "tokens", "size": 64, "by": "tokens of tiny@1"}
    assert card["size"]["tokens"]["train"] > 0 and card["size"]["tokens"]["tokenizer"]["ref"] == "tiny@1"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jsonl").write_text(chat("a", "b"))
    (mixed / "b.txt").write_text("Text")
    with pytest.raises(KifabrikError, match="mix chat rows"):
        import_dataset(ws, ImportOptions(name="m", path=str(mixed), policy_preset="internal-only"))


def test_rm_is_refused_while_a_model_was_made_from_the_dataset(ws: Workspace, chats: Path, cli) -> None:
    data = import_dataset(ws, ImportOptions(name="kunden", path=str(chats), policy_preset="internal-only")).record
    with ws.create("model", "fach", parents=[(data.id, "trained_on")]) as draft:
        draft.write_text("w.txt", "w")
    result = cli("data", "rm", "kunden")
    assert result.code == 1 and "was used to make fach@1" in result.err


def test_recipe_stage_imports_the_datasets(ws: Workspace, tiny_model_dir: Path, tmp_path: Path, chats: Path) -> None:
    from kifabrik.pipeline import load_recipe, run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: t
model: {{source: {tiny_model_dir}, name: tiny}}
datasets:
  kunden: {{path: {chats}, policy_preset: internal-only, test_fraction: 0.2}}
stages:
  - stage: data
""")
    result = run_recipe(ws, load_recipe(recipe))
    (out,) = result.steps[0].outputs
    assert out.kind == "dataset" and out.name == "kunden" and out.meta["rows"]["test"] == 8
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("test_fraction: 0.2", "test_fraction: 2"))
    with pytest.raises(KifabrikError, match=r"datasets\.kunden\.test_fraction"):
        run_recipe(ws, load_recipe(bad))


def test_demo_files_are_reproducible(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in [f"schmidt-{g}-{s}.jsonl" for g in ("service", "wartung", "teile") for s in ("train", "test")]:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes()
        assert (DEMO / name).stat().st_size < 1_000_000
