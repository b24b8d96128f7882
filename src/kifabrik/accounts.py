"""Users, projects and roles of one installation (the KI-Hub web UI signs in with these).

A *project* is a company or a department: every artifact, policy, API key, run and audit entry
belongs to one (the catalog keeps them apart: `Catalog.scoped`). A *user* has a role per project:

- `viewer`   reads everything of the project (datasets, lineage, reports, documents, audit log);
- `engineer` also imports data, trains, evaluates, chats, manages API keys and requests releases;
- `approver` also approves or rejects release requests (never their own: four eyes);
- `admin`    also adds and removes members of the project.

Passwords are stored as argon2id hashes (argon2-cffi, its default parameters), never in clear. A
web session is a random token in a cookie; the catalog stores only its sha256 with the session's
CSRF token and expiry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from kifabrik.catalog import schema as t
from kifabrik.catalog.records import DEFAULT_PROJECT, utcnow
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.workspace import Workspace

ROLES = ("viewer", "engineer", "approver", "admin")
#: what each role may do (each role may do what the roles before it may)
_ABILITIES = {
    "read": "viewer",
    "work": "engineer",       # import, train, evaluate, chat, keys, request a release
    "approve": "approver",
    "manage": "admin",        # members of the project
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
SESSION_HOURS = 12
MIN_PASSWORD = 10


@dataclass(frozen=True)
class User:
    name: str
    display_name: str | None
    disabled: bool
    created_at: datetime
    roles: dict[str, str]  # project -> role

    @property
    def label(self) -> str:
        return self.display_name or self.name


@dataclass(frozen=True)
class Project:
    name: str
    title: str | None
    created_at: datetime


@dataclass(frozen=True)
class WebSession:
    user: User
    csrf: str
    expires_at: datetime


def can(role: str | None, ability: str) -> bool:
    """Whether `role` may do `ability` (read, work, approve, manage)."""
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(_ABILITIES[ability])


def _hasher() -> Any:
    try:
        from argon2 import PasswordHasher
    except ImportError:  # pragma: no cover - a dependency of the package
        raise KifabrikError("argon2-cffi is not installed", hint="pip install argon2-cffi (`make install` does)") from None
    return PasswordHasher()


def _sessions(ws: Workspace) -> sessionmaker[Any]:
    return sessionmaker(ws.catalog.engine, expire_on_commit=False, future=True)


def _check_name(what: str, name: str) -> str:
    if not _NAME.match(name or ""):
        raise KifabrikError(f"{what} name {name!r} is not valid",
                            hint="use 1-100 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise KifabrikError(f"the password is too short ({len(password)} characters)",
                            hint=f"use at least {MIN_PASSWORD} characters")


def _user(s: Any, row: t.User) -> User:
    roles = {m.project: m.role for m in s.scalars(select(t.Membership).where(t.Membership.user_name == row.name))}
    return User(row.name, row.display_name, bool(row.disabled), row.created_at, roles)


# ---------------------------------------------------------------------- projects
def create_project(ws: Workspace, name: str, *, title: str | None = None) -> Project:
    _check_name("project", name)
    with _sessions(ws).begin() as s:
        if s.get(t.Project, name) is not None:
            raise KifabrikError(f"project {name!r} exists", hint="list projects with `kifabrik projects list`")
        row = t.Project(name=name, title=title, created_at=utcnow())
        s.add(row)
    ws.catalog.scoped(name).audit("project.create", actor=_actor(), subject=f"project:{name}",
                                  details={"title": title})
    return Project(row.name, row.title, row.created_at)


def list_projects(ws: Workspace) -> list[Project]:
    with _sessions(ws)() as s:
        return [Project(r.name, r.title, r.created_at) for r in s.scalars(select(t.Project).order_by(t.Project.name))]


def get_project(ws: Workspace, name: str) -> Project:
    with _sessions(ws)() as s:
        row = s.get(t.Project, name)
        if row is None:
            raise NotFoundError(f"no project {name!r}", hint="list projects with `kifabrik projects list`")
        return Project(row.name, row.title, row.created_at)


# ---------------------------------------------------------------------- users
def create_user(ws: Workspace, name: str, password: str, *, display_name: str | None = None) -> User:
    _check_name("user", name)
    _check_password(password)
    digest = _hasher().hash(password)
    try:
        with _sessions(ws).begin() as s:
            if s.get(t.User, name) is not None:
                raise KifabrikError(f"user {name!r} exists", hint="list users with `kifabrik users list`")
            s.add(t.User(name=name, display_name=display_name, password_hash=digest, disabled=False,
                         created_at=utcnow()))
    except IntegrityError:
        raise KifabrikError(f"user {name!r} exists", hint="list users with `kifabrik users list`") from None
    ws.catalog.audit("user.create", actor=_actor(), subject=f"user:{name}")
    return get_user(ws, name)


def get_user(ws: Workspace, name: str) -> User:
    with _sessions(ws)() as s:
        row = s.get(t.User, name)
        if row is None:
            raise NotFoundError(f"no user {name!r}", hint="list users with `kifabrik users list`")
        return _user(s, row)


def list_users(ws: Workspace, project: str | None = None) -> list[User]:
    with _sessions(ws)() as s:
        users = [_user(s, r) for r in s.scalars(select(t.User).order_by(t.User.name))]
    return [u for u in users if project is None or project in u.roles]


def set_password(ws: Workspace, name: str, password: str) -> None:
    _check_password(password)
    digest = _hasher().hash(password)
    with _sessions(ws).begin() as s:
        row = s.get(t.User, name)
        if row is None:
            raise NotFoundError(f"no user {name!r}", hint="list users with `kifabrik users list`")
        row.password_hash = digest
        s.execute(delete(t.UiSession).where(t.UiSession.user_name == name))  # signed out everywhere
    ws.catalog.audit("user.password", actor=_actor(), subject=f"user:{name}")


def set_disabled(ws: Workspace, name: str, disabled: bool) -> None:
    with _sessions(ws).begin() as s:
        row = s.get(t.User, name)
        if row is None:
            raise NotFoundError(f"no user {name!r}", hint="list users with `kifabrik users list`")
        row.disabled = disabled
        if disabled:
            s.execute(delete(t.UiSession).where(t.UiSession.user_name == name))
    ws.catalog.audit("user.disable" if disabled else "user.enable", actor=_actor(), subject=f"user:{name}")


def grant(ws: Workspace, user: str, project: str, role: str, *, actor: str | None = None) -> None:
    """Give `user` the `role` in `project` (replacing the role they had there)."""
    if role not in ROLES:
        raise KifabrikError(f"role {role!r} is not one of {', '.join(ROLES)}", hint="--role viewer|engineer|approver|admin")
    get_user(ws, user)
    get_project(ws, project)
    with _sessions(ws).begin() as s:
        row = s.get(t.Membership, (user, project))
        if row is None:
            s.add(t.Membership(user_name=user, project=project, role=role))
        else:
            row.role = role
    ws.catalog.scoped(project).audit("member.grant", actor=actor or _actor(), subject=f"user:{user}",
                                     details={"role": role})


def revoke(ws: Workspace, user: str, project: str, *, actor: str | None = None) -> None:
    with _sessions(ws).begin() as s:
        row = s.get(t.Membership, (user, project))
        if row is None:
            raise NotFoundError(f"user {user!r} is not a member of project {project!r}")
        s.delete(row)
    ws.catalog.scoped(project).audit("member.revoke", actor=actor or _actor(), subject=f"user:{user}")


# ---------------------------------------------------------------------- sign-in and sessions
_DUMMY: list[str] = []


def authenticate(ws: Workspace, name: str, password: str) -> User | None:
    """The user if the password is right and the account enabled, else None (never says which part was wrong).

    An unknown name costs one argon2 verification as well, so timing does not tell names apart.
    """
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    with _sessions(ws)() as s:
        row = s.get(t.User, name)
        if row is None:
            if not _DUMMY:
                _DUMMY.append(hasher.hash(secrets.token_hex(16)))
            try:
                hasher.verify(_DUMMY[0], password)
            except (VerificationError, InvalidHashError):
                pass
            return None
        try:
            hasher.verify(row.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if row.disabled:
            return None
        return _user(s, row)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(ws: Workspace, user: str, *, hours: int = SESSION_HOURS) -> tuple[str, WebSession]:
    """A new session for `user`: (the token for the cookie, the session). Only the token's hash is stored."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with _sessions(ws).begin() as s:
        s.execute(delete(t.UiSession).where(t.UiSession.expires_at < now))
        s.add(t.UiSession(id_hash=_token_hash(token), user_name=user, csrf=secrets.token_urlsafe(32),
                          created_at=now, expires_at=now + timedelta(hours=hours)))
    found = session_of(ws, token)
    assert found is not None
    return token, found


def session_of(ws: Workspace, token: str | None) -> WebSession | None:
    """The live session of a cookie token, else None (expired, signed out, unknown or disabled user)."""
    if not token:
        return None
    with _sessions(ws)() as s:
        row = s.get(t.UiSession, _token_hash(token))
        if row is None:
            return None
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
        if expires < utcnow():
            return None
        user = s.get(t.User, row.user_name)
        if user is None or user.disabled:
            return None
        return WebSession(_user(s, user), row.csrf, expires)


def close_session(ws: Workspace, token: str | None) -> None:
    if not token:
        return
    with _sessions(ws).begin() as s:
        s.execute(delete(t.UiSession).where(t.UiSession.id_hash == _token_hash(token)))


def _actor() -> str:
    return "cli"


def default_project() -> str:
    return DEFAULT_PROJECT
