"""The Data page: the datasets of a project, and importing uploaded files through the form.

Every test goes through HTTP (a signed-in TestClient) into a real catalog; the import is the
same `import_dataset` the CLI runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kifabrik.workspace import Workspace
from tests.ui.clients import sign_in


def chat_lines(n: int) -> list[str]:
    return [json.dumps({"messages": [{"role": "user", "content": f"Wie tausche ich den Filter an Anlage {i}?"},
                                     {"role": "assistant", "content": f"Anlage {i}: Gehäuse öffnen, Filter {i * 7} "
                                                                      "herausziehen, neuen Filter einsetzen."}]},
                       ensure_ascii=False) for i in range(n)]


def jsonl(n: int) -> bytes:
    return ("\n".join(chat_lines(n)) + "\n").encode()


FORM = {"name": "service-chats", "format": "auto", "preset": "internal-only", "pii": "redact", "dedup": "on",
        "test_fraction": "0.1", "encoding": "utf-8"}


def test_upload_imports_a_chat_dataset_and_its_page_shows_rows_and_policy(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    r = client.post_form("/p/acme/datasets", FORM, files=[("files", ("chats.jsonl", jsonl(20), "application/jsonl"))])
    assert r.status_code == 303, r.text
    page = client.get(r.headers["location"])
    assert page.status_code == 200
    record = ws.scoped("acme").catalog.get_artifact("service-chats")
    assert r.headers["location"] == f"/p/acme/artifacts/{record.id}"
    # 20 rows, seeded split with test fraction 0.1: 18 train, 2 test (as `kifabrik data import` makes them)
    assert record.meta["rows"] == {"train": 18, "test": 2}
    assert record.meta["policy"] == "internal-only"
    text = page.text
    assert "<h1>service-chats@1" in text
    assert "Dataset card" in text or "Datenkarte" in text
    assert "18 train, 2 test" in text                        # the rendered card
    assert "internal-only" in text and "Prohibited: distribute (release or export)." in text
    # the listing shows it, and the upload folder is gone
    listing = client.get("/p/acme/datasets").text
    assert f'href="/p/acme/artifacts/{record.id}">service-chats@1</a>' in listing
    assert not any((ws.settings.home / "uploads" / "acme").iterdir())
    # the audit entry names the user, not the CLI
    entry = ws.scoped("acme").catalog.audit_entries("data.import")[-1]
    assert entry.actor == "user:erika" and entry.subject == record.id


def test_the_same_upload_again_is_recorded_once(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    files = [("files", ("chats.jsonl", jsonl(12), "application/jsonl"))]
    first = client.post_form("/p/acme/datasets", FORM, files=files)
    again = client.post_form("/p/acme/datasets", FORM, files=files)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    assert [r.version for r in ws.scoped("acme").catalog.list_artifacts("dataset")] == [1]


def test_a_broken_line_shows_the_form_again_with_the_file_and_line(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    lines = chat_lines(3)
    body = (lines[0] + "\n" + '{"messages": [ broken\n' + lines[2] + "\n").encode()
    r = client.post_form("/p/acme/datasets", FORM, files=[("files", ("kaputt.jsonl", body, "application/jsonl"))])
    assert r.status_code == 400
    # exactly what `kifabrik data import kaputt.jsonl` prints: the file as named, line 2, the column
    assert "kaputt.jsonl:2: invalid JSON at column 16: Expecting value" in r.text
    assert "1 invalid row or file; nothing was imported:" in r.text
    assert "pass --skip-invalid to import the valid rows" in r.text
    assert "uploads" not in r.text and "Traceback" not in r.text
    assert 'value="service-chats"' in r.text                  # the form keeps what was typed
    assert ws.scoped("acme").catalog.list_artifacts("dataset") == []


def test_skip_invalid_imports_the_valid_rows(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    lines = chat_lines(11)
    body = ("\n".join(lines[:5] + ["{kaputt"] + lines[5:]) + "\n").encode()
    r = client.post_form("/p/acme/datasets", {**FORM, "skip_invalid": "on"},
                         files=[("files", ("teil.jsonl", body, "application/jsonl"))])
    assert r.status_code == 303, r.text
    record = ws.scoped("acme").catalog.get_artifact("service-chats")
    assert sum(record.meta["rows"].values()) == 11
    card = json.loads((ws.path(record) / "card.json").read_text())
    assert [(s["source"].rsplit("/", 1)[-1], s["line"]) for s in card["skipped"]] == [("teil.jsonl", 6)]


def test_a_missing_name_and_an_unknown_file_type_are_refused_with_a_message(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    files = [("files", ("chats.jsonl", jsonl(5), "application/jsonl"))]
    r = client.post_form("/p/acme/datasets", {**FORM, "name": ""}, files=files)
    assert r.status_code == 400 and "name: String should match pattern" in r.text
    r = client.post_form("/p/acme/datasets", FORM, files=[("files", ("werkzeug.exe", b"MZ\x00", "application/x"))])
    assert r.status_code == 400 and "werkzeug.exe: files of this type cannot be imported" in r.text
    r = client.post_form("/p/acme/datasets", {**FORM, "preset": "expires-on"}, files=files)
    assert r.status_code == 400 and "policy preset &#39;expires-on&#39; needs a date" in r.text


def test_an_expiring_preset_and_an_odrl_file_become_the_policy(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    files = [("files", ("chats.jsonl", jsonl(10), "application/jsonl"))]
    r = client.post_form("/p/acme/datasets", {**FORM, "name": "befristet", "preset": "expires-on",
                                              "expires": "2099-12-31"}, files=files)
    assert r.status_code == 303, r.text
    assert ws.scoped("acme").catalog.get_artifact("befristet").meta["policy"] == "expires-on:2099-12-31"
    from kifabrik.policy import preset

    odrl = json.dumps(preset("evaluation-only")).encode()
    r = client.post_form("/p/acme/datasets", {**FORM, "name": "mit-datei"},
                         files=[*files, ("policy_file", ("../../lieferant.json", odrl, "application/json"))])
    assert r.status_code == 303, r.text
    assert ws.scoped("acme").catalog.get_artifact("mit-datei").meta["policy"] == "lieferant"


def test_file_names_lose_their_folders(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    r = client.post_form("/p/acme/datasets", FORM,
                         files=[("files", ("../../../etc/chats.jsonl", jsonl(10), "application/jsonl"))])
    assert r.status_code == 303, r.text
    record = ws.scoped("acme").catalog.get_artifact("service-chats")
    (source,) = record.meta["sources"]
    path = Path(source["path"])
    assert path.name == "chats.jsonl" and path.parent.parent.parent == ws.settings.home / "uploads" / "acme"
    assert not (ws.settings.home.parent / "etc").exists()


def test_an_upload_over_the_limit_is_refused(ws: Workspace, monkeypatch) -> None:
    from kifabrik.ui.pages import data

    monkeypatch.setattr(data, "MAX_UPLOAD", 4096)  # the limit, not the machine, is under test
    client = sign_in(ws, "erika", "acme", "engineer")
    r = client.post_form("/p/acme/datasets", FORM, files=[("files", ("gross.jsonl", jsonl(200), "application/jsonl"))])
    assert r.status_code == 413
    assert "the upload is larger than 4.0 KB" in r.text
    assert ws.scoped("acme").catalog.list_artifacts("dataset") == []


def test_a_viewer_sees_no_form_and_cannot_post(ws: Workspace) -> None:
    client = sign_in(ws, "vera", "acme", "viewer")
    page = client.get("/p/acme/datasets")
    assert page.status_code == 200 and 'name="files"' not in page.text
    r = client.post_form("/p/acme/datasets", FORM, files=[("files", ("chats.jsonl", jsonl(10), "application/jsonl"))])
    assert r.status_code == 403
    assert ws.scoped("acme").catalog.list_artifacts("dataset") == []


def test_a_post_without_the_csrf_token_is_refused(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "engineer")
    r = client.post("/p/acme/datasets", data=FORM, files=[("files", ("c.jsonl", jsonl(10), "application/jsonl"))],
                    follow_redirects=False)
    assert r.status_code == 400 and ws.scoped("acme").catalog.list_artifacts("dataset") == []


def test_the_form_lists_every_preset_and_labels_every_control(ws: Workspace) -> None:
    from kifabrik.policy import preset_names

    text = sign_in(ws, "erika", "acme", "engineer").get("/p/acme/datasets").text
    for name in preset_names():
        assert f'<option value="{name}"' in text
    ids = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\sid="([^"]+)"', text)
    controls = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*>', text)
    assert len(ids) == len(controls) > 10
    for control_id in ids:
        assert f'<label for="{control_id}"' in text, control_id
    assert text.count("<h1") == 1 and "<script>" not in text and " onclick=" not in text


def test_the_dataset_listing_is_paginated(ws: Workspace) -> None:
    scoped = ws.scoped("acme")
    for i in range(1000):
        scoped.catalog.add_artifact(id=f"{i:064x}", kind="dataset", name=f"d{i:04d}", path=f"{i:064x}",
                                    manifest={"files": {}}, meta={"rows": {"train": i, "test": 1}, "policy": "internal-only",
                                                                  "pii_mode": "redact", "format": "chat"})
    client = sign_in(ws, "erika", "acme", "viewer")
    first = client.get("/p/acme/datasets")
    assert first.status_code == 200
    assert first.text.count('href="/p/acme/artifacts/') == 50
    assert "Page 1 of 20" in first.text or "Seite 1 von 20" in first.text
    assert "d0999@1" in first.text and "d0949@1" not in first.text   # newest first
    last = client.get("/p/acme/datasets?page=20")
    assert "d0000@1" in last.text and 'rel="prev"' in last.text and 'rel="next"' not in last.text
    assert client.get("/p/acme/datasets?page=abc").status_code == 200


def test_another_projects_member_gets_404(ws: Workspace) -> None:
    sign_in(ws, "erika", "acme", "engineer")
    outsider = sign_in(ws, "otto", "beta", "admin")
    assert outsider.get("/p/acme/datasets").status_code == 404
    r = outsider.post_form("/p/acme/datasets", FORM, files=[("files", ("c.jsonl", jsonl(10), "application/jsonl"))])
    assert r.status_code == 404
    assert ws.scoped("acme").catalog.list_artifacts("dataset") == []


def test_upload_folders_left_by_a_killed_server_are_swept(ws: Workspace) -> None:
    import os

    uploads = ws.settings.home / "uploads" / "acme"
    old, young = uploads / ".tmp-alt", uploads / "0123abcd"
    for folder in (old, young):
        folder.mkdir(parents=True)
        (folder / "x.jsonl").write_text("{}\n")
    os.utime(old, (0, 0))  # 1970: a day old and more
    client = sign_in(ws, "erika", "acme", "engineer")
    r = client.post_form("/p/acme/datasets", FORM, files=[("files", ("chats.jsonl", jsonl(10), "application/jsonl"))])
    assert r.status_code == 303
    assert not old.exists() and young.exists()
