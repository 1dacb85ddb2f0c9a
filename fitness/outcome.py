"""What a sandboxed worker run means: one StageResult per stage run, never a false pass.

The worker's own result counts for a run only when the channel was not forged and the
process limit was not hit; a run without one is a `timeout` (its deadline passed), a
`crashed` (the worker died, or ended before starting it) or a `rejected` (a forged
channel, a fork bomb). Results stop at the first run that did not pass.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

from fitness.channel import SandboxRun
from fitness.jobs import StageRun
from fitness.result import StageResult


def stage_results(run: SandboxRun, runs: Sequence[StageRun]) -> list[StageResult]:
    """Turn the worker's messages (or their absence) into one result per stage run.

    Each result carries its run's stage name; its error text names the run (`bench@W` for
    a bench stage on another workload), as it always has.
    """
    results = [m for m in run.messages if m.get("type") == "result"]
    starts = [m for m in run.messages if m.get("type") == "start"]
    tails = {"stdout_tail": run.stdout_tail[-2000:], "stderr_tail": run.stderr_tail[-2000:]}
    out: list[StageResult] = []
    for i, sr in enumerate(runs):
        msg = next((m for m in reversed(results) if sr.matches(m)), None)
        started = any(sr.matches(m) for m in starts)
        name, label = sr.name, sr.label
        if run.protocol_error and (started or not out):
            # forged or garbled messages: nothing the worker said about this stage counts
            res = StageResult(name, "rejected", {}, f"{label}: {run.protocol_error} "
                              "(candidate code writing to the result channel?)", tails,
                              run.wall_s)
        elif msg is not None:
            res = StageResult.from_dict({k: v for k, v in msg.items() if k != "type"})
            if run.limit_hit and res.ok:
                res = StageResult(name, "rejected", res.metrics, _limit_error(run),
                                  {**res.artifacts, **tails}, res.duration_s)
        elif run.limit_hit:
            res = StageResult(name, "rejected", {}, _limit_error(run), tails, run.wall_s)
        elif run.timed_out_stage == sr or (run.startup_timed_out and not out):
            res = StageResult(name, "timeout", {}, f"{label}: exceeded its wall-clock limit of "
                              f"{run.timeout_s:g} s; the process group was killed", tails,
                              run.timeout_s or 0.0)
        elif started or not out:
            res = StageResult(name, "crashed", {}, f"{label}: the worker died "
                              f"({_exit_text(run.returncode)}) without reporting a result",
                              {**tails, "returncode": run.returncode}, run.wall_s)
        else:  # every stage before it passed, yet it never started: never report "passed"
            res = StageResult(name, "crashed", {}, f"{label}: the worker ended "
                              f"({_exit_text(run.returncode)}) after {runs[i - 1].label} "
                              "passed, before starting it",
                              {**tails, "returncode": run.returncode}, 0.0)
        if run.forged_messages:
            res.artifacts["ignored_messages"] = run.forged_messages
        out.append(res)
        if not res.ok:
            break
    return out


def _limit_error(run: SandboxRun) -> str:
    """Why a run that hit the process limit counts for nothing."""
    return ("the candidate tried to exceed the process limit (fork bomb?); every process of "
            "the evaluation was killed")


def _exit_text(code: int | None) -> str:
    """A worker's exit status in words (`killed by SIGKILL`, `exit code 2`)."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


__all__ = ["stage_results"]
