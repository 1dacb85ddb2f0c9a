"""fitness: sandboxed, staged evaluation of candidate runtimes.

`Harness(store=...).evaluate(spec)` runs `static` in-process and the other stages in a
sandboxed `python -m fitness.worker`; see docs/CONTRACTS.md section 3. Names are imported
lazily so that the worker starts without loading the harness (or SQLAlchemy).
"""

from __future__ import annotations

from typing import Any

from fitness.result import SLOT_STAGES, STAGES, STATUSES, EvalReport, StageResult

__all__ = ["SLOT_STAGES", "STAGES", "STATUSES", "EvalReport", "Harness", "StageResult"]


def __getattr__(name: str) -> Any:
    if name == "Harness":
        from fitness.harness import Harness
        return Harness
    raise AttributeError(f"module 'fitness' has no attribute {name!r}")
