"""Opening a database by URL: SQLite set up right, PostgreSQL as is, schema version checked.

SQLite gets WAL (readers never block the writer), a busy timeout, foreign keys, and
`BEGIN IMMEDIATE` for write transactions: a deferred transaction that reads first and then
writes cannot wait for the lock (SQLite returns SQLITE_BUSY at once to avoid deadlock), so
writers take the lock up front and the busy timeout does the waiting. `run_write` adds a
retry with backoff on top for the rare "database is locked" that still escapes.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from population_db.models import SCHEMA_VERSION, Base, Event, SchemaVersion

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_URL = "sqlite:///results/sds.db"
BUSY_TIMEOUT_MS = 30_000
WRITE_RETRIES = 8


class StoreError(Exception):
    """The database could not be opened or used as asked."""


class NotFound(StoreError, LookupError):
    """No run, program, runtime or evaluation matches the given id, name or hash."""


class SchemaVersionError(StoreError):
    """The database was made by another version of sds's schema."""


class LeaseLost(StoreError):
    """A controller tried to start or finish an evaluation it does not (or no longer) hold."""


def resolve_url(url: str | None) -> str:
    """`url`, else $SDS_DB, else the default SQLite file under results/."""
    return url or os.environ.get("SDS_DB") or DEFAULT_URL


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL, None for in-memory or other backends."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def make_engine(url: str, create: bool = True) -> Engine:
    """A SQLAlchemy engine for `url`; raises StoreError on a malformed or missing database."""
    try:
        u = make_url(url)
    except ArgumentError as e:
        raise StoreError(f"bad database URL {url!r}: expected e.g. {DEFAULT_URL} or "
                         f"postgresql+psycopg://user:pass@host:5432/db ({e})") from None
    backend = u.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_file(url)
        if path is not None:
            if not create and not path.exists():
                raise StoreError(f"no database at {url} (file {path} does not exist)")
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000,
                                                   "check_same_thread": False}}
        if path is None:  # in-memory: one shared connection, or each thread sees its own db
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)
        _setup_sqlite(engine, wal=path is not None)
        return engine
    if backend == "postgresql":
        try:
            return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        except (ImportError, ArgumentError) as e:  # missing driver and the like
            raise StoreError(f"cannot use database URL {url!r}: {e}") from None
    raise StoreError(f"unsupported database URL {url!r}: expected sqlite:///PATH or "
                     "postgresql+psycopg://user:pass@host:port/db")


def _setup_sqlite(engine: Engine, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        if wal:
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL survives any process crash; only power loss may drop the last commits
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def is_transient(e: BaseException) -> bool:
    """A lock, deadlock or serialization failure that a retry of the transaction may cure."""
    if not isinstance(e, (OperationalError, DBAPIError)):
        return False
    msg = str(getattr(e, "orig", e)).lower()
    return any(s in msg for s in ("database is locked", "database is busy", "deadlock detected",
                                  "could not serialize access"))


def run_write(engine: Engine, fn: Callable[[Session], T], retries: int = WRITE_RETRIES) -> T:
    """Run `fn(session)` in one write transaction, retrying with backoff on transient locks."""
    bind = engine
    if engine.dialect.name == "sqlite":
        bind = engine.execution_options(sqlite_begin="IMMEDIATE")
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            with Session(bind, expire_on_commit=False) as s, s.begin():
                return fn(s)
        except (OperationalError, DBAPIError) as e:
            if attempt == retries or not is_transient(e):
                raise
            log.warning("database busy (%s); retry %d/%d in %.2fs", e.orig, attempt + 1,
                        retries, delay)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def ensure_schema(engine: Engine, url: str, create: bool = True) -> None:
    """Create the schema in an empty database, or bring an existing one to the newest
    revision (population_db/migrations); a database from a newer sds is refused."""
    from population_db import migrations

    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = migrations.current_revision(conn)
    except OperationalError as e:
        reason = " ".join(str(e.orig).split())  # libpq's messages span lines
        raise StoreError(f"cannot connect to {_safe(url)}: {reason}") from None
    if revision == migrations.HEAD:
        return  # the common case, without importing Alembic
    if revision is not None or "schema_version" in tables:
        _upgrade(engine, url, revision)
        return
    if "runs" in tables:
        raise SchemaVersionError(
            f"{_safe(url)} holds sds tables but no schema_version table: it predates "
            "versioned schemas; export what you need and start a fresh database")
    if not create:
        raise StoreError(f"no sds database at {_safe(url)} (no tables); run something first "
                         "or check the URL")

    def _create(s: Session) -> None:
        conn = s.connection()
        _lock(conn)
        if migrations.current_revision(conn) is not None:
            return  # another process created it while we waited for the lock
        Base.metadata.create_all(conn)
        s.add(SchemaVersion(id=1, version=SCHEMA_VERSION))
        s.flush()
        migrations.stamp(conn)

    run_write(engine, _create)
    log.info("created sds schema (revision %s) at %s", migrations.HEAD, _safe(url))


def _lock(conn: Any) -> None:
    """On PostgreSQL, one opener at a time creates or upgrades the schema (others wait)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(731001)")


def _upgrade(engine: Engine, url: str, revision: str | None) -> None:
    """Apply the missing revisions (stamping a pre-Alembic version-1 database as 0001)."""
    from population_db import migrations

    known = migrations.known_revisions()
    if revision is not None and revision not in known:
        raise SchemaVersionError(
            f"{_safe(url)} is at schema revision {revision}, which this sds does not know "
            f"(newest here: {migrations.HEAD}): it was made by a newer sds; upgrade sds")

    def _go(s: Session) -> None:
        conn = s.connection()
        _lock(conn)
        rev = migrations.current_revision(conn)
        if rev is None:  # made before Alembic: schema_version 1 is revision 0001
            found = s.scalar(select(SchemaVersion.version))
            if found != 1:
                raise SchemaVersionError(f"{_safe(url)} has schema version {found}, which no "
                                         "migration starts from; use a fresh database")
            migrations.stamp(conn, "0001")
            rev = "0001"
        if rev != migrations.HEAD:
            migrations.upgrade_connection(conn)
            s.add(Event(run_id=None, kind="migration", data={"from": rev,
                                                              "to": migrations.HEAD}))

    run_write(engine, _go)
    log.info("upgraded %s from revision %s to %s", _safe(url), revision or "0001 (stamped)",
             migrations.HEAD)


def _safe(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def scratch_schema(url: str, prefix: str = "scratch") -> tuple[str, Callable[[], None]]:
    """A URL whose connections live in a new empty PostgreSQL schema (named `prefix` plus a
    random suffix), and a function that drops the schema: for tests and benchmarks that
    share one server."""
    import uuid

    from sqlalchemy import text

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), drop
