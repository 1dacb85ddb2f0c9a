"""What the harness asks of its sandboxed worker: a `WorkerJob` made of `StageRun`s.

The harness builds a WorkerJob, sends `to_dict()` as JSON down the worker's job pipe, and
the worker rebuilds it with `WorkerJob.from_dict`. A stage that runs on another workload
than the job's own (the bench stages of a multi-workload evaluation) says so in
`StageRun.workload`; its `name` is always a plain stage name, the one that is recorded.
On the result channel each `start` and `result` message names its run with the same two
fields (`stage`, `workload`: `StageRun.to_dict`), so no side has to parse a stage name.

This module imports nothing of the harness, the engine or torch: the worker loads it at
start-up, before any candidate code.

Example:
    job = WorkerJob(runs=(StageRun("bench"), StageRun("bench", "kv-pressure-cpu")),
                    spec=spec, workload="nanovllm-bench-cpu")
    WorkerJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StageRun:
    """One stage for the worker to run: on the job's workload, or on `workload` instead."""

    name: str
    workload: str | None = None  # None: the job's own workload

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"StageRun.name must be a stage name, got {self.name!r}")
        if self.workload is not None and (not isinstance(self.workload, str)
                                          or not self.workload):
            raise ValueError(f"StageRun({self.name!r}).workload must be a workload name or "
                             f"None, got {self.workload!r}")

    @property
    def label(self) -> str:
        """How error texts name this run: `bench`, or `bench@W` on workload W (display only)."""
        return self.name if self.workload is None else f"{self.name}@{self.workload}"

    def to_dict(self) -> dict[str, Any]:
        """The run's fields as they travel: in the job and in each channel message about it."""
        return {"stage": self.name, "workload": self.workload}

    def matches(self, msg: dict[str, Any]) -> bool:
        """Whether a channel message (`start` or `result`) is about this run."""
        return msg.get("stage") == self.name and msg.get("workload") == self.workload

    @staticmethod
    def from_dict(d: dict[str, Any]) -> StageRun:
        """Inverse of `to_dict`."""
        return StageRun(d["stage"], d.get("workload"))


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """One sandboxed worker run: its stage runs, in order, and what they all share."""

    runs: tuple[StageRun, ...]
    spec: dict[str, Any]                      # the resolved RuntimeSpec, every slot filled
    slots: tuple[str, ...] = ()               # the slots the slot-level stages test
    device: str = "cpu"
    model: str = "tiny"
    workload: str | None = None               # of every run that names none of its own
    seed: int = 0                             # drawn per evaluation: prompts, checked requests
    baseline: dict[str, Any] | None = None    # the resolved baseline spec of the bench stages
    options: dict[str, Any] = field(default_factory=dict)  # evaluation options, as given

    def __post_init__(self) -> None:
        if not isinstance(self.runs, tuple) or not all(isinstance(r, StageRun)
                                                       for r in self.runs):
            raise TypeError(f"WorkerJob.runs must be a tuple of StageRun, got {self.runs!r}")
        if not isinstance(self.slots, tuple):
            raise TypeError(f"WorkerJob.slots must be a tuple of slot names, got {self.slots!r}")

    @property
    def stage_names(self) -> list[str]:
        """The stage name of each run, in order (a stage repeats once per extra workload)."""
        return [r.name for r in self.runs]

    def workload_of(self, run: StageRun) -> str | None:
        """The workload `run` runs on: its own, else the job's."""
        return run.workload or self.workload

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data for the job pipe (when spec and options are)."""
        return {"runs": [r.to_dict() for r in self.runs], "spec": self.spec,
                "slots": list(self.slots), "device": self.device, "model": self.model,
                "workload": self.workload, "seed": self.seed, "baseline": self.baseline,
                "options": self.options}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> WorkerJob:
        """Inverse of `to_dict`."""
        return WorkerJob(runs=tuple(StageRun.from_dict(r) for r in d["runs"]), spec=d["spec"],
                         slots=tuple(d.get("slots") or ()), device=d.get("device", "cpu"),
                         model=d.get("model", "tiny"), workload=d.get("workload"),
                         seed=int(d.get("seed", 0)), baseline=d.get("baseline"),
                         options=dict(d.get("options") or {}))


__all__ = ["StageRun", "WorkerJob"]
