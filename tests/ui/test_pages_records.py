"""The record pages: an artifact and its files, lineage, models, documents, audit log, API keys, members.

HTTP through a signed-in TestClient into a real catalog; artifacts are made by the real stages
(import, add_model, document) or, where only the catalog row matters, recorded directly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from kifabrik.catalog import EdgeRecord
from kifabrik.catalog import schema as t
from kifabrik.data import ImportOptions, import_dataset
from kifabrik.serve.keys import authenticate, list_keys
from kifabrik.ui import i18n
from kifabrik.workspace import Workspace
from tests.ui.clients import sign_in

TEMPLATES = Path(__file__).parents[2] / "src" / "kifabrik" / "ui" / "templates"
MINE = ("data_", "records_", "admin_")


def chats(path: Path, n: int = 12) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Frage {i}: Wo sitzt Dichtung {i}?"},
                          {"role": "assistant", "content": f"Dichtung {i} sitzt hinter Deckel {i * 3}."}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def dataset(ws: Workspace, tmp_path: Path, name: str = "service-chats", preset: str = "internal-only") -> Any:
    return import_dataset(ws, ImportOptions(name=name, path=str(chats(tmp_path / f"{name}.jsonl")),
                                            policy_preset=preset), actor="user:erika").record


def adapter_of(ws: Workspace, model: Any, data: Any, name: str = "service-lora") -> Any:
    """An adapter's catalog row made from `model` and `data` (no weights: the pages read only the record)."""
    return ws.catalog.add_artifact(id=f"{abs(hash(name)):064x}"[:64], kind="adapter", name=name, path="none",
                                   manifest={"files": {}}, meta={"license": "apache-2.0"},
                                   parents=[EdgeRecord(model.id, "", "base_model"),
                                            EdgeRecord(data.id, "", "trained_on")])


# ---------------------------------------------------------------------- artifact page and files
def test_a_dataset_page_shows_facts_card_policy_and_files(ws: Workspace, tmp_path: Path) -> None:
    acme = ws.scoped("acme")
    record = dataset(acme, tmp_path)
    client = sign_in(ws, "erika", "acme", "viewer")
    for ref in (record.id, record.id[:10], "service-chats@1", "service-chats"):
        page = client.get(f"/p/acme/artifacts/{ref}")
        assert page.status_code == 200, ref
    text = page.text
    assert text.count("<h1") == 1 and "<h1>service-chats@1 <small>dataset</small></h1>" in text
    assert "<h3>Dataset card: service-chats</h3>" in text        # the card's own heading, two levels down
    assert "<td>11 train, 1 test</td>" in text                   # a row of the card's table, rendered
    assert "Permitted: may use only for training a model" in text  # the attached policy in words
    for rel in ("card.json", "card.md", "test.jsonl", "train.jsonl", "manifest.json"):
        assert f'href="/p/acme/artifacts/{record.id}/files/{rel}?download=1"' in text
    card = client.get(f"/p/acme/artifacts/{record.id}/files/card.md?download=1")
    assert card.status_code == 200 and card.content == (acme.path(record) / "card.md").read_bytes()
    assert card.headers["content-disposition"].startswith("attachment")
    shown = client.get(f"/p/acme/artifacts/{record.id}/files/card.json")
    assert shown.headers["content-type"] == "text/plain; charset=utf-8"
    assert "sandbox" in shown.headers["content-security-policy"]


def test_the_files_route_serves_only_the_artifacts_own_files(ws: Workspace, tmp_path: Path) -> None:
    acme = ws.scoped("acme")
    record = dataset(acme, tmp_path)
    folder = acme.path(record)
    secret = tmp_path / "secret.txt"
    secret.write_text("geheim")
    (folder / "link.txt").symlink_to(secret)                     # not in the manifest
    (folder / "card.md").unlink()
    (folder / "card.md").symlink_to(secret)                      # in the manifest, but now a link out
    client = sign_in(ws, "erika", "acme", "admin")
    base = f"/p/acme/artifacts/{record.id}/files"
    for path in ("../../catalog.db", "..%2F..%2Fcatalog.db", "%2e%2e/%2e%2e/catalog.db", "//etc/passwd",
                 "/etc/passwd", "link.txt", "card.md", "train.jsonl/../../x", "nix.txt", "train.jsonl%00.txt"):
        r = client.get(f"{base}/{path}")
        assert r.status_code == 404, path
        assert "geheim" not in r.text
    assert client.get(f"{base}/train.jsonl").status_code == 200


