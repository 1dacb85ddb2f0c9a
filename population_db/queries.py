"""Read-side queries of the Store: leaderboard, best runtime, counts, evaluation look-ups.

A runtime's score is the `metric` of its latest passed `bench` evaluation (CONTRACTS.md).
A multi-fidelity run's child scored in `sim` but not confirmed on the real engine
(`metrics.confirmed == 0`) has no score here: nothing is ranked, exported or tuned as best
without having passed `correctness`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from population_db.base import IN_CHUNK, StoreBase
from population_db.engine import NotFound
from population_db.models import FINAL_STATUSES, Evaluation, Event, LLMCall, Program, Runtime
from population_db.records import EvaluationRecord, Ranked, RuntimeRecord

SCORE_STAGE = "bench"
# An evolution run's controller writes one `full` row per runtime whose metrics aggregate
# every workload (geometric mean); it outranks a single workload's `bench` row.
SCORE_STAGES = ("full", SCORE_STAGE)


class QueryMixin(StoreBase):
    """Leaderboards, counts and evaluation look-ups."""

    def _scored(self, run_id: int, metric: str, ids: Sequence[int] | None = None) -> Any:
        """Subquery: per runtime of a run, its latest passed `full` evaluation (else its
        latest passed `bench` evaluation), with its score."""
        full_first = case((Evaluation.stage == SCORE_STAGES[0], 0), else_=1)
        confirmed = Evaluation.metrics["confirmed"].as_float()
        rn = func.row_number().over(partition_by=Evaluation.runtime_id,
                                    order_by=(full_first, Evaluation.id.desc()))
        q = (select(Evaluation.id.label("eval_id"), Evaluation.runtime_id,
                    Evaluation.metrics, Evaluation.metrics[metric].as_float().label("score"),
                    rn.label("rn"))
             .join(Runtime, Runtime.id == Evaluation.runtime_id)
             .where(Runtime.run_id == run_id, Evaluation.stage.in_(SCORE_STAGES),
                    Evaluation.status == "passed",
                    # a score from `sim` alone never ranks: best needs `correctness`
                    or_(confirmed.is_(None), confirmed == 1)))
        if ids is not None:
            q = q.where(Evaluation.runtime_id.in_(list(ids)))
        return q.subquery()

    def leaderboard(self, run: int | str, metric: str = "tok_s", limit: int | None = 10,
                    higher_is_better: bool = True) -> list[Ranked]:
        """A run's runtimes ranked by score (ties: older first); limit None gives all."""
        with self._read() as s:
            run_id = self._run_row(s, run).id
            sub = self._scored(run_id, metric)
            order = sub.c.score.desc() if higher_is_better else sub.c.score.asc()
            q = (select(Runtime, sub.c.score, sub.c.eval_id, sub.c.metrics)
                 .join(sub, sub.c.runtime_id == Runtime.id)
                 .where(sub.c.rn == 1, sub.c.score.is_not(None))
                 .order_by(order, Runtime.id))
            if limit is not None:
                q = q.limit(limit)
            rows = s.execute(q).all()
            recs = self._runtime_records(s, [r[0] for r in rows])
            return [Ranked(i + 1, rec, float(score), eval_id, metrics or {})
                    for i, (rec, (_, score, eval_id, metrics)) in enumerate(zip(recs, rows))]

    def best_runtime(self, run: int | str, metric: str = "tok_s",
                     higher_is_better: bool = True) -> Ranked | None:
        """The top of the leaderboard, or None when nothing has a score yet."""
        top = self.leaderboard(run, metric, limit=1, higher_is_better=higher_is_better)
        return top[0] if top else None

    def scores(self, run: int | str, runtime_ids: Sequence[int],
               metric: str = "tok_s") -> dict[int, float]:
        """Score of each given runtime of a run that has one."""
        out: dict[int, float] = {}
        with self._read() as s:
            run_id = self._run_row(s, run).id
            for i in range(0, len(runtime_ids), IN_CHUNK):
                sub = self._scored(run_id, metric, runtime_ids[i:i + IN_CHUNK])
                q = select(sub.c.runtime_id, sub.c.score).where(sub.c.rn == 1)
                out.update({rid: float(sc) for rid, sc in s.execute(q) if sc is not None})
        return out

    def list_runtimes(self, run: int | str, island: int | None = None) -> list[RuntimeRecord]:
        """A run's runtimes (optionally of one island), oldest first."""
        with self._read() as s:
            q = select(Runtime).where(Runtime.run_id == self._run_row(s, run).id)
            if island is not None:
                q = q.where(Runtime.island == island)
            return self._runtime_records(s, s.scalars(q.order_by(Runtime.id)).all())

    def counts(self, run: int | str) -> dict[tuple[str, str], int]:
        """Number of a run's evaluations by (stage, status)."""
        with self._read() as s:
            run_id = self._run_row(s, run).id
            q = (select(Evaluation.stage, Evaluation.status, func.count())
                 .where(Evaluation.run_id == run_id)
                 .group_by(Evaluation.stage, Evaluation.status))
            return {(st, su): n for st, su, n in s.execute(q)}

    def run_summary(self, run: int | str, metric: str = "tok_s",
                    higher_is_better: bool = True) -> dict[str, Any]:
        """Counts of runtimes, programs, evaluation rows (every stage's), LLM calls and cost,
        and the best score by `metric`. (`evolve.runs_csv.run_summary` is the run-level view:
        it counts evaluations as every view shows them.)"""
        best = self.best_runtime(run, metric, higher_is_better)
        with self._read() as s:
            r = self._run_row(s, run)
            n_rt = s.scalar(select(func.count()).select_from(Runtime)
                            .where(Runtime.run_id == r.id))
            n_prog = s.scalar(select(func.count()).select_from(Program)
                              .where(Program.run_id == r.id))
            n_eval = s.scalar(select(func.count()).select_from(Evaluation)
                              .where(Evaluation.run_id == r.id))
            n_llm, cost = s.execute(select(func.count(), func.coalesce(func.sum(LLMCall.cost_usd),
                                                                       0.0))
                                    .where(LLMCall.run_id == r.id)).one()
        return {"run": r.name, "id": r.id, "status": r.status, "runtimes": n_rt,
                "programs": n_prog, "evaluations": n_eval, "llm_calls": n_llm,
                "cost_usd": float(cost), f"best_{metric}": best.score if best else None,
                "best_runtime": best.runtime.id if best else None, "created_at": r.created_at}

    def evaluations(self, runtime_id: int | None = None, program_id: int | None = None,
                    stage: str | None = None, run: int | str | None = None,
                    status: str | None = None) -> list[EvaluationRecord]:
        """Evaluations matching every given filter, oldest first."""
        with self._read() as s:
            q = select(Evaluation).order_by(Evaluation.id)
            if runtime_id is not None:
                q = q.where(Evaluation.runtime_id == runtime_id)
            if program_id is not None:
                q = q.where(Evaluation.program_id == program_id)
            if stage is not None:
                q = q.where(Evaluation.stage == stage)
            if status is not None:
                q = q.where(Evaluation.status == status)
            if run is not None:
                q = q.where(Evaluation.run_id == self._run_row(s, run).id)
            return [EvaluationRecord.from_row(r) for r in s.scalars(q)]

    def last_activity(self, run: int | str, after: dt.datetime,
                      before: dt.datetime | None = None) -> dt.datetime | None:
        """The latest time anything of `run` was written in [after, before): runtimes,
        evaluations (created, heartbeat, finished), LLM calls, events; None if nothing.

        How long a session that was killed (no `session_end`) ran, up to its last trace.
        """
        with self._read() as s:
            rid = self._run_row(s, run).id
            cols = [(Runtime, Runtime.created_at), (Evaluation, Evaluation.created_at),
                    (Evaluation, Evaluation.heartbeat_at), (Evaluation, Evaluation.finished_at),
                    (LLMCall, LLMCall.created_at), (Event, Event.created_at)]
            times = []
            for model, col in cols:
                q = select(func.max(col)).where(model.run_id == rid, col >= after)
                if before is not None:
                    q = q.where(col < before)
                t = s.scalar(q)
                if t is not None:
                    times.append(t)
            return max(times, default=None)

    def get_evaluation(self, eval_id: int) -> EvaluationRecord:
        """An evaluation by id; NotFound otherwise."""
        with self._read() as s:
            row = s.get(Evaluation, eval_id)
            if row is None:
                raise NotFound(f"no evaluation {eval_id!r}")
            return EvaluationRecord.from_row(row)

    def cached_program_evaluation(self, code_hash: str, stage: str) -> EvaluationRecord | None:
        """The latest finished `stage` evaluation of the program with this code hash, if any."""
        h = code_hash.removeprefix("sha256:").lower()
        with self._read() as s:
            q = (select(Evaluation).join(Program, Program.id == Evaluation.program_id)
                 .where(Program.code_hash == h, Evaluation.stage == stage,
                        Evaluation.status.in_(FINAL_STATUSES))
                 .order_by(Evaluation.id.desc()).limit(1))
            row = s.scalar(q)
            return None if row is None else EvaluationRecord.from_row(row)

    def latest_evaluations(self, runtime_ids: Sequence[int] = (),
                           program_ids: Sequence[int] = (),
                           skip_stages: Sequence[str] = ()
                           ) -> dict[tuple[str, int], EvaluationRecord]:
        """The newest evaluation of each given runtime ("r", id) and program ("p", id), not
        counting rows of `skip_stages` (e.g. `propose`: a duplicate proposal recorded on a
        program says nothing of how that program did)."""
        out: dict[tuple[str, int], EvaluationRecord] = {}
        with self._read() as s:
            for kind, col, ids in (("r", Evaluation.runtime_id, runtime_ids),
                                   ("p", Evaluation.program_id, program_ids)):
                for i in range(0, len(ids), IN_CHUNK):
                    out.update(self._latest(s, kind, col, list(ids[i:i + IN_CHUNK]),
                                            tuple(skip_stages)))
        return out

    @staticmethod
    def _latest(s: Session, kind: str, col: Any, ids: list[int],
                skip: tuple[str, ...] = ()) -> dict:
        newest = select(func.max(Evaluation.id)).where(col.in_(ids))
        if skip:
            newest = newest.where(Evaluation.stage.not_in(list(skip)))
        newest = newest.group_by(col)
        rows = s.scalars(select(Evaluation).where(Evaluation.id.in_(newest)))
        return {(kind, getattr(r, col.key)): EvaluationRecord.from_row(r) for r in rows}
