"""Alembic's environment: migrations run on the connection population_db hands over
(population_db/migrations/__init__.py); `alembic -c .../alembic.ini` uses sqlalchemy.url."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from population_db.migrations import VERSION_TABLE_NAME, is_sds_table
from population_db.models import Base

target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      version_table=VERSION_TABLE_NAME, include_name=is_sds_table,
                      render_as_batch=True)  # SQLite alters tables by copying them
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command line, for writing new revisions
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