# ---------------------------------------------------------------------- lineage
def test_lineage_draws_the_parents_as_svg_with_the_inherited_restrictions(ws: Workspace,
                                                                          tmp_path: Path) -> None:
    acme = ws.scoped("acme")
    model = acme.catalog.add_artifact(id="ab" * 32, kind="model", name="basis", path="none", manifest={"files": {}},
                                      meta={})
    data = dataset(acme, tmp_path)
    lora = adapter_of(acme, model, data)
    client = sign_in(ws, "erika", "acme", "viewer")
    page = client.get(f"/p/acme/artifacts/{lora.id}/lineage")
    assert page.status_code == 200
    svg = re.search(r"<svg class=\"lineage\".*?</svg>", page.text, re.DOTALL)
    overlay = re.search(r"<svg class=\"lineage overlay\" aria-hidden=\"true\".*?</svg>", page.text, re.DOTALL)
    assert svg is not None and overlay is not None
    drawn = svg.group(0)
    assert 'role="img"' in drawn and "<title id=\"svg-title\">" in drawn and "<desc id=\"svg-desc\">" in drawn
    assert drawn.count("<line ") == 2 and ">base_model</text>" in drawn and ">trained_on</text>" in drawn
    assert '<g class="node current">' in drawn and drawn.count('<g class="node') == 3
    assert "<a " not in drawn  # links inside role="img" would be hidden from keyboards and screen readers
    # every box is a link (for the mouse; the list below has the same links for everyone)
    boxes = dict(re.findall(r'<a href="/p/acme/artifacts/(\w+)" tabindex="-1"><rect x="[\d.]+" y="([\d.]+)"',
                            overlay.group(0)))
    assert set(boxes) == {model.id, data.id, lora.id}
    assert float(boxes[model.id]) == float(boxes[data.id]) < float(boxes[lora.id])  # parents one layer above
    # the same edges as text, and the dataset's prohibitions inherited by the adapter (as `kifabrik lineage` says)
    edges = page.text[page.text.index('<ul class="edges"'):]
    assert "model basis@1</a>\n      → <span class=\"badge\">base_model</span> →" in edges
    assert "distribute (release or export)" in page.text and "dataset service-chats@1</a>" in page.text
    # and the dataset's lineage shows the adapter below it
    down = client.get(f"/p/acme/artifacts/{data.id}/lineage").text
    assert f'<a href="/p/acme/artifacts/{lora.id}" tabindex="-1">' in down


def test_lineage_layers_put_every_arrow_downwards(ws: Workspace) -> None:
    from kifabrik.catalog.lineage import lineage
    from kifabrik.ui.pages.records import layers, layout

    acme = ws.scoped("acme")
    ids = iter(f"{i:064x}" for i in range(1, 100))

    def add(name: str, *parents: tuple[Any, str]) -> Any:
        return acme.catalog.add_artifact(id=next(ids), kind="model", name=name, path="none", manifest={}, meta={},
                                         parents=[EdgeRecord(p.id, "", rel) for p, rel in parents])

    base = add("base")
    lora = add("lora", (base, "base_model"))
    merged = add("merged", (base, "base_model"), (lora, "merged_from"))  # base reaches it directly and via lora
    ev = add("eval", (merged, "evaluated"))
    graph = lineage(acme.catalog, merged.id)
    depth = layers(graph)
    assert depth == {base.id: -2, lora.id: -1, merged.id: 0, ev.id: 1}
    boxes, arrows, width, height = layout(graph)
    assert len(boxes) == 4 and len(arrows) == 4 and all(a.y2 > a.y1 for a in arrows)
    assert max(b.y for b in boxes) < height and max(b.x for b in boxes) < width
    # twelve adapters of one base wrap onto rows of five (PER_ROW), every arrow still pointing down
    for i in range(12):
        add(f"lora-{i}", (base, "base_model"))
    boxes, arrows, width, _ = layout(lineage(acme.catalog, base.id))
    rows = sorted({b.y for b in boxes})
    assert len(boxes) == 16 and len(rows) == 1 + 3 + 1 + 1  # base; 13 children in rows of 5; merged; eval
    assert width == 2 * 16 + 5 * 200 + 4 * 36 and all(a.y2 > a.y1 for a in arrows)


