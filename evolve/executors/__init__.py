"""Where evaluations run: in threads on this machine (`local`) or as Ray tasks (`ray`).

The controller hands an executor one `EvalJob` per child: plain, picklable data (the spec,
its baseline, stages, workloads, the parents' code, and the multi-fidelity `Gate` fixed when
the job is sent), and gets back a future of a `Landed`: the `ChildResult`, the node that
produced it and, from a remote node, the harness's stage records to write. A future never
raises: a lost or failing evaluation lands as a `crashed` result with the reason. Only the
controller writes the run's records, so each evaluation is written once whatever happens
to the machines that ran it.

- `LocalExecutor`: `concurrency.max_evaluations` threads, each calling the harness (every
  evaluation is already a sandboxed subprocess).
- `RayExecutor` (evolve/executors/ray_tasks.py, imported only when asked for): each job is a
  Ray task running the same harness and sandboxed worker on whichever node Ray picks.

Example:
    ex = make_executor(cfg, store, harness, device="cpu")
    fut = ex.submit(job); landed = fut.result()  # Landed(result, node, writes)
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from evolve import selection as sel
from evolve.config import ConfigError, RunConfig
from evolve.scoring import ChildResult, Confirm, score_runtime

log = logging.getLogger(__name__)

RAY_INSTALL = 'pip install -e ".[ray]"  (or: pip install "ray[default]")'


@dataclass(frozen=True)
class Gate:
    """Multi-fidelity gate: does a sim result earn the real engine's stages?

    `always` fixes the answer (True or False); else a result passes when its first
    objective (signed, larger is better) beats `bar`, or when there is no bar to beat.
    """

    objectives: tuple[tuple[str, float], ...]
    always: bool | None = None
    bar: float | None = None

    def __call__(self, metrics: dict[str, Any]) -> bool:
        if self.always is not None:
            return self.always
        values = sel.fitness_values(metrics, list(self.objectives))
        if values is None:
            return False
        return self.bar is None or self.objectives[0][1] * values[0] > self.bar


@dataclass(frozen=True)
class EvalJob:
    """One child's evaluation, as sent to an executor (picklable: it may cross machines)."""

    eval_id: int
    runtime_id: int
    run_id: int
    spec: dict[str, Any]
    baseline: dict[str, Any]
    stages: tuple[str, ...]
    workloads: tuple[str, ...]
    model: str
    device: str
    parents: dict[str, str] | None
    confirm_workloads: tuple[str, ...]
    gate: Gate
    # for a remote harness without the database: code of sha256 refs, cached contract rows
    programs: dict[str, str] = field(default_factory=dict)
    contracts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Landed:
    """A finished evaluation: its result, the node it ran on, the stage records to write."""

    result: ChildResult
    node: str | None = None
    writes: tuple[tuple[str, dict[str, Any]], ...] = ()


class Executor(Protocol):
    """Runs EvalJobs somewhere; see the module docstring."""

    remote: bool  # evaluations run on other processes or machines (a per-node view helps)

    def capacity(self) -> int:
        """How many evaluations may be in flight at once now."""

    def submit(self, job: EvalJob) -> Future[Landed]:
        """Start `job`; the future never raises."""

    def in_flight(self) -> dict[str, int]:
        """Evaluations running per node (a node not yet known: 'queued')."""

    def close(self, cancel: bool = False) -> None:
        """Release the executor's resources; `cancel`: abandon what is in flight."""


def run_job(harness: Any, job: EvalJob) -> ChildResult:
    """Score one job with `harness` (the same call on every executor)."""
    return score_runtime(harness, job.spec, list(job.stages), list(job.workloads),
                         baseline=job.baseline,  # the seed too: its ratio shows the noise
                         runtime_id=job.runtime_id, run_id=job.run_id, model=job.model,
                         device=job.device, parents=job.parents,
                         confirm=Confirm(list(job.confirm_workloads), job.gate))


def node_name() -> str:
    """This machine's name as evaluations record it."""
    return socket.gethostname()


class LocalExecutor:
    """Threads on this machine; see the module docstring."""

    remote = False  # one machine: no per-node view to show

    def __init__(self, harness: Any, max_workers: int):
        self.harness, self.max_workers = harness, max_workers
        self._pool: ThreadPoolExecutor | None = None  # made on first use
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.node = node_name()

    def capacity(self) -> int:
        return self.max_workers

    def submit(self, job: EvalJob) -> Future[Landed]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, "sds-eval")
        return self._pool.submit(self._run, job)

    def _run(self, job: EvalJob) -> Landed:
        with self._lock:
            self._running[self.node] += 1
        try:
            return Landed(run_job(self.harness, job), self.node)
        except Exception as e:  # score_runtime does not raise; a bug in between still lands
            log.exception("evaluation %s raised", job.eval_id)
            return Landed(ChildResult("crashed", error=f"executor: {type(e).__name__}: {e}",
                                      artifacts={"failed_stage": "executor"}), self.node)
        finally:
            with self._lock:
                self._running[self.node] -= 1

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self._running.items() if v > 0}

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
            self._pool = None


