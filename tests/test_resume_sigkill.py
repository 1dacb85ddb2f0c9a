"""Resume: a run SIGKILLed at random points and started again with the same name ends with
exactly its budget of evaluations, none lost (every child evaluated) and none twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from evolve.population import FULL, run_evaluations, run_runtimes
from population_db import Store

TESTS = Path(__file__).resolve().parent
BUDGET = 18

SCRIPT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from test_controller_fakes import FakeHarness, FakeOperator
from evolve.config import config_from_dict
from evolve.launch import launch
cfg = config_from_dict({{
    "target": {{"slots": ["scheduler", "cache_policy"]}},
    "operators": {{"fake": 1}}, "islands": {{"count": 2, "migration_interval": 4}},
    "evaluation": {{"workloads": ["w1"], "device": "cpu"}},
    "budget": {{"max_evaluations": {BUDGET}}},
    "concurrency": {{"max_proposals": 2, "max_evaluations": 3}}}}, "resume.yaml")
launch(cfg, name="resumable", db=sys.argv[1], harness=FakeHarness(delay_s=0.08),
       operators={{"fake": FakeOperator()}}, runs_csv=None, progress=False)
"""


def _final_count(db: str) -> int:
    try:
        store = Store.open(db, create=False)
        run = store.get_run("resumable")
    except Exception:  # noqa: BLE001 - the database or run does not exist yet
        return -1
    n = sum(1 for r in run_evaluations(store, run.id, FULL) if r.status not in
            ("pending", "running"))
    store.close()
    return n


def test_sigkill_then_resume_gives_exactly_the_budget(tmp_path):
    db = f"sqlite:///{tmp_path}/sds.db"
    seed = random.randrange(1 << 30)
    print(f"kill points drawn with random.Random({seed})")
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, db], env=env,
                                start_new_session=True)
        target = rng.randint(1, BUDGET - 4)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if _final_count(db) >= target:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))  # land anywhere: mid-proposal, mid-evaluation
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 1
    proc = subprocess.run([sys.executable, "-c", SCRIPT, db], env=env, timeout=120, check=False)
    assert proc.returncode == 0

    store = Store.open(db)
    run = store.get_run("resumable")
    assert run.status == "finished"
    full = run_evaluations(store, run.id, FULL)
    final = [r for r in full if r.status not in ("pending", "running")]
    assert len(final) == BUDGET, f"{len(final)} evaluations, budget {BUDGET}"
    assert not [r for r in full if r.status in ("pending", "running")]
    per_runtime = [r.runtime_id for r in final]
    assert len(per_runtime) == len(set(per_runtime)), "a runtime was evaluated twice"
    children = [r.id for r in run_runtimes(store, run.id)
                if r.operator not in ("migration", "reseed")]
    assert sorted(children) == sorted(per_runtime), "a child runtime was never evaluated"
    # a kill may land before a session wrote its resume event; the last session always did
    assert 1 <= len(store.events(run.id, "resume")) <= kills
    assert len(store.events(run.id, "start")) == 1
    stops = store.events(run.id, "budget_stop")  # one per session that reached the budget
    assert stops and all(e.data["used"] == e.data["limit"] == BUDGET for e in stops)


def test_ctrl_c_stops_cleanly_then_resumes(tmp_path):
    db = f"sqlite:///{tmp_path}/sds.db"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, db], env=env)
    deadline = time.monotonic() + 60
    while _final_count(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # first Ctrl-C: finish in-flight work, then stop
    assert proc.wait(timeout=60) == 0
    store = Store.open(db)
    run = store.get_run("resumable")
    assert run.status == "stopped"
    assert store.events(run.id, "stop")[-1].data["reason"] == "interrupted"
    stopped_at = _final_count(db)
    assert 3 <= stopped_at < BUDGET
    # in-flight evaluations finished and were recorded: nothing is left running
    assert not [r for r in run_evaluations(store, run.id, FULL) if r.status == "running"]
    subprocess.run([sys.executable, "-c", SCRIPT, db], env=env, timeout=120, check=True)
    assert _final_count(db) == BUDGET and store.get_run("resumable").status == "finished"
