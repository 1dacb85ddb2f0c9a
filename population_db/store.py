"""The Store: open a population database by URL and write runs, programs, runtimes, results.

Example:
    >>> store = Store.open("sqlite:///results/sds.db")
    >>> run, created = store.get_or_create_run("demo", {"budget": 10})
    >>> p = store.add_program("scheduler", code, operator="seed")
    >>> rt = store.add_runtime(run.id, spec, parents=[(parent.id, "parent")])
    >>> store.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
    ...                      metrics={"tok_s": 812.0})

Queries live in queries.py, lineage in lineage.py, evaluation rows and the run lease in queue.py.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from population_db.engine import NotFound, StoreError, ensure_schema, make_engine, resolve_url
from population_db.lineage import LineageMixin
from population_db.models import (
    ROLES,
    RUN_STATUSES,
    STATUSES,
    Evaluation,
    Event,
    LLMCall,
    Program,
    Run,
    Runtime,
    RuntimeParent,
    RuntimeSlot,
    utcnow,
)
from population_db.queries import QueryMixin
from population_db.queue import QueueMixin
from population_db.records import (
    EvaluationRecord,
    EventRecord,
    LLMCallRow,
    ProgramRecord,
    RunRecord,
    RuntimeRecord,
)


def code_hash(code: str) -> str:
    """Hex sha256 of the UTF-8 text (the same identity runtime_modules.slots uses)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def spec_hash(spec: dict[str, Any]) -> str:
    """Hex sha256 of a spec's canonical JSON."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    """The unified diff turning `old` into `new`."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True), old_name, new_name))


