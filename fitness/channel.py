"""The harness's end of a worker's result channel: reading, checking and judging messages.

The worker (fitness/worker.py) writes one JSON message a line to a dedicated pipe, each
with the run's nonce: `hello`, then for each of the job's runs `start` and one `result`
(both naming the run by `stage` and `workload`, see fitness/jobs.py), stopping after the
first result that did not pass, then `done`. `pump` reads that pipe and the worker's
stdout and stderr until the worker ends, a stage's deadline passes, the process limit is
hit, a message breaks the protocol (candidate code forging the channel) or the harness's
judge fails a result; what it saw is left in a `SandboxRun`.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fitness.jobs import StageRun
from fitness.proctrack import ProcessTracker

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
MAX_MESSAGE_BYTES = 8 << 20
DEFAULT_STAGE_TIMEOUT_S = 60.0  # a stage missing from the timeouts given
# the harness's verdict on one result message of a run (fitness/oracle.py): a new message
Judge = Callable[[StageRun, dict[str, Any]], dict[str, Any]]


@dataclass(slots=True)
class SandboxRun:
    """What one sandboxed worker run produced."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    timed_out_stage: StageRun | None = None  # the run that exceeded its wall-clock limit
    startup_timed_out: bool = False  # no stage had started when the deadline passed
    timeout_s: float | None = None
    limit_hit: bool = False
    stdout_tail: str = ""
    stderr_tail: str = ""
    isolation: dict[str, Any] = field(default_factory=dict)
    stragglers: int = 0
    forged_messages: int = 0
    protocol_error: str | None = None
    judged_failure: bool = False  # the harness's oracle failed a stage the worker passed
    wall_s: float = 0.0
    marker: str = ""


