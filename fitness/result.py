"""What an evaluation produces: one StageResult per stage, gathered in an EvalReport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGES = ("static", "contract", "sim", "correctness", "quick_bench", "bench")
SLOT_STAGES = ("static", "contract")  # judged per program; cached by code hash
BENCH_STAGES = ("sim", "quick_bench", "bench")  # the stages that depend on the workload
STATUSES = ("passed", "failed", "timeout", "crashed", "rejected")


@dataclass(frozen=True, slots=True)
class StageResult:
    """The outcome of one stage: status, metrics, error text and artifacts for the next prompt."""

    stage: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"stage {self.stage!r}: status {self.status!r} is not one of "
                             f"{STATUSES}")

    @property
    def ok(self) -> bool:
        """Whether the stage passed."""
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-safe when metrics and artifacts are)."""
        return {"stage": self.stage, "status": self.status, "metrics": self.metrics,
                "error": self.error, "artifacts": self.artifacts,
                "duration_s": self.duration_s}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> StageResult:
        """Inverse of `to_dict`."""
        return StageResult(d["stage"], d["status"], dict(d.get("metrics") or {}),
                           d.get("error"), dict(d.get("artifacts") or {}),
                           float(d.get("duration_s") or 0.0))


@dataclass(slots=True)
class EvalReport:
    """All stages run for one runtime, in order; the first failure ends the list."""

    spec: dict[str, Any]
    stages: list[StageResult] = field(default_factory=list)
    workload: str | None = None
    workload_hash: str | None = None
    device: str = "cpu"

    @property
    def status(self) -> str:
        """`passed` if every stage run passed, else the failing stage's status."""
        failed = self.failed
        return failed.status if failed else "passed"

    @property
    def failed(self) -> StageResult | None:
        """The first stage that did not pass, if any."""
        return next((s for s in self.stages if not s.ok), None)

    @property
    def failed_stage(self) -> str | None:
        """The name of the first stage that did not pass, if any."""
        failed = self.failed
        return failed.stage if failed else None

    @property
    def error(self) -> str | None:
        """The error text of the failing stage, if any."""
        failed = self.failed
        return failed.error if failed else None

    @property
    def metrics(self) -> dict[str, Any]:
        """Every stage's metrics merged (later stages win on equal keys)."""
        merged: dict[str, Any] = {}
        for s in self.stages:
            merged.update(s.metrics)
        return merged

    def stage(self, name: str) -> StageResult | None:
        """The result of stage `name`, if it ran."""
        return next((s for s in self.stages if s.stage == name), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output and storage."""
        return {"status": self.status, "failed_stage": self.failed_stage, "spec": self.spec,
                "workload": self.workload, "workload_hash": self.workload_hash,
                "device": self.device, "metrics": self.metrics,
                "stages": [s.to_dict() for s in self.stages]}
