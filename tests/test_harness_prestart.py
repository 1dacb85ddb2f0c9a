"""The worker started ahead for the next evaluation: used once, replaced when it died while
waiting, and stopped with the harness."""

from __future__ import annotations

import os
import signal
import time

from fitness import sandbox
from fitness.harness import Harness
from fitness.proctrack import marker_pids

SPEC = {"slots": {"scheduler": {"program": "seed:scheduler/priority"}}}


def _spy(monkeypatch):
    used = []
    real = sandbox.run_worker

    def run(job, timeouts, **k):
        used.append(k.get("worker"))
        return real(job, timeouts, **k)

    monkeypatch.setattr("fitness.harness.run_worker", run)
    return used


def test_the_next_evaluation_runs_on_the_worker_started_ahead(monkeypatch):
    used = _spy(monkeypatch)
    h = Harness(device="cpu", prestart=True)
    first = h.evaluate(SPEC, stages=("contract",))
    assert h._spare == []  # a harness used once starts nothing ahead
    second = h.evaluate(SPEC, stages=("contract", "correctness"))
    spare = h._spare[0]
    third = h.evaluate(SPEC, stages=("correctness",))
    assert first.status == second.status == third.status == "passed", third.to_dict()
    assert used[:2] == [None, None] and used[2] is spare  # started ahead, then used
    assert spare.r_fd == -1 and spare.proc.poll() is not None  # used once, then ended
    h.close()
    assert not h._spare


def test_a_spare_that_died_while_waiting_is_replaced_and_close_stops_the_rest():
    h = Harness(device="cpu", prestart=True)
    for stages in (("contract",), ("correctness",)):
        assert h.evaluate(SPEC, stages=stages).status == "passed"
    spare = h._spare[0]
    deadline = time.monotonic() + 30
    while not marker_pids(spare.marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(spare.proc.pid, signal.SIGKILL)  # as if the OOM killer took it while idle
    spare.proc.wait(timeout=10)
    report = h.evaluate(SPEC, stages=("contract", "correctness"))  # contract alone: cached
    assert report.status == "passed", report.to_dict()  # not blamed on the candidate
    assert spare.r_fd == -1  # discarded
    nxt = h._spare[0]
    h.close()
    assert nxt.proc.poll() is not None and not marker_pids(nxt.marker)
    assert not nxt.workdir.exists()


def test_prestart_is_off_by_default():
    h = Harness(device="cpu")
    for stages in (("contract",), ("correctness",)):
        assert h.evaluate(SPEC, stages=stages).status == "passed"
    assert h._spare == []
