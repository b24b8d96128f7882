"""The web UI's own rules: sign-in, sessions, CSRF, language, security headers, body limit, error pages."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from kifabrik.ui.app import BodyLimit, create_app
from kifabrik.workspace import Workspace
from tests.ui.clients import PASSWORD, ensure_member, sign_in


def _login(client: TestClient, user: str, password: str, next_url: str = "/") -> object:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
    return client.post("/login", data={"username": user, "password": password, "csrf": token, "next": next_url},
                       follow_redirects=False)


def test_sign_in_sessions_and_csrf(ws: Workspace) -> None:
    ensure_member(ws, "erika", "acme", "engineer")
    client = TestClient(create_app(ws))
    r = client.get("/p/acme/datasets", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fp%2Facme%2Fdatasets"
    assert _login(client, "erika", "falsch-falsch").status_code == 401
    assert _login(client, "niemand", PASSWORD).status_code == 401  # the same answer: names do not leak
    r = _login(client, "erika", PASSWORD, next_url="//evil.example/")  # never redirected off the site
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("samesite", "SameSite")
    assert client.get("/p/acme").status_code == 200
    # a form without the session's CSRF token is refused and changes nothing
    r = client.post("/logout", data={"csrf": "falsch"}, follow_redirects=False)
    assert r.status_code == 400 and "abgelaufen" in r.text
    assert client.get("/p/acme").status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/p/acme").text).group(1)  # type: ignore[union-attr]
    assert client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert client.get("/p/acme", follow_redirects=False).status_code == 303  # signed out: the session is gone
    denied = [e for e in ws.catalog.audit_entries("user.login") if e.decision == "deny"]
    assert [e.actor for e in denied] == ["user:erika", "user:niemand"]


def test_language_headers_and_error_pages(ws: Workspace) -> None:
    client = sign_in(ws, "erika", "acme", "viewer")
    page = client.get("/p/acme", headers={"accept-language": "en-GB,en;q=0.9"})
    assert '<html lang="en">' in page.text and "Dashboard" in page.text
    assert '<html lang="de">' in client.get("/p/acme").text  # German without a preference
    r = client.post("/lang", data={"lang": "en", "back": "/p/acme?page=2"}, follow_redirects=False)
    assert r.headers["location"] == "/p/acme?page=2"
    assert '<html lang="en">' in client.get("/p/acme").text  # the choice beats the browser's
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp  # nothing from elsewhere
    assert page.headers["x-content-type-options"] == "nosniff"
    missing = client.get("/p/acme/nothing-here")
    assert missing.status_code == 404 and "Traceback" not in missing.text
    assert client.get("/p/other-project").status_code == 404


def test_bodies_over_the_limit_are_refused_also_without_a_length() -> None:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(BodyLimit, limit=10)
    client = TestClient(app)
    assert client.post("/upload", content=b"12345").json() == {"bytes": 5}
    assert client.post("/upload", content=b"x" * 20).status_code == 413
    assert client.post("/upload", content=iter([b"12345"] * 5)).status_code == 413  # chunked: counted while read
