"""One row per run in `results/runs.csv`, and the run summary `sds status` prints.

Columns are grouped MLflow-style: `tags.*` (run, config file, status, workload, device,
stop reason, objective and the fidelity of its best score), `params.*` (target slots,
operators, LLM models, budget) and `metrics.*` (evaluations by status, best runtime, best
and seed by the objective and their gain, the best's objective per workload side by side,
wall-clock tok/s of best and seed from the real engine, LLM tokens and dollars, GPU,
evaluation and wall seconds). Everything is read from the database, so a row can be rebuilt
for any run at any time; `sds status`, `sds runs`, `sds compare` and the UI read the same
summary, so they agree.

Example:
    append_row("results/runs.csv", csv_row(run_summary(store, "quickstart")))
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from evolve.population import FULL, PROPOSE, llm_usage, run_evaluations, run_runtimes

DEFAULT_CSV = "results/runs.csv"


def _objective(config: dict[str, Any]) -> tuple[str, float]:
    objs = ((config or {}).get("selection") or {}).get("objectives") or ["tok_s:max"]
    name, _, way = str(objs[0]).partition(":")
    return name, (-1.0 if way == "min" else 1.0)


FINAL = ("passed", "failed", "timeout", "crashed", "rejected")


def scored_rows(store: Any, run_id: int) -> list[Any]:
    """The rows that count as a run's evaluations, in the order they were written: its
    `full` rows (one per runtime the controller evaluated), else, for runs the controller
    did not make, each runtime's latest final row of any stage. Every view counts these."""
    full = run_evaluations(store, run_id, FULL)
    if full:
        return full
    latest: dict[int, Any] = {}
    for r in run_evaluations(store, run_id):
        if r.runtime_id is not None and r.stage != PROPOSE and r.status in FINAL:
            latest[r.runtime_id] = r
    return sorted(latest.values(), key=lambda r: r.id)


def fidelity_of(metrics: dict[str, Any] | None) -> str:
    """Which fidelity made a score: `sim` (confirmed on the real engine, or it would not
    rank) or `engine`."""
    fid = (metrics or {}).get("fidelity", "engine")
    return "sim, confirmed on the engine" if fid == "sim" else str(fid)


def per_workload(metrics: dict[str, Any] | None, metric: str) -> dict[str, Any]:
    """`metric` on each workload, side by side (never a max across workloads)."""
    per = (metrics or {}).get("workloads")
    if not isinstance(per, dict):
        return {}
    return {str(w): m.get(metric) for w, m in sorted(per.items())
            if isinstance(m, dict) and isinstance(m.get(metric), (int, float))}


def _reason_kind(error: str) -> str:
    """A rejection reason without what varies between replies (rounds, numbers, quotes)."""
    first = (error or "").splitlines()[0] if error else "unknown"
    first = re.split(r"(?:^|; )round \d+: ", first)[-1]  # the last round's reason
    first = re.sub(r" ?\(it begins .*|'[^']*'", "…", first)
    return first[:100]


def rejection_reasons(proposals: list[Any], top: int = 3) -> dict[str, int]:
    """The most common reasons proposals were rejected, with their counts."""
    kinds = Counter(_reason_kind(r.error or "") for r in proposals if r.status == "rejected")
    return dict(kinds.most_common(top))


