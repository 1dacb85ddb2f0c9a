"""One row per run in `results/runs.csv`, and the run summary `sds status` prints.

Columns are grouped MLflow-style: `tags.*` (run, config file, status, workload, device,
stop reason), `params.*` (target slots, operators, LLM models, budget, islands, selection)
and `metrics.*` (evaluations by status, best runtime, seed and best tok/s, speedup, LLM
tokens and dollars, GPU, evaluation and wall seconds). Everything is read from the
database, so a row can be rebuilt for any run at any time.

Example:
    append_row("results/runs.csv", csv_row(run_summary(store, "quickstart")))
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from evolve.population import FULL, PROPOSE, llm_usage, run_evaluations, run_runtimes

DEFAULT_CSV = "results/runs.csv"


def _objective(config: dict[str, Any]) -> tuple[str, float]:
    objs = ((config or {}).get("selection") or {}).get("objectives") or ["tok_s:max"]
    name, _, way = str(objs[0]).partition(":")
    return name, (-1.0 if way == "min" else 1.0)


def run_summary(store: Any, run: int | str) -> dict[str, Any]:
    """Progress, best, budgets used and events of a run, as plain data."""
    rec = store.get_run(run)
    cfg = rec.config or {}
    metric, sign = _objective(cfg)
    runtimes = {r.id: r for r in run_runtimes(store, rec.id)}
    full = run_evaluations(store, rec.id, FULL)
    proposals = run_evaluations(store, rec.id, PROPOSE)
    by_status: dict[str, int] = {}
    for r in full:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    failed_stage: dict[str, int] = {}
    for r in full:
        if r.status not in ("passed", "pending", "running"):
            st = (r.artifacts or {}).get("failed_stage") or "unknown"
            failed_stage[st] = failed_stage.get(st, 0) + 1
    # best: only runtimes that passed `correctness` (a sim-only score is never best)
    passed = [r for r in full if r.status == "passed" and isinstance(
        (r.metrics or {}).get(metric), (int, float)) and (r.metrics or {}).get("confirmed", 1)]
    seed_ids = [i for i, r in runtimes.items() if r.operator == "seed"]
    seed_row = next((r for r in passed if r.runtime_id in seed_ids), None)
    best = max(passed, key=lambda r: sign * r.metrics[metric], default=None)
    seed_v = seed_row.metrics[metric] if seed_row else None
    best_v = best.metrics[metric] if best else None
    seed_tok = _engine(seed_row, "tok_s")
    best_tok = _engine(best, "tok_s")
    events = store.events(rec.id)
    start = next((e.data or {} for e in events if e.kind == "start"), {})
    ends = [e.data or {} for e in events if e.kind in ("session_end", "session_lost")]
    # The latest session's start: its budget is the one in force (a resume may change it),
    # and only a stop after it is this session's (a run in progress has none yet).
    last = max((i for i, e in enumerate(events) if e.kind in ("start", "resume")), default=-1)
    session = events[last].data or {} if last >= 0 else {}
    stops = [e for e in events[last + 1:] if e.kind in ("budget_stop", "stop", "seed_failed")]
    usage = llm_usage(store, rec.id)
    ev = cfg.get("evaluation") or {}
    return {
        "run": rec.name, "run_id": rec.id, "status": rec.status,
        "config_file": start.get("config_file"),
        "target_slots": list((cfg.get("target") or {}).get("slots") or []),
        "operators": sorted((cfg.get("operators") or {}).keys()),
        "llm_models": sorted(((cfg.get("llm") or {}).get("models") or {}).keys()),
        "workload": ",".join(ev.get("workloads") or []),
        "device": ",".join(sorted({r.device for r in full if r.device})) or None,
        "metric": metric,
        "evaluations": sum(v for k, v in by_status.items() if k not in ("pending", "running")),
        "in_flight_or_queued": by_status.get("pending", 0) + by_status.get("running", 0),
        "budget": session.get("max_evaluations",
                              (cfg.get("budget") or {}).get("max_evaluations")),
        "by_status": by_status,
        "proposals_rejected": sum(1 for r in proposals if r.status == "rejected"),
        "duplicates": sum(1 for r in proposals if r.status == "duplicate"),
        "failed_by_stage": failed_stage,
        "runtimes": len(runtimes),
        "best_runtime": best.runtime_id if best else None,
        "best_operator": runtimes[best.runtime_id].operator if best else None,
        f"seed_{metric}": seed_v, f"best_{metric}": best_v,
        "seed_tok_s": seed_tok, "best_tok_s": best_tok,
        # tok/s of best and seed come from separate evaluations (separate processes);
        # `best_ratio` is the best's ratio to the seed measured interleaved in one process.
        "speedup": best_tok / seed_tok if best_tok and seed_tok else None,
        "best_ratio": _engine(best, "ratio"),
        "llm_calls": usage["calls"], "llm_tokens_in": usage["tokens_in"],
        "llm_tokens_out": usage["tokens_out"], "llm_usd": usage["usd"],
        "gpu_s": sum(float(r.duration_s or 0) for r in full
                     if (r.device or "").startswith("cuda")),
        "eval_s": sum(float(r.duration_s or 0) for r in full),
        "wall_s": sum(float(d.get("wall_s", 0.0)) for d in ends),
        "stop_reason": (stops[-1].data or {}).get("reason") if stops else None,
        "events": {k: sum(1 for e in events if e.kind == k)
                   for k in sorted({e.kind for e in events})},
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
        "metrics.evaluations": s["evaluations"],
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
    """A real-engine figure of a `full` row: `key`, or `confirm_<key>` in a sim-fidelity run."""
    if row is None:
        return None
    m = row.metrics or {}
    return m.get(key, m.get(f"confirm_{key}"))
