"""Scoring one child runtime: the harness over each configured workload, then one aggregate.

The first workload runs every configured stage; later workloads only the benchmark stages
(the slot-level and correctness stages do not depend on the workload). The aggregate
metrics are geometric means over workloads (so the ratio of two runtimes' aggregate tok/s
is the geometric mean of their per-workload ratios), except memory, which takes the max.

Objectives a run config can select on (`selection.objectives`), all recorded for every
child whichever is selected on: `tok_s` (wall clock), `ratio` (wall-clock tok/s over the
seed's, interleaved in one worker process; noisy on a shared CPU) and `modeled_ratio`
(modeled tok/s of fitness/costmodel.py over the seed's, from engine work counters:
deterministic, so the right objective for scheduler and cache-policy searches on a CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fitness.result import BENCH_STAGES

log = logging.getLogger(__name__)
_MAX_TEXT = 4000  # artifact strings are cut to this many characters (prompts show them)


@dataclass(frozen=True)
class ChildResult:
    """The outcome of scoring one runtime over all workloads."""

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    device: str | None = None


def _short(v: Any) -> Any:
    if isinstance(v, str) and len(v) > _MAX_TEXT:
        return v[:_MAX_TEXT // 2] + "\n...\n" + v[-_MAX_TEXT // 2:]
    if isinstance(v, dict):
        return {str(k): _short(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_short(x) for x in v[:50]]
    return v


def aggregate(per_workload: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Geometric mean of each numeric metric present for every workload (max for memory)."""
    if not per_workload:
        return {}
    keys = set.intersection(*(set(m) for m in per_workload.values()))
    out: dict[str, Any] = {}
    for k in sorted(keys):
        vals = [m[k] for m in per_workload.values()]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in vals):
            continue
        if len(vals) == 1:
            out[k] = vals[0]
        elif "mem" in k:
            out[k] = max(vals)
        elif all(v > 0 for v in vals):
            out[k] = math.exp(sum(math.log(v) for v in vals) / len(vals))
        else:
            out[k] = sum(vals) / len(vals)
    return out


def _reports(harness: Any, spec: dict[str, Any], stages: list[str], workloads: list[str],
             baseline: dict[str, Any] | None, runtime_id: int | None, run_id: int | None,
             model: str, extra: dict[str, Any]) -> list[Any]:
    """One report per workload: all in one worker when the harness can, else one by one."""
    common = {"baseline": baseline, "runtime_id": runtime_id, "run_id": run_id,
              "model": model, **extra}
    many = getattr(harness, "evaluate_workloads", None)
    if many is not None:
        return list(many(spec, tuple(stages), list(workloads), **common))
    out = []
    for i, wl in enumerate(workloads):
        st = list(stages) if i == 0 else [s for s in stages if s in BENCH_STAGES]
        report = harness.evaluate(spec, stages=tuple(st), workload=wl, **common)
        out.append(report)
        if report.status != "passed":
            break
    return out


ENGINE_STAGES = ("correctness", "quick_bench", "bench")  # the real engine's stages


@dataclass(frozen=True)
class Confirm:
    """Multi-fidelity: the real-engine stages' workloads, and which sim results earn them."""

    workloads: list[str]
    gate: Callable[[dict[str, Any]], bool]


