"""A work queue of evaluations in the database, for workers on one or many machines.

Pending evaluations are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so
concurrent workers never wait on or double-claim a row; on SQLite the same code runs inside
an immediate (single-writer) transaction, which serializes claims. A claim is a lease:
`worker` and `lease_expires_at`, extended by `heartbeat`. `requeue_expired` returns claims
whose lease ran out (a dead worker) to pending with attempt + 1, up to `max_attempts`,
after which they are marked failed with the reason. Lease times are naive UTC from the
workers' clocks: keep machines NTP-synced and leases much longer than any skew.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from population_db.base import StoreBase
from population_db.engine import LeaseLost, NotFound
from population_db.models import FINAL_STATUSES, Evaluation, utcnow
from population_db.records import EvaluationRecord


class QueueMixin(StoreBase):
    """enqueue / claim / heartbeat / complete / requeue_expired."""

    def enqueue_evaluation(self, run_id: int | None, runtime_id: int | None,
                           stage: str = "full", program_id: int | None = None,
                           workload: str | None = None) -> int:
        """Add a pending evaluation for a worker to claim; returns its id."""
        if runtime_id is None and program_id is None:
            raise ValueError("enqueue_evaluation needs runtime_id or program_id")

        def _go(s: Session) -> int:
            row = Evaluation(run_id=run_id, runtime_id=runtime_id, program_id=program_id,
                             stage=stage, status="pending", workload=workload, attempt=1)
            s.add(row)
            s.flush()
            return row.id

        return self._write(_go)

    def claim_evaluation(self, worker: str, lease_s: float, run_id: int | None = None,
                         stage: str | None = None) -> EvaluationRecord | None:
        """Claim the oldest pending evaluation for `worker` for `lease_s` seconds, or None."""
        if lease_s <= 0:
            raise ValueError(f"claim_evaluation: lease_s must be > 0 seconds, got {lease_s!r}")

        def _go(s: Session) -> EvaluationRecord | None:
            q = select(Evaluation).where(Evaluation.status == "pending")
            if run_id is not None:
                q = q.where(Evaluation.run_id == run_id)
            if stage is not None:
                q = q.where(Evaluation.stage == stage)
            row = s.scalar(q.order_by(Evaluation.id).limit(1)
                           .with_for_update(skip_locked=True))
            if row is None:
                return None
            now = utcnow()
            row.status, row.worker, row.started_at = "running", worker, now
            row.heartbeat_at, row.lease_expires_at = now, now + dt.timedelta(seconds=lease_s)
            s.flush()
            return EvaluationRecord.from_row(row)

        return self._write(_go)

    def heartbeat(self, eval_id: int, worker: str, lease_s: float) -> bool:
        """Extend `worker`'s lease on a running evaluation; False if it no longer holds it."""
        def _go(s: Session) -> bool:
            now = utcnow()
            res = s.execute(update(Evaluation)
                            .where(Evaluation.id == eval_id, Evaluation.worker == worker,
                                   Evaluation.status == "running")
                            .values(heartbeat_at=now,
                                    lease_expires_at=now + dt.timedelta(seconds=lease_s)))
            return res.rowcount == 1

        return self._write(_go)

    def complete_evaluation(self, eval_id: int, status: str, worker: str | None = None,
                            metrics: dict[str, Any] | None = None, error: str | None = None,
                            artifacts: dict[str, Any] | None = None,
                            duration_s: float | None = None, device: str | None = None,
                            environment: dict[str, Any] | None = None,
                            workload_hash: str | None = None) -> EvaluationRecord:
        """Finish a claimed evaluation with its result; LeaseLost if `worker` lost the claim."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"complete_evaluation: status must be one of {FINAL_STATUSES}, "
                             f"got {status!r}")

        def _go(s: Session) -> EvaluationRecord:
            row = s.get(Evaluation, eval_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no evaluation {eval_id!r}")
            if worker is not None and (row.worker != worker or row.status != "running"):
                raise LeaseLost(f"evaluation {eval_id} is {row.status} "
                                f"(worker {row.worker!r}), not held by {worker!r}: its lease "
                                "expired and it was requeued or finished elsewhere")
            row.status, row.error, row.finished_at = status, error, utcnow()
            row.metrics = metrics or {}
            row.artifacts = artifacts or {}
            row.lease_expires_at = None
            for name, value in (("duration_s", duration_s), ("device", device),
                                ("environment", environment), ("workload_hash", workload_hash)):
                if value is not None:
                    setattr(row, name, value)
            s.flush()
            return EvaluationRecord.from_row(row)

        return self._write(_go)

    def requeue_expired(self, max_attempts: int = 3) -> int:
        """Return expired claims to pending (attempt + 1); fail those out of attempts.

        Returns how many went back to pending.
        """
        if max_attempts < 1:
            raise ValueError(f"requeue_expired: max_attempts must be >= 1, got {max_attempts}")

        def _go(s: Session) -> int:
            now = utcnow()
            expired = (Evaluation.status == "running", Evaluation.lease_expires_at < now)
            back = s.execute(update(Evaluation)
                             .where(*expired, Evaluation.attempt < max_attempts)
                             .values(status="pending", attempt=Evaluation.attempt + 1,
                                     worker=None, lease_expires_at=None, started_at=None))
            s.execute(update(Evaluation).where(*expired, Evaluation.attempt >= max_attempts)
                      .values(status="failed", finished_at=now, lease_expires_at=None,
                              error=f"lease expired on attempt {max_attempts} of "
                                    f"{max_attempts}: worker died or hung; gave up"))
            return back.rowcount

        return self._write(_go)