class Store(QueryMixin, LineageMixin, QueueMixin):
    """The population database; thread-safe, one short session per operation."""

    @classmethod
    def open(cls, url: str | None = None, create: bool = True) -> Store:
        """Open `url` (None: $SDS_DB, else sqlite:///results/sds.db), creating the schema.

        With create=False a missing database is an error instead of being created.
        """
        url = resolve_url(url)
        engine = make_engine(url, create=create)
        try:
            ensure_schema(engine, url, create=create)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url)

    # ---------------------------------------------------------------------------- runs

    def get_or_create_run(self, name: str, config: dict[str, Any] | None = None, seed: int = 0,
                          environment: dict[str, Any] | None = None) -> tuple[RunRecord, bool]:
        """The run called `name` and False, or a new one and True (resume by name)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"run name must be a non-empty string, got {name!r}")

        def _go(s: Session) -> tuple[RunRecord, bool]:
            row = s.scalar(select(Run).where(Run.name == name))
            if row is not None:
                return RunRecord.from_row(row), False
            row = Run(name=name, config=config or {}, seed=seed, environment=environment)
            s.add(row)
            s.flush()
            return RunRecord.from_row(row), True

        try:
            return self._write(_go)
        except IntegrityError:  # another process created it between our read and insert
            return self.get_run(name), False

    def get_run(self, name_or_id: int | str) -> RunRecord:
        """A run by name or id; NotFound otherwise."""
        with self._read() as s:
            return RunRecord.from_row(self._run_row(s, name_or_id))

    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first."""
        with self._read() as s:
            return [RunRecord.from_row(r) for r in s.scalars(select(Run).order_by(Run.id))]

    def set_run_status(self, run_id: int | str, status: str) -> RunRecord:
        """Set a run's status (one of RUN_STATUSES)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")

        def _go(s: Session) -> RunRecord:
            row = self._run_row(s, run_id)
            row.status, row.updated_at = status, utcnow()
            return RunRecord.from_row(row)

        return self._write(_go)

    # ------------------------------------------------------------------------ programs

    def add_program(self, slot: str, code: str, parent_id: int | None = None,
                    operator: str = "seed", name: str | None = None,
                    llm_call_id: int | None = None, run_id: int | None = None) -> ProgramRecord:
        """Store one slot's code (diff against the parent computed here); dedupes by hash."""
        if not isinstance(code, str) or not code.strip():
            raise ValueError(f"add_program({slot!r}): code must be non-empty text")
        h = code_hash(code)

        def _go(s: Session) -> ProgramRecord:
            old = s.scalar(select(Program).where(Program.code_hash == h))
            if old is not None:
                return self._existing(old, slot)
            diff = None
            if parent_id is not None:
                parent = s.get(Program, parent_id)
                if parent is None:
                    raise NotFound(f"add_program: no parent program {parent_id!r}")
                diff = unified_diff(parent.code, code, f"p{parent.id}", "child")
            row = Program(slot=slot, code=code, code_hash=h, name=name, parent_id=parent_id,
                          operator=operator, diff=diff, llm_call_id=llm_call_id, run_id=run_id)
            s.add(row)
            s.flush()
            return self._program_record(row, is_new=True)

        try:
            return self._write(_go)
        except IntegrityError:  # same code inserted concurrently (PostgreSQL)
            with self._read() as s:
                old = s.scalar(select(Program).where(Program.code_hash == h))
                if old is None:
                    raise
                return self._existing(old, slot)

    def _existing(self, row: Program, slot: str) -> ProgramRecord:
        if row.slot != slot:
            raise StoreError(f"add_program: this code is already stored as program p{row.id} "
                             f"of slot {row.slot!r}, not {slot!r}")
        return self._program_record(row, is_new=False)

    def get_program(self, id_or_hash: int | str) -> ProgramRecord:
        """A program by id, `sha256:<hex>`, or unique hex prefix; NotFound otherwise."""
        with self._read() as s:
            return self._program_record(self._program_row(s, id_or_hash))

    def program_by_hash(self, hex_hash: str) -> ProgramRecord | None:
        """The program with exactly this code hash (with or without `sha256:`), or None."""
        h = hex_hash.removeprefix("sha256:").lower()
        with self._read() as s:
            row = s.scalar(select(Program).where(Program.code_hash == h))
            return None if row is None else self._program_record(row)

    # ------------------------------------------------------------------------ runtimes

    def add_runtime(self, run_id: int, spec: dict[str, Any], island: int = 0,
                    generation: int = 0, operator: str = "seed",
                    parents: list[tuple[int, str]] | tuple = ()) -> RuntimeRecord:
        """Store a runtime (a RuntimeSpec dict) with its parent edges."""
        spec = spec.to_dict() if hasattr(spec, "to_dict") else spec
        slots = spec.get("slots") if isinstance(spec, dict) else None
        if not isinstance(slots, dict):
            raise TypeError(f"add_runtime: spec must be a RuntimeSpec dict with a 'slots' "
                             f"mapping, got {str(spec)[:80]!r}")
        edges = []
        for p in parents:
            pid, role = p if isinstance(p, tuple | list) else (p, "parent")
            if role not in ROLES:
                raise ValueError(f"add_runtime: parent role must be one of {ROLES}, "
                                 f"got {role!r}")
            edges.append((int(pid), role))

        def _go(s: Session) -> RuntimeRecord:
            self._run_row(s, run_id)
            row = Runtime(run_id=run_id, spec=spec, spec_hash=spec_hash(spec), island=island,
                          generation=generation, operator=operator)
            s.add(row)
            s.flush()
            for pid, role in edges:
                self._runtime_row(s, pid)
                s.add(RuntimeParent(child_id=row.id, parent_id=pid, role=role))
            for slot, choice in slots.items():
                ref = choice.get("program", "") if isinstance(choice, dict) else str(choice)
                params = choice.get("params") or {} if isinstance(choice, dict) else {}
                prog_id = None
                if ref.startswith("sha256:"):
                    prog_id = s.scalar(select(Program.id)
                                       .where(Program.code_hash == ref[7:].lower()))
                s.add(RuntimeSlot(runtime_id=row.id, slot=slot, program_ref=ref,
                                  program_id=prog_id, params=params))
            return RuntimeRecord.from_row(row, tuple(edges))

        return self._write(_go)

    def get_runtime(self, runtime_id: int) -> RuntimeRecord:
        """A runtime by id, with its parent edges; NotFound otherwise."""
        with self._read() as s:
            return self._runtime_records(s, [self._runtime_row(s, int(runtime_id))])[0]

    def runtime_programs(self, runtime_id: int) -> dict[str, ProgramRecord | str]:
        """Slot -> the stored program it uses, or its reference when not stored (seeds)."""
        with self._read() as s:
            self._runtime_row(s, runtime_id)
            out: dict[str, ProgramRecord | str] = {}
            for rs in s.scalars(select(RuntimeSlot).where(RuntimeSlot.runtime_id == runtime_id)
                                .order_by(RuntimeSlot.slot)):
                prog = s.get(Program, rs.program_id) if rs.program_id else None
                out[rs.slot] = self._program_record(prog) if prog else rs.program_ref
            return out

    # --------------------------------------------------------------------- evaluations

    def add_evaluation(self, stage: str, status: str, runtime_id: int | None = None,
                       program_id: int | None = None, run_id: int | None = None,
                       metrics: dict[str, Any] | None = None, error: str | None = None,
                       artifacts: dict[str, Any] | None = None, workload: str | None = None,
                       workload_hash: str | None = None, device: str | None = None,
                       environment: dict[str, Any] | None = None,
                       duration_s: float | None = None, attempt: int = 1) -> EvaluationRecord:
        """Record one stage's result for a runtime or a program."""
        if status not in STATUSES:
            raise ValueError(f"evaluation status must be one of {STATUSES}, got {status!r}")
        if runtime_id is None and program_id is None:
            raise ValueError("add_evaluation needs runtime_id or program_id")

        def _go(s: Session) -> EvaluationRecord:
            rid = run_id
            if runtime_id is not None:
                rt = self._runtime_row(s, runtime_id)
                rid = rid if rid is not None else rt.run_id
            if program_id is not None and s.get(Program, program_id) is None:
                raise NotFound(f"add_evaluation: no program {program_id!r}")
            now = utcnow()
            row = Evaluation(run_id=rid, runtime_id=runtime_id, program_id=program_id,
                             stage=stage, status=status, metrics=metrics or {}, error=error,
                             artifacts=artifacts or {}, workload=workload,
                             workload_hash=workload_hash, device=device,
                             environment=environment, duration_s=duration_s, attempt=attempt,
                             created_at=now,
                             finished_at=None if status in ("pending", "running") else now)
            s.add(row)
            s.flush()
            return EvaluationRecord.from_row(row)

        return self._write(_go)

    # ------------------------------------------------------------------ llm calls, events

    def add_llm_call(self, run_id: int | None, model: str, prompt: str, response: str | None,
                     tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0,
                     latency_s: float = 0.0, error: str | None = None) -> LLMCallRow:
        """Record one LLM request with its tokens, cost and latency."""
        def _go(s: Session) -> LLMCallRow:
            row = LLMCall(run_id=run_id, model=model, prompt=prompt, response=response,
                          tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost_usd,
                          latency_s=latency_s, error=error)
            s.add(row)
            s.flush()
            return LLMCallRow.from_row(row)

        return self._write(_go)

    def get_llm_call(self, call_id: int) -> LLMCallRow:
        """An LLM call by id; NotFound otherwise."""
        with self._read() as s:
            row = s.get(LLMCall, call_id)
            if row is None:
                raise NotFound(f"no LLM call {call_id!r}")
            return LLMCallRow.from_row(row)

    def add_event(self, run_id: int | None, kind: str,
                  data: dict[str, Any] | None = None) -> EventRecord:
        """Record an event (migration, island reset, stagnation, budget stop, resume...)."""
        def _go(s: Session) -> EventRecord:
            row = Event(run_id=run_id, kind=kind, data=data)
            s.add(row)
            s.flush()
            return EventRecord.from_row(row)

        return self._write(_go)

    def events(self, run_id: int | None, kind: str | None = None) -> list[EventRecord]:
        """A run's events (optionally of one kind), oldest first."""
        with self._read() as s:
            q = select(Event).where(Event.run_id == run_id).order_by(Event.id)
            if kind is not None:
                q = q.where(Event.kind == kind)
            return [EventRecord.from_row(r) for r in s.scalars(q)]
