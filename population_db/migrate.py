"""Upgrade a database to this sds's schema by hand: `python -m population_db.migrate URL`.

Opening a database (`Store.open`) already applies any missing Alembic revision
(population_db/migrations/); this command does only that, for operators who want the
upgrade as a separate step (before starting many workers on a shared PostgreSQL, say).
"""

from __future__ import annotations

import logging
import sys

from population_db.engine import StoreError, ensure_schema, make_engine, resolve_url
from population_db.migrations import HEAD, needs_upgrade


def migrate(url: str | None = None) -> str | None:
    """Bring the database at `url` to the newest revision; returns the revision it was at
    (None when it was already current)."""
    url = resolve_url(url)
    engine = make_engine(url, create=False)
    try:
        before = needs_upgrade(engine)
        ensure_schema(engine, url, create=False)
        return before
    finally:
        engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        was = migrate(sys.argv[1] if len(sys.argv) > 1 else None)
    except StoreError as e:
        print(f"migrate: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"at revision {HEAD}" + (f" (was {was or 'pre-Alembic version 1'})"
                                   if was is not None else " already"), file=sys.stderr)
