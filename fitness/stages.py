"""The stages the worker runs, by name, and the context they share.

Each stage is `fn(ctx: WorkerContext) -> StageResult`; an exception escaping it is turned
into a `failed` (or `crashed`, for out-of-memory) result by the worker. Slot-level stages
(`contract`) test every slot in `ctx.slots`; the runtime-level ones use the whole spec.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fitness.jobs import StageRun, WorkerJob
from fitness.result import StageResult

# slot -> "module:function" of its contract checker, imported only when needed
CONTRACT_CHECKERS = {
    "scheduler": "fitness.contracts_sched:check_scheduler",
    "cache_policy": "fitness.contracts_sched:check_cache_policy",
    "decode_attention": "fitness.contracts_kernels:check_kernel",
    "prefill_attention": "fitness.contracts_kernels:check_kernel",
    "store_kvcache": "fitness.contracts_kernels:check_kernel",
    "rmsnorm": "fitness.contracts_kernels:check_kernel",
}


@dataclass(slots=True)
class WorkerContext:
    """What a stage needs: the resolved spec, the slots under test, device, model, options."""

    spec: dict[str, Any]
    slots: list[str]
    device: str = "cpu"
    model: str = "tiny"
    workload: str | None = None
    baseline: dict[str, Any] | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_job(job: WorkerJob, run: StageRun) -> WorkerContext:
        """The context of `run`, one of the job's runs: the job's, on the run's workload."""
        return WorkerContext(spec=job.spec, slots=list(job.slots), device=job.device,
                             model=job.model, workload=job.workload_of(run),
                             baseline=job.baseline, seed=job.seed, options=dict(job.options))

    def choice(self, slot: str) -> tuple[str, dict[str, Any]]:
        """(program reference, params) of `slot` in the spec."""
        c = self.spec["slots"][slot]
        return c["program"], dict(c.get("params") or {})


def _resolve(target: str) -> Callable[..., StageResult]:
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def stage_contract(ctx: WorkerContext) -> StageResult:
    """Each slot under test against its contract; the first failing slot ends the stage."""
    from runtime_modules.slots import SlotError, load_slot

    metrics: dict[str, Any] = {}
    for slot in ctx.slots:
        ref, params = ctx.choice(slot)
        try:
            loaded = load_slot(slot, ref, params)  # candidate code first runs here
        except SlotError as e:
            if isinstance(e.__cause__, MemoryError):
                raise e.__cause__ from None  # the worker reports it as `crashed`
            art: dict[str, Any] = {"slot": slot}
            if e.__cause__ is not None:
                art["traceback"] = "".join(traceback.format_exception(e.__cause__))[-4000:]
            return StageResult("contract", "failed", metrics, str(e), art)
        res = _resolve(CONTRACT_CHECKERS[slot])(slot, loaded, ctx)
        metrics[slot] = res.metrics
        if not res.ok:
            return StageResult("contract", res.status, metrics, f"{slot}: {res.error}",
                               {"slot": slot, **res.artifacts})
    return StageResult("contract", "passed", metrics)


def stage_sim(ctx: WorkerContext) -> StageResult:
    """The whole engine at full size with a runner that skips the forward pass, modeled."""
    from fitness.sim import run_sim_stage
    return run_sim_stage(ctx)


def stage_correctness(ctx: WorkerContext) -> StageResult:
    """The whole engine with this runtime against the transformers oracle."""
    from fitness.correctness import check_correctness
    return check_correctness(ctx)


def stage_quick_bench(ctx: WorkerContext) -> StageResult:
    """A short interleaved benchmark against the baseline; clearly slower is rejected."""
    from fitness.benchstage import run_bench_stage
    return run_bench_stage(ctx, quick=True)


def stage_bench(ctx: WorkerContext) -> StageResult:
    """The target workload, repeated and interleaved with the baseline."""
    from fitness.benchstage import run_bench_stage
    return run_bench_stage(ctx, quick=False)


def stage_static(ctx: WorkerContext) -> StageResult:
    """`static` inside the worker (the harness normally runs it in-process)."""
    from fitness.static import check_static_spec
    return check_static_spec(ctx.spec, ctx.slots, parents=ctx.options.get("parents"))


WORKER_STAGES: dict[str, Callable[[WorkerContext], StageResult]] = {
    "static": stage_static,
    "contract": stage_contract,
    "sim": stage_sim,
    "correctness": stage_correctness,
    "quick_bench": stage_quick_bench,
    "bench": stage_bench,
}