def score_runtime(harness: Any, spec: dict[str, Any], stages: list[str], workloads: list[str],
                  baseline: dict[str, Any] | None, runtime_id: int | None, run_id: int | None,
                  model: str, device: str | None = None,
                  parents: dict[str, str] | None = None,
                  confirm: Confirm | None = None) -> ChildResult:
    """Evaluate `spec` with `harness` on every workload; never raises (a crash is a status).

    `parents` maps each changed slot to its parent's code, for the EVOLVE-BLOCK check.
    With `sim` among the stages, the fitness is the simulation's (`fidelity: sim`): the
    stages up to `sim` run on `workloads`; the real engine's stages (correctness, bench)
    then run on `confirm.workloads` only when `confirm.gate(sim metrics)` says so. A child
    that fails them fails; one that passes is `confirmed` (its engine metrics recorded as
    `confirm_*`); one not sent is recorded with `confirmed: 0`, usable as a parent but
    never ranked best (population_db's leaderboard needs `correctness`).
    """
    if "sim" not in stages:
        res = _score(harness, spec, stages, workloads, baseline, runtime_id, run_id, model,
                     device, parents)
        if res.status == "passed":
            res.metrics["fidelity"] = "engine"
        return res
    first = [s for s in stages if s not in ENGINE_STAGES]
    rest = [s for s in stages if s in ENGINE_STAGES]
    res = _score(harness, spec, first, workloads, baseline, runtime_id, run_id, model, device,
                 parents)
    if res.status != "passed":
        return res
    res.metrics["fidelity"] = "sim"
    if not rest or confirm is None or not confirm.gate(res.metrics):
        res.metrics["confirmed"] = 0
        return res
    conf = _score(harness, spec, rest, confirm.workloads, baseline, runtime_id, run_id, model,
                  device, parents)
    total = res.duration_s + conf.duration_s
    if conf.status != "passed":
        return dataclasses.replace(conf, duration_s=total,
                                   metrics={**res.metrics, "confirmed": 0})
    metrics = dict(res.metrics)
    for k, v in conf.metrics.items():
        metrics[f"confirm_{k}"] = v
    metrics["confirmed"] = 1
    return dataclasses.replace(res, metrics=metrics, duration_s=total)


def _score(harness: Any, spec: dict[str, Any], stages: list[str], workloads: list[str],
           baseline: dict[str, Any] | None, runtime_id: int | None, run_id: int | None,
           model: str, device: str | None, parents: dict[str, str] | None) -> ChildResult:
    """One fidelity's stages on every workload, aggregated (see `score_runtime`)."""
    t0 = time.monotonic()
    per: dict[str, dict[str, Any]] = {}
    dev = device
    total = 0.0
    extra = {"parents": parents} if parents else {}
    try:
        reports = _reports(harness, spec, stages, workloads, baseline, runtime_id, run_id,
                           model, extra)
    except Exception as e:  # a harness bug must not kill the run: record it as a crash
        log.exception("harness raised on runtime %s", runtime_id)
        return ChildResult("crashed", error=f"harness raised {type(e).__name__}: {e}",
                           artifacts={"failed_stage": "harness", "workload": workloads[0],
                                      "traceback": _short(traceback.format_exc())},
                           duration_s=time.monotonic() - t0, device=dev)
    for wl, report in zip(workloads, reports):
        stage_results = list(getattr(report, "stages", []) or [])
        total += sum(float(getattr(s, "duration_s", 0.0) or 0.0) for s in stage_results)
        dev = getattr(report, "device", None) or dev
        if report.status != "passed":
            failed = getattr(report, "failed_stage", None)
            bad = next((s for s in stage_results if s.stage == failed), None)
            error = (getattr(bad, "error", None) or getattr(report, "error", None)
                     or f"stage {failed} {report.status}")
            arts = {"failed_stage": failed or "unknown", "workload": wl,
                    "stage_artifacts": _short(dict(getattr(bad, "artifacts", {}) or {})),
                    "stage_metrics": _short(dict(getattr(bad, "metrics", {}) or {}))}
            return ChildResult(report.status, metrics={}, error=f"{failed}: {error}",
                               artifacts=arts, duration_s=total or time.monotonic() - t0,
                               device=dev)
        per[wl] = {k: v for k, v in dict(report.metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if len(per) != len(workloads):  # a harness that left a workload out without a failure
        missing = [w for w in workloads if w not in per]
        return ChildResult("crashed", error=f"the harness reported nothing for {missing}",
                           artifacts={"failed_stage": "harness", "workload": missing[0]},
                           duration_s=total or time.monotonic() - t0, device=dev)
    metrics = aggregate(per)
    metrics["workloads"] = per
    return ChildResult("passed", metrics=metrics, duration_s=total or time.monotonic() - t0,
                       device=dev)
