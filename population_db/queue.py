"""Evaluation rows through their life, and the run lease that says which controller owns them.

One controller drives a run; it may evaluate on many machines (Ray), but it alone writes the
run's records, so each evaluation is written once. The database enforces that:

- The run lease (`runs.lease_owner`, `runs.lease_expires_at`): `acquire_run_lease` takes it
  when it is free, expired, or held by an owner the caller proves dead; otherwise it raises
  `RunLeased` naming the holder. `renew_run_lease` extends it (and the `heartbeat_at` of the
  run's evaluations in flight) and says whether the caller still holds it.
- An evaluation goes pending (`enqueue_evaluation`) -> running (`start_evaluation`, `worker`
  = the lease owner) -> final (`complete_evaluation`, `worker` = the node that ran it). A
  final row is never written again, and a row held by another owner is refused (`LeaseLost`).
- After a crash, `requeue_in_flight` returns the run's running rows (in flight when the last
  controller died) to pending with attempt + 1, and marks `crashed` those in flight at
  `max_attempts` crashes: a candidate that takes its controller down is not retried forever.

Row locks: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite every write is an immediate
(single-writer) transaction, which serializes the same steps. Lease times are naive UTC from
the controllers' clocks: keep machines NTP-synced and leases much longer than any skew.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from population_db.base import StoreBase
from population_db.engine import LeaseLost, NotFound
from population_db.models import FINAL_STATUSES, Evaluation, Run, utcnow
from population_db.records import EvaluationRecord


class RunLeased(LeaseLost):
    """Another live controller holds the run's lease."""