# ---------------------------------------------------------------------- models and documents
def test_models_page_lists_each_kind_and_paginates_1000_adapters(ws: Workspace, tiny_model: Any) -> None:
    acme = ws.scoped("acme")
    for i in range(1000):
        acme.catalog.add_artifact(id=f"{i + 1:064x}", kind="adapter", name=f"lora-{i:04d}", path="none",
                                  manifest={"files": {}}, meta={})
    client = sign_in(ws, "erika", "acme", "viewer")
    page = client.get("/p/acme/models")
    assert page.status_code == 200 and page.text.count("<h1") == 1
    assert "lora-0999@1" in page.text and "lora-0949@1" not in page.text
    assert "Page 1 of 20" in page.text or "Seite 1 von 20" in page.text
    assert 'href="/p/acme/models?page_adapter=2"' in page.text
    second = client.get("/p/acme/models?page_adapter=2")
    assert "lora-0949@1" in second.text and "lora-0999@1" not in second.text
    # the tiny model of the default project is not this project's
    assert "tiny@1" not in page.text
    for heading in ("sec-model", "sec-adapter", "sec-fach-llm", "sec-index"):
        assert f'id="{heading}"' in page.text


def test_documents_are_listed_read_safely_and_downloaded(ws: Workspace, tiny_model_dir: Path) -> None:
    from kifabrik.document import document
    from kifabrik.models.sources import add_model

    acme = ws.scoped("acme")
    add_model(acme, str(tiny_model_dir), name="tiny")
    docs = document(acme, "tiny").record
    client = sign_in(ws, "erika", "acme", "viewer")
    listing = client.get("/p/acme/documents")
    assert listing.status_code == 200
    for stem in ("README", "annex-xi", "annex-xii", "training-content-summary", "mission-ki"):
        assert f'href="/p/acme/artifacts/{docs.id}/read/{stem}.md"' in listing.text
        assert f'href="/p/acme/artifacts/{docs.id}/files/html/{stem}.html?download=1"' in listing.text
    assert f'href="/p/acme/artifacts/{docs.id}/read/ml-bom.cdx.json"' in listing.text
    read = client.get(f"/p/acme/artifacts/{docs.id}/read/annex-xi.md")
    assert read.status_code == 200 and read.text.count("<h1") == 1
    assert "<h2>" in read.text and "<iframe" in read.text and 'sandbox=""' in read.text
    html = client.get(f"/p/acme/artifacts/{docs.id}/files/html/annex-xi.html")
    assert html.headers["content-type"].startswith("text/html")
    assert html.headers["content-security-policy"].startswith("sandbox;")
    bom = client.get(f"/p/acme/artifacts/{docs.id}/files/ml-bom.cdx.json?download=1")
    assert json.loads(bom.content)["bomFormat"] == "CycloneDX"
    page = client.get(f"/p/acme/artifacts/{docs.id}")
    assert "Documents of this artifact" in page.text or "Dokumente dieses Artefakts" in page.text


