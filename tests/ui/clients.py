"""Signed-in HTTP clients of the web UI for page tests (no browser): `client = sign_in(ws, "erika", "acme", "engineer")`."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from kifabrik import accounts
from kifabrik.errors import KifabrikError
from kifabrik.ui.app import create_app
from kifabrik.workspace import Workspace

PASSWORD = "ein-langes-passwort"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class UiClient(TestClient):
    """A TestClient that keeps its session cookie and knows the session's CSRF token."""

    csrf: str = ""

    def post_form(self, url: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        """POST a form with the CSRF token (what a page's form sends)."""
        return self.post(url, data={"csrf": self.csrf, **(data or {})}, follow_redirects=False, **kw)


def ensure_member(ws: Workspace, user: str, project: str, role: str) -> None:
    try:
        accounts.get_project(ws, project)
    except KifabrikError:
        accounts.create_project(ws, project)
    try:
        accounts.get_user(ws, user)
    except KifabrikError:
        accounts.create_user(ws, user, PASSWORD)
    accounts.grant(ws, user, project, role)


def sign_in(ws: Workspace, user: str, project: str | None = None, role: str = "engineer") -> UiClient:
    """A client signed in as `user` (created, and given `role` in `project`, when needed)."""
    if project is not None:
        ensure_member(ws, user, project, role)
    client = UiClient(create_app(ws))
    form = client.get("/login").text
    token = _CSRF.search(form).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": user, "password": PASSWORD, "csrf": token, "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get(f"/p/{project}" if project else "/?all=1")
    client.csrf = _CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    return client
