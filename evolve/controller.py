"""The evolution controller: steady state, asynchronous, resumable from the database.

A bounded number of proposals (operator calls; LLM calls are slow) run in a thread pool, and
evaluations on an executor (evolve/executors/: threads here, or Ray tasks on many GPUs and
machines); the main thread is the only one that writes the run's records, and it records
each result as it lands, once. A run lease in the database (evolve/runlease.py) refuses a
second controller on the same run while the first lives.

Flow per child: pick an island, the operator (a bandit's arm, evolve/bandit.py), parent(s)
and inspirations, build a MutationContext, `operator.propose`, record its LLM calls; a
Rejected becomes a `propose`/`rejected` row with the reason, a Proposal a program and a
runtime (dedupe by the whole runtime: one the run already has becomes a `duplicate` row and
is not evaluated) with its parent edges and one keyed `full` evaluation row (pending ->
final status). A landed result is marked `novel: 0` when its work counters equal an earlier
member's, and settles its arm's pull. A SIGKILL at any point is recoverable:
`population.load_state` re-queues every runtime without a final row and counts the rest, and
`bandit.restore` replays every settled pull.

Example:
    outcome = Controller(cfg, store, harness, name="demo").run()
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from evolve import selection as sel
from evolve.bandit import ArmStatus, build_operators, child_pull, restore
from evolve.children import ChildrenMixin
from evolve.config import RunConfig
from evolve.executors import Executor, Landed, LocalExecutor, make_job, replay
from evolve.islands import IslandBook
from evolve.population import (
    FULL,
    behaviour_key,
    llm_usage,
    load_state,
    record_result,
)
from evolve.prompts.failures import FailureBook
from evolve.runlease import RunLease
from evolve.store_protocol import Harness, RunStore
from evolve.walltime import prior_wall
from population_db.engine import LeaseLost

MAX_ATTEMPTS = 3  # an evaluation in flight at this many controller deaths is `crashed`

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a controller session ended."""

    run_id: int
    name: str
    status: str  # run status: finished | stopped | failed
    reason: str  # max_evaluations, max_llm_usd, ..., stagnation, interrupted, seed_failed
    evaluations: int
    wall_s: float
    detail: str = ""  # one line on why a failed run stopped (e.g. the LLM endpoint's error)


