"""Catalog: schema by migration, records, versions, lineage, runs, audit chain — SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from kifabrik.catalog import Catalog, EdgeRecord
from kifabrik.catalog.db import table_names
from kifabrik.errors import KifabrikError, NotFoundError

TABLES = {"alembic_version", "artifacts", "artifact_policies", "audit_log", "lineage", "policies", "runs"}


def _add(cat: Catalog, id: str, name: str = "m", kind: str = "model", parents=()):
    return cat.add_artifact(id=id, kind=kind, name=name, path=id, manifest={"id": id}, meta={"n": 1},
                            parents=[EdgeRecord(p, id, "made_from") for p in parents])


def exercise_catalog(cat: Catalog) -> None:
    """The same checks for every database backend."""
    assert TABLES <= set(table_names(cat.engine))
    a = _add(cat, "a" * 64, "base")
    b = _add(cat, "b" * 64, "base")
    assert (a.version, b.version) == (1, 2)
    assert cat.get_artifact("base").id == b.id  # a bare name is the latest version
    assert cat.get_artifact("base@1").id == a.id
    assert cat.get_artifact("bbbbbb").id == b.id  # id prefix
    assert _add(cat, "a" * 64, "base").version == 1  # the same id is recorded once
    with pytest.raises(NotFoundError, match="no model 'nope'"):
        cat.get_artifact("nope", "model")

    c = _add(cat, "c" * 64, "child", kind="adapter", parents=[a.id])
    d = _add(cat, "d" * 64, "grandchild", kind="adapter", parents=[c.id, b.id])
    assert {e.parent_id for e in cat.edges(child=d.id)} == {c.id, b.id}
    with pytest.raises(KifabrikError, match="has descendants"):
        cat.remove_artifact(a.id)
    cat.remove_artifact(d.id)
    assert cat.edges(child=d.id) == []

    run = cat.start_run("generate", {"x": 1}, name="step", pipeline_id="p1", recipe="r")
    assert cat.get_run(run[:8]).status == "running"
    cat.finish_run(run, "failed", error="boom")
    rec = cat.get_run(run)
    assert (rec.status, rec.error, rec.config) == ("failed", "boom", {"x": 1})
    assert rec.ended_at is not None

    pid = cat.add_policy("internal-only", {"@type": "Set", "uid": "p"})
    assert cat.add_policy("again", {"@type": "Set", "uid": "p"}) == pid  # content-addressed
    cat.attach_policy(a.id, pid)
    assert [p[0] for p in cat.policies_of(a.id)] == [pid]

    for i in range(3):
        cat.audit("test.action", subject=f"s{i}", decision="permit", details={"i": i, "ä": "ü"})
    assert cat.verify_audit() == []


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from kifabrik.catalog.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_sqlite_catalog(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    exercise_catalog(cat)
    with cat.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
    cat.close()
    # Re-opening an up-to-date database migrates nothing and keeps the data.
    again = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    assert again.get_artifact("base@2").id == "b" * 64
    again.close()


def test_foreign_keys_are_enforced(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(NotFoundError, match="parent artifact"):
        _add(cat, "e" * 64, "orphan", parents=["f" * 64])
    assert cat.list_artifacts() == []  # the failed insert left nothing behind
    with pytest.raises(IntegrityError), cat.engine.begin() as conn:
        conn.execute(text("INSERT INTO lineage (parent_id, child_id, relation, attributes) VALUES ('x','y','r','{}')"))


def test_audit_tampering_is_detected(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    for i in range(4):
        cat.audit("serve.request", subject="m", decision="permit", details={"i": i})
    with cat.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET decision='deny' WHERE seq=2"))
    assert cat.verify_audit() == ["entry 2: content changed after it was written"]
    with cat.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET decision='permit' WHERE seq=2"))
        conn.execute(text("DELETE FROM audit_log WHERE seq=3"))
    assert cat.verify_audit() == ["entry 4: chain broken (an entry before it was removed or reordered)"]


def test_unreachable_database_is_one_clear_error(tmp_path):
    with pytest.raises(KifabrikError, match="cannot open the catalog database"):
        Catalog(f"sqlite:///{tmp_path / 'missing-dir' / 'c.db'}")


@pytest.mark.postgres
def test_postgresql_catalog(postgres_url):
    cat = Catalog(postgres_url)
    try:
        exercise_catalog(cat)
        assert cat.engine.dialect.name == "postgresql"
    finally:
        with cat.engine.begin() as conn:  # leave the shared server clean for a second run
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        cat.close()
