"""Evaluations as Ray tasks: one GPU (or `ray.num_cpus` CPUs) each, anywhere in a cluster.

Each job runs `run_job` in a Ray worker with a harness of that worker process (made once
by the harness factory, so the seed's simulation per workload is cached there as it is
locally), which starts the same sandboxed `python -m fitness.worker` as a local run. A
remote harness never touches the database: the job carries the code of its `sha256:`
programs and the cached contract results it may reuse, and what the harness would have
recorded comes back in the `Landed` for the controller to write (`Recorder`, `replay`).

Retries: Ray re-runs a task whose worker or node died (killed raylet, lost machine, a
candidate that took the worker down) up to `ray.max_retries` times, on another node when
one is free; after that it lands as `crashed` with Ray's reason. A retried task's earlier
attempt wrote nothing, so the result is written once. Task names (`sds-eval e<id>
r<runtime>`) show each evaluation and its node in Ray's dashboard; `in_flight()` counts them
per node for the progress bar, from a small tracker actor the tasks report to when they start.

Example (a Ray cluster already running, e.g. `ray start --head`):
    ex = RayExecutor(load_config("run.yaml", ["ray.address=auto"]), "auto")
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import Future
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import ray
from ray import cloudpickle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from evolve.config import RunConfig
from evolve.executors import EvalJob, Landed, node_name, run_job
from evolve.scoring import ChildResult

log = logging.getLogger(__name__)

_CAPACITY_TTL_S = 5.0  # how often the cluster's size is read again (nodes come and go)


class Recorder:
    """The store a remote harness sees: programs and cached contracts from the job, and the
    stage records it writes kept for the controller (`drain`)."""

    def __init__(self) -> None:
        self.programs: dict[str, str] = {}
        self.contracts: dict[str, Any] = {}
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def begin(self, job: EvalJob) -> None:
        """Serve this job's programs and cached contracts; forget earlier records."""
        self.programs, self.contracts, self.writes = dict(job.programs), dict(job.contracts), []

    def drain(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """The records written since `begin`, in order."""
        out, self.writes = tuple(self.writes), []
        return out

    def program_by_hash(self, hex_hash: str) -> Any:
        code = self.programs.get(hex_hash.removeprefix("sha256:").lower())
        return None if code is None else SimpleNamespace(code=code)

    def cached_program_evaluation(self, code_hash: str, stage: str) -> Any:
        return self.contracts.get(code_hash.removeprefix("sha256:").lower()) \
            if stage == "contract" else None

    def add_program(self, slot: str, code: str, **kw: Any) -> Any:
        tmp = sum(1 for k, _ in self.writes if k == "program") + 1
        self.writes.append(("program", {"slot": slot, "code": code, **kw, "tmp_id": tmp}))
        return SimpleNamespace(id=tmp)

    def add_evaluation(self, **kw: Any) -> None:
        self.writes.append(("evaluation", kw))


@dataclass(frozen=True)
class HarnessFactory:
    """Makes the real harness (evolve.launch.make_harness) in a Ray worker."""

    cfg: RunConfig
    device: str

    def __call__(self, store: Any) -> Any:
        from evolve.launch import make_harness

        return make_harness(self.cfg, store, self.device)


_HARNESS: dict[Any, tuple[Any, Recorder]] = {}  # per Ray worker process: (factory key) -> ...


def _harness(factory: Any, run_id: int) -> tuple[Any, Recorder]:
    key = (run_id, cloudpickle.dumps(factory))  # a worker process may serve several runs
    if key not in _HARNESS:
        rec = Recorder()
        _HARNESS[key] = (factory(rec), rec)
    return _HARNESS[key]


def _node_label() -> str:
    node_id = ray.get_runtime_context().get_node_id()
    return f"{node_name()}/{node_id[:6]}"


@ray.remote
def _evaluate(job: EvalJob, factory: Any, tracker: Any) -> Landed:
    node = _node_label()
    tracker.started.remote(job.eval_id, node)
    harness, rec = _harness(factory, job.run_id)
    rec.begin(job)
    return Landed(run_job(harness, job), node, rec.drain())


@ray.remote(num_cpus=0)
class _Tracker:
    """Which node each evaluation started on (the latest attempt)."""

    def __init__(self) -> None:
        self.nodes: dict[int, str] = {}

    def started(self, eval_id: int, node: str) -> None:
        self.nodes[eval_id] = node

    def where(self, eval_ids: list[int]) -> dict[int, str]:
        return {i: self.nodes[i] for i in eval_ids if i in self.nodes}


class RayExecutor:
    """Evaluations as Ray tasks; see the module docstring."""

    remote = True

    def __init__(self, cfg: RunConfig, store: Any, device: str = "auto",
                 harness_factory: Any = None):
        rc, self.store = cfg.ray, store
        self.max_retries, self.num_cpus = rc.max_retries, rc.num_cpus
        self._own = not ray.is_initialized()
        if self._own:
            # address: "auto" (the cluster this machine belongs to), "ray://host:10001", or
            # empty for a local instance that lives as long as this executor, whose workers
            # run at normal priority (Ray's default niceness of 15 lets any other process on
            # the machine slow evaluations down; a cluster's own setting is left alone)
            if not rc.address:
                os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(address=rc.address or None, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
        gpus = ray.cluster_resources().get("GPU", 0)
        self.device = ("cuda" if gpus > 0 else "cpu") if device == "auto" else device
        if self.device.startswith("cuda") and gpus == 0:
            log.warning("evaluation.device is %s but the Ray cluster has no GPU yet: "
                        "evaluations wait until a GPU node joins", self.device)
        self.factory = harness_factory or HarnessFactory(cfg, self.device)
        here = ray.get_runtime_context().get_node_id()
        strategy = NodeAffinitySchedulingStrategy(here, soft=True)  # the tracker stays here
        self.tracker = _Tracker.options(scheduling_strategy=strategy).remote()
        self._pending: dict[int, ray.ObjectRef] = {}
        self._cap, self._cap_t = 1, -_CAPACITY_TTL_S
        log.info("ray executor: device %s, cluster %s", self.device, ray.cluster_resources())

    def capacity(self) -> int:
        now = time.monotonic()
        if now - self._cap_t >= _CAPACITY_TTL_S:
            res = ray.cluster_resources()
            slots = res.get("GPU", 0) if self.device.startswith("cuda") \
                else res.get("CPU", 0) / self.num_cpus
            self._cap, self._cap_t = max(1, int(slots)), now
        return self._cap

    def submit(self, job: EvalJob) -> Future[Landed]:
        job = self._with_store_data(job)
        gpu = 1 if job.device.startswith("cuda") else 0
        ref = _evaluate.options(name=f"sds-eval e{job.eval_id} r{job.runtime_id}",
                                num_cpus=self.num_cpus, num_gpus=gpu,
                                max_retries=self.max_retries, retry_exceptions=False
                                ).remote(job, self.factory, self.tracker)
        self._pending[job.eval_id] = ref
        out: Future[Landed] = Future()
        ref.future().add_done_callback(lambda f: out.set_result(self._landed(job, f)))
        return out

    def _with_store_data(self, job: EvalJob) -> EvalJob:
        """The job with the code of its stored programs and their cached contract rows."""
        if self.store is None:
            return job
        programs, contracts = {}, {}
        for spec in (job.spec, job.baseline):
            for choice in (spec.get("slots") or {}).values():
                ref = choice["program"] if isinstance(choice, dict) else choice
                h = ref.removeprefix("sha256:")
                if ref.startswith("sha256:") and h not in programs:
                    rec = self.store.program_by_hash(h)
                    if rec is not None:
                        programs[h] = rec.code
                        cached = self.store.cached_program_evaluation(h, "contract")
                        if cached is not None:
                            contracts[h] = cached
        return dataclasses.replace(job, programs=programs, contracts=contracts)

    def _landed(self, job: EvalJob, f: Future) -> Landed:
        """The task's Landed, or a `crashed` one saying why Ray gave it up (never raises)."""
        self._pending.pop(job.eval_id, None)
        try:
            return f.result()
        except BaseException as e:  # noqa: BLE001 - whatever Ray raises becomes the status
            text = (str(e).strip().splitlines() or [""])[0][:500]
            if isinstance(e, ray.exceptions.RayTaskError):
                why = f"the evaluation task raised {type(e).__name__}: {text}"
            else:
                why = (f"lost {self.max_retries + 1} times (worker or node died; Ray retried it "
                       f"{self.max_retries} times): {type(e).__name__}: {text}")
            return Landed(ChildResult("crashed", error=f"ray: {why}",
                                      artifacts={"failed_stage": "executor",
                                                 "ray_error": type(e).__name__}))

    def in_flight(self) -> dict[str, int]:
        ids = list(self._pending)
        if not ids:
            return {}
        try:
            where = ray.get(self.tracker.where.remote(ids), timeout=2)
        except Exception:  # noqa: BLE001 - the tracker is busy or gone: show nothing
            return {}
        counts: dict[str, int] = {}
        for i in ids:
            node = where.get(i, "queued")
            counts[node] = counts.get(node, 0) + 1
        return counts

    def close(self, cancel: bool = False) -> None:
        for ref in list(self._pending.values()) if cancel else []:
            ray.cancel(ref, force=True)
        self._pending.clear()
        ray.kill(self.tracker)
        if self._own:
            ray.shutdown()
