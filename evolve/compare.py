"""Compare runs side by side: config differences, results, cost, and best-so-far curves.

Everything comes from the database. One row per run, with columns grouped like
`results/runs.csv`: `params.*` (the run config, flattened), `metrics.*` (evaluations by
status, best and seed tok/s, speedup, LLM dollars, GPU and wall seconds) and `tags.*`
(name, status, workload, device). The plot shows best-so-far tok/s against candidates
evaluated and against wall time, one line per run.

Example:
    >>> rows = compare_runs(Store.open(), ["quick-a", "quick-b"])
    >>> write_csv(rows, "results/compare.csv"); plot_runs(curves(...), "results/compare.png")
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRIC = "tok_s"
STATUS_ORDER = ("passed", "failed", "timeout", "crashed", "rejected", "duplicate", "pending",
                "running")


class CompareError(ValueError):
    """Bad input to compare: an unknown run, or an output path that already exists."""


@dataclass(frozen=True, slots=True)
class Curve:
    """Best-so-far score of one run: after n candidates evaluated, at t seconds of wall time."""

    run: str
    n: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    best: list[float] = field(default_factory=list)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists and scalars as values (lists as JSON text)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif prefix:
        out[prefix[:-1]] = json.dumps(d, sort_keys=True) if isinstance(d, list | tuple) else d
    return out


def _seed_score(store: Any, run_id: int) -> float | None:
    """The best score among the run's seed runtimes (operator `seed`)."""
    seeds = [rt.id for rt in store.list_runtimes(run_id) if rt.operator == "seed"]
    scores = store.scores(run_id, seeds, METRIC) if seeds else {}
    return max(scores.values()) if scores else None


def _run_row(store: Any, run: Any) -> tuple[dict[str, Any], Curve]:
    """One run's table row (grouped columns) and its best-so-far curve."""
    evals = store.evaluations(run=run.id)
    by_status: dict[str, int] = {}
    for e in evals:
        by_status[e.status] = by_status.get(e.status, 0) + 1
    summary = store.run_summary(run.id, METRIC)
    best = summary.get(f"best_{METRIC}")
    seed = _seed_score(store, run.id)
    devices = sorted({e.device for e in evals if e.device})
    workloads = sorted({e.workload for e in evals if e.workload and e.stage == "bench"})
    gpu_s = sum(e.duration_s or 0.0 for e in evals if (e.device or "").startswith("cuda"))
    t0 = run.created_at
    last = max((e.finished_at or e.created_at for e in evals), default=t0)
    curve = Curve(run.name)
    seen: set[int] = set()
    top: float | None = None
    for e in evals:  # id order is the order results landed in
        key = e.runtime_id if e.runtime_id is not None else -(e.program_id or 0)
        seen.add(key)
        score = (e.metrics or {}).get(METRIC)
        if e.stage == "bench" and e.status == "passed" and isinstance(score, int | float):
            if top is None or score > top:
                top = float(score)
            curve.n.append(len(seen))
            curve.t.append(((e.finished_at or e.created_at) - t0).total_seconds())
            curve.best.append(top)
    if top is not None and curve.n[-1] < len(seen):  # carry the best to the last candidate
        curve.n.append(len(seen))
        curve.t.append((last - t0).total_seconds())
        curve.best.append(top)
    row: dict[str, Any] = {"tags.run": run.name, "tags.status": run.status,
                           "tags.workload": ",".join(workloads), "tags.device": ",".join(devices)}
    row["metrics.evaluations"] = len(evals)
    row["metrics.candidates"] = len(seen)
    for status in STATUS_ORDER:
        row[f"metrics.evals_{status}"] = by_status.get(status, 0)
    row[f"metrics.best_{METRIC}"] = best
    row[f"metrics.seed_{METRIC}"] = seed
    row["metrics.speedup"] = (best / seed) if best and seed else None
    row["metrics.best_runtime"] = summary.get("best_runtime")
    row["metrics.llm_calls"] = summary.get("llm_calls")
    row["metrics.llm_usd"] = summary.get("cost_usd")
    row["metrics.gpu_s"] = gpu_s
    row["metrics.wall_s"] = (last - t0).total_seconds()
    row.update({f"params.{k}": v for k, v in flatten(run.config or {}).items()})
    return row, curve


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
    """PNG of best-so-far tok/s against candidates evaluated and against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_n, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for c in curves:
        if not c.best:
            log.warning("run %s has no passed bench evaluation: no curve", c.run)
            continue
        line = ax_n.step(c.n, c.best, where="post", marker="o", ms=3, label=c.run)[0]
        ax_t.step(c.t, c.best, where="post", marker="o", ms=3, color=line.get_color(),
                  label=c.run)
    ax_n.set_xlabel("candidates evaluated")
    ax_n.xaxis.get_major_locator().set_params(integer=True)
    ax_t.set_xlabel("wall time since run start (s)")
    for ax in (ax_n, ax_t):
        ax.set_ylabel(f"best-so-far {METRIC.replace('_', '/')}")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or "best-so-far throughput by run")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