class QueueMixin(StoreBase):
    """enqueue / start / complete / requeue_in_flight, and the run lease."""

    def enqueue_evaluation(self, run_id: int | None, runtime_id: int | None,
                           stage: str = "full", program_id: int | None = None,
                           workload: str | None = None) -> int:
        """Add a pending evaluation; returns its id."""
        if runtime_id is None and program_id is None:
            raise ValueError("enqueue_evaluation needs runtime_id or program_id")

        def _go(s: Session) -> int:
            row = Evaluation(run_id=run_id, runtime_id=runtime_id, program_id=program_id,
                             stage=stage, status="pending", workload=workload, attempt=1)
            s.add(row)
            s.flush()
            return row.id

        return self._write(_go)

    def start_evaluation(self, eval_id: int, worker: str) -> EvaluationRecord:
        """Mark a pending evaluation running, held by `worker`; LeaseLost if it is not pending."""
        def _go(s: Session) -> EvaluationRecord:
            row = s.get(Evaluation, eval_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no evaluation {eval_id!r}")
            if row.status != "pending":
                raise LeaseLost(f"evaluation {eval_id} is {row.status} (worker "
                                f"{row.worker!r}), not pending: it cannot be started again")
            now = utcnow()
            row.status, row.worker, row.started_at, row.heartbeat_at = "running", worker, now, now
            s.flush()
            return EvaluationRecord.from_row(row)

        return self._write(_go)

    def complete_evaluation(self, eval_id: int, status: str, worker: str | None = None,
                            metrics: dict[str, Any] | None = None, error: str | None = None,
                            artifacts: dict[str, Any] | None = None,
                            duration_s: float | None = None, device: str | None = None,
                            environment: dict[str, Any] | None = None,
                            workload_hash: str | None = None,
                            node: str | None = None) -> EvaluationRecord:
        """Write an evaluation's result, once: LeaseLost if it is final already, or if
        `worker` is given and does not hold it. `node` (where it ran) replaces `worker`."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"complete_evaluation: status must be one of {FINAL_STATUSES}, "
                             f"got {status!r}")

        def _go(s: Session) -> EvaluationRecord:
            row = s.get(Evaluation, eval_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no evaluation {eval_id!r}")
            if row.status in FINAL_STATUSES:
                raise LeaseLost(f"evaluation {eval_id} is already {row.status}: a result is "
                                "written once")
            if worker is not None and (row.worker != worker or row.status != "running"):
                raise LeaseLost(f"evaluation {eval_id} is {row.status} "
                                f"(worker {row.worker!r}), not held by {worker!r}: another "
                                "controller took the run over")
            row.status, row.error, row.finished_at = status, error, utcnow()
            row.metrics = metrics or {}
            row.artifacts = artifacts or {}
            for name, value in (("duration_s", duration_s), ("device", device),
                                ("environment", environment), ("workload_hash", workload_hash),
                                ("worker", node)):
                if value is not None:
                    setattr(row, name, value)
            s.flush()
            return EvaluationRecord.from_row(row)

        return self._write(_go)

    def requeue_in_flight(self, run_id: int, max_attempts: int = 3,
                          crash: bool = True) -> tuple[list[int], list[int]]:
        """The run's running evaluations back to pending (attempt + 1), or `crashed` when
        they were in flight at `max_attempts` crashes; returns (requeued ids, crashed ids).
        `crash=False`: a controller leaving on its own puts them back as they were.

        Call it only while holding the run's lease: then nothing else runs them.
        """
        if max_attempts < 1:
            raise ValueError(f"requeue_in_flight: max_attempts must be >= 1, got {max_attempts}")

        def _go(s: Session) -> tuple[list[int], list[int]]:
            rows = s.scalars(select(Evaluation).where(Evaluation.run_id == run_id,
                                                      Evaluation.status == "running")
                             .order_by(Evaluation.id).with_for_update()).all()
            back, dead, now = [], [], utcnow()
            for row in rows:
                if not crash or row.attempt < max_attempts:
                    row.status, row.attempt = "pending", row.attempt + int(crash)
                    row.worker = None
                    row.started_at = row.heartbeat_at = None
                    back.append(row.id)
                else:
                    row.status, row.finished_at = "crashed", now
                    row.error = (f"in flight when its controller died, {row.attempt} times "
                                 f"(max_attempts {max_attempts}); not retried again")
                    row.artifacts = {**(row.artifacts or {}), "failed_stage": "controller"}
                    dead.append(row.id)
            return back, dead

        return self._write(_go)

    # ------------------------------------------------------------------ the run lease

    def acquire_run_lease(self, run_id: int, owner: str, lease_s: float,
                          is_dead: Callable[[str], bool] = lambda _: False) -> str | None:
        """Take the run's lease for `owner`; returns the previous holder taken over from
        (dead or expired), or None. RunLeased if a live holder has it."""
        if lease_s <= 0:
            raise ValueError(f"acquire_run_lease: lease_s must be > 0 seconds, got {lease_s!r}")

        def _go(s: Session) -> str | None:
            run = s.get(Run, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            now, held = utcnow(), run.lease_owner
            if held and held != owner and run.lease_expires_at is not None \
                    and run.lease_expires_at > now and not is_dead(held):
                left = (run.lease_expires_at - now).total_seconds()
                raise RunLeased(f"run {run.name!r} is driven by another controller ({held}); "
                                f"stop it first, or wait for its lease to run out (within "
                                f"{left:.0f} s of its last heartbeat) if it died")
            run.lease_owner, run.lease_expires_at = owner, now + dt.timedelta(seconds=lease_s)
            return held if held and held != owner else None

        return self._write(_go)

    def renew_run_lease(self, run_id: int, owner: str, lease_s: float) -> bool:
        """Extend `owner`'s lease and its evaluations' heartbeats; False if it lost the lease."""
        def _go(s: Session) -> bool:
            now = utcnow()
            res = s.execute(update(Run).where(Run.id == run_id, Run.lease_owner == owner)
                            .values(lease_expires_at=now + dt.timedelta(seconds=lease_s)))
            if res.rowcount != 1:
                return False
            s.execute(update(Evaluation).where(Evaluation.run_id == run_id,
                                               Evaluation.status == "running",
                                               Evaluation.worker == owner)
                      .values(heartbeat_at=now))
            return True

        return self._write(_go)

    def release_run_lease(self, run_id: int, owner: str) -> bool:
        """Give the lease up (if `owner` holds it); True if it did."""
        def _go(s: Session) -> bool:
            res = s.execute(update(Run).where(Run.id == run_id, Run.lease_owner == owner)
                            .values(lease_owner=None, lease_expires_at=None))
            return res.rowcount == 1

        return self._write(_go)

    def run_lease(self, run_id: int) -> tuple[str | None, dt.datetime | None]:
        """(owner, expiry) of the run's lease; (None, None) when free."""
        with self._read() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            return run.lease_owner, run.lease_expires_at