class Controller(ChildrenMixin):
    """Runs (or resumes) one named run of a config; see the module docstring."""

    def __init__(self, cfg: RunConfig, store: RunStore, harness: Harness,
                 name: str | None = None,
                 operators: dict[str, Any] | None = None, device: str = "cpu",
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 executor: Executor | None = None):
        self.cfg, self.store, self.harness, self.device = cfg, store, harness, device
        self._own_executor = executor is None  # threads here, closed by run() at the end
        self.executor = executor or LocalExecutor(harness, cfg.concurrency.max_evaluations)
        self.name = name or cfg.name or "run"
        self.objectives = cfg.selection.parsed_objectives()
        self.operators = operators if operators is not None else build_operators(cfg)
        self.on_progress = on_progress
        self.reason: str | None = None
        self.stop_detail = ""  # one line for the console when the run fails
        self.llm_failed = 0  # LLM calls that failed or gave an unusable reply (progress bar)
        self.feedback = FailureBook()  # what later prompts are told of failed attempts
        self._interrupts = 0
        self._lock = threading.Lock()
        self._usd = 0.0  # dollars of LLM calls recorded in the database
        self._reserved = 0.0  # estimates of calls allowed but not yet recorded (in flight)
        self._usd_refused = False  # a call was refused: the dollar budget is used up
        self._code_cache: dict[str, str] = {}
        self._prog_ids: dict[str, int] = {}
        self._parent_code: dict[int, dict[str, str]] = {}  # child -> {slot: parent's code}
        self.reverses: dict[int, tuple] = {}  # child -> its opposite change (search.reflect)
        self.reflections: list[tuple] = []  # opposite changes to breed next

    # ------------------------------------------------------------------ the main loop

    def run(self) -> Outcome:
        """Run until a budget, stagnation, Ctrl-C or a failing seed stops it.

        Raises RunLeased (one line) if another live controller drives the run of that name.
        """
        run, created = self.store.get_or_create_run(self.name, config=self.cfg.raw,
                                                    seed=self.cfg.seed)
        self.run_id = run.id
        self.lease = RunLease(self.store, run.id)
        taken_from = self.lease.acquire()
        try:
            return self._session(run, created, taken_from)
        finally:
            if not self.lease.lost:  # left in flight (Ctrl-C twice, an error): pending again
                self.store.requeue_in_flight(run.id, MAX_ATTEMPTS, crash=False)
            self.lease.release()
            if self._own_executor:
                self.executor.close(cancel=True)  # nothing is in flight unless interrupted

    def _session(self, run: Any, created: bool, taken_from: str | None) -> Outcome:
        cfg = self.cfg
        # what a dead controller had in flight runs again (or is given up: MAX_ATTEMPTS)
        in_flight = self.store.requeue_in_flight(run.id, MAX_ATTEMPTS)
        if not created and run.config != cfg.raw:
            # The run goes on under the config given now; the stored one stays as it began.
            changed = sorted(k for k in set(run.config) | set(cfg.raw)
                             if run.config.get(k) != cfg.raw.get(k))
            log.warning("run %s resumes with a changed config (sections %s)", self.name, changed)
            self.store.add_event(run.id, "config_changed", {"sections": changed})
        self.st = load_state(self.store, run.id)
        events = self.store.events(run.id)
        self.book = IslandBook(cfg, self.store, run.id, self.st, self.objectives, events)
        self.replay_feedback()  # a resumed run's prompts keep their failure notes
        self.bandit, self.open_arms = restore(cfg, self.store, run.id, self.st, events)
        self.rng = random.Random(f"{cfg.seed}/{self.st.proposals}")  # fresh stream on resume
        self._usd = llm_usage(self.store, run.id)["usd"]
        self.prior_wall = prior_wall(self.store, run.id, self.name)
        self.t0 = time.monotonic()
        self.done0 = self.st.done
        self.store.set_run_status(run.id, "running")
        if self.st.seed_runtime_id is None:
            self._add_seed()
        for rid in self.st.unqueued:
            self.st.to_evaluate.append((rid, self.store.enqueue_evaluation(run.id, rid, FULL)))
        for rid, _ in self.st.to_evaluate:
            self.note_parent_code(rid)
        self.store.add_event(run.id, "start" if created else "resume",
                             {"evaluations_done": self.st.done, "config_file": cfg.source,
                              "max_evaluations": cfg.budget.max_evaluations,
                              "requeued": [r for r, _ in self.st.to_evaluate],
                              "in_flight_at_crash": in_flight[0], "given_up": in_flight[1],
                              "taken_over_from": taken_from})
        queue = deque(self.st.to_evaluate)
        seed = self.st.members[self.st.seed_runtime_id]
        if self.st.seed_runtime_id in self.st.full_rows and not seed.passed:
            row = self.st.full_rows[self.st.seed_runtime_id]  # nothing can be bred from it
            self._stop("seed_failed", {"error": row.error}, "seed_failed")
        self._progress()
        old = self._install_sigint()
        try:
            self._loop(queue)
        except BaseException as e:  # record why, then let it propagate
            self.store.add_event(run.id, "error", {"error": f"{type(e).__name__}: {e}"})
            self.store.set_run_status(run.id, "failed")
            raise
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        wall = time.monotonic() - self.t0
        if self.lease.lost:  # another controller owns the run now: write nothing more
            return Outcome(run.id, self.name, "stopped", "lease_lost", self.st.done, wall)
        status = {"interrupted": "stopped", "seed_failed": "failed",
                  "llm_endpoint": "failed"}.get(self.reason or "", "finished")
        self.store.add_event(run.id, "session_end", {"wall_s": wall, "reason": self.reason,
                                                     "evaluations_done": self.st.done})
        self.store.set_run_status(run.id, status)
        self._progress()
        return Outcome(run.id, self.name, status, self.reason or "", self.st.done, wall,
                       self.stop_detail)

    def _loop(self, queue: deque) -> None:
        cc = self.cfg.concurrency
        pp = ThreadPoolExecutor(cc.max_proposals, "sds-propose")
        try:
            self._steps(queue, pp)
        except KeyboardInterrupt:  # a second Ctrl-C: in-flight work goes back to pending
            self._stop("interrupted", {})
            pp.shutdown(wait=False, cancel_futures=True)
            return
        pp.shutdown()

    def _steps(self, queue: deque, pp: ThreadPoolExecutor) -> None:
        cc = self.cfg.concurrency
        props: dict[Future, tuple] = {}
        evals: dict[Future, tuple[int, int]] = {}
        while True:
            if self.lease.lost:
                self.reason = self.reason or "lease_lost"  # not ours to write on: just leave
                return
            if self._interrupts and self.reason is None:
                self._stop("interrupted", {})
            if self.reason is None:
                self._check_budgets(len(evals) + len(queue) + len(props))
            if self.reason is None:
                # A resumed run's queue may hold more than a lowered budget has left.
                while (queue and len(evals) < self.executor.capacity()
                       and self.st.done + len(evals) < self.cfg.budget.max_evaluations):
                    rid, eid = queue.popleft()
                    self.store.start_evaluation(eid, self.lease.owner)
                    job = make_job(self.cfg, self.st, self.objectives, self.device, self.run_id,
                                   rid, eid, self._parent_code.get(rid))
                    evals[self.executor.submit(job)] = (rid, eid)
                # Children wait for an evaluator in a short line only, so each is bred from
                # the population as it is when it is proposed (steady state), not up front.
                while len(props) + len(queue) < cc.max_proposals and self._may_propose(
                        len(evals) + len(queue) + len(props)):
                    fut, info = self._submit_proposal(pp)
                    props[fut] = info
            if not props and not evals:
                if self.reason is None and not queue:
                    self._stop("nothing_to_do", {})
                if self.reason is not None:
                    return
            done, _ = wait(list(props) + list(evals), timeout=0.5,
                           return_when=FIRST_COMPLETED)
            for fut in done:
                if fut in props:
                    queued = self._on_proposal(fut.result(), props.pop(fut))
                    if queued:
                        queue.append(queued)
                else:
                    rid, eid = evals.pop(fut)
                    self._on_result(rid, eid, fut.result())
            # the opposite of a change that hurt goes ahead of new proposals
            while self.reflections and self.reason is None and self._may_propose(
                    len(evals) + len(queue) + len(props)):
                queued = self.breed_reflection()
                if queued:
                    queue.append(queued)
            if done:
                self._progress()

    # ------------------------------------------------------------------ budgets and stops

    def _stop(self, reason: str, data: dict[str, Any], kind: str = "stop") -> None:
        if self.reason is None:
            self.reason = reason
            self.store.add_event(self.run_id, kind, {"reason": reason, **data})
            log.info("run %s stopping: %s %s", self.name, reason, data)

    def _check_budgets(self, in_flight: int) -> None:
        b, st = self.cfg.budget, self.st
        wall = self.prior_wall + time.monotonic() - self.t0
        checks = [("max_evaluations", st.done, b.max_evaluations),
                  ("max_llm_usd", self._usd, b.max_llm_usd),
                  ("max_gpu_seconds", st.gpu_seconds, b.max_gpu_seconds),
                  ("max_wall_seconds", wall, b.max_wall_seconds)]
        for name, used, limit in checks:
            if limit is not None and (used >= limit or name == "max_llm_usd"
                                      and self._usd_refused):
                return self._stop(name, {"budget": name, "used": used, "limit": limit},
                                  "budget_stop")
        if st.proposals >= self.cfg.max_proposals() and in_flight == 0:
            self._stop("max_proposals", {"budget": "max_proposals", "used": st.proposals,
                                         "limit": self.cfg.max_proposals()}, "budget_stop")

    def _may_propose(self, in_flight: int) -> bool:
        seed = self.st.members.get(self.st.seed_runtime_id)
        return (seed is not None and seed.passed
                and self.st.done + in_flight < self.cfg.budget.max_evaluations
                and self.st.proposals < self.cfg.max_proposals())

    def reserve_usd(self, est_cost: float, held: list[float]) -> bool:
        """Whether an LLM call of `est_cost` dollars fits the dollar budget (any thread).

        A yes reserves the estimate (appended to `held`) until the proposal lands and its
        recorded cost replaces it, so concurrent proposals and repair rounds, which all ask
        before their earlier calls are recorded, cannot together exceed the budget.
        """
        limit = self.cfg.budget.max_llm_usd
        if limit is None:
            return True
        with self._lock:
            if self._usd + self._reserved + est_cost > limit + 1e-12:
                # Refused even with nothing in flight: the budget is used up, stop the run.
                # (Refused only because of calls in flight: those may cost less; go on.)
                self._usd_refused |= self._usd + est_cost > limit + 1e-12
                return False
            self._reserved += est_cost
            held.append(est_cost)
            return True

    def settle_usd(self, held: list[float], spent: float) -> None:
        """A proposal landed: its reservations give way to what its calls cost."""
        with self._lock:
            self._reserved = max(0.0, self._reserved - sum(held))
            self._usd += spent

    def _install_sigint(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt  # second Ctrl-C: leave in-flight work pending
            # Only a flag here: a database write inside a signal handler can deadlock on
            # the lock held by the write it interrupted. The loop records the stop.
            log.warning("Ctrl-C: finishing in-flight work, then stopping (again to abandon it)")

        return signal.signal(signal.SIGINT, handler)

    # ------------------------------------------------------------------ evaluations

    def _on_result(self, runtime_id: int, eval_id: int, landed: Landed) -> None:
        res = landed.result
        metrics = dict(res.metrics)
        key = behaviour_key(metrics) if res.status == "passed" else None
        if key is not None:  # the same work as an earlier member: a behavioural duplicate
            metrics["novel"] = int(key not in self.st.behaviours)
        try:  # written once: refused if another controller took the run (and this row) over
            row = self.store.complete_evaluation(
                eval_id, res.status, worker=self.lease.owner, metrics=metrics, error=res.error,
                artifacts=res.artifacts, duration_s=res.duration_s,
                device=res.device or self.device, node=landed.node)
        except LeaseLost as e:
            log.error("run %s: %s; stopping", self.name, e)
            self.lease.lost = True
            return
        replay(self.store, landed.writes)  # a remote harness's stage records
        record_result(self.st, runtime_id, row)
        self.book.refresh_copies(runtime_id)
        if runtime_id in self.open_arms:
            arm, usd, variation = self.open_arms.pop(runtime_id)
            pull = child_pull(self.st, runtime_id, arm, usd, self.objectives[0],
                              self.cfg.search.seconds_per_usd)
            if pull is not None:
                self.bandit.settle(pull, variation)
        self.consider_reflection(runtime_id)
        m = self.st.members[runtime_id]
        if res.status != "passed":
            self.book.failures[m.island].append(res.error or res.status)
            self.note_failure(runtime_id, res.error or res.status, res.artifacts)
            if runtime_id == self.st.seed_runtime_id:
                self._stop("seed_failed", {"error": res.error}, "seed_failed")
                return
        # Failures count too: a run whose children all fail is stagnating, and migration
        # keeps its interval whatever the evaluation that lands on it.
        stagnant = self.book.after_result(stopping=self.reason is not None)
        if stagnant is not None:
            self._stop("stagnation", stagnant)

    def stats(self) -> dict[str, Any]:
        """Progress figures: done/budget, best and seed values, rate, failures, dollars."""
        st, (metric, sign) = self.st, self.objectives[0]
        seed = st.members.get(st.seed_runtime_id)
        seed_v = seed.metrics.get(metric) if seed and seed.passed else None
        # best: only runtimes that passed `correctness` (a sim-only score is not enough)
        best = max((m for m in sel.eligible(list(st.members.values()), self.objectives)
                    if m.score_from is None and m.metrics.get("confirmed", 1)),
                   key=lambda m: sign * m.metrics[metric], default=None)
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        return {"done": st.done, "budget": self.cfg.budget.max_evaluations, "metric": metric,
                "best": best.metrics[metric] if best else None,
                "best_runtime": best.runtime_id if best else None, "seed": seed_v,
                "gain": (best.metrics[metric] / seed_v if best and seed_v else None),
                "per_min": 60.0 * (st.done - self.done0) / elapsed,
                "failed_by_stage": dict(st.failures_by_stage), "usd": self._usd,
                "nodes": self.executor.in_flight() if self.executor.remote else {},  # per node
                "llm_failed": self.llm_failed}

    def bandit_status(self) -> list[ArmStatus]:
        """Per arm: pulls, improvements, mean reward and the chance of being chosen next."""
        return self.bandit.status()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats())
