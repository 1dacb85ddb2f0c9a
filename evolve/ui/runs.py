"""What the runs page, a run's page and the comparison show, as plain JSON-able data.

A run's objective is its config's first `selection.objectives` entry (`sds leaderboard`'s
rule); its best is the population_db leaderboard's top (a `full` row, else `bench`; never a
`sim` score that was not confirmed on the real engine). Budgets, outcomes and failing
stages come from `evolve.runs_csv.run_summary`, the numbers `sds status` prints.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from evolve.cli.db import run_objective
from evolve.runs_csv import csv_row, run_summary, scored_rows
from population_db import GENETIC_ROLES, EvaluationRecord, NotFound, RunRecord, Store
from population_db.models import Evaluation, Event, Run, Runtime, RuntimeParent

BUCKETS = 10  # time windows of the operator-share chart


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat(sep=" ", timespec="seconds") if t else None


@dataclass(frozen=True, slots=True)
class Node:
    """A runtime as the run page needs it (no spec: a 10,000-runtime run's specs are most
    of what reading its runtimes costs)."""

    id: int
    island: int
    generation: int
    operator: str
    parents: list[tuple[int, str]] = field(default_factory=list)


def nodes(store: Store, run_id: int) -> dict[int, Node]:
    """The run's runtimes with their genetic parent edges, by id (two indexed queries)."""
    with Session(store.engine) as s:
        out = {i: Node(i, isl, gen, op) for i, isl, gen, op in s.execute(
            select(Runtime.id, Runtime.island, Runtime.generation, Runtime.operator)
            .where(Runtime.run_id == run_id).order_by(Runtime.id))}
        edges = s.execute(select(RuntimeParent.child_id, RuntimeParent.parent_id,
                                 RuntimeParent.role)
                          .join(Runtime, Runtime.id == RuntimeParent.child_id)
                          .where(Runtime.run_id == run_id,
                                 RuntimeParent.role.in_(list(GENETIC_ROLES))))
        for child, parent, role in edges:
            out[child].parents.append((parent, role))
    return out


def fingerprint(store: Store, run_id: int) -> tuple[Any, ...]:
    """What changes whenever the run does: its status and time, its newest runtime,
    evaluation and event (three index lookups). Pages of an unchanged run can be reused."""
    with Session(store.engine) as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        newest = [s.scalar(select(func.max(m.id)).where(m.run_id == run_id))
                  for m in (Runtime, Evaluation, Event)]
        finished = s.scalar(select(func.max(Evaluation.finished_at))
                            .where(Evaluation.run_id == run_id))
    return (run.status, run.updated_at, *newest, finished)


