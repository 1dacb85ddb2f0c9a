"""Plain frozen records the store returns: never ORM objects bound to a session.

They cross threads and processes freely and compare by value. `from_row` builders take
either an ORM object or a SQL row with the same column names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def _get(row: Any, name: str, prefix: str = "") -> Any:
    """A column of an ORM object or a row mapping (optionally under a label prefix)."""
    if isinstance(row, dict) or hasattr(row, "keys"):
        return row[prefix + name]
    return getattr(row, name)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run: name, config, status, seed, environment fingerprint, times."""

    id: int
    name: str
    config: dict[str, Any]
    status: str
    seed: int
    environment: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @staticmethod
    def from_row(r: Any) -> RunRecord:
        return RunRecord(r.id, r.name, r.config or {}, r.status, r.seed, r.environment,
                         r.created_at, r.updated_at)


@dataclass(frozen=True, slots=True)
class ProgramRecord:
    """One slot's code; `is_new` is False when add_program found the same code hash stored."""

    id: int
    slot: str
    code: str
    code_hash: str
    name: str | None
    parent_id: int | None
    operator: str
    diff: str | None
    llm_call_id: int | None
    run_id: int | None
    created_at: dt.datetime
    is_new: bool = field(default=False, compare=False)  # how it was returned, not what it is

    @property
    def ref(self) -> str:
        """The program reference a RuntimeSpec uses for it: `sha256:<hex>`."""
        return f"sha256:{self.code_hash}"

    @staticmethod
    def from_row(r: Any, is_new: bool = False, prefix: str = "") -> ProgramRecord:
        cols = ("id", "slot", "code", "code_hash", "name", "parent_id", "operator", "diff",
                "llm_call_id", "run_id", "created_at")
        return ProgramRecord(*(_get(r, c, prefix) for c in cols), is_new=is_new)


@dataclass(frozen=True, slots=True)
class RuntimeRecord:
    """A runtime: its spec dict, run, island, generation, operator and parent edges."""

    id: int
    run_id: int
    spec: dict[str, Any]
    spec_hash: str
    island: int
    generation: int
    operator: str
    created_at: dt.datetime
    parents: tuple[tuple[int, str], ...] = ()  # (parent runtime id, role)

    @staticmethod
    def from_row(r: Any, parents: tuple[tuple[int, str], ...] = (),
                 prefix: str = "") -> RuntimeRecord:
        cols = ("id", "run_id", "spec", "spec_hash", "island", "generation", "operator",
                "created_at")
        return RuntimeRecord(*(_get(r, c, prefix) for c in cols), parents=parents)


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    """One stage's result (or a queued job): status, metrics, error, artifacts, claim fields."""

    id: int
    run_id: int | None
    runtime_id: int | None
    program_id: int | None
    stage: str
    status: str
    metrics: dict[str, Any]
    error: str | None
    artifacts: dict[str, Any]
    workload: str | None
    workload_hash: str | None
    device: str | None
    environment: dict[str, Any] | None
    duration_s: float | None
    attempt: int
    worker: str | None
    heartbeat_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @staticmethod
    def from_row(r: Any) -> EvaluationRecord:
        names = EvaluationRecord.__dataclass_fields__
        vals = {n: getattr(r, n) for n in names}
        vals["metrics"] = vals["metrics"] or {}
        vals["artifacts"] = vals["artifacts"] or {}
        return EvaluationRecord(**vals)


@dataclass(frozen=True, slots=True)
class LLMCallRow:
    """A stored LLM call (named apart from evolve.operators.base.LLMCallRecord, its input)."""

    id: int
    run_id: int | None
    model: str
    prompt: str
    response: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    error: str | None
    created_at: dt.datetime

    @staticmethod
    def from_row(r: Any) -> LLMCallRow:
        return LLMCallRow(**{n: getattr(r, n) for n in LLMCallRow.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened to a run."""

    id: int
    run_id: int | None
    kind: str
    data: dict[str, Any] | None
    created_at: dt.datetime

    @staticmethod
    def from_row(r: Any) -> EventRecord:
        return EventRecord(r.id, r.run_id, r.kind, r.data, r.created_at)


@dataclass(frozen=True, slots=True)
class LineageEntry:
    """A node reached by a lineage query.

    depth 0 is the node asked about (role "self", via_id None); for ancestors, depth d+1
    nodes are parents (in `role`) of the depth-d node `via_id`; for descendants, children.
    A node reachable along several paths appears once per (via, role, depth).
    """

    depth: int
    role: str
    via_id: int | None
    node: RuntimeRecord | ProgramRecord


@dataclass(frozen=True, slots=True)
class Ranked:
    """A leaderboard row: a runtime with its score and the evaluation the score came from."""

    rank: int
    runtime: RuntimeRecord
    score: float
    evaluation_id: int
    metrics: dict[str, Any] = field(default_factory=dict)


__all__ = [
    "EvaluationRecord",
    "EventRecord",
    "LLMCallRow",
    "LineageEntry",
    "ProgramRecord",
    "Ranked",
    "RunRecord",
    "RuntimeRecord",
]
