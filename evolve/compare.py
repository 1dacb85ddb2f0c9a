"""Compare runs side by side: config differences, results, cost, and best-so-far curves.

Everything comes from the database, through the same run summary `sds status`, `sds runs`
and `results/runs.csv` use (evolve/runs_csv.py), so every view gives the same evaluation
count and the same best. One row per run, columns grouped like `results/runs.csv`:
`params.*` (the run config, flattened), `metrics.*` (evaluations by status, best and seed
by the run's objective and their gain, the best's objective per workload side by side,
wall-clock tok/s from the real engine, LLM dollars, GPU and wall seconds) and `tags.*`
(name, status, objective, the fidelity of its best score, workload, device).

The plot shows, per run, the best-so-far value of the run's own objective against the
evaluations counted so far and against wall time: a point rises only when a runtime that
could be called best (passed; confirmed on the real engine in a sim-fidelity run) beats
the earlier ones. Figures of different workloads are never maxed together, and runs with
different objectives get separate panels.

Example:
    >>> rows, curves = compare_runs(Store.open(), ["quick-a", "quick-b"])
    >>> write_csv(rows, "results/compare.csv"); plot_runs(curves, "results/compare.png")
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.runs_csv import _objective, csv_row, run_summary, scored_rows

log = logging.getLogger(__name__)

STATUS_ORDER = ("passed", "failed", "timeout", "crashed", "rejected", "duplicate", "pending",
                "running")
SHOWN = ("tags.objective", "tags.fidelity", "metrics.evaluations", "metrics.evals_passed",
         "metrics.evals_failed", "metrics.evals_timeout", "metrics.evals_crashed",
         "metrics.best", "metrics.seed", "metrics.gain", "metrics.best_runtime",
         "metrics.best_tok_s", "metrics.seed_tok_s", "metrics.llm_usd", "metrics.gpu_s",
         "metrics.wall_s")  # the columns `sds compare` prints


class CompareError(ValueError):
    """Bad input to compare: an unknown run, or an output path that already exists."""


@dataclass(frozen=True, slots=True)
class Curve:
    """Best-so-far value of a run's objective: after n evaluations, at t seconds."""

    run: str
    n: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)
    objective: str = "tok_s:max"
    fidelity: str = "engine"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists and scalars as values (lists as JSON text)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif prefix:
        out[prefix[:-1]] = json.dumps(d, sort_keys=True) if isinstance(d, list | tuple) else d
    return out


def _eligible(row: Any, metric: str) -> float | None:
    """The objective value of a scored row that may be called best, else None."""
    m = row.metrics or {}
    v = m.get(metric)
    ok = (row.status == "passed" and isinstance(v, int | float) and not isinstance(v, bool)
          and m.get("confirmed", 1) not in (0, 0.0))
    return float(v) if ok else None


def _curve(store: Any, run: Any, summary: dict[str, Any]) -> Curve:
    """Best-so-far of the objective over the evaluations `run_summary` counts."""
    metric, sign = _objective(run.config or {})
    rows = [r for r in scored_rows(store, run.id) if r.status not in ("pending", "running")]
    rows.sort(key=lambda r: (r.finished_at or r.created_at, r.id))  # the order they landed
    curve = Curve(run.name, objective=summary["objective"],
                  fidelity=summary["fidelity"] or "engine")
    top: float | None = None
    for i, r in enumerate(rows, 1):
        v = _eligible(r, metric)
        if v is not None and (top is None or sign * v > sign * top):
            top = v
        if top is not None:
            curve.n.append(i)
            curve.t.append(((r.finished_at or r.created_at) - run.created_at).total_seconds())
            curve.best.append(top)
    return curve


def _run_row(store: Any, run: Any) -> tuple[dict[str, Any], Curve]:
    """One run's table row (grouped columns) and its best-so-far curve."""
    summary = run_summary(store, run.id)
    row = csv_row(summary)
    for status in STATUS_ORDER:
        row.setdefault(f"metrics.evals_{status}", summary["by_status"].get(status, 0))
    row["metrics.llm_calls"] = summary["llm_calls"]
    row.update({f"params.{k}": v for k, v in flatten(run.config or {}).items()})
    return row, _curve(store, run, summary)


def compare_runs(store: Any, runs: list[str]) -> tuple[list[dict[str, Any]], list[Curve]]:
    """One grouped row and one curve per run, in the order given."""
    from population_db import NotFound
    if not runs:
        raise CompareError("give at least one run name or id to compare")
    records = []
    for name in runs:
        try:
            records.append(store.get_run(name))
        except NotFound:
            raise CompareError(f"run {name!r} not found in the database") from None
    for r in records:  # a run where even the seed never passed has nothing to compare
        if not any(e.status == "passed" for e in store.evaluations(run=r.id)):
            raise CompareError(f"run {r.name!r} has no successful evaluation; "
                               f"check it with `sds status {r.name}`")
    pairs = [_run_row(store, r) for r in records]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def config_differences(rows: list[dict[str, Any]]) -> list[str]:
    """The params.* columns whose values are not the same for every run."""
    keys = sorted({k for r in rows for k in r if k.startswith("params.")})
    return [k for k in keys if len({json.dumps(r.get(k), default=str) for r in rows}) > 1]


def check_new_path(path: str | Path | None, force: bool = False) -> Path | None:
    """`path` as a Path, or CompareError if it exists (and `force` is off)."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not force:
        raise CompareError(f"{p} already exists; choose another path or pass --force "
                           "(nothing was written)")
    if p.exists() and p.is_dir():
        raise CompareError(f"{p} is a folder; expected a file path")
    return p


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write the rows with tags.*, params.*, metrics.* columns (in that order)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    cols = [k for g in ("tags.", "params.", "metrics.") for k in keys if k.startswith(g)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return path


def plot_runs(curves: list[Curve], path: str | Path, title: str = "") -> Path:
    """PNG of each run's best-so-far objective against evaluations and wall time; one row
    of panels per objective (runs optimizing different things are not drawn on one axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = list(dict.fromkeys(c.objective for c in curves)) or ["tok_s:max"]
    fig, axes = plt.subplots(len(objectives), 2, figsize=(11, 4.2 * len(objectives)),
                             constrained_layout=True, squeeze=False)
    for (ax_n, ax_t), obj in zip(axes, objectives):
        for c in (c for c in curves if c.objective == obj):
            if not c.best:
                log.warning("run %s has no evaluation that may be called best: no curve", c.run)
                continue
            label = f"{c.run} ({c.fidelity})"
            line = ax_n.step(c.n, c.best, where="post", marker="o", ms=3, label=label)[0]
            ax_t.step(c.t, c.best, where="post", marker="o", ms=3, color=line.get_color(),
                      label=label)
        ax_n.set_xlabel("evaluations (as sds status counts them)")
        ax_n.xaxis.get_major_locator().set_params(integer=True)
        ax_t.set_xlabel("wall time since run start (s)")
        metric, _, way = obj.partition(":")
        for ax in (ax_n, ax_t):
            ax.set_ylabel(f"best-so-far {metric} ({'higher' if way != 'min' else 'lower'} "
                          "is better)")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle(title or "best-so-far of each run's objective")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
