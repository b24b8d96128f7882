"""Opening the catalog database and keeping its schema current."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kifabrik.errors import KifabrikError

MIGRATIONS = Path(__file__).parent / "migrations"
#: Execution option that marks a connection as one that writes (see `writer_factory`).
WRITE = "kifabrik_write"


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise KifabrikError(
                "KIFABRIK_DATABASE_URL names PostgreSQL but the driver is not installed",
                hint="pip install 'kifabrik[postgres]'",
            ) from None
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _private(make_url(url).database)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cur.execute("PRAGMA foreign_keys=ON")  # SQLite leaves them off by default
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A writing transaction takes the write lock at BEGIN, so two writers queue (busy
            # timeout) instead of one failing on a stale snapshot; readers stay deferred (WAL).
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")

    return engine


def _private(database: str | None) -> None:
    """Create the SQLite file readable by its owner only (it holds API key hashes and the audit log).

    SQLite gives its -wal and -shm files the mode of the database file. A file that exists with
    wider permissions is narrowed when this user owns it.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        if not os.path.exists(database):
            os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        for path in (database, f"{database}-wal", f"{database}-shm"):
            if os.path.exists(path) and os.stat(path).st_uid == os.getuid() and os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
    except OSError:
        pass  # a missing directory or a read-only file: SQLite reports it when it opens the database


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (a no-op when already there)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if revision == "head" and current == head:
                return
        with engine.connect() as conn:
            sqlite = engine.dialect.name == "sqlite"
            raw = conn.connection.dbapi_connection
            if sqlite:
                # SQLite changes a constraint by copying the table (Alembic's batch mode); with foreign
                # keys on, dropping the old `artifacts` would cascade into lineage and policy links. The
                # pragma only works outside a transaction, so it is set before BEGIN and checked after.
                raw.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
            try:
                with conn.begin():
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, revision)
                    if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()):
                        raise KifabrikError(f"the catalog upgrade would break {len(broken)} references "
                                            f"(first: {tuple(broken[0])}); nothing was changed",
                                            hint="run `kifabrik doctor` and report this")
            finally:
                if sqlite:
                    raw.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
    except OperationalError as exc:
        raise KifabrikError(
            f"cannot open the catalog database {engine.url.render_as_string(hide_password=True)}: {exc.orig}",
            hint="check KIFABRIK_HOME / KIFABRIK_DATABASE_URL and that the database is reachable and writable",
        ) from None


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, future=True)


def writer_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for writing transactions: on SQLite they begin IMMEDIATE (one writer at a time)."""
    return sessionmaker(engine.execution_options(**{WRITE: True}), expire_on_commit=False, future=True)
