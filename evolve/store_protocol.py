"""What the evolution loop needs from a store and from a harness, as Protocols.

`population_db.Store` satisfies `RunStore` (tests wrap it to kill a run mid-write);
`fitness.harness.Harness` satisfies `Harness` (tests use fakes that score from the spec).
The controller, its children and island books, the run lease and the state loader are
typed against these, so a reader sees which calls they make without reading the store.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from population_db.records import (
    EvaluationRecord,
    EventRecord,
    ProgramRecord,
    RunRecord,
    RuntimeRecord,
)


class RunStore(Protocol):
    """The population database calls a controller session makes (see population_db.Store)."""

    engine: Any  # the SQLAlchemy engine (read-only queries in evolve/population.py)

    def get_or_create_run(self, name: str, config: dict[str, Any] | None = None,
                          seed: int = 0, environment: dict[str, Any] | None = None
                          ) -> tuple[RunRecord, bool]: ...

    def get_run(self, name_or_id: int | str) -> RunRecord: ...

    def set_run_status(self, run_id: int | str, status: str) -> RunRecord: ...

    def add_program(self, slot: str, code: str, parent_id: int | None = None,
                    operator: str = "seed", name: str | None = None,
                    llm_call_id: int | None = None, run_id: int | None = None
                    ) -> ProgramRecord: ...

    def get_program(self, id_or_hash: int | str) -> ProgramRecord: ...

    def program_by_hash(self, hex_hash: str) -> ProgramRecord | None: ...

    def add_runtime(self, run_id: int, spec: dict[str, Any], island: int = 0,
                    generation: int = 0, operator: str = "seed",
                    parents: list[tuple[int, str]] | tuple = ()) -> RuntimeRecord: ...

    def add_evaluation(self, stage: str, status: str, runtime_id: int | None = None,
                       program_id: int | None = None, run_id: int | None = None,
                       **fields: Any) -> EvaluationRecord: ...

    def evaluations(self, runtime_id: int | None = None, program_id: int | None = None,
                    stage: str | None = None, run: int | str | None = None,
                    status: str | None = None) -> list[EvaluationRecord]: ...

    def cached_program_evaluation(self, code_hash: str, stage: str
                                  ) -> EvaluationRecord | None: ...

    def enqueue_evaluation(self, run_id: int | None, runtime_id: int | None,
                           stage: str = "full", program_id: int | None = None,
                           workload: str | None = None) -> int: ...

    def start_evaluation(self, eval_id: int, worker: str) -> EvaluationRecord: ...

    def complete_evaluation(self, eval_id: int, status: str, worker: str | None = None,
                            **fields: Any) -> EvaluationRecord: ...

    def requeue_in_flight(self, run_id: int, max_attempts: int = 3,
                          crash: bool = True) -> tuple[list[int], list[int]]: ...

    def add_llm_call(self, run_id: int | None, model: str, prompt: str,
                     response: str | None, tokens_in: int = 0, tokens_out: int = 0,
                     cost_usd: float = 0.0, latency_s: float = 0.0,
                     error: str | None = None) -> Any: ...

    def add_event(self, run_id: int | None, kind: str,
                  data: dict[str, Any] | None = None) -> EventRecord: ...

    def events(self, run_id: int | None, kind: str | None = None) -> list[EventRecord]: ...

    def last_activity(self, run: int | str, after: dt.datetime,
                      before: dt.datetime | None = None) -> dt.datetime | None: ...

    def acquire_run_lease(self, run_id: int, owner: str, lease_s: float,
                          is_dead: Any = ...) -> str | None: ...

    def renew_run_lease(self, run_id: int, owner: str, lease_s: float) -> bool: ...

    def release_run_lease(self, run_id: int, owner: str) -> bool: ...


class Harness(Protocol):
    """Scores a runtime spec in stages (see fitness.harness.Harness.evaluate); a harness may
    also offer `evaluate_workloads` (several workloads in one worker), which
    evolve/scoring.py uses when present."""

    def evaluate(self, spec: Any, stages: tuple[str, ...] | list[str] = ...,
                 workload: str = ..., baseline: Any = None,
                 runtime_id: int | None = None, run_id: int | None = None,
                 model: str = "tiny", **kw: Any) -> Any: ...
