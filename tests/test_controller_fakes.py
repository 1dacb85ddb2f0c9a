"""Cheap but realistic stand-ins for the harness and an operator, shared by controller tests.

The fake harness scores a runtime deterministically from its spec fingerprint (so a resumed
run sees the same numbers), fails a fraction of children at a named stage, and takes a
little time, like the real one; the fake operator adds a random comment inside the parent's
EVOLVE-BLOCK (a new code hash), sometimes code the run has (a duplicate), or rejects.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

from evolve.operators.base import MutationContext, Proposal, Rejected
from fitness.result import StageResult
from runtime_modules.slots import RuntimeSpec


@dataclass
class FakeReport:
    stages: list[StageResult]
    metrics: dict[str, Any]
    device: str = "cpu"

    @property
    def status(self) -> str:
        bad = next((s for s in self.stages if s.status != "passed"), None)
        return bad.status if bad else "passed"

    @property
    def failed_stage(self) -> str | None:
        bad = next((s for s in self.stages if s.status != "passed"), None)
        return bad.stage if bad else None


def spec_score(spec: dict[str, Any]) -> float:
    """A number in [0, 1) fixed by the spec."""
    return int(RuntimeSpec.from_dict(spec).fingerprint()[:8], 16) / 2**32


class FakeHarness:
    """Scores specs from their fingerprint; the seed (spec == baseline) always passes."""

    def __init__(self, delay_s: float = 0.01, fail_rate: float = 0.25, flat: bool = False):
        self.delay_s, self.fail_rate, self.flat = delay_s, fail_rate, flat
        self.calls: list[tuple[int | None, str]] = []
        self.parents: dict[int | None, dict[str, str] | None] = {}  # runtime -> parents kwarg

    def evaluate(self, spec: dict[str, Any], stages: tuple[str, ...] = (), workload: str = "",
                 baseline: dict[str, Any] | None = None, runtime_id: int | None = None,
                 run_id: int | None = None, model: str = "tiny", **kw: Any) -> FakeReport:
        time.sleep(self.delay_s)
        self.calls.append((runtime_id, workload))
        self.parents[runtime_id] = kw.get("parents")
        r = spec_score(spec)
        is_seed = baseline is None or spec == baseline
        if not is_seed and r < self.fail_rate:
            return FakeReport([StageResult("static", "passed"),
                               StageResult("contract", "failed", error="budget exceeded: 300 > 256",
                                         artifacts={"step": 3})], {})
        tok_s = 100.0 if (is_seed or self.flat) else 100.0 * (0.5 + r)
        m = {"tok_s": tok_s, "peak_mem": 1e6 * (2.0 - r)}
        return FakeReport([StageResult(s, "passed", duration_s=self.delay_s / 5) for s in stages],
                          m)


class FakeOperator:
    """A comment in the EVOLVE-BLOCK (new code), the parent again (duplicate), or a rejection."""

    name = "fake"

    def __init__(self) -> None:
        # A fixed schedule, not a coin: every run sees rejections and repeats (a random one
        # sometimes drew none in a short run, and tests that require them failed by chance).
        self._calls = itertools.count()

    def propose(self, ctx: MutationContext) -> Proposal | Rejected:
        k = next(self._calls)
        if k % 10 == 9:
            return Rejected("fake", ctx.slot, "no SEARCH/REPLACE blocks in the reply")
        if k % 3 == 2:  # code the run already has: an inspiration's, else a fixed child
            known = [c.code for c in ctx.inspirations if c.code != ctx.parent.code]
            return Proposal("fake", ctx.slot, code=known[0] if known else
                            inside_block(ctx.parent.code, "# variant 0"))
        return Proposal("fake", ctx.slot,
                        code=inside_block(ctx.parent.code, f"# variant {ctx.rng.getrandbits(40)}"))


def inside_block(code: str, line: str) -> str:
    """`code` with `line` added just inside its first EVOLVE-BLOCK (the only place an edit
    may go), or at the end of a module without blocks."""
    lines = code.splitlines(keepends=True)
    for i, row in enumerate(lines):
        if row.strip().startswith("# EVOLVE-BLOCK-START"):
            indent = row[: len(row) - len(row.lstrip())]
            return "".join(lines[: i + 1] + [f"{indent}{line}\n"] + lines[i + 1:])
    return code + f"\n{line}\n"
