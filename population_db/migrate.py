"""Schema migrations: ordered Python steps, one per version, each in its own transaction.

The documented equivalent of Alembic for a one-package schema: `STEPS[v]` upgrades a
database from version v to v + 1 (DDL through `op.execute`/SQLAlchemy on the connection,
data fixes as SQL), and `migrate(url)` applies the missing steps in order, bumping
`schema_version` and recording a `migration` event after each. Run it as

    python -m population_db.migrate URL

A database newer than this code is refused: upgrade sds instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from population_db.engine import SchemaVersionError, StoreError, make_engine, resolve_url, run_write
from population_db.models import SCHEMA_VERSION, Event, SchemaVersion

log = logging.getLogger(__name__)

# version v -> the step that takes a database from v to v + 1 (none yet: v1 is the first)
STEPS: dict[int, Callable[[Connection], None]] = {}


def migrate(url: str | None = None, steps: dict[int, Callable[[Connection], None]] | None = None,
            target: int = SCHEMA_VERSION) -> int:
    """Upgrade the database at `url` to `target`; returns the number of steps applied."""
    steps = STEPS if steps is None else steps
    url = resolve_url(url)
    engine = make_engine(url, create=False)
    try:
        with Session(engine) as s:
            current = s.scalar(select(SchemaVersion.version))
        if current is None:
            raise StoreError(f"{url}: no schema_version row; not an sds database")
        if current > target:
            raise SchemaVersionError(f"{url} has schema version {current}, newer than this "
                                     f"sds ({target}): upgrade sds")
        missing = [v for v in range(current, target) if v not in steps]
        if missing:
            raise SchemaVersionError(f"no migration step from schema version {missing[0]} "
                                     f"to {missing[0] + 1}; start a fresh database")
        for v in range(current, target):
            def _step(s: Session, v: int = v) -> None:
                steps[v](s.connection())
                s.execute(update(SchemaVersion).values(version=v + 1))
                s.add(Event(run_id=None, kind="migration", data={"from": v, "to": v + 1}))
            run_write(engine, _step)
            log.info("migrated %s from schema v%d to v%d", url, v, v + 1)
        return target - current
    finally:
        engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        n = migrate(sys.argv[1] if len(sys.argv) > 1 else None)
    except StoreError as e:
        print(f"migrate: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"applied {n} migration step(s)", file=sys.stderr)