def test_markdown_documents_cannot_inject_html(ws: Workspace) -> None:
    acme = ws.scoped("acme")
    with acme.create("document", "boese-documents", meta={"documents": ["README.md"]}) as draft:
        draft.write_text("README.md", "# Karte\n\n<script>alert(1)</script>\n\n[klick](javascript:alert(2))\n\n"
                                      '<img src=x onerror="alert(3)">\n')
    record = draft.record
    text = sign_in(ws, "erika", "acme", "viewer").get(f"/p/acme/artifacts/{record.id}/read/README.md").text
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert 'href="javascript:' not in text and "<img src=x" not in text


# ---------------------------------------------------------------------- audit log
def test_audit_log_filters_and_verifies(ws: Workspace, tmp_path: Path) -> None:
    acme = ws.scoped("acme")
    record = dataset(acme, tmp_path)
    acme.catalog.audit("policy.check", actor="api-key:1234abcd", subject=record.id, decision="deny",
                       details={"purpose": "release"})
    ws.scoped("beta").catalog.audit("data.import", actor="user:otto", subject="f" * 64, details={"name": "fremd@1"})
    client = sign_in(ws, "erika", "acme", "viewer")
    page = client.get("/p/acme/audit")
    assert page.status_code == 200 and "fremd@1" not in page.text and "user:otto" not in page.text
    only = client.get("/p/acme/audit", params={"action": "policy.check"}).text
    assert "api-key:1234abcd" in only and "<td>data.import</td>" not in only
    by_actor = client.get("/p/acme/audit", params={"actor": "ERIKA"}).text
    assert "<td>data.import</td>" in by_actor and "<td>policy.check</td>" not in by_actor
    by_subject = client.get("/p/acme/audit", params={"subject": "service-chats@1"}).text
    assert "<td>data.import</td>" in by_subject
    none = client.get("/p/acme/audit", params={"from": "2000-01-01", "to": "2000-12-31"}).text
    assert "No entries match the filter." in none or "Keine Einträge passen zum Filter." in none
    assert client.get("/p/acme/audit", params={"from": "gestern"}).status_code == 400
    # a viewer may verify (read + CSRF); intact first, then one entry changed behind the log's back
    ok = client.post_form("/p/acme/audit/verify")
    assert ok.status_code == 200 and 'class="ok verdict"' in ok.text
    assert client.post("/p/acme/audit/verify", data={}).status_code == 400  # no CSRF token
    with ws.catalog.engine.begin() as conn:
        conn.execute(update(t.AuditEntry).where(t.AuditEntry.action == "policy.check").values(decision="permit"))
    broken = client.post_form("/p/acme/audit/verify").text
    assert re.search(r"entry \d+: content changed after it was written", broken)


