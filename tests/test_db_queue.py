"""An evaluation row's life: pending -> running (held) -> final, written once; and what was in
flight when a controller died goes back to pending, or is given up after max_attempts."""

# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import random

import pytest
from test_db_fixtures import db_url, store  # noqa: F401  (fixtures)

from population_db import LeaseLost, NotFound, Store


def test_start_complete_written_once(store: Store) -> None:
    run, _ = store.get_or_create_run("q")
    rt = store.add_runtime(run.id, {"slots": {}})
    eid = store.enqueue_evaluation(run.id, rt.id)
    got = store.start_evaluation(eid, "ctl-a")
    assert (got.status, got.worker, got.attempt) == ("running", "ctl-a", 1)
    assert got.started_at is not None and got.heartbeat_at is not None
    with pytest.raises(LeaseLost, match="not pending"):
        store.start_evaluation(eid, "ctl-b")
    with pytest.raises(LeaseLost, match="not held by 'ctl-b'"):
        store.complete_evaluation(eid, "passed", worker="ctl-b")
    tok = random.uniform(1, 500)
    done = store.complete_evaluation(eid, "passed", worker="ctl-a", metrics={"tok_s": tok},
                                     duration_s=2.5, device="cpu", node="gpu-node-3")
    assert done.status == "passed" and done.metrics == {"tok_s": tok}
    assert done.worker == "gpu-node-3" and done.finished_at is not None
    with pytest.raises(LeaseLost, match="already passed"):  # a result is written once
        store.complete_evaluation(eid, "failed", error="late duplicate")
    assert store.get_evaluation(eid).metrics == {"tok_s": tok}
    with pytest.raises(ValueError, match="status"):
        store.complete_evaluation(eid, "running")
    with pytest.raises(NotFound):
        store.complete_evaluation(99_999, "passed")
    with pytest.raises(NotFound):
        store.start_evaluation(99_999, "ctl-a")
    assert store.counts(run.id) == {("full", "passed"): 1}


def test_requeue_in_flight_then_give_up(store: Store) -> None:
    run, _ = store.get_or_create_run("crashy")
    other, _ = store.get_or_create_run("bystander")
    rt = store.add_runtime(run.id, {"slots": {}})
    rt2 = store.add_runtime(other.id, {"slots": {}})
    flying, queued, finished = (store.enqueue_evaluation(run.id, rt.id) for _ in range(3))
    foreign = store.enqueue_evaluation(other.id, rt2.id)
    for eid in (flying, finished, foreign):
        store.start_evaluation(eid, "dead-ctl")
    store.complete_evaluation(finished, "passed", worker="dead-ctl")
    assert store.requeue_in_flight(run.id, max_attempts=2) == ([flying], [])
    back = store.get_evaluation(flying)
    assert (back.status, back.attempt, back.worker, back.started_at) == ("pending", 2, None, None)
    assert store.get_evaluation(queued).status == "pending"  # never started: untouched
    assert store.get_evaluation(foreign).status == "running"  # another run's: untouched
    store.start_evaluation(flying, "dead-again")
    assert store.requeue_in_flight(run.id, max_attempts=2) == ([], [flying])
    gone = store.get_evaluation(flying)
    assert gone.status == "crashed" and "2 times" in gone.error
    assert gone.artifacts["failed_stage"] == "controller"
    assert store.requeue_in_flight(run.id) == ([], [])
    store.start_evaluation(queued, "leaving-ctl")  # a controller leaving on its own (Ctrl-C)
    assert store.requeue_in_flight(run.id, crash=False) == ([queued], [])
    assert store.get_evaluation(queued).attempt == 1  # not counted as a crash
    with pytest.raises(ValueError, match="max_attempts"):
        store.requeue_in_flight(run.id, max_attempts=0)
