"""What every page of the web UI shares: who is signed in, in which project, with which role;
rendering (Jinja2, autoescaped), CSRF checks and the errors a person sees.

A page handler takes `ctx: SignedIn` for pages outside a project, or `ctx: ProjectPage` for pages under `/p/{project}/...`. The second is the only way
a handler gets at the catalog: `ctx.ws` is `Workspace.scoped(project)`, so a handler cannot see
another project's records even by mistake, and a user who is not a member gets 404 (not 403: the
project's existence does not leak).

    @router.get("/p/{project}/datasets")
    def datasets(ctx: ProjectPage) -> HTMLResponse:
        return ctx.render("datasets.html", datasets=ctx.ws.catalog.list_artifacts("dataset"))

    @router.post("/p/{project}/datasets")
    async def upload(ctx: ProjectPage) -> Response:
        form = await ctx.form("work")        # checks the CSRF token and the role (403 otherwise)
        ...
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from kifabrik import accounts
from kifabrik.accounts import ROLES, WebSession, can
from kifabrik.ui.i18n import negotiate, translator
from kifabrik.workspace import Workspace

SESSION_COOKIE = "kf_session"
LANG_COOKIE = "kf_lang"
TEMPLATES = Path(__file__).parent / "templates"
#: the navigation of a project: (path below /p/{project}, English label); pages implement exactly these
NAV = (("", "Dashboard"), ("/datasets", "Data"), ("/models", "Models"), ("/jobs", "Training"),
       ("/evaluations", "Evaluations"), ("/documents", "Documents"), ("/releases", "Releases"),
       ("/chat", "Chat"), ("/keys", "API keys"), ("/audit", "Audit log"), ("/members", "Members"))

_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "svg"]),
                   trim_blocks=True, lstrip_blocks=True)


class PageError(Exception):
    """Ends a request with an error page: 404 (not found / not a member), 403, 400 (bad input)."""

    def __init__(self, status: int, title: str, message: str = "", hint: str | None = None) -> None:
        super().__init__(message or title)
        self.status, self.title, self.message, self.hint = status, title, message, hint


class SignIn(Exception):
    """Ends a request with a redirect to the sign-in page (then back to `next`)."""

    def __init__(self, next_url: str, expired: bool = False) -> None:
        super().__init__(next_url)
        self.next_url, self.expired = next_url, expired


@dataclass
class Page:
    """One request of a signed-in user (and, under /p/{project}, their project and role)."""

    request: Request
    root: Workspace                    # the whole installation: accounts only, never records
    session: WebSession
    lang: str
    project: str | None = None
    role: str | None = None
    ws: Workspace | None = None        # the project's scoped workspace
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> accounts.User:
        return self.session.user

    @property
    def t(self) -> Any:
        return translator(self.lang)

    def can(self, ability: str) -> bool:
        return can(self.role, ability)

    def require(self, ability: str) -> None:
        if not self.can(ability):
            raise PageError(403, "Not allowed", "Your role in this project does not allow this.")

    def url(self, path: str = "") -> str:
        """A URL inside the current project: `ctx.url("/datasets")`."""
        return f"/p/{quote(self.project or '', safe='')}{path}"

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return HTMLResponse(render(template, self.request, lang=self.lang, page=self, **values), status_code=status)

    def check_csrf(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(str(token), self.session.csrf):
            raise PageError(400, "Error", "The form has expired. Please reload the page and try again.")

    async def form(self, ability: str = "work") -> FormData:
        """The posted form, after the role check and the CSRF check (field `csrf`, or header X-CSRF-Token)."""
        self.require(ability)
        form = await self.request.form()
        self.check_csrf(str(form.get("csrf") or self.request.headers.get("x-csrf-token") or ""))
        return form

    def actor(self) -> str:
        return f"user:{self.user.name}"


def render(template: str, request: Request, *, lang: str, **values: Any) -> str:
    t = translator(lang)
    return _env.get_template(template).render(request=request, lang=lang, t=t, nav=NAV, roles=ROLES, **values)


def root_of(request: Request) -> Workspace:
    return request.app.state.ws  # type: ignore[no-any-return]


def language(request: Request) -> str:
    return negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


def page(request: Request) -> Page:
    """Dependency: the signed-in user, else a redirect to the sign-in page."""
    root = root_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = accounts.session_of(root, token)
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignIn(target, expired=bool(token))
    return Page(request=request, root=root, session=session, lang=language(request))


def project_page(request: Request, project: str) -> Page:
    """Dependency for /p/{project}/...: the user's page inside a project they are a member of, else 404."""
    ctx = page(request)
    role = ctx.user.roles.get(project)
    if role is None:
        raise PageError(404, "Not found", "This page does not exist, or it belongs to a project you are not a member of.")
    ctx.project, ctx.role = project, role
    ctx.ws = ctx.root.scoped(project)
    return ctx


def redirect(url: str) -> RedirectResponse:
    """After a successful POST: see the result with GET (303)."""
    return RedirectResponse(url, status_code=303)


#: a handler's parameter for pages outside a project / under /p/{project}/...
SignedIn = Annotated[Page, Depends(page)]
ProjectPage = Annotated[Page, Depends(project_page)]