def make_executor(cfg: RunConfig, harness: Any, device: str,
                  harness_factory: Callable[..., Any] | None = None,
                  store: Any = None) -> Executor:
    """The executor `evaluation.executor` names (ConfigError if Ray is asked for but absent).

    local: `harness` in threads; ray: a harness from `harness_factory` in each Ray worker,
    `store` read for the programs a job ships; `device` may be auto (from the cluster).
    """
    if cfg.evaluation.executor == "local":
        return LocalExecutor(harness, cfg.concurrency.max_evaluations)
    try:
        from evolve.executors.ray_tasks import RayExecutor
    except ImportError as e:
        raise ConfigError(f"{cfg.source}: evaluation.executor is 'ray' but Ray cannot be "
                          f"imported ({e}); install it: {RAY_INSTALL}") from None
    return RayExecutor(cfg, store, device, harness_factory)


def replay(store: Any, writes: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    """Write a remote harness's stage records (`Recorder`) into the store, in order."""
    ids: dict[int, int] = {}
    for kind, kw in writes:
        kw = dict(kw)
        if kind == "program":
            tmp = kw.pop("tmp_id")
            ids[tmp] = store.add_program(**kw).id
        elif kind == "evaluation":
            if kw.get("program_id") is not None:
                kw["program_id"] = ids[kw["program_id"]]
            store.add_evaluation(**kw)
        else:
            raise ValueError(f"replay: unknown record kind {kind!r}")


def make_job(cfg: RunConfig, st: Any, objectives: list[tuple[str, float]], device: str,
             run_id: int, runtime_id: int, eval_id: int,
             parents: dict[str, str] | None) -> EvalJob:
    """One child's job from the run's state `st` (evolve.population.RunState) as it is now."""
    ev = cfg.evaluation
    gate = confirm_gate(cfg, objectives, st.members, st.edges, runtime_id, st.seed_runtime_id)
    return EvalJob(eval_id, runtime_id, run_id, st.members[runtime_id].spec,
                   st.members[st.seed_runtime_id].spec,  # the seed too: its ratio shows noise
                   tuple(ev.stages), tuple(ev.workloads), ev.model, device, parents,
                   tuple(ev.confirm.workloads or ev.workloads), gate)


def confirm_gate(cfg: RunConfig, objectives: list[tuple[str, float]], members: dict[int, Any],
                 edges: dict[int, tuple[tuple[int, str], ...]], runtime_id: int,
                 seed_id: int | None) -> Gate:
    """The gate for `runtime_id`, its bar read from the population as it is now."""
    c, objs = cfg.evaluation.confirm, tuple(objectives)
    if c.when in ("always", "never"):
        return Gate(objs, always=c.when == "always")
    if runtime_id == seed_id:
        return Gate(objs, always=True)  # the reference every ratio is read against
    sign = objs[0][1]
    if c.when == "beats_parent":
        parent = next((p for p, role in edges.get(runtime_id, ()) if role == "parent"), None)
        pm = members.get(parent) if parent is not None else None
        pv = sel.fitness_values(pm.metrics, list(objs)) if pm and pm.passed else None
        return Gate(objs, bar=None if pv is None else sign * pv[0])
    island = members[runtime_id].island
    others = sorted((sign * v[0] for m in list(members.values())
                     if m.island == island and m.passed and m.runtime_id != runtime_id
                     and (v := sel.fitness_values(m.metrics, list(objs)))), reverse=True)
    return Gate(objs, bar=others[c.top_k - 1] if len(others) >= c.top_k else None)


def node_counts(store: Any, run_id: int, stage: str = "full") -> list[dict[str, Any]]:
    """Per node: evaluations in flight, finished, and failed (anything but passed)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from population_db.models import Evaluation

    rows: dict[str, dict[str, Any]] = {}
    with Session(store.engine) as s:
        q = (select(Evaluation.worker, Evaluation.status, func.count())
             .where(Evaluation.run_id == run_id, Evaluation.stage == stage,
                    Evaluation.status != "pending")
             .group_by(Evaluation.worker, Evaluation.status))
        for worker, status, n in s.execute(q):
            name = worker or "-"
            if status == "running" and name.count(":") == 3:  # held by a controller (lease
                name = "controller " + ":".join(name.split(":")[:2])  # owner): node unknown
            r = rows.setdefault(name, {"node": name, "in_flight": 0, "done": 0, "failed": 0})
            if status == "running":
                r["in_flight"] += n
            else:
                r["done"] += n
                r["failed"] += n if status != "passed" else 0
    return [rows[k] for k in sorted(rows)]
