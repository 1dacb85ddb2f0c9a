"""Schema migrations with Alembic: revisions in versions/, applied when a database is opened.

`upgrade(engine)` brings a database to `HEAD`: a database made by sds before Alembic (a
`schema_version` row of 1 and no `sds_alembic_version` table) is first stamped as revision
0001, which is exactly that schema. A database at a revision this code does not know was
made by a newer sds and is refused. To change the schema: edit models.py, then
`alembic -c population_db/migrations/alembic.ini revision -m "what" --autogenerate` against a
database at head (or write the revision by hand), review it, set `HEAD`, and extend
tests/test_migrations.py. See docs/DATABASE.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, inspect, select

log = logging.getLogger(__name__)

HEAD = "0002"  # the newest revision in versions/ (a test checks it against Alembic's head)
ROOT = Path(__file__).resolve().parent
# Alembic's bookkeeping table, declared here so reading it needs no Alembic import. Not
# Alembic's default name: Optuna keeps its own `alembic_version` in the same database
# (`sds tune` stores studies beside the population).
VERSION_TABLE_NAME = "sds_alembic_version"
VERSION_TABLE = Table(VERSION_TABLE_NAME, MetaData(),
                      Column("version_num", String(32), primary_key=True))


def is_sds_table(name: str | None, type_: str, _parent: object = None) -> bool:
    """Alembic's `include_name` filter: only sds's own tables (Optuna's share the database)."""
    from population_db.models import Base

    return type_ != "table" or name in Base.metadata.tables


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the database, None when it has no version table."""
    if VERSION_TABLE_NAME not in set(inspect(conn).get_table_names()):
        return None
    return conn.execute(select(VERSION_TABLE.c.version_num)).scalar()


def stamp(conn: Connection, revision: str = HEAD) -> None:
    """Record `revision` as applied (for a schema made by create_all at that revision)."""
    VERSION_TABLE.create(conn, checkfirst=True)
    conn.execute(VERSION_TABLE.delete())
    conn.execute(VERSION_TABLE.insert().values(version_num=revision))


def alembic_config(connection: Connection | None = None) -> Any:
    """Alembic's Config for these migrations, bound to `connection` when given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def known_revisions() -> set[str]:
    """Every revision id in versions/."""
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def upgrade_connection(conn: Connection, target: str = HEAD) -> None:
    """Apply the missing revisions up to `target` on `conn` (in the caller's transaction)."""
    from alembic import command

    command.upgrade(alembic_config(conn), target)


def needs_upgrade(engine: Engine) -> str | None:
    """The database's revision when it is behind HEAD; None when it is at HEAD."""
    with engine.connect() as conn:
        rev = current_revision(conn)
    return None if rev == HEAD else (rev or "")
