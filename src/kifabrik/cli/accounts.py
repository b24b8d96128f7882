"""`kifabrik ui`, `kifabrik users ...`, `kifabrik projects ...`: the web UI and who may use it."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer
from rich.table import Table

from kifabrik.cli.common import err, out, print_json, when, workspace
from kifabrik.errors import KifabrikError

users_app = typer.Typer(help="Users of the web UI (passwords stored as argon2id hashes).", no_args_is_help=True)
projects_app = typer.Typer(help="Projects: artifacts, policies, keys, runs and audit entries belong to one.",
                           no_args_is_help=True)
RoleOpt = Annotated[str, typer.Option(help="viewer | engineer | approver | admin")]


def _password(given: str | None, confirm: bool = True) -> str:
    """From --password-stdin-less sources: $KIFABRIK_PASSWORD, else asked twice on the terminal."""
    if given is not None:
        return given
    env = os.environ.get("KIFABRIK_PASSWORD")
    if env:
        return env
    first = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != first:
        raise KifabrikError("the two passwords differ", hint="type the same password twice")
    return first


def ui(host: Annotated[str, typer.Option(help="Interface to listen on (default: this machine only).")] = "127.0.0.1",
       port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8700,
       secure_cookies: Annotated[bool, typer.Option(help="Mark cookies Secure (behind an HTTPS proxy).")] = False) -> None:
    """Start the KI-Hub web UI (sign in with a user from `kifabrik users add`)."""
    import uvicorn

    from kifabrik import accounts
    from kifabrik.ui.app import create_app

    ws = workspace()
    if not accounts.list_users(ws):
        err.print("[yellow]no users yet[/yellow]: add one with `kifabrik users add NAME --project default --role admin`")
    out.print(f"KI-Hub on http://{host}:{port}/  (Ctrl-C stops it; running jobs go on)")
    uvicorn.run(create_app(ws, secure_cookies=secure_cookies), host=host, port=port, log_level="warning")


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="Login name (lower case).")],
              project: Annotated[list[str] | None, typer.Option(help="Give a role in this project (repeatable).")] = None,
              role: RoleOpt = "viewer",
              display_name: Annotated[str | None, typer.Option(help="The name shown in the UI.")] = None,
              password: Annotated[str | None, typer.Option(help="The password (else $KIFABRIK_PASSWORD, else asked).")] = None,
              ) -> None:
    """Add a user (and give them a role in projects)."""
    from kifabrik import accounts

    ws = workspace()
    for p in project or []:
        accounts.get_project(ws, p)  # all checks before the first write
    if role not in accounts.ROLES:
        raise KifabrikError(f"role {role!r} is not one of {', '.join(accounts.ROLES)}", hint="--role engineer")
    user = accounts.create_user(ws, name, _password(password), display_name=display_name)
    for p in project or []:
        accounts.grant(ws, user.name, p, role)
    out.print(f"user {user.name} added" + (f" as {role} of {', '.join(project)}" if project else ""))


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List users and their roles."""
    from kifabrik import accounts

    users = accounts.list_users(workspace())
    if as_json:
        print_json([{"name": u.name, "display_name": u.display_name, "disabled": u.disabled, "roles": u.roles,
                     "created_at": u.created_at} for u in users])
        return
    table = Table("user", "name", "roles", "created", "state")
    for u in users:
        table.add_row(u.name, u.display_name or "-", ", ".join(f"{p}: {r}" for p, r in sorted(u.roles.items())) or "-",
                      when(u.created_at), "disabled" if u.disabled else "active")
    out.print(table)


@users_app.command("grant")
def users_grant(name: str, project: Annotated[str, typer.Option(help="The project.")], role: RoleOpt) -> None:
    """Give a user a role in a project (replaces their role there)."""
    from kifabrik import accounts

    accounts.grant(workspace(), name, project, role)
    out.print(f"{name} is {role} of {project}")


@users_app.command("revoke")
def users_revoke(name: str, project: Annotated[str, typer.Option(help="The project.")]) -> None:
    """Take a user out of a project."""
    from kifabrik import accounts

    accounts.revoke(workspace(), name, project)
    out.print(f"{name} is no longer a member of {project}")


@users_app.command("passwd")
def users_passwd(name: str, password: Annotated[str | None, typer.Option(help="The new password.")] = None) -> None:
    """Set a user's password (signs them out everywhere)."""
    from kifabrik import accounts

    accounts.set_password(workspace(), name, _password(password))
    out.print(f"password of {name} changed")


@users_app.command("disable")
def users_disable(name: str, enable: Annotated[bool, typer.Option("--enable", help="Enable again.")] = False) -> None:
    """Disable a user (signed out at once) or, with --enable, enable them again."""
    from kifabrik import accounts

    accounts.set_disabled(workspace(), name, not enable)
    out.print(f"user {name} {'enabled' if enable else 'disabled'}")


@projects_app.command("add")
def projects_add(name: str, title: Annotated[str | None, typer.Option(help="The title shown in the UI.")] = None) -> None:
    """Add a project (work in it with `kifabrik --project NAME ...`)."""
    from kifabrik import accounts

    p = accounts.create_project(workspace(), name, title=title)
    out.print(f"project {p.name} added; give users a role: `kifabrik users grant USER --project {p.name} --role engineer`")


@projects_app.command("list")
def projects_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List projects with their members."""
    from kifabrik import accounts

    ws = workspace()
    projects = accounts.list_projects(ws)
    users = accounts.list_users(ws)
    members = {p.name: {u.name: u.roles[p.name] for u in users if p.name in u.roles} for p in projects}
    if as_json:
        print_json([{"name": p.name, "title": p.title, "created_at": p.created_at, "members": members[p.name]}
                    for p in projects])
        return
    table = Table("project", "title", "members", "created")
    for p in projects:
        table.add_row(p.name, p.title or "-", ", ".join(f"{u} ({r})" for u, r in sorted(members[p.name].items())) or "-",
                      when(p.created_at))
    out.print(table)