# ---------------------------------------------------------------------- API keys
def test_api_keys_are_created_shown_once_and_revoked(ws: Workspace, tiny_model_dir: Path) -> None:
    from kifabrik.models.sources import add_model

    acme = ws.scoped("acme")
    add_model(acme, str(tiny_model_dir), name="tiny")
    client = sign_in(ws, "erika", "acme", "engineer")
    form = client.get("/p/acme/keys").text
    assert 'name="models" value="tiny"' in form and 'name="models" value="*"' in form
    r = client.post_form("/p/acme/keys", {"models": ["tiny"], "rate_limit": "30", "label": "Leitstand"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    secret = re.search(r'id="new-key" class="secret" type="text" readonly value="(kf-[0-9a-f]{8}-[^"]+)"', r.text)
    assert secret is not None
    key = authenticate(acme, secret.group(1))
    assert key is not None and key.models == ["tiny"] and key.rate_limit == 30 and key.name == "Leitstand"
    listing = client.get("/p/acme/keys").text
    assert f"kf-{key.id}-…" in listing and secret.group(1) not in listing
    bad = client.post_form("/p/acme/keys", {"models": ["gibts-nicht"]})
    assert bad.status_code == 400 and "no model or adapter named &#39;gibts-nicht&#39;" in bad.text
    revoked = client.post_form(f"/p/acme/keys/{key.id}/revoke")
    assert revoked.status_code == 303
    assert authenticate(acme, secret.group(1)) is None
    assert [k.revoked_at is not None for k in list_keys(acme)] == [True]
    viewer = sign_in(ws, "vera", "acme", "viewer")
    assert viewer.post_form("/p/acme/keys", {"models": ["*"]}).status_code == 403
    assert 'name="rate_limit"' not in viewer.get("/p/acme/keys").text


# ---------------------------------------------------------------------- members
def test_members_are_granted_by_an_admin_and_refused_for_an_engineer(ws: Workspace) -> None:
    from kifabrik import accounts

    admin = sign_in(ws, "anna", "acme", "admin")
    engineer = sign_in(ws, "erika", "acme", "engineer")
    accounts.create_user(ws, "quentin", "ein-langes-passwort")
    assert engineer.post_form("/p/acme/members", {"user": "quentin", "role": "viewer"}).status_code == 403
    assert "quentin" not in accounts.list_users(ws, "acme").__repr__()
    r = admin.post_form("/p/acme/members", {"user": "quentin", "role": "approver"})
    assert r.status_code == 303
    assert accounts.get_user(ws, "quentin").roles == {"acme": "approver"}
    page = admin.get("/p/acme/members").text
    assert "<th scope=\"row\">quentin" in page and 'value="quentin"' in page
    entry = ws.scoped("acme").catalog.audit_entries("member.grant")[-1]
    assert entry.actor == "user:anna" and entry.subject == "user:quentin"
    missing = admin.post_form("/p/acme/members", {"user": "niemand", "role": "viewer"})
    assert missing.status_code == 400 and "there is no user &#39;niemand&#39;" in missing.text
    assert engineer.post_form("/p/acme/members/remove", {"user": "quentin"}).status_code == 403
    assert admin.post_form("/p/acme/members/remove", {"user": "quentin"}).status_code == 303
    assert accounts.get_user(ws, "quentin").roles == {}
    assert admin.post_form("/p/acme/members/remove", {"user": "anna"}).status_code == 400
    assert 'name="user"' not in engineer.get("/p/acme/members").text


# ---------------------------------------------------------------------- projects apart, page rules, German
def test_a_member_of_another_project_gets_404_on_every_record_route(ws: Workspace, tmp_path: Path) -> None:
    acme = ws.scoped("acme")
    record = dataset(acme, tmp_path)
    sign_in(ws, "erika", "acme", "admin")
    outsider = sign_in(ws, "otto", "beta", "admin")
    a = f"/p/acme/artifacts/{record.id}"
    for url in (a, f"/p/acme/artifacts/{record.id[:12]}", f"{a}/files/card.md", f"{a}/files/manifest.json",
                f"{a}/lineage", f"{a}/read/card.md", "/p/acme/models", "/p/acme/documents", "/p/acme/audit",
                "/p/acme/keys", "/p/acme/members", "/p/acme/datasets"):
        assert outsider.get(url).status_code == 404, url
    for url in ("/p/acme/audit/verify", "/p/acme/keys", "/p/acme/keys/00000000/revoke", "/p/acme/members",
                "/p/acme/members/remove"):
        assert outsider.post_form(url, {"user": "erika", "role": "viewer", "models": ["*"]}).status_code == 404, url
    # and project A's id typed into project B's own URLs is not found there either
    for url in (f"/p/beta/artifacts/{record.id}", f"/p/beta/artifacts/{record.id}/files/card.md",
                f"/p/beta/artifacts/{record.id}/lineage"):
        assert outsider.get(url).status_code == 404, url
    assert accounts_roles(ws, "erika") == {"acme": "admin"}


def accounts_roles(ws: Workspace, user: str) -> dict[str, str]:
    from kifabrik import accounts

    return accounts.get_user(ws, user).roles


@pytest.mark.parametrize("lang", ["de", "en"])
def test_every_page_has_one_h1_labelled_controls_and_no_inline_script(ws: Workspace, tmp_path: Path, lang: str) -> None:
    acme = ws.scoped("acme")
    record = dataset(acme, tmp_path)
    client = sign_in(ws, "anna", "acme", "admin")
    client.cookies.set("kf_lang", lang)
    for url in ("/p/acme/datasets", f"/p/acme/artifacts/{record.id}", f"/p/acme/artifacts/{record.id}/lineage",
                "/p/acme/models", "/p/acme/documents", "/p/acme/audit", "/p/acme/keys", "/p/acme/members"):
        r = client.get(url)
        assert r.status_code == 200, url
        html = r.text
        assert html.count("<h1") == 1, url
        assert f'<html lang="{lang}">' in html
        assert not re.search(r"<script(?![^>]*\ssrc=)", html) and not re.search(r"\son[a-z]+=", html), url
        assert not re.search(r"\sstyle=", html), url                 # CSP style-src 'self': no style attributes
        for control in re.findall(r"<(?:input|select|textarea)(?![^>]*type=\"hidden\")[^>]*>", html):
            found = re.search(r'\sid="([^"]+)"', control)
            assert found and f'for="{found.group(1)}"' in html, (url, control)
        assert "<th>" not in html.split("<main", 1)[1], url        # every header cell has its scope
        assert "/static/records.css" in html


def test_every_string_of_these_pages_has_a_german_translation() -> None:

    german = i18n._DE
    missing = []
    for template in sorted(TEMPLATES.glob("*.html")):
        if not template.name.startswith(MINE):
            continue
        for text in re.findall(r"""\bt\((["'])(.+?)\1[,)]""", template.read_text(encoding="utf-8")):
            if text[1] not in german:
                missing.append(f"{template.name}: {text[1]}")
    from kifabrik.ui.pages.data import PII_MODES
    from kifabrik.ui.pages.records import MODEL_KINDS

    missing += [s for s in (*PII_MODES, *(title for _, title in MODEL_KINDS), "prohibition", "duty") if s not in german]
    assert missing == []


# ---------------------------------------------------------------------- in a real browser
def test_the_pages_pass_axe_at_desktop_and_tablet_width(ws: Workspace, home: Path, tmp_path: Path, ui_server: Any,
                                                        browser: Any, axe: Any, screenshot: Any) -> None:
    """Headless Chromium (tests/ui/conftest.py): no serious or critical axe-core violation, no sideways
    scrolling at 1280 and 800 px, and a click on a lineage box opens that artifact."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from tests.ui.clients import PASSWORD, ensure_member

    acme = ws.scoped("acme")
    ensure_member(ws, "erika", "acme", "admin")
    model = acme.catalog.add_artifact(id="ab" * 32, kind="model", name="basis", path="none", manifest={"files": {}},
                                      meta={})
    data = dataset(acme, tmp_path)
    lora = adapter_of(acme, model, data)
    acme.catalog.audit("policy.check", actor="api-key:1234abcd", subject=data.id, decision="deny")
    server = ui_server(home)
    browser.get(server.url + "/login")
    browser.find_element(By.NAME, "username").send_keys("erika")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.NAME, "password").submit()
    pages = {"datasets": "/p/acme/datasets", "dataset": f"/p/acme/artifacts/{data.id}",
             "lineage": f"/p/acme/artifacts/{lora.id}/lineage", "models": "/p/acme/models",
             "documents": "/p/acme/documents", "audit": "/p/acme/audit", "keys": "/p/acme/keys",
             "members": "/p/acme/members"}
    for width in (1280, 800):
        browser.set_window_size(width, 900)
        for name, path in pages.items():
            browser.get(server.url + path)
            assert browser.find_element(By.TAG_NAME, "h1").text, path
            assert axe(browser) == [], (width, path)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (width, path, overflow)
            screenshot(browser, f"records-{name}-{width}")
    browser.get(server.url + pages["lineage"])
    box = next(t for t in browser.find_elements(By.CSS_SELECTOR, "svg.lineage text.name") if t.text == "basis@1")
    ActionChains(browser).move_to_element(box).click().perform()
    assert browser.current_url.endswith(f"/p/acme/artifacts/{model.id}")
