"""The run lease: one controller per run. A live holder refuses others; a dead one (its
process gone, or its lease run out) is taken over; racing controllers get exactly one lease;
a holder that was taken over from learns it (`lost`) instead of writing on."""

# ruff: noqa: F811  (pytest fixtures imported from test_db_fixtures are parameters here)

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_db_fixtures import BACKENDS, db_url, store  # noqa: F401  (fixtures)

from evolve.runlease import RunLease, owner_id, owner_is_dead
from population_db import Store
from population_db.models import utcnow
from population_db.queue import RunLeased

pytestmark = pytest.mark.timeout(120)


def test_live_holder_refuses_dead_or_expired_is_taken_over(store: Store) -> None:
    run, _ = store.get_or_create_run("leased")
    assert store.acquire_run_lease(run.id, "a", lease_s=60) is None
    assert store.acquire_run_lease(run.id, "a", lease_s=60) is None  # its own: renewed
    with pytest.raises(RunLeased, match="driven by another controller \\(a\\)"):
        store.acquire_run_lease(run.id, "b", lease_s=60)
    assert store.acquire_run_lease(run.id, "b", 60, is_dead=lambda o: o == "a") == "a"
    assert store.run_lease(run.id)[0] == "b"
    assert not store.renew_run_lease(run.id, "a", 60)  # taken over: a learns it
    rt = store.add_runtime(run.id, {"slots": {}})
    eid = store.enqueue_evaluation(run.id, rt.id)
    first = store.start_evaluation(eid, "b")
    time.sleep(0.05)
    assert store.renew_run_lease(run.id, "b", lease_s=0.2)
    assert store.get_evaluation(eid).heartbeat_at > first.heartbeat_at  # in flight: renewed
    time.sleep(0.4)  # b stopped renewing: expired
    assert store.acquire_run_lease(run.id, "c", lease_s=60) == "b"
    assert not store.release_run_lease(run.id, "b")
    assert store.release_run_lease(run.id, "c")
    assert store.run_lease(run.id) == (None, None)
    assert store.acquire_run_lease(run.id, "d", lease_s=60) is None
    with pytest.raises(ValueError, match="lease_s"):
        store.acquire_run_lease(run.id, "d", lease_s=0)


def test_owner_liveness_by_pid_and_start_time() -> None:
    me = owner_id()
    host, pid, start, _ = me.split(":")
    assert pid == str(os.getpid()) and start != "?"
    assert not owner_is_dead(me)  # this process
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = f"{host}:{proc.pid}:{_start(proc.pid)}:abc123"
        assert not owner_is_dead(other)
        assert owner_is_dead(f"{host}:{proc.pid}:1:abc123")  # same pid, another process
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert owner_is_dead(other)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not owner_is_dead(f"another-host-xyz:{proc.pid}:1:abc123")  # unknown: not dead
    assert not owner_is_dead("garbage")


def _start(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return f.read().rpartition(")")[2].split()[19]


RACER = r"""
import sys
from population_db import Store
from population_db.models import utcnow
from population_db.queue import RunLeased
st = Store.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    st.acquire_run_lease(1, sys.argv[2], lease_s=60)
    print("won", flush=True)
except RunLeased:
    print("refused", flush=True)
"""


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_racing_controllers_get_one_lease(db_url: str) -> None:
    st = Store.open(db_url)
    run, _ = st.get_or_create_run("race")
    assert run.id == 1
    procs = [subprocess.Popen([sys.executable, "-c", RACER, db_url, f"ctl{k}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for k in range(4)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # release them together
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(outs) == ["refused"] * 3 + ["won"], outs
    winner = f"ctl{outs.index('won')}"
    assert st.run_lease(run.id)[0] == winner
    st.close()


def test_run_lease_thread_renews_and_notices_takeover(store: Store) -> None:
    run, _ = store.get_or_create_run("renewed")
    # renewed every lease_s / 3: a renewal may be up to 2 s late on a busy machine
    lease = RunLease(store, run.id, lease_s=3.0)
    assert lease.acquire() is None
    with pytest.raises(RunLeased):
        RunLease(store, run.id).acquire()
    time.sleep(4.0)  # longer than the lease: only the renewals keep it
    owner, until = store.run_lease(run.id)
    assert owner == lease.owner and until > utcnow() and not lease.lost
    store.acquire_run_lease(run.id, "usurper", 60, is_dead=lambda o: True)
    deadline = time.monotonic() + 10
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lease.lost
    lease.release()  # not its lease any more: the usurper keeps it
    assert store.run_lease(run.id)[0] == "usurper"
