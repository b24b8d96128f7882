"""The migrations build exactly the tables the ORM declares (every table lives in catalog/schema.py)."""

from __future__ import annotations

from pathlib import Path


def test_migrations_equal_orm_metadata(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from kifabrik.catalog.db import make_engine, migrate
    from kifabrik.catalog.schema import Base

    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    # alembic's own version table is not part of the ORM
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert diff == []
    assert {"api_keys", "policy_usage", "artifacts", "audit_log"} <= set(Base.metadata.tables)


def test_upgrading_a_filled_catalog_keeps_every_row_and_reference(tmp_path: Path) -> None:
    """0008 copies `artifacts` on SQLite (a new unique constraint): lineage and policy links survive it."""
    from sqlalchemy import text

    from kifabrik.catalog.db import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine, "0007")
    with engine.begin() as conn:
        for i, kind in enumerate(("model", "dataset", "adapter")):
            conn.execute(text("INSERT INTO artifacts (id, kind, name, version, status, created_at, path, manifest, "
                              "metadata) VALUES (:id, :kind, :kind, 1, 'ok', '2026-01-01', :id, '{}', '{}')"),
                         {"id": str(i) * 64, "kind": kind})
        conn.execute(text("INSERT INTO lineage (parent_id, child_id, relation, attributes) VALUES "
                          "(:m, :a, 'base_model', '{}'), (:d, :a, 'trained_on', '{}')"),
                     {"m": "0" * 64, "d": "1" * 64, "a": "2" * 64})
        conn.execute(text("INSERT INTO policies (id, name, document, created_at) VALUES ('p', 'p', '{}', '2026-01-01')"))
        conn.execute(text("INSERT INTO artifact_policies (artifact_id, policy_id) VALUES (:d, 'p')"), {"d": "1" * 64})
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM lineage")).scalar() == 2
        assert conn.execute(text("SELECT COUNT(*) FROM artifact_policies")).scalar() == 1
        assert {r[0] for r in conn.execute(text("SELECT project FROM artifacts"))} == {"default"}
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1  # back on for the catalog's own use
    engine.dispose()
