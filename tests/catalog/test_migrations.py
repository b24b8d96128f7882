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
