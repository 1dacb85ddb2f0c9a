"""Feedback on failed attempts that the model can act on, kept per island and slot.

A prompt for slot S shows only what a model editing S could have done differently:
children whose S code failed a stage (the stage, the error, and the lines of the failing
child the error points at), LLM replies for S that could not be used (an unmatched SEARCH
text, a syntax error, a truncated reply) and proposals that repeated a runtime the run
already has, with that runtime's result. Transport failures, budget refusals, other
slots' failures and the offline operators' internal rejections are not shown: the model
can fix none of them.

Example:
    book = FailureBook()
    book.child_failed(0, {"scheduler": code}, "contract: 'return' outside function", arts)
    book.recent(0, "scheduler")   # -> ("stage `contract` failed: ...\\n  > 12| ...",)
"""

from __future__ import annotations

import difflib
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime_modules.slots import code_hash

MAX_NOTES = 8  # per island and slot, newest last
MAX_ERROR_CHARS = 500  # of one error message
MAX_CODE_LINES = 9  # lines of the failing child quoted per note
MAX_DIFF_LINES = 14  # lines of a duplicate proposal's change


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split()) if "\n" not in text.strip() else text.strip()
    return text if len(text) <= limit else text[:limit] + f" ... ({len(text) - limit} more chars)"


def _error_head(error: str) -> str:
    """The message of an error, not its whole traceback: the exception line."""
    lines = [ln for ln in (error or "").strip().splitlines() if ln.strip()]
    if any("Traceback (most recent call last)" in ln for ln in lines):
        tail = [ln for ln in lines
                if not ln.startswith((" ", "\t")) and "Traceback (most recent" not in ln]
        return tail[-1].strip() if tail else lines[-1].strip()
    return " ".join(ln.strip() for ln in lines[:4])


def pointed_lines(code: str, error: str, artifacts: dict[str, Any] | None) -> list[int]:
    """Line numbers of `code` the error points at: traceback frames in the program's own
    file (named by its sha256), else a `line` the stage reported."""
    text = (error or "") + "\n" + json.dumps(artifacts or {}, default=str)
    h = code_hash(code)
    found = [int(n) for n in re.findall(rf'{h}\.py\\?", line (\d+)', text)]
    if not found:
        arts = artifacts or {}
        inner = arts.get("stage_artifacts") if isinstance(arts.get("stage_artifacts"), dict) \
            else {}
        line = arts.get("line") or inner.get("line")
        if isinstance(line, int):
            found = [line]
    n = len(code.splitlines())
    return sorted({k for k in found if 1 <= k <= n})[-2:]  # the innermost frames


def quote_lines(code: str, lines: list[int], radius: int = 2) -> str:
    """The code around `lines`, numbered, the pointed lines marked with `>`."""
    src = code.splitlines()
    shown: list[int] = []
    for k in lines:
        shown += [j for j in range(max(1, k - radius), min(len(src), k + radius) + 1)
                  if j not in shown]
    shown = sorted(shown)[:MAX_CODE_LINES]
    return "\n".join(f"  {'>' if j in lines else ' '}{j:4d}| {src[j - 1]}" for j in shown)


def change_summary(parent_code: str, child_code: str) -> str:
    """The child's change as a short unified diff (changed lines and one line of context)."""
    diff = difflib.unified_diff(parent_code.splitlines(), child_code.splitlines(), lineterm="",
                                n=1)
    body = [ln for ln in diff if not ln.startswith(("---", "+++"))]
    if len(body) > MAX_DIFF_LINES:
        body = body[:MAX_DIFF_LINES] + [f"... ({len(body) - MAX_DIFF_LINES} more diff lines)"]
    return "\n".join("  " + ln for ln in body)


def describe_result(status: str | None, metrics: dict[str, Any] | None, error: str | None,
                    metric: str) -> str:
    """A runtime's outcome in a few words: `passed, modeled_ratio 1.012`, `failed at ...`."""
    if status is None or status in ("pending", "running"):
        return "not evaluated yet"
    if status == "passed":
        v = (metrics or {}).get(metric)
        return f"passed, {metric} {v:.4g}" if isinstance(v, (int, float)) else "passed"
    return f"{status}: {_clip(_error_head(error or ''), 200)}"


@dataclass(frozen=True)
class _Duplicate:
    """A repeated change; its earlier runtime's result is read when a prompt is built (it
    may not have been evaluated when the repeat came in)."""

    change: str
    result: Callable[[], str] = field(compare=False)
    runtime: int | None = None

    def text(self) -> str:
        note = f"this change was already tried: result {self.result()}"
        return note + ("\n" + self.change if self.change.strip() else "")


class FailureBook:
    """Recent actionable failures per (island, slot), as prompt-ready notes."""

    def __init__(self, max_notes: int = MAX_NOTES):
        self.max_notes = max_notes
        self._notes: dict[tuple[int, str], deque[str | _Duplicate]] = {}

    def _add(self, island: int, slot: str, note: str | _Duplicate) -> None:
        q = self._notes.setdefault((island, slot), deque(maxlen=self.max_notes))
        if note not in q:  # the same failure twice teaches nothing new
            q.append(note)

    def recent(self, island: int, slot: str) -> tuple[str, ...]:
        """The notes for a prompt editing `slot` on `island`, oldest first."""
        return tuple(n if isinstance(n, str) else n.text()
                     for n in self._notes.get((island, slot), ()))

    def child_failed(self, island: int, codes: dict[str, str], error: str | None,
                     artifacts: dict[str, Any] | None) -> None:
        """A child failed a stage; `codes` holds the code of each slot its mutation changed."""
        arts = artifacts or {}
        stage = arts.get("failed_stage") or "evaluation"
        msg = _error_head(error or "")
        prefix = f"{stage}: "
        msg = msg.removeprefix(prefix)
        wl = f" on workload `{arts['workload']}`" if arts.get("workload") else ""
        for slot, code in codes.items():
            note = f"a child's code failed stage `{stage}`{wl}: {_clip(msg, MAX_ERROR_CHARS)}"
            lines = pointed_lines(code, error or "", arts)
            if lines:
                note += "\n  the failing child's lines:\n" + quote_lines(code, lines)
            self._add(island, slot, note)

    def rejected(self, island: int, slot: str, operator: str, reason: str) -> None:
        """A reply for `slot` could not be used (only replies the model can fix belong here)."""
        self._add(island, slot, f"a reply ({operator}) was rejected: "
                                f"{_clip(reason, MAX_ERROR_CHARS)}")

    def duplicate(self, island: int, slot: str, change: str, result: Callable[[], str],
                  runtime: int | None = None) -> None:
        """A proposal repeated `runtime`, which the run already has; `result()` describes
        that runtime's outcome as it stands when a prompt is built."""
        self._add(island, slot, _Duplicate(change, result, runtime))
