"""The SQL schema of the population database: SQLAlchemy 2.x typed ORM models.

Normalized per DESIGN.md: a run owns runtimes; a runtime names one program per slot
(`runtime_slots`) and its parents through an edge table with roles; evaluations hang off
a runtime or a program; LLM calls and events are their own tables. JSON columns hold the
free-form parts (config, spec, metrics, artifacts) and work on SQLite and PostgreSQL alike.
All times are naive UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 1  # bump with a step in population_db/migrate.py

ROLES = ("parent", "second_parent", "inspiration")
STATUSES = ("pending", "running", "passed", "failed", "timeout", "crashed", "rejected",
            "duplicate")
FINAL_STATUSES = tuple(s for s in STATUSES if s not in ("pending", "running"))
RUN_STATUSES = ("created", "running", "paused", "finished", "failed", "stopped")
ROLE_LEN = 16  # also the cast width of the lineage query's literal roles


def utcnow() -> dt.datetime:
    """Naive UTC now: the only clock the store writes."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of every sds table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, dt.datetime: DateTime()}


class SchemaVersion(Base):
    """One row: the schema version this database was created or migrated to."""

    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int]
    applied_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Run(Base):
    """An evolution run, resumable by its unique name."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="created")
    seed: Mapped[int] = mapped_column(default=0)
    environment: Mapped[dict[str, Any] | None]
    # the run lease: the controller driving the run (evolve/runlease.py), until when unless renewed
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LLMCall(Base):
    """One request to an LLM endpoint, with its tokens, cost and outcome."""

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Program(Base):
    """One slot's code, identified by its sha256; parent and diff record how it was made."""

    __tablename__ = "programs"
    id: Mapped[int] = mapped_column(primary_key=True)
    slot: Mapped[str] = mapped_column(String(64), index=True)
    code: Mapped[str] = mapped_column(Text)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"), index=True)
    operator: Mapped[str] = mapped_column(String(64), default="seed")
    diff: Mapped[str | None] = mapped_column(Text)
    llm_call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Runtime(Base):
    """A RuntimeSpec (one program per slot + engine params): the individual evolution breeds."""

    __tablename__ = "runtimes"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    spec: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    island: Mapped[int] = mapped_column(default=0)
    generation: Mapped[int] = mapped_column(default=0)
    operator: Mapped[str] = mapped_column(String(64), default="seed")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_runtimes_run_island_gen", "run_id", "island", "generation"),)


class RuntimeSlot(Base):
    """Which program a runtime uses for one slot (program_id set when it is a stored one)."""

    __tablename__ = "runtime_slots"
    runtime_id: Mapped[int] = mapped_column(ForeignKey("runtimes.id"), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64), primary_key=True)
    program_ref: Mapped[str] = mapped_column(String(300))
    program_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)


class RuntimeParent(Base):
    """A lineage edge: `child_id` was made from `parent_id` in the given role."""

    __tablename__ = "runtime_parents"
    child_id: Mapped[int] = mapped_column(ForeignKey("runtimes.id"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("runtimes.id"), primary_key=True,
                                           index=True)
    role: Mapped[str] = mapped_column(String(ROLE_LEN), primary_key=True)


class Evaluation(Base):
    """One stage's result for a runtime (or a program, for slot-level stages), or a queued job."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    runtime_id: Mapped[int | None] = mapped_column(ForeignKey("runtimes.id"))
    program_id: Mapped[int | None] = mapped_column(ForeignKey("programs.id"))
    stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    workload: Mapped[str | None] = mapped_column(String(200))
    workload_hash: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(200))
    environment: Mapped[dict[str, Any] | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    attempt: Mapped[int] = mapped_column(default=1)  # 1 + sessions it was in flight at a crash
    # in flight: the controller holding the run lease; final: the node that evaluated it
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[dt.datetime | None]  # renewed with the run lease while in flight
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    __table_args__ = (
        Index("ix_evaluations_runtime", "runtime_id", "stage", "status"),
        Index("ix_evaluations_program", "program_id", "stage", "status"),
        Index("ix_evaluations_run", "run_id", "stage", "status"),
    )


class Event(Base):
    """Something that happened to a run: migration, island reset, stagnation, budget stop."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_events_run_kind", "run_id", "kind"),)


__all__ = [
    "FINAL_STATUSES",
    "ROLES",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Base",
    "Evaluation",
    "Event",
    "LLMCall",
    "Program",
    "Run",
    "Runtime",
    "RuntimeParent",
    "RuntimeSlot",
    "SchemaVersion",
    "utcnow",
]
