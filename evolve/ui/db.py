"""Opening the population database read-only for the web UI.

The UI never writes. On SQLite every connection sets `PRAGMA query_only`, under which
SQLite refuses any statement that would change the database, so even a bug could not write;
WAL lets it read while a run writes. On PostgreSQL every
session is `READ ONLY` (`default_transaction_read_only`). Each request reads in one
transaction, so a page shows one consistent snapshot. The schema's revision is checked
without writing; nothing is ever created or upgraded.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from population_db import SCHEMA_VERSION, SchemaVersionError, Store, StoreError, resolve_url
from population_db.engine import BUSY_TIMEOUT_MS
from population_db.models import SchemaVersion


def _sqlite_engine(path: str) -> Engine:
    # `mode=ro` cannot open a WAL database whose -shm file is gone (no run holds it open):
    # SQLite must create that file. So: `mode=rw` (never creates the database) and
    # `query_only`, under which SQLite refuses every statement that would change it.
    uri = f"file:{path}?mode=rw"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves: one snapshot per read
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _pg_engine(url: str) -> Engine:
    try:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except (ImportError, ArgumentError) as e:
        raise StoreError(f"cannot use database URL {url!r}: {e}") from None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cur.close()
        dbapi_conn.commit()

    return engine


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _check_schema(engine: Engine, url: str) -> None:
    """An sds database at this sds's schema, checked without writing (opening it with a
    writing verb would upgrade an older one; the UI only says so)."""
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    if "runs" not in tables:
        raise StoreError(f"no sds database at {_safe(url)} (no runs table); check the URL")
    try:
        from population_db.migrations import needs_upgrade
    except ImportError:  # a schema without Alembic revisions: its version row says
        with engine.connect() as conn:
            found = conn.scalar(select(SchemaVersion.version))
        if found != SCHEMA_VERSION:
            raise SchemaVersionError(f"{_safe(url)} has schema version {found}, this sds "
                                     f"reads {SCHEMA_VERSION}") from None
        return
    behind = needs_upgrade(engine)
    if behind is not None:
        raise SchemaVersionError(
            f"{_safe(url)} is at an older schema revision ({behind or 'version 1'}) and "
            f"sds ui never writes: upgrade it with `python -m population_db.migrate URL`")


def open_readonly(url: str | None = None) -> Store:
    """A Store on `url` (None: $SDS_DB, else the default file) that cannot write.

    Raises StoreError (one line) when the URL is malformed, the database is missing, or it
    is not an sds database of this schema version.
    """
    url = resolve_url(url)
    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreError(f"bad database URL {url!r}: expected sqlite:///PATH or "
                         "postgresql+psycopg://user:pass@host:port/db") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            raise StoreError(f"{url}: an in-memory database has nothing to show; give a file")
        path = u.database
        if not Path(path).is_file():
            raise StoreError(f"no database at {url} (file {path} does not exist)")
        engine = _sqlite_engine(str(Path(path).resolve()))
    elif backend == "postgresql":
        engine = _pg_engine(url)
    else:
        raise StoreError(f"unsupported database URL {url!r}: expected sqlite:///PATH or "
                         "postgresql+psycopg://user:pass@host:port/db")
    try:
        _check_schema(engine, url)
    except StoreError:
        engine.dispose()
        raise
    except (SQLAlchemyError, sqlite3.Error) as e:  # not an SQLite file, a driver error
        engine.dispose()
        reason = " ".join(str(getattr(e, "orig", e)).split())
        raise StoreError(f"cannot read {_safe(url)}: {reason}") from None
    return Store(engine, url)
