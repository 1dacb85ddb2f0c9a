"""Crash safety and concurrency: SIGKILLed SQLite writers, parallel writers (racing controllers
for one run lease: tests/test_run_lease.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from population_db import Store

# A child process: open the store, wait for "go" on stdin, then act per argv[2].
WORKER = r"""
import json, random, sys, time
from population_db import Store
url, mode, name = sys.argv[1], sys.argv[2], sys.argv[3]
st = Store.open(url)
print("ready", flush=True)
sys.stdin.readline()
rng = random.Random(name)  # the writer's name: replayable
if mode == "stream":        # insert until killed, printing each committed id
    i = 0
    while True:
        p = st.add_program("rmsnorm", f"# {name} {i} {rng.random()!r}\nX = 1\n")
        print(p.id, flush=True)
        i += 1
elif mode == "write":       # N programs, runtimes and evaluations
    run = st.get_run("conc")
    for i in range(int(sys.argv[4])):
        p = st.add_program("scheduler", f"# {name} {i} {rng.random()!r}\n", run_id=run.id)
        rt = st.add_runtime(run.id, {"slots": {"scheduler": {"program": p.ref}}})
        st.add_evaluation(stage="bench", status="passed", runtime_id=rt.id,
                          metrics={"tok_s": rng.random()})
"""


def _spawn(url: str, mode: str, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, mode, name, *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _go(procs: list[subprocess.Popen]) -> None:
    """Wait until every process has opened the store, then release them together."""
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


def test_sigkill_mid_stream_keeps_every_commit(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/crash.db"
    Store.open(url).close()
    proc = _spawn(url, "stream", "w")
    _go([proc])
    committed = []
    while len(committed) < 200:
        committed.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    con = sqlite3.connect(tmp_path / "crash.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in con.execute("SELECT id FROM programs")}
    con.close()
    assert set(committed) <= stored
    st = Store.open(url)  # and the store opens it again and can write
    assert st.add_program("rmsnorm", f"Y = {time.time()!r}\n").is_new
    st.close()


def test_four_sqlite_writers_lose_nothing(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/conc.db"
    st = Store.open(url)
    run, _ = st.get_or_create_run("conc")
    n = 30
    procs = [_spawn(url, "write", f"w{k}", str(n)) for k in range(4)]
    _go(procs)
    reads = 0
    while any(p.poll() is None for p in procs):  # read while they write
        st.leaderboard(run.id, limit=5)
        st.counts(run.id)
        reads += 1
    for p in procs:
        p.stdout.close()
        p.stdin.close()
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert reads > 0
    assert st.counts(run.id) == {("bench", "passed"): 4 * n}
    assert st.run_summary(run.id)["programs"] == 4 * n
    assert len(st.leaderboard(run.id, limit=None)) == 4 * n
    st.close()
