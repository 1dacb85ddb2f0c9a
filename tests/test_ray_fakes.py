"""Stand-ins that Ray workers import (tests/ is on their PYTHONPATH): a picklable factory of a
fake harness that takes a while, logs each attempt's start and end with its node, and can
take its own Ray worker down (a poisoned candidate) so Ray retries it and then gives up."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from test_controller_fakes import FakeHarness


class LoggingFake(FakeHarness):
    """FakeHarness whose evaluations log `start|end runtime node` lines to a shared file."""

    def __init__(self, delay_s: float, log_path: str | None, poison: int | None,
                 hold_node: str | None = None):
        super().__init__(delay_s=delay_s, fail_rate=0.1)
        self.log_path, self.poison, self.hold_node = log_path, poison, hold_node

    @staticmethod
    def _node() -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def _log(self, what: str, runtime_id: int | None) -> None:
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{what} {runtime_id} {self._node()}\n")

    def evaluate(self, spec: dict[str, Any], *a: Any, **kw: Any) -> Any:
        rid = kw.get("runtime_id")
        self._log("start", rid)
        if rid is not None and rid == self.poison:
            time.sleep(0.2)
            os._exit(1)  # a candidate that takes its worker process down, every time
        if self.hold_node and rid is not None and rid > 1 and self._node() == self.hold_node:
            time.sleep(120)  # a child (not the seed, runtime 1, that all children wait for)
            # stays in flight on this node until the test removes the node
        out = super().evaluate(spec, *a, **kw)
        self._log("end", rid)
        return out


class FakeFactory:
    """Picklable: makes a LoggingFake in each Ray worker (the store argument is unused)."""

    def __init__(self, delay_s: float = 0.3, log_path: str | Path | None = None,
                 poison: int | None = None, hold_node: str | None = None):
        self.delay_s, self.poison, self.hold_node = delay_s, poison, hold_node
        self.log_path = str(log_path) if log_path else None

    def __call__(self, store: Any) -> LoggingFake:
        return LoggingFake(self.delay_s, self.log_path, self.poison, self.hold_node)


def read_log(path: str | Path) -> list[tuple[str, int, str]]:
    """(start|end, runtime id, node id) lines written so far."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] != "None":
            out.append((parts[0], int(parts[1]), parts[2]))
    return out
