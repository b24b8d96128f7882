"""Sign in and out, the language switch, and the list of the user's projects."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import defaultdict, deque
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kifabrik import accounts
from kifabrik.ui.i18n import LANGUAGES
from kifabrik.ui.web import (
    LANG_COOKIE,
    SESSION_COOKIE,
    PageError,
    SignedIn,
    language,
    redirect,
    render,
    root_of,
)

router = APIRouter()
LOGIN_COOKIE = "kf_login"  # double-submit CSRF token of the sign-in form (there is no session yet)
#: failed sign-ins per user name in the last 5 minutes; from the 5th, each try waits (slows guessing)
_FAILED: dict[str, deque[float]] = defaultdict(deque)
_WINDOW, _FREE_TRIES = 300.0, 5


def _safe_next(url: str | None) -> str:
    """Only paths of this site (no `//host` or scheme), so the sign-in cannot redirect elsewhere."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


def _login_form(request: Request, *, error: str | None = None, next_url: str = "/", status: int = 200,
                name: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    lang = language(request)
    expired = request.query_params.get("expired") == "1" and error is None
    body = render("login.html", request, lang=lang, page=None, csrf=token, error=error, next_url=next_url,
                  expired=expired, name=name)
    response = HTMLResponse(body, status_code=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.app.state.secure_cookies, max_age=3600)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_form(request, next_url=_safe_next(next))


@router.post("/login")
def login(request: Request, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
          csrf: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    if not csrf or not hmac.compare_digest(csrf, cookie):
        return _login_form(request, error="The form has expired. Please reload the page and try again.",
                           next_url=_safe_next(next), status=400, name=username)
    name = username.strip().lower()
    tries = _FAILED[name]
    now = time.monotonic()
    while tries and now - tries[0] > _WINDOW:
        tries.popleft()
    if len(tries) >= _FREE_TRIES:
        time.sleep(min(5.0, 0.5 * (len(tries) - _FREE_TRIES + 1)))
    root = root_of(request)
    user = accounts.authenticate(root, name, password)
    if user is None:
        tries.append(now)
        root.catalog.audit("user.login", actor=f"user:{name}" if name else "anonymous", decision="deny",
                           details={"client": request.client.host if request.client else None})
        return _login_form(request, error="Wrong user name or password.", next_url=_safe_next(next), status=401,
                           name=username)
    tries.clear()
    token, _ = accounts.open_session(root, user.name)
    root.catalog.audit("user.login", actor=f"user:{user.name}", decision="permit",
                       details={"client": request.client.host if request.client else None})
    response = redirect(_safe_next(next))
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=request.app.state.secure_cookies, max_age=accounts.SESSION_HOURS * 3600)
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, ctx: SignedIn) -> Response:
    form = await request.form()
    ctx.check_csrf(str(form.get("csrf") or ""))
    accounts.close_session(ctx.root, request.cookies.get(SESSION_COOKIE))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post("/lang")
def set_language(request: Request, lang: Annotated[str, Form()] = "de", back: Annotated[str, Form()] = "/") -> Response:
    """The language switch (works signed out too; no CSRF needed: it only sets a display preference)."""
    if lang not in LANGUAGES:
        raise PageError(400, "Error", f"language {lang!r} is not one of {', '.join(LANGUAGES)}")
    response = redirect(_safe_next(back))
    response.set_cookie(LANG_COOKIE, lang, samesite="lax", max_age=365 * 24 * 3600)
    return response


@router.get("/", response_class=HTMLResponse)
def projects(ctx: SignedIn) -> Response:
    """The user's projects; with exactly one, straight to its dashboard."""
    mine = [p for p in accounts.list_projects(ctx.root) if p.name in ctx.user.roles]
    if len(mine) == 1 and ctx.request.query_params.get("all") != "1":
        return RedirectResponse(f"/p/{mine[0].name}", status_code=303)
    return ctx.render("projects.html", projects=mine)
