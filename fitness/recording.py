"""Evaluation results into the store: one row per stage, attached to what was evaluated.

Slot-level stages (`static`, `contract`) are judged per program, so their rows attach to
each program (all of them on a pass, the failing one on a fail) with the slot's params;
the other stages attach to the runtime, or, for one module evaluated alone (`sds eval`),
to that module's program. Cached results are not recorded again.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fitness.result import SLOT_STAGES, EvalReport, StageResult

log = logging.getLogger(__name__)


def environment() -> dict[str, Any]:
    """A small fingerprint of where an evaluation ran."""
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "triton", "transformers"):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return env


@dataclass(frozen=True, slots=True)
class RecordTarget:
    """What an evaluation's rows attach to: its runtime (if stored), run, and code."""

    runtime_id: int | None
    run_id: int | None
    codes: dict[str, str]      # slot -> code of each slot under test
    spec: dict[str, Any]       # the resolved spec (for each slot's params)


def record(store: Any, res: StageResult, target: RecordTarget, report: EvalReport,
           device: str) -> None:
    """Store `res`, one stage of `report` on `device`; see the module docstring."""
    if store is None or res.metrics.get("cached"):
        return
    slot_stage = res.stage in SLOT_STAGES
    common = {"stage": res.stage, "status": res.status, "error": res.error,
              "workload": None if slot_stage else report.workload,
              "workload_hash": None if slot_stage else report.workload_hash,
              "device": device, "environment": environment(),
              "duration_s": res.duration_s, "run_id": target.run_id}
    if slot_stage:
        for slot, code in target.codes.items():
            if res.ok or res.artifacts.get("slot") == slot:
                prog = store.add_program(slot, code, operator="eval", run_id=target.run_id)
                params = dict(target.spec["slots"][slot].get("params") or {})
                metrics = res.metrics.get(slot, {}) if res.ok else res.metrics
                store.add_evaluation(program_id=prog.id, metrics=metrics,
                                     artifacts={**res.artifacts, "params": params}, **common)
    elif target.runtime_id is not None:
        store.add_evaluation(runtime_id=target.runtime_id, metrics=res.metrics,
                             artifacts=res.artifacts, **common)
    elif len(target.codes) == 1:  # one module evaluated alone (`sds eval`): attach to it
        slot, code = next(iter(target.codes.items()))
        prog = store.add_program(slot, code, operator="eval", run_id=target.run_id)
        store.add_evaluation(program_id=prog.id, metrics=res.metrics,
                             artifacts=res.artifacts, **common)
    else:
        log.debug("stage %s not recorded: no runtime_id and several slots", res.stage)


__all__ = ["RecordTarget", "environment", "record"]
