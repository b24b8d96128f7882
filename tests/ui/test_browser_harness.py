"""The browser harness itself (tests/ui/conftest.py), against pages of its own on a local HTTP server.

axe-core is checked on two pages: one with a text field without a label (rule `label`, critical)
and light grey text on white (rule `color-contrast`, serious: #aaa on #fff is 2.32:1, WCAG AA asks
4.5:1), and one written to pass (lang, title, landmark, labelled field, #222 on #fff).
"""

from __future__ import annotations

import struct
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BAD = """<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Unzugänglich</title></head>
<body><main>
<h1>Anmeldung</h1>
<p style="color:#aaaaaa;background:#ffffff">Bitte geben Sie Ihren Namen ein.</p>
<input type="text" name="name">
</main></body></html>
"""

GOOD = """<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Zugänglich</title></head>
<body><main>
<h1>Anmeldung</h1>
<p style="color:#222222;background:#ffffff">Bitte geben Sie Ihren Namen ein.</p>
<form><label for="name">Name</label> <input type="text" id="name" name="name"></form>
</main></body></html>
"""


class Site:
    """A static site in a thread; remembers the Accept-Language of every request."""

    def __init__(self, root: Path) -> None:
        self.languages: list[str | None] = []
        site = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                site.languages.append(self.headers.get("Accept-Language"))
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:  # quiet: the test output shows no request lines
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "bad.html").write_text(BAD, encoding="utf-8")
    (root / "good.html").write_text(GOOD, encoding="utf-8")
    s = Site(root)
    yield s
    s.close()


def test_axe_reports_the_missing_label_and_the_low_contrast(browser, site, axe):
    browser.get(site.url + "/bad.html")
    found = {v["id"]: v for v in axe(browser)}
    assert set(found) == {"label", "color-contrast"}
    assert found["label"]["impact"] == "critical" and found["color-contrast"]["impact"] == "serious"
    assert [n["target"] for n in found["label"]["nodes"]] == [["input"]]
    assert [n["target"] for n in found["color-contrast"]["nodes"]] == [["p"]]


def test_a_clean_page_has_no_serious_violations(browser, site, axe):
    browser.get(site.url + "/good.html")
    assert browser.title == "Zugänglich"
    assert axe(browser) == []


def test_a_screenshot_is_written_as_a_png_of_the_window(browser, site, screenshot):
    browser.get(site.url + "/good.html")
    path = screenshot(browser, "harness/clean page")
    assert path.name == "harness_clean_page.png" and path.parent.name == "screenshots"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk: the image's size in pixels
    assert [width, height] == browser.execute_script("return [window.innerWidth, window.innerHeight]")
    assert width == 1280  # the window is 1280 x 900; its browser frame takes part of the height


def test_the_browser_prefers_german_then_english(browser, site):
    browser.get(site.url + "/good.html")
    assert site.languages[0] == "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"
    assert browser.execute_script("return navigator.languages") == ["de-DE", "de", "en-US", "en"]


@pytest.mark.parametrize("browser", ["en-GB,en"], indirect=True)
def test_the_languages_are_configurable(browser, site):
    browser.get(site.url + "/good.html")
    assert site.languages[0] == "en-GB,en;q=0.9"


def test_the_server_factory_waits_for_healthz_restarts_and_stops(ui_server, tmp_path):
    """The factory with a stand-in command (`kifabrik ui` is not needed to test the harness)."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "healthz").write_text("ok\n")
    server = ui_server(tmp_path / "home", command=lambda port: [sys.executable, "-m", "http.server", "--bind",
                                                                "127.0.0.1", "--directory", str(root), str(port)])
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as r:
        assert r.status == 200
    first = server.proc.pid
    server.restart()
    assert server.proc.pid != first and server.url.endswith(f":{server.port}")
    with urllib.request.urlopen(server.url + "/healthz", timeout=5) as r:
        assert r.read() == b"ok\n"
    server.stop()
    assert server.proc.returncode is not None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/healthz", timeout=5)