def run_card(store: Store, run: RunRecord,
             summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of the runs page: status, budgets used, best by the objective, fidelity."""
    s = summary if summary is not None else run_summary(store, run.id)
    metric, higher = run_objective(store, str(run.id))
    best = store.best_runtime(run.id, metric, higher)
    budget = (run.config or {}).get("budget") or {}
    return {
        "id": run.id, "name": run.name, "status": run.status, "created_at": _iso(run.created_at),
        "metric": metric, "higher": higher,
        "best": best.score if best else None,
        "best_runtime": best.runtime.id if best else None,
        "fidelity": (best.metrics or {}).get("fidelity", "engine") if best else None,
        "seed": s.get(f"seed_{metric}"),
        "runtimes": s["runtimes"], "evaluations": s["evaluations"], "budget": s["budget"],
        "in_flight": s["in_flight_or_queued"],
        "llm_usd": s["llm_usd"], "max_llm_usd": budget.get("max_llm_usd"),
        "gpu_s": s["gpu_s"], "max_gpu_s": budget.get("max_gpu_seconds"),
        "wall_s": s["wall_s"], "max_wall_s": budget.get("max_wall_seconds"),
        "stop_reason": s["stop_reason"],
    }


def _finals(store: Store, run_id: int) -> list[EvaluationRecord]:
    """The rows that count as a run's evaluations (`runs_csv.scored_rows`: its `full` rows,
    else each runtime's latest final row), finished ones, in the order they finished."""
    rows = [r for r in scored_rows(store, run_id) if r.status not in ("pending", "running")]
    return sorted(rows, key=lambda r: (r.finished_at or r.created_at, r.id))


def _scored(r: EvaluationRecord, metric: str) -> float | None:
    """The row's objective value, when it passed (a sim score counts for the points)."""
    return _num((r.metrics or {}).get(metric)) if r.status == "passed" else None


def curve(store: Store, run: RunRecord, metric: str, higher: bool,
          finals: list[EvaluationRecord] | None = None) -> dict[str, Any]:
    """Best-so-far (confirmed scores only) after n evaluations and t seconds, and every
    evaluation's own score."""
    finals = _finals(store, run.id) if finals is None else finals
    sign = 1.0 if higher else -1.0
    out: dict[str, Any] = {"run": run.name, "run_id": run.id, "metric": metric,
                           "n": [], "t": [], "best": [], "points": []}
    top: float | None = None
    for i, r in enumerate(finals, 1):
        t = ((r.finished_at or r.created_at) - run.created_at).total_seconds()
        v = _scored(r, metric)
        if v is not None:
            out["points"].append([i, round(t, 3), v, r.runtime_id])
            confirmed = (r.metrics or {}).get("confirmed", 1)
            if confirmed and (top is None or sign * v > sign * top):
                top = v
                out["n"].append(i)
                out["t"].append(round(t, 3))
                out["best"].append(v)
    if top is not None and out["n"][-1] < len(finals):  # carry the best to the last one
        last = finals[-1]
        out["n"].append(len(finals))
        out["t"].append(round(((last.finished_at or last.created_at)
                               - run.created_at).total_seconds(), 3))
        out["best"].append(top)
    return out


def _arms(store: Store, run_id: int) -> dict[int, str]:
    """Runtime -> the bandit arm that made it (operator, `@model` for an LLM one)."""
    return {int(e.data["runtime"]): str(e.data.get("arm"))
            for e in store.events(run_id, "bandit")
            if isinstance(e.data, dict) and isinstance(e.data.get("runtime"), int)}


def operators(store: Store, run_id: int, finals: list[EvaluationRecord], metric: str,
              higher: bool, runtimes: dict[int, Node]) -> dict[str, Any]:
    """Per arm (operator, and model): evaluations, passed, improved on their parent, in
    total and per time bucket (the share over time)."""
    arms = _arms(store, run_id)
    score = {r.runtime_id: _scored(r, metric) for r in finals}
    sign = 1.0 if higher else -1.0
    names: list[str] = []
    total: dict[str, dict[str, int]] = {}
    size = max(1, -(-len(finals) // BUCKETS))
    buckets: list[dict[str, int]] = []  # evaluations per arm in each time window
    passed: list[dict[str, int]] = []  # of which passed
    for i, r in enumerate(finals):
        rt = runtimes.get(r.runtime_id)
        if rt is None:
            continue
        arm = arms.get(rt.id, rt.operator)
        if arm not in total:
            names.append(arm)
            total[arm] = {"evaluations": 0, "passed": 0, "improved": 0}
        t = total[arm]
        t["evaluations"] += 1
        v = score.get(rt.id)
        parent = next((p for p, role in rt.parents if role == "parent"), None)
        pv = score.get(parent) if parent is not None else None
        t["passed"] += v is not None
        t["improved"] += v is not None and pv is not None and sign * v > sign * pv
        if i // size >= len(buckets):
            buckets.append({})
            passed.append({})
        buckets[-1][arm] = buckets[-1].get(arm, 0) + 1
        passed[-1][arm] = passed[-1].get(arm, 0) + (v is not None)
    return {"arms": names, "total": total, "buckets": buckets, "passed": passed,
            "bucket_size": size}


def islands(store: Store, run_id: int, finals: list[EvaluationRecord], metric: str,
            higher: bool, runtimes: dict[int, Node]) -> list[dict[str, Any]]:
    """Per island: runtimes, evaluated, passed, best confirmed score, deepest generation,
    migrants in and out."""
    sign = 1.0 if higher else -1.0
    rows: dict[int, dict[str, Any]] = {}
    by_rt = {r.runtime_id: r for r in finals}
    for rt in runtimes.values():
        d = rows.setdefault(rt.island, {"island": rt.island, "runtimes": 0, "evaluated": 0,
                                        "passed": 0, "best": None, "best_runtime": None,
                                        "generation": 0, "migrants_in": 0, "migrants_out": 0})
        d["runtimes"] += 1
        d["generation"] = max(d["generation"], rt.generation)
        row = by_rt.get(rt.id)
        if row is None:
            continue
        d["evaluated"] += 1
        v = _scored(row, metric)
        if v is None:
            continue
        d["passed"] += 1
        if (row.metrics or {}).get("confirmed", 1) and (
                d["best"] is None or sign * v > sign * d["best"]):
            d["best"], d["best_runtime"] = v, rt.id
    for e in store.events(run_id, "migration"):
        data = e.data or {}
        for key, col in (("to", "migrants_in"), ("from", "migrants_out")):
            if isinstance(data.get(key), int) and data[key] in rows:
                rows[data[key]][col] += 1
    return [rows[k] for k in sorted(rows)]


def run_page(store: Store, run_id: int) -> dict[str, Any]:
    """Everything a run's page draws (and polls while the run goes on)."""
    run = store.get_run(run_id)
    metric, higher = run_objective(store, str(run.id))
    finals = _finals(store, run.id)
    s = run_summary(store, run.id)
    runtimes = nodes(store, run.id)
    return {"card": run_card(store, run, s), "summary": s,
            "curve": curve(store, run, metric, higher, finals),
            "operators": operators(store, run.id, finals, metric, higher, runtimes),
            "islands": islands(store, run.id, finals, metric, higher, runtimes),
            "events": s["events"], "config": run.config}


def compare_one(store: Store, run_id: int) -> dict[str, Any]:
    """One run's part of a comparison: its best-so-far curve and its runs.csv row."""
    run = store.get_run(run_id)
    metric, higher = run_objective(store, str(run.id))
    return {"curve": curve(store, run, metric, higher),
            "row": csv_row(run_summary(store, run.id)), "metric": metric}


def compare(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Best-so-far curves and runs.csv rows of several runs (`compare_one` of each)."""
    return {"curves": [p["curve"] for p in parts], "rows": [p["row"] for p in parts],
            "metrics": sorted({p["metric"] for p in parts})}
