"""Artifact store: content addressing, manifest last, nothing half-written, verify."""

from __future__ import annotations

import json

import pytest

from kifabrik.artifacts import MANIFEST, content_id, sha256_file
from kifabrik.errors import KifabrikError


def _make(ws, name="thing", text="hello", parents=()):
    with ws.create("test", name, parents=list(parents), config={"k": 1}, meta={"note": "x"}) as draft:
        draft.write_text("a.txt", text)
        draft.write_json("sub/b.json", {"v": [1, 2]})
    return draft.record


def test_manifest_holds_hashes_inputs_config_and_code_version(ws):
    rec = _make(ws)
    root = ws.path(rec)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["id"] == rec.id == root.name
    assert manifest["files"]["a.txt"]["sha256"] == sha256_file(root / "a.txt")
    assert set(manifest["files"]) == {"a.txt", "sub/b.json"}
    assert manifest["config"] == {"k": 1} and manifest["kifabrik_version"]
    assert "git_hash" in manifest and manifest["created_at"]
    content = {k: manifest[k] for k in ("kind", "name", "inputs", "config", "files", "external")}
    assert content_id(content) == rec.id
    assert ws.catalog.get_artifact(rec.id).manifest == manifest


def test_same_content_same_id_new_content_new_version(ws):
    a, b = _make(ws), _make(ws)
    assert a.id == b.id and a.version == b.version == 1
    c = _make(ws, text="changed")
    assert c.id != a.id and c.version == 2


def test_error_inside_the_block_leaves_nothing(ws):
    with pytest.raises(RuntimeError), ws.create("test", "broken") as draft:
        draft.write_text("a.txt", "partial")
        raise RuntimeError("crash while writing")
    assert ws.catalog.list_artifacts() == []
    assert list(ws.store.root.iterdir()) == []


def test_crash_before_manifest_leaves_no_visible_artifact(ws):
    # What a kill -9 in the middle of writing leaves: a temporary directory without a manifest.
    draft = ws.store.new_draft("test", "killed")
    (draft.dir / "weights.bin").write_bytes(b"\0" * 1000)
    assert ws.catalog.list_artifacts() == []
    assert [p.name for p in ws.store.root.iterdir() if not p.name.startswith(".tmp-")] == []
    assert ws.store.leftovers() == [draft.dir]
    # A later artifact publishes normally next to the leftover.
    assert _make(ws).id in {p.name for p in ws.store.root.iterdir()}


def test_failed_catalog_insert_removes_the_published_directory(ws):
    with pytest.raises(KifabrikError, match="parent artifact"):
        _make(ws, parents=[("0" * 64, "made_from")])
    assert ws.catalog.list_artifacts() == []
    assert [p for p in ws.store.root.iterdir() if not p.name.startswith(".tmp-")] == []


def test_verify_reports_changed_added_missing_files_and_edited_manifest(ws):
    rec = _make(ws)
    root = ws.path(rec)
    assert ws.verify(rec.id).ok
    (root / "a.txt").write_text("tampered")
    (root / "extra.txt").write_text("new")
    (root / "sub" / "b.json").unlink()
    problems = "\n".join(ws.verify(rec.ref).problems)
    assert "a.txt: content changed" in problems
    assert "extra.txt: file added" in problems
    assert "b.json: missing" in problems
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["config"] = {"k": 2}
    (root / MANIFEST).write_text(json.dumps(manifest))
    assert any("does not hash to the artifact id" in p for p in ws.verify(rec.id).problems)


def test_cli_verify_exit_codes(cli, ws):
    rec = _make(ws)
    ok = cli("verify", rec.id[:10])
    assert ok.code == 0 and "2 files unchanged" in ok.out
    (ws.path(rec) / "a.txt").write_text("tampered")
    bad = cli("verify", rec.ref)
    assert bad.code == 1 and "content changed" in bad.err


def test_unwritable_home_is_one_clear_error(tmp_path, cli, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("KIFABRIK_HOME", str(blocker / "home"))
    r = cli("models", "list")
    assert r.code == 1
    assert "is not writable" in r.err and "KIFABRIK_HOME" in r.err
    assert "Traceback" not in r.err
