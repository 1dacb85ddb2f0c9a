"""The part of the Store every mixin relies on: sessions, and id/name resolution.

One short session per operation, so one Store is safe to share between the threads of a
process (the controller evaluates in threads); records returned are plain frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from population_db.engine import NotFound, run_write
from population_db.models import Program, Run, Runtime, RuntimeParent
from population_db.records import ProgramRecord, RuntimeRecord

T = TypeVar("T")
IN_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


class StoreBase:
    """Sessions and lookups shared by the Store's parts."""

    def __init__(self, engine: Engine, url: str):
        self.engine = engine
        self.url = url

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A read-only session (deferred transaction, rolled back at the end)."""
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def _write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in one write transaction with retry on transient locks."""
        return run_write(self.engine, fn)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    # ------------------------------------------------------------------ resolution helpers

    @staticmethod
    def _run_row(s: Session, run: int | str | Any) -> Run:
        """The Run row for an id, a name, or a RunRecord; NotFound otherwise."""
        run_id = getattr(run, "id", None)
        if run_id is not None:
            row = s.get(Run, run_id)
        elif isinstance(run, int):
            row = s.get(Run, run)
        else:
            row = s.scalar(select(Run).where(Run.name == str(run)))
            if row is None and str(run).isdigit():
                row = s.get(Run, int(run))
        if row is None:
            raise NotFound(f"no run {run!r} (expected a run name or id; `sds runs` lists them)")
        return row

    @staticmethod
    def _program_row(s: Session, key: int | str) -> Program:
        """The Program for an id, `sha256:<hex>`, or a unique hex prefix (>= 6 digits)."""
        if isinstance(key, int):
            row = s.get(Program, key)
        else:
            h = key.removeprefix("sha256:").lower()
            if len(h) < 6 or any(c not in "0123456789abcdef" for c in h):
                raise NotFound(f"bad program key {key!r}: expected an id, sha256:<hex> or a "
                               "hex prefix of at least 6 digits")
            if len(h) == 64:
                row = s.scalar(select(Program).where(Program.code_hash == h))
            else:
                rows = s.scalars(select(Program).where(Program.code_hash.like(h + "%"))
                                 .limit(2)).all()
                if len(rows) > 1:
                    raise NotFound(f"program hash prefix {key!r} is ambiguous; give more digits")
                row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no program {key!r}")
        return row

    @staticmethod
    def _runtime_row(s: Session, runtime_id: int) -> Runtime:
        row = s.get(Runtime, runtime_id)
        if row is None:
            raise NotFound(f"no runtime {runtime_id!r}")
        return row

    @staticmethod
    def _parents_of(s: Session, ids: Sequence[int]) -> dict[int, tuple[tuple[int, str], ...]]:
        """Parent edges of each runtime in `ids`."""
        out: dict[int, list[tuple[int, str]]] = {i: [] for i in ids}
        for i in range(0, len(ids), IN_CHUNK):
            chunk = list(ids[i:i + IN_CHUNK])
            q = (select(RuntimeParent.child_id, RuntimeParent.parent_id, RuntimeParent.role)
                 .where(RuntimeParent.child_id.in_(chunk))
                 .order_by(RuntimeParent.child_id, RuntimeParent.role, RuntimeParent.parent_id))
            for c, p, r in s.execute(q):
                out[c].append((p, r))
        return {k: tuple(v) for k, v in out.items()}

    def _runtime_records(self, s: Session, rows: Sequence[Runtime]) -> list[RuntimeRecord]:
        parents = self._parents_of(s, [r.id for r in rows])
        return [RuntimeRecord.from_row(r, parents[r.id]) for r in rows]

    @staticmethod
    def _program_record(row: Program, is_new: bool = False) -> ProgramRecord:
        return ProgramRecord.from_row(row, is_new=is_new)
