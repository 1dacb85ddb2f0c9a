"""Launch or resume a run from a config: store, harness, controller, progress bar, CSV row.

`sds run` is a thin wrapper over `launch`; tests call it directly with a fake harness.

Example:
    outcome, summary = launch(load_config("scripts/quickstart.yaml"), db="sqlite:///x.db")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evolve.config import RunConfig
from evolve.controller import Controller, Outcome
from evolve.executors import make_executor
from evolve.population import FULL, run_evaluations
from evolve.runs_csv import DEFAULT_CSV, append_row, csv_row, run_summary

log = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_harness(cfg: RunConfig, store: Any, device: str) -> Any:
    """The real fitness harness, with the config's timeouts (and thresholds if it takes them)."""
    from fitness import Harness

    # prestart: a run evaluates one child after another, so the next worker's start-up
    # overlaps the current evaluation (fitness/harness.py)
    kwargs: dict[str, Any] = {"store": store, "device": device, "prestart": True,
                              "timeouts": dict(cfg.evaluation.timeouts) or None}
    # The harness passes `options` to its stages (e.g. quick_bench's rejection ratio).
    options = {**cfg.evaluation.options, **cfg.evaluation.thresholds}
    if options:
        kwargs["options"] = options
    return Harness(**kwargs)


class ProgressBar:
    """A tqdm bar: evaluations done / budget, best and gain, rate, failures, dollars."""

    def __init__(self, name: str, enabled: bool = True):
        self.name, self.enabled, self.bar = name, enabled, None

    def __call__(self, s: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = tqdm(total=s["budget"], initial=s["done"], desc=self.name, unit="eval",
                            dynamic_ncols=True)
        self.bar.n = s["done"]
        fails = s["failed_by_stage"]
        done = max(s["done"], 1)
        post = {f"best {s['metric']}": _fmt(s["best"]),
                "gain": f"{s['gain']:.3f}x" if s["gain"] else "-",
                "eval/min": f"{s['per_min']:.1f}",
                "fail": " ".join(f"{k}:{100 * v / done:.0f}%" for k, v in sorted(fails.items()))
                or "0%",
                "$": f"{s['usd']:.2f}"}
        if s.get("llm_failed"):  # failed or unusable LLM replies, as they happen
            post["llm fail"] = s["llm_failed"]
        if s.get("nodes"):  # Ray: evaluations in flight per node
            post["nodes"] = " ".join(f"{k}:{v}" for k, v in sorted(s["nodes"].items()))
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def launch(cfg: RunConfig, name: str | None = None, db: str | None = None,
           harness: Any = None, operators: dict[str, Any] | None = None,
           runs_csv: str | Path | None = DEFAULT_CSV,
           progress: bool = True,
           harness_factory: Any = None) -> tuple[Outcome, dict[str, Any]]:
    """Run (or resume, by name) the config; append its runs.csv row; return the summary.

    With `evaluation.executor: ray`, evaluations are Ray tasks (evolve/executors/), each
    making its harness with `harness_factory` (default: the real one of `make_harness`).
    """
    from population_db import Store

    store = Store.open(db or cfg.db)
    executor = None
    if cfg.evaluation.executor == "ray":  # ConfigError (exit 2) when Ray is not installed
        executor = make_executor(cfg, None, cfg.evaluation.device, harness_factory, store)
        device = executor.device  # auto: cuda when the cluster has GPUs
    else:
        device = resolve_device(cfg.evaluation.device)
    # Tuning trials record their results on the tuned child themselves: a harness with the
    # store would also attach every trial's stages to the evolved programs.
    tune_harness = harness or make_harness(cfg, None, device)
    if harness is None:
        harness = make_harness(cfg, store, device)
    run_name = name or cfg.name or Path(cfg.source).stem
    bar = ProgressBar(run_name, progress)
    try:
        ctl = Controller(cfg, store, harness, name=run_name, operators=operators,
                         device=device, on_progress=bar, executor=executor)
        outcome = ctl.run()
    finally:
        bar.close()
        if executor is not None:
            executor.close(cancel=True)
    if cfg.tune.top_k and outcome.status == "finished":
        tune_best(cfg, store, outcome, tune_harness)
    summary = run_summary(store, outcome.run_id)
    if runs_csv:
        append_row(runs_csv, csv_row(summary))
    return outcome, summary


def tune_best(cfg: RunConfig, store: Any, outcome: Outcome, harness: Any) -> None:
    """Optuna over the top-k runtimes (evolve.tune), or a logged warning if it is absent."""
    try:
        from evolve.tune import tune_runtime
    except ImportError as e:
        log.warning("tune.top_k=%d but evolve.tune is unavailable (%s); skipping tuning",
                    cfg.tune.top_k, e)
        return
    metric, sign = cfg.selection.parsed_objectives()[0]
    passed = [r for r in run_evaluations(store, outcome.run_id, FULL)
              if r.status == "passed" and isinstance((r.metrics or {}).get(metric), (int, float))]
    top = sorted(passed, key=lambda r: -sign * r.metrics[metric])[: cfg.tune.top_k]
    workload = cfg.tune.workload or cfg.evaluation.workloads[0]
    for row in top:
        store.add_event(outcome.run_id, "tune", {"runtime": row.runtime_id,
                                                 "trials": cfg.tune.trials})
        tune_runtime(store, row.runtime_id, trials=cfg.tune.trials, workload=workload,
                     seed=cfg.seed, harness=harness, model=cfg.evaluation.model)
