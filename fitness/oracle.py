"""The oracle, in the harness's own process: it judges what the worker's engine generated.

The worker runs the candidate and reports its greedy outputs (the `correctness` stage's
prompts, and a sample of the bench workload's requests); the harness teacher-forces them
through transformers in fp32 here, with `fitness.correctness.oracle_check`. The candidate
never shares a process with the oracle, so it can neither patch nor read it, and the
worker does not import transformers (about 2 s per evaluation on the CPU). What is checked
is decided here from the evaluation's seed and options (`prompts_for`, `check_plan`),
never taken from the worker. One oracle model per (model, device) is kept for the life of
the harness; a lock serializes its use across evaluation threads.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from fitness.jobs import StageRun, WorkerJob


class OracleJudge:
    """Applies the oracle's verdict to a worker's `correctness` and `bench` results."""

    def __init__(self, device: str, workdir: str | Path | None = None):
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sds-oracle-"))
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model(self, model: str) -> Any:
        """The fp32 transformers model for `model` (a preset is written once, seeded)."""
        import torch
        from transformers import AutoModelForCausalLM

        from fitness.correctness import model_dir

        if model not in self._models:
            path = model_dir(model, self.workdir)
            self._models[model] = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32).to(self.device).eval()
        return self._models[model]

    def judge(self, job: WorkerJob, run: StageRun, msg: dict[str, Any]) -> dict[str, Any]:
        """The worker's result message `msg` about `run` with the verdict applied (a new dict)."""
        if msg.get("status") != "passed" or run.name not in ("correctness", "bench"):
            return msg
        msg = {**msg, "metrics": dict(msg.get("metrics") or {}),
               "artifacts": dict(msg.get("artifacts") or {})}
        with self._lock:
            if run.name == "correctness":
                return self._correctness(job, msg)
            return self._bench(job, msg, job.workload_of(run))

    def _tie_tol(self, opts: dict[str, Any], key: str | None = None) -> float:
        default = opts.get("tie_tol", 0.1 if self.device == "cuda" else 0.0)
        return float(opts.get(key, default) if key else default)

    def _correctness(self, job: WorkerJob, msg: dict[str, Any]) -> dict[str, Any]:
        from fitness.correctness import MAX_TOKENS, oracle_check, prompts_for

        outs = _token_lists(msg["artifacts"].pop("outputs", None))
        oracle = self.model(job.model or "tiny")
        prompts = prompts_for(job.seed, oracle.config.vocab_size)
        if outs is None or len(outs) != len(prompts):
            return _rejected(msg, f"correctness: the worker reported no outputs for the "
                             f"{len(prompts)} prompts (candidate code tampering with the stage?)")
        metrics, error, where = oracle_check(oracle, prompts, outs, [MAX_TOKENS] * len(prompts),
                                             self._tie_tol(job.options),
                                             self.device)
        msg["metrics"].update(metrics)
        if error:
            msg.update(status="failed", error=error)
            msg["artifacts"].update(where)
        return msg

    def _bench(self, job: WorkerJob, msg: dict[str, Any], name: str | None) -> dict[str, Any]:
        from fitness.benchstage import bench_workload, check_plan
        from fitness.correctness import oracle_check

        opts = job.options
        wl = bench_workload(name, False, opts)
        pick, lens = check_plan(wl, opts, job.seed)
        check = msg["artifacts"].pop("output_check", None)
        msg["metrics"]["output_check_requests"] = len(pick)
        if not pick:
            return msg
        outs = _token_lists((check or {}).get("outputs")) if isinstance(check, dict) else None
        if outs is None or check.get("indices") != pick or len(outs) != len(pick):
            return _rejected(msg, f"bench: the worker reported no greedy outputs for requests "
                             f"{pick} of {wl.name} (candidate code tampering with the stage?)")
        oracle = self.model(job.model or wl.model)
        metrics, error, where = oracle_check(
            oracle, [list(wl.requests[i].prompt_token_ids) for i in pick], outs, lens,
            self._tie_tol(opts, "bench_tie_tol"), self.device)
        msg["metrics"].update({f"output_check_{k}": v for k, v in metrics.items()})
        if error:
            i = pick[where.get("prompt_index", 0)]
            msg.update(status="failed", error=(
                f"greedy output on the bench workload disagrees with the oracle: request {i} "
                f"of {wl.name}: {error.split(': ', 1)[-1]}"))
            msg["artifacts"].update({**where, "request": i})
        return msg


def _token_lists(value: Any) -> list[list[int]] | None:
    """`value` if it is a list of lists of ints, else None."""
    if not isinstance(value, list) or not all(
            isinstance(o, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                        for t in o) for o in value):
        return None
    return value


def _rejected(msg: dict[str, Any], error: str) -> dict[str, Any]:
    msg.update(status="rejected", error=error)
    return msg