def _status_counts(full: list[Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Scored rows by status, and those that finished without passing by the failed stage."""
    by_status: dict[str, int] = {}
    for r in full:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    failed_stage: dict[str, int] = {}
    for r in full:
        if r.status not in ("passed", "pending", "running"):
            st = (r.artifacts or {}).get("failed_stage") or (
                r.stage if r.stage != FULL else "unknown")
            failed_stage[st] = failed_stage.get(st, 0) + 1
    return by_status, failed_stage


def _config_fields(cfg: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
    """The summary's fields taken from the run's config and its first start event."""
    ev = cfg.get("evaluation") or {}
    return {
        "config_file": start.get("config_file"),
        "target_slots": list((cfg.get("target") or {}).get("slots") or []),
        "operators": sorted((cfg.get("operators") or {}).keys()),
        "llm_models": sorted(((cfg.get("llm") or {}).get("models") or {}).keys()),
        "workload": ",".join(ev.get("workloads") or []),
    }


def _best_fields(store: Any, run_id: int, runtimes: dict[int, Any], metric: str,
                 sign: float) -> dict[str, Any]:
    """The summary's fields on the best runtime and the seed, ranked as the leaderboard ranks."""
    board = store.leaderboard(run_id, metric, limit=None, higher_is_better=sign > 0)
    best = board[0] if board else None
    seed_ids = {i for i, r in runtimes.items() if r.operator == "seed"}
    seed = next((b for b in board if b.runtime.id in seed_ids), None)
    best_v = best.score if best else None
    seed_v = seed.score if seed else None
    seed_tok = _engine(seed, "tok_s")
    best_tok = _engine(best, "tok_s")
    gain = None
    if best_v is not None and seed_v:
        gain = best_v / seed_v if sign > 0 else (seed_v / best_v if best_v else None)
    return {
        "best_runtime": best.runtime.id if best else None,
        "best_operator": best.runtime.operator if best else None,
        f"seed_{metric}": seed_v, f"best_{metric}": best_v,
        "best": best_v, "seed": seed_v, "gain": gain,  # by the objective, its direction
        "fidelity": fidelity_of(best.metrics) if best else None,
        "best_by_workload": per_workload(best.metrics if best else None, metric),
        "seed_by_workload": per_workload(seed.metrics if seed else None, metric),
        "seed_tok_s": seed_tok, "best_tok_s": best_tok,
        # tok/s of best and seed come from separate evaluations (separate processes);
        # `best_ratio` is the best's ratio to the seed measured interleaved in one process.
        "speedup": best_tok / seed_tok if best_tok and seed_tok else None,
        "best_ratio": _engine(best, "ratio"),
    }


def _latest_session(events: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    """The latest session's start data and the stop events after it."""
    # The latest session's start: its budget is the one in force (a resume may change it),
    # and only a stop after it is this session's (a run in progress has none yet).
    last = max((i for i, e in enumerate(events) if e.kind in ("start", "resume")), default=-1)
    session = events[last].data or {} if last >= 0 else {}
    stops = [e for e in events[last + 1:]
             if e.kind in ("budget_stop", "stop", "seed_failed", "llm_stop")]
    return session, stops


def run_summary(store: Any, run: int | str) -> dict[str, Any]:
    """Progress, best, budgets used and events of a run, as plain data.

    Best and seed are ranked by the run's objective exactly as `sds leaderboard` ranks
    (population_db's leaderboard: never a `sim` score that skipped `correctness`), and
    `evaluations` counts `scored_rows`: the same figures in every view.
    """
    rec = store.get_run(run)
    cfg = rec.config or {}
    metric, sign = _objective(cfg)
    runtimes = {r.id: r for r in run_runtimes(store, rec.id)}
    full = scored_rows(store, rec.id)
    proposals = run_evaluations(store, rec.id, PROPOSE)
    by_status, failed_stage = _status_counts(full)
    best = _best_fields(store, rec.id, runtimes, metric, sign)
    events = store.events(rec.id)
    start = next((e.data or {} for e in events if e.kind == "start"), {})
    ends = [e.data or {} for e in events if e.kind in ("session_end", "session_lost")]
    session, stops = _latest_session(events)
    usage = llm_usage(store, rec.id)
    return {
        "run": rec.name, "run_id": rec.id, "status": rec.status,
        **_config_fields(cfg, start),
        "device": ",".join(sorted({r.device for r in full if r.device})) or None,
        "metric": metric, "objective": f"{metric}:{'max' if sign > 0 else 'min'}",
        "evaluations": sum(v for k, v in by_status.items() if k not in ("pending", "running")),
        "in_flight_or_queued": by_status.get("pending", 0) + by_status.get("running", 0),
        "budget": session.get("max_evaluations",
                              (cfg.get("budget") or {}).get("max_evaluations")),
        "by_status": by_status,
        "proposals_rejected": sum(1 for r in proposals if r.status == "rejected"),
        "duplicates": sum(1 for r in proposals if r.status == "duplicate"),
        "rejection_reasons": rejection_reasons(proposals),
        "failed_by_stage": failed_stage,
        "runtimes": len(runtimes),
        **best,
        "llm_calls": usage["calls"], "llm_tokens_in": usage["tokens_in"],
        "llm_tokens_out": usage["tokens_out"], "llm_usd": usage["usd"],
        "gpu_s": sum(float(r.duration_s or 0) for r in full
                     if (r.device or "").startswith("cuda")),
        "eval_s": sum(float(r.duration_s or 0) for r in full),
        "wall_s": sum(float(d.get("wall_s", 0.0)) for d in ends),
        "stop_reason": (stops[-1].data or {}).get("reason") if stops else None,
        "events": {k: sum(1 for e in events if e.kind == k)
                   for k in sorted({e.kind for e in events})},
        "created_at": rec.created_at,
    }


def csv_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The runs.csv row of a run summary (tags.*, params.*, metrics.*)."""
    s, metric = summary, summary["metric"]
    row: dict[str, Any] = {
        "tags.run": s["run"], "tags.config_file": s["config_file"], "tags.status": s["status"],
        "tags.workload": s["workload"], "tags.device": s["device"],
        "tags.stop_reason": s["stop_reason"],
        "params.target_slots": ",".join(s["target_slots"]),
        "params.operators": ",".join(s["operators"]),
        "params.llm_models": ",".join(s["llm_models"]),
        "params.max_evaluations": s["budget"],
        "tags.objective": s["objective"], "tags.fidelity": s["fidelity"],
        "metrics.evaluations": s["evaluations"],
        "metrics.best": s["best"], "metrics.seed": s["seed"], "metrics.gain": s["gain"],
    }
    for status in ("passed", "failed", "timeout", "crashed", "rejected"):
        row[f"metrics.evals_{status}"] = s["by_status"].get(status, 0)
    row.update({
        "metrics.proposals_rejected": s["proposals_rejected"],
        "metrics.duplicates": s["duplicates"],
        "metrics.best_runtime": s["best_runtime"],
        f"metrics.seed_{metric}": s[f"seed_{metric}"],
        f"metrics.best_{metric}": s[f"best_{metric}"],
        "metrics.seed_tok_s": s["seed_tok_s"], "metrics.best_tok_s": s["best_tok_s"],
        "metrics.speedup": s["speedup"], "metrics.best_ratio": s["best_ratio"],
        "metrics.llm_tokens_in": s["llm_tokens_in"], "metrics.llm_tokens_out": s["llm_tokens_out"],
        "metrics.llm_usd": s["llm_usd"], "metrics.gpu_s": s["gpu_s"],
        "metrics.eval_s": s["eval_s"], "metrics.wall_s": s["wall_s"],
    })
    for w, v in s["best_by_workload"].items():  # side by side, one column per workload
        row[f"metrics.best_{metric}.{w}"] = v
    return row


def append_row(path: str | Path, row: dict[str, Any]) -> Path:
    """Append `row`; when it brings new columns, rewrite the file with the union header."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    header: list[str] = []
    if p.exists() and p.stat().st_size > 0:
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if any(k not in header for k in row):
                rows = list(reader)
    new_cols = [k for k in row if k not in header]
    if header and not new_cols:
        with p.open("a", newline="") as f:
            csv.DictWriter(f, header).writerow({k: _cell(v) for k, v in row.items()})
        return p
    keys = header + new_cols
    cols = [k for g in ("tags.", "params.", "metrics.") for k in keys if k.startswith(g)]
    cols += [k for k in keys if k not in cols]
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)
        w.writerow({k: _cell(v) for k, v in row.items()})
    os.replace(tmp, p)
    return p


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _engine(row: Any, key: str) -> Any:
    """A real-engine figure of a scored row (an evaluation or a leaderboard entry): `key`,
    or `confirm_<key>` in a sim-fidelity run."""
    if row is None:
        return None
    m = row.metrics or {}
    return m.get(key, m.get(f"confirm_{key}"))
