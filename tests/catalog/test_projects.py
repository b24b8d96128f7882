"""Projects keep records apart in the catalog itself (`Catalog.scoped`) — SQLite and PostgreSQL — and
users, sessions and four-eyes release requests behave as the web UI needs them to."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import update

from kifabrik import accounts
from kifabrik.catalog import Catalog, EdgeRecord
from kifabrik.catalog import schema as t
from kifabrik.errors import KifabrikError, NotFoundError
from kifabrik.serve.keys import authenticate, create_key, list_keys
from kifabrik.workspace import Workspace


def _add(cat: Catalog, id: str, name: str = "m", kind: str = "dataset", parents=()):
    return cat.add_artifact(id=id, kind=kind, name=name, path=id, manifest={"id": id}, meta={},
                            parents=[EdgeRecord(p, id, "made_from") for p in parents])


def exercise_projects(cat: Catalog) -> None:
    a, b = cat.scoped("alpha"), cat.scoped("beta")
    x = _add(a, "1" * 64, "handbuch")
    y = _add(b, "2" * 64, "handbuch")
    assert (x.version, y.version, x.project, y.project) == (1, 1, "alpha", "beta")  # names are per project
    assert a.get_artifact("handbuch").id == x.id and b.get_artifact("handbuch").id == y.id
    for ref in (y.id, y.id[:8]):  # B's id or id prefix: not found in A
        with pytest.raises(NotFoundError):
            a.get_artifact(ref)
    assert a.get_artifact("handbuch@1").id == x.id  # a name means the project's own
    assert [r.id for r in a.list_artifacts()] == [x.id]
    with pytest.raises(NotFoundError):  # lineage never crosses projects
        _add(a, "3" * 64, "child", kind="adapter", parents=[y.id])
    with pytest.raises(NotFoundError):
        a.update_meta(y.id, {"x": 1})
    with pytest.raises(NotFoundError):
        a.remove_artifact(y.id)
    with pytest.raises(KifabrikError, match="another project"):  # one id is one project's
        _add(a, "2" * 64, "handbuch")
    child = _add(b, "4" * 64, "adapter", kind="adapter", parents=[y.id])
    assert a.edges(parent=y.id) == [] and [e.child_id for e in b.edges(parent=y.id)] == [child.id]

    run_a = a.start_run("train", {})
    run_b = b.start_run("train", {})
    assert (cat.get_run(run_a).project, cat.get_run(run_b).project) == ("alpha", "beta")
    with pytest.raises(NotFoundError):
        a.get_run(run_b)
    assert [r.id for r in a.list_runs()] == [run_a]

    a.audit("test.a", subject="s")
    b.audit("test.b", subject="s")
    assert [e.action for e in a.audit_entries()] == ["test.a"]
    assert {e.action for e in cat.audit_entries()} >= {"test.a", "test.b"}  # the command line sees all
    assert cat.verify_audit() == []  # one chain across projects; the project is part of each hash

    doc = {"@type": "Set", "uid": "p"}
    assert a.add_policy("p", doc) != b.add_policy("p", doc)  # one project's policy is never another's row

    request = b.request_release(y.id, name="r", version="1.0.0", audience="internal", user="erika")
    with pytest.raises(NotFoundError):
        a.get_release_request(request.id)
    with pytest.raises(KifabrikError, match="four eyes"):
        b.decide_release(request.id, user="erika", status="released")
    b.claim_release(request.id, user="paul")  # one approver runs the release; nobody else meanwhile
    with pytest.raises(KifabrikError, match="already approving .by paul"):
        b.claim_release(request.id, user="otto")
    b.unclaim_release(request.id, user="paul")  # the release did not come to an answer: open again
    assert b.get_release_request(request.id).status == "pending"
    done = b.decide_release(request.id, user="paul", status="rejected", reason="not yet")
    assert (done.status, done.decided_by, done.reason) == ("rejected", "paul", "not yet")
    with pytest.raises(KifabrikError, match="already rejected"):
        b.decide_release(request.id, user="paul", status="released")
    assert [e.action for e in b.audit_entries() if e.action.startswith("release.")] == ["release.request",
                                                                                       "release.reject"]


def test_projects_on_sqlite(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        exercise_projects(cat)
    finally:
        cat.close()


@pytest.mark.postgres
def test_projects_on_postgresql(postgres_url):
    cat = Catalog(postgres_url)
    try:
        with cat.engine.begin() as conn:  # the session's database is shared: start from empty tables
            for table in ("release_requests", "artifact_policies", "policy_usage", "lineage", "artifacts", "runs",
                          "policies"):
                conn.exec_driver_sql(f"DELETE FROM {table}")
        exercise_projects(cat)
    finally:
        cat.close()


def test_the_same_content_in_two_projects_gets_two_ids(ws: Workspace, tmp_path):
    ids = []
    for project in ("alpha", "beta", "default"):
        view = ws.scoped(project)
        with view.create("dataset", "same") as draft:
            draft.write_text("rows.jsonl", '{"text": "gleich"}\n')
        ids.append(draft.record.id)
        assert view.verify(draft.record.id).ok  # the project is part of the hashed content
    assert len(set(ids)) == 3
    manifest = json.loads((ws.store.root / ids[0] / "manifest.json").read_text())
    assert manifest["project"] == "alpha"
    assert "project" not in json.loads((ws.store.root / ids[2] / "manifest.json").read_text())  # as before projects


def test_api_keys_work_only_in_their_project(ws: Workspace, tiny_model) -> None:
    other = ws.scoped("beta")
    _, key = create_key(ws, ["*"])
    assert authenticate(ws, key) is not None
    assert authenticate(other, key) is None  # a server of project beta does not know default's key
    assert list_keys(other) == []


def test_users_sessions_and_roles(ws: Workspace) -> None:
    accounts.create_project(ws, "acme", title="ACME")
    with pytest.raises(KifabrikError, match="too short"):
        accounts.create_user(ws, "kurz", "abc")
    with pytest.raises(KifabrikError, match="not valid"):
        accounts.create_user(ws, "Erika Muster", "ein-langes-passwort")
    accounts.create_user(ws, "erika", "ein-langes-passwort", display_name="Erika Muster")
    with ws.catalog.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT password_hash FROM users").scalar()
    assert stored.startswith("$argon2id$") and "ein-langes-passwort" not in stored
    with pytest.raises(KifabrikError, match="exists"):
        accounts.create_user(ws, "erika", "ein-anderes-passwort")
    with pytest.raises(KifabrikError, match="role 'boss'"):
        accounts.grant(ws, "erika", "acme", "boss")
    accounts.grant(ws, "erika", "acme", "engineer")
    assert accounts.authenticate(ws, "erika", "falsch-falsch") is None
    assert accounts.authenticate(ws, "niemand", "ein-langes-passwort") is None
    user = accounts.authenticate(ws, "erika", "ein-langes-passwort")
    assert user is not None and user.roles == {"acme": "engineer"}
    assert accounts.can("engineer", "work") and not accounts.can("engineer", "approve")
    assert accounts.can("admin", "approve") and not accounts.can("viewer", "work") and not accounts.can(None, "read")

    token, session = accounts.open_session(ws, "erika")
    assert accounts.session_of(ws, token).user.name == "erika"
    with ws.catalog.engine.begin() as conn:  # an expired session no longer signs in
        conn.execute(update(t.UiSession).values(expires_at=session.expires_at - timedelta(days=1)))
    assert accounts.session_of(ws, token) is None
    token, _ = accounts.open_session(ws, "erika")
    accounts.set_disabled(ws, "erika", True)  # disabling signs out at once
    assert accounts.session_of(ws, token) is None
    assert accounts.authenticate(ws, "erika", "ein-langes-passwort") is None
    accounts.set_disabled(ws, "erika", False)
    token, _ = accounts.open_session(ws, "erika")
    accounts.set_password(ws, "erika", "ein-neues-passwort")  # a new password signs out everywhere
    assert accounts.session_of(ws, token) is None
    assert accounts.authenticate(ws, "erika", "ein-neues-passwort") is not None
    assert [e.action for e in ws.catalog.scoped("acme").audit_entries()] == ["project.create", "member.grant"]


def test_users_and_projects_commands(cli) -> None:
    assert cli("projects", "add", "acme", "--title", "ACME GmbH").code == 0
    r = cli("users", "add", "erika", "--project", "acme", "--role", "approver", "--password", "ein-langes-passwort")
    assert r.code == 0, r.err
    r = cli("users", "add", "paul", "--project", "nirgends", "--password", "ein-langes-passwort")
    assert r.code == 1 and "no project 'nirgends'" in r.err
    assert "paul" not in cli("users", "list").out  # nothing written before the error
    users = json.loads(cli("users", "list", "--json").out)
    assert users[0]["name"] == "erika" and users[0]["roles"] == {"acme": "approver"}
    projects = json.loads(cli("projects", "list", "--json").out)
    assert {p["name"]: p["members"] for p in projects} == {"acme": {"erika": "approver"}, "default": {}}
    assert cli("users", "revoke", "erika", "--project", "acme").code == 0
    assert json.loads(cli("users", "list", "--json").out)[0]["roles"] == {}


def test_the_project_flag_keeps_a_project_s_artifacts_apart(cli, tmp_path) -> None:
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Hallo?"}, {"role": "assistant", "content": "Hallo!"}]}\n'
                    * 3, encoding="utf-8")
    assert cli("--project", "acme", "data", "import", str(data), "--name", "chats", "--policy-preset",
               "internal-only").code == 0
    assert "chats" in cli("--project", "acme", "data", "list").out
    r = cli("data", "show", "chats")
    assert r.code == 1 and "no dataset 'chats'" in r.err  # the default project has none
