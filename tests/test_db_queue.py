"""The evaluation work queue's contract: claim order, heartbeat, completion, lost leases."""

# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import random

import pytest
from test_db_fixtures import db_url, store  # noqa: F401  (fixtures)

from population_db import LeaseLost, NotFound, Store


def test_claim_heartbeat_complete(store: Store) -> None:
    run, _ = store.get_or_create_run("q")
    other, _ = store.get_or_create_run("q2")
    rt = store.add_runtime(run.id, {"slots": {}})
    rt2 = store.add_runtime(other.id, {"slots": {}})
    ids = [store.enqueue_evaluation(run.id, rt.id, stage=s) for s in ("full", "bench", "full")]
    foreign = store.enqueue_evaluation(other.id, rt2.id)
    got = store.claim_evaluation("w1", lease_s=30, run_id=run.id, stage="bench")
    assert got.id == ids[1] and got.status == "running" and got.worker == "w1"
    first = store.claim_evaluation("w2", lease_s=30, run_id=run.id)
    assert first.id == ids[0]  # oldest pending first
    assert store.heartbeat(first.id, "w2", lease_s=90)
    assert store.get_evaluation(first.id).lease_expires_at > first.lease_expires_at
    assert not store.heartbeat(first.id, "w1", lease_s=90)  # not w1's claim
    with pytest.raises(LeaseLost, match="not held by 'w1'"):
        store.complete_evaluation(first.id, "passed", worker="w1")
    tok = random.uniform(1, 500)
    done = store.complete_evaluation(first.id, "passed", worker="w2", metrics={"tok_s": tok},
                                     duration_s=2.5, device="cpu")
    assert done.status == "passed" and done.metrics == {"tok_s": tok}
    assert done.finished_at is not None and done.lease_expires_at is None
    assert not store.heartbeat(first.id, "w2", lease_s=30)  # finished: nothing to extend
    with pytest.raises(ValueError, match="status"):
        store.complete_evaluation(got.id, "running")
    with pytest.raises(NotFound):
        store.complete_evaluation(99_999, "passed")
    assert store.claim_evaluation("w3", lease_s=30, run_id=run.id).id == ids[2]
    assert store.claim_evaluation("w3", lease_s=30, run_id=run.id) is None
    assert store.claim_evaluation("w3", lease_s=30).id == foreign
    assert store.claim_evaluation("w3", lease_s=30) is None
    with pytest.raises(ValueError, match="lease_s"):
        store.claim_evaluation("w3", lease_s=0)
    assert store.counts(run.id) == {("full", "passed"): 1, ("full", "running"): 1,
                                    ("bench", "running"): 1}
