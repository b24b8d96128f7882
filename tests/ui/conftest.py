"""Fixtures of the KI-Hub tests: a real headless Chromium, the UI server as a subprocess, axe-core.

    def test_login_page(ui_server, home, browser, screenshot, axe):
        server = ui_server(home)
        browser.get(server.url + "/login")
        screenshot(browser, "login")          # test-artifacts/screenshots/login.png
        assert axe(browser) == []             # no serious or critical accessibility violations

Chromium and chromedriver are Debian's (`scripts/browser.sh`, run by `make services`, installs them
and axe-core); without them the browser tests skip and say what to install.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("KIFABRIK_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("KIFABRIK_CHROMEDRIVER", "/usr/bin/chromedriver"))
AXE_JS = Path.home() / ".cache" / "kifabrik" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
#: What a browser of a German user sends: German first, English second (Chromium adds the q values).
DEFAULT_LANGUAGES = "de-DE,de,en-US,en"
WINDOW = (1280, 900)
HEALTH_TIMEOUT_S = 60.0


# ------------------------------------------------------------------ browser

@pytest.fixture
def browser_factory() -> Iterator[Callable[..., Any]]:
    """`browser_factory(languages="en-US,en")`: another headless Chromium (Selenium WebDriver); all quit at the end.

    `languages` becomes the Accept-Language header and `navigator.languages`.
    """
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[test]'")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver "
                    "(or run scripts/browser.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    started: list[Any] = []

    def start(languages: str = DEFAULT_LANGUAGES) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--lang={languages.split(',')[0]}",
                    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, too little for a renderer
                    "--disable-gpu", "--no-first-run", "--disable-extensions"):
            options.add_argument(arg)
        if os.geteuid() == 0:  # Chromium refuses to run its sandbox as root
            options.add_argument("--no-sandbox")
        options.add_experimental_option("prefs", {"intl.accept_languages": languages})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(60)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        with contextlib.suppress(Exception):  # a browser that crashed already is gone anyway
            driver.quit()


@pytest.fixture
def browser(browser_factory: Callable[..., Any], request: pytest.FixtureRequest) -> Any:
    """A headless Chromium preferring German, then English. Other languages:
    `@pytest.mark.parametrize("browser", ["en-US,en"], indirect=True)`."""
    return browser_factory(getattr(request, "param", None) or DEFAULT_LANGUAGES)


def save_screenshot(driver: Any, name: str) -> Path:
    """Save what `driver` shows as `test-artifacts/screenshots/<name>.png` (at the repository root)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^\w.-]+", "_", name).strip("_") + ".png")
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"the browser could not write the screenshot {path}")
    return path


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    """The serious and critical accessibility violations axe-core finds on the page `driver` shows.

    Each is axe's own result: `id` (the rule, e.g. `label`, `color-contrast`), `impact`, `help`,
    `helpUrl` and `nodes` (with each node's `target` selector and `failureSummary`).
    """
    if not AXE_JS.exists():
        pytest.skip(f"axe-core missing ({AXE_JS}): run scripts/browser.sh (npm install axe-core)")
    driver.execute_script(AXE_JS.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done({violations: r.violations}), e => done({error: String(e)}));")
    if "error" in result:
        raise AssertionError(f"axe-core failed on {driver.current_url}: {result['error']}")
    return [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    """`screenshot(driver, name) -> Path`: see `save_screenshot`."""
    return save_screenshot


@pytest.fixture
def axe() -> Callable[[Any], list[dict[str, Any]]]:
    """`axe(driver) -> violations`: see `axe_violations` (skips the test when axe-core is missing)."""
    return axe_violations


# ------------------------------------------------------------------ UI server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class UIServer:
    """`kifabrik ui` in a subprocess: `url`, `stop()`, `restart()` (same port, same home)."""

    home: Path
    port: int
    log: Path
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> UIServer:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the UI server exited with code {self.proc.returncode} before /healthz answered:\n"
                            f"{self.log_text()}", pytrace=False)
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the UI server did not answer GET /healthz with 200 within {HEALTH_TIMEOUT_S:.0f} s:\n"
                            f"{self.log_text()}", pytrace=False)
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then wait for it to end (SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> UIServer:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else "(no log)"


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[Callable[..., UIServer]]:
    """`ui_server(home, command=None, **env) -> UIServer`: start the KI-Hub on a free port, with
    KIFABRIK_HOME=home, and wait until GET /healthz answers 200; every server is stopped at the end.

    `command(port)` replaces `kifabrik ui --host 127.0.0.1 --port PORT` (the harness's own tests).
    """
    servers: list[UIServer] = []

    def start(home: Path, command: Callable[[int], list[str]] | None = None, **env: str) -> UIServer:
        port = free_port()
        kifabrik = shutil.which("kifabrik", path=str(Path(sys.executable).parent)) or "kifabrik"
        argv = command(port) if command else [kifabrik, "ui", "--host", "127.0.0.1", "--port", str(port)]
        server = UIServer(home=Path(home), port=port, log=tmp_path / f"ui-server-{port}.log", command=argv,
                          env={**os.environ, "KIFABRIK_HOME": str(home), **env})
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