class _Tail:
    """The last TAIL_BYTES of an output stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 2 * TAIL_BYTES:
            del self.buf[:-TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.buf[-TAIL_BYTES:]).decode("utf-8", "replace")


def protocol_violation(seen: list[dict[str, Any]], msg: dict[str, Any],
                       runs: Sequence[StageRun]) -> str | None:
    """None if `msg` may follow `seen`, else why not.

    The worker says hello, then for each run of the job in order `start` then one
    `result`, stopping after the first result that did not pass, then `done`. Anything
    else (a result for a stage not running, a second result, a skipped stage, messages
    after the end) is candidate code forging the channel.
    """
    kind = msg.get("type")
    flow = [m for m in seen if m.get("type") in ("start", "result", "done")]
    last = flow[-1] if flow else None
    if kind == "hello":
        return None if not seen else "a second hello"
    if not seen:
        return f"a {kind} message before hello"
    if kind not in ("start", "result", "done"):
        return f"an unknown message type {kind!r}"
    if last is not None and last.get("type") == "done":
        return f"a {kind} message after done"
    if kind == "start":
        done = sum(m.get("type") == "start" for m in flow)
        if last is not None and (last.get("type") != "result" or last.get("status") != "passed"):
            return f"start of {_shown(msg)!r} while {_shown(last)!r} has no passing result"
        if done >= len(runs) or not runs[done].matches(msg):
            want = runs[done].label if done < len(runs) else "nothing"
            return f"start of {_shown(msg)!r} where the job runs {want!r} next"
        return None
    if kind == "result":
        if last is None or last.get("type") != "start" or _named(last) != _named(msg):
            return f"a result for {_shown(msg)!r}, which is not the stage running"
        return None
    if last is not None and last.get("type") == "start":
        return f"done while {_shown(last)!r} has no result"
    return None


def _named(msg: dict[str, Any]) -> tuple[Any, Any]:
    """The run a channel message is about, as the message gives it."""
    return msg.get("stage"), msg.get("workload")


def _shown(msg: dict[str, Any]) -> Any:
    """The run a channel message names, as error texts show it (`StageRun.label`'s form)."""
    stage, workload = _named(msg)
    return stage if workload is None else f"{stage}@{workload}"


class _Reader:
    """The result channel of one run: splits lines, checks each message, keeps the deadline."""

    def __init__(self, nonce: str, runs: Sequence[StageRun], timeouts: dict[str, float],
                 startup_s: float, run: SandboxRun, judge: Judge | None):
        self.nonce, self.runs, self.timeouts, self.run, self.judge = \
            nonce, runs, timeouts, run, judge
        self.startup_s = startup_s
        self.buf = bytearray()
        self.stage: StageRun | None = None  # the run started last
        self.deadline = time.monotonic() + startup_s

    @property
    def stopped(self) -> bool:
        """Whether what came over the channel ends the run (forged or judged failed)."""
        return bool(self.run.protocol_error or self.run.judged_failure)

    def feed(self, data: bytes) -> None:
        """Take bytes from the channel; handle each complete line, until one ends the run."""
        self.buf += data
        *lines, rest = bytes(self.buf).split(b"\n")
        self.buf = bytearray(rest[-MAX_MESSAGE_BYTES:])
        for line in lines:
            msg = _parse(line, self.nonce, self.run)
            if msg is not None:
                self._accept(msg)
                if self.stopped:
                    return

    def _accept(self, msg: dict[str, Any]) -> None:
        """Check `msg` against the protocol, act on it and keep it (unless it is forged)."""
        why = protocol_violation(self.run.messages, msg, self.runs)
        if why:
            self.run.protocol_error = f"the worker broke the result protocol: {why}"
            return
        kind = msg.get("type")
        if kind == "start":
            self.stage = self.runs[sum(m.get("type") == "start" for m in self.run.messages)]
            self.deadline = time.monotonic() + self._limit(self.stage)
        elif kind == "hello":
            self.run.isolation = msg.get("isolation", {})
        elif kind == "result" and self.judge is not None:
            assert self.stage is not None  # the protocol put a start first
            msg = _judged(self.judge, self.stage, msg)
            self.run.judged_failure = msg.get("status") != "passed"
        self.run.messages.append(msg)

    def _limit(self, stage: StageRun) -> float:
        return float(self.timeouts.get(stage.name, DEFAULT_STAGE_TIMEOUT_S))

    def expired(self, now: float) -> bool:
        """Whether the running stage (or the start-up) is past its deadline; records it."""
        if now <= self.deadline:
            return False
        self.run.timed_out_stage = self.stage
        self.run.startup_timed_out = self.stage is None
        self.run.timeout_s = self._limit(self.stage) if self.stage else self.startup_s
        return True


def pump(proc: subprocess.Popen, r_fd: int, nonce: str, timeouts: dict[str, float],
         startup_s: float, tracker: ProcessTracker, run: SandboxRun,
         runs: Sequence[StageRun], judge: Judge | None = None) -> None:
    """Read messages and output until the worker ends, a deadline passes or a limit is hit.

    `timeouts` holds each stage's wall-clock limit by stage name (whatever its workload);
    start-up, up to the first `start`, has `startup_s`.
    """
    reader = _Reader(nonce, runs, timeouts, startup_s, run, judge)
    sel = selectors.DefaultSelector()
    tails = {"out": _Tail(), "err": _Tail()}
    sel.register(r_fd, selectors.EVENT_READ, "msg")
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    exited_at = None
    try:
        while sel.get_map():
            for key, _ in sel.select(timeout=0.1):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                elif key.data == "msg":
                    reader.feed(data)
                    if reader.stopped:
                        break
                else:
                    tails[key.data].add(data)
            now = time.monotonic()
            if reader.stopped:
                break
            if tracker.limit_hit():
                run.limit_hit = True
                break
            if reader.expired(now):
                break
            if proc.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > 0.3:  # an escaped descendant may hold the pipes open
                    break
    finally:
        sel.close()
        run.stdout_tail, run.stderr_tail = tails["out"].text(), tails["err"].text()


def _judged(judge: Judge, stage: StageRun, msg: dict[str, Any]) -> dict[str, Any]:
    """`judge(stage, msg)`; a judge that raises turns the stage into `crashed`, saying so."""
    try:
        return judge(stage, msg)
    except Exception as e:
        log.exception("the oracle failed on stage %s", stage.label)
        return {**msg, "status": "crashed",
                "error": f"{stage.label}: the harness's oracle raised "
                         f"{type(e).__name__}: {e}"}


def _parse(line: bytes, nonce: str, run: SandboxRun) -> dict[str, Any] | None:
    """The message on `line` if it is a JSON object with the run's nonce (removed), else
    None, counted as forged."""
    try:
        msg = json.loads(line)
    except ValueError:
        run.forged_messages += 1
        return None
    if not isinstance(msg, dict) or msg.pop("nonce", None) != nonce:
        run.forged_messages += 1
        return None
    return msg


__all__ = ["DEFAULT_STAGE_TIMEOUT_S", "Judge", "SandboxRun", "protocol_violation", "pump"]
