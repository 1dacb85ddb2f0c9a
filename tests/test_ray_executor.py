"""Evaluations as Ray tasks on a local 3-node cluster (ray.cluster_utils, loopback only).

A run of 30 real `sim` evaluations spreads over the nodes and ends with exactly 30, none
twice; a node killed mid-run loses nothing (its evaluation is retried on another node) while
a candidate that kills its worker every time is retried, then recorded `crashed` with the
reason; a SIGKILLed controller resumes by name, taking over its dead lease at once, losing
and doubling nothing; a second controller on a live run is refused with one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")

from ray.cluster_utils import Cluster
from test_controller_fakes import FakeOperator
from test_ray_fakes import FakeFactory, read_log

from evolve.config import config_from_dict
from evolve.executors import node_counts
from evolve.launch import launch
from evolve.population import FULL, run_evaluations
from population_db import Store

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
MB = 1024 * 1024
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster():
    """A head (no CPUs: it only schedules) and 3 one-CPU nodes; this process is the driver."""
    paths = [str(TESTS), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    os.environ["PYTHONPATH"] = ":".join(dict.fromkeys(paths))  # the workers import the fakes
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 80 * MB, "include_dashboard": False})
    for _ in range(3):
        c.add_node(num_cpus=1, object_store_memory=80 * MB)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _cfg(budget: int, stages: list[str], **extra):
    raw = {"target": {"slots": ["scheduler"]}, "operators": {"fake": 1},
           "evaluation": {"stages": stages, "workloads": ["kv-pressure-cpu"], "device": "cpu",
                          "executor": "ray", "confirm": {"when": "never"}},
           "budget": {"max_evaluations": budget},
           "concurrency": {"max_proposals": 4},
           "ray": {"max_retries": 2}, **extra}
    return config_from_dict(raw, "ray.yaml")


def _finals(store: Store, name: str) -> list:
    run = store.get_run(name)
    return [r for r in run_evaluations(store, run.id, FULL)
            if r.status not in ("pending", "running")]


def _count(db: str) -> int:
    """Final evaluations of the run `resumable` so far (-1: no database or run yet)."""
    try:
        store = Store.open(db, create=False)
    except Exception:  # noqa: BLE001 - not created yet
        return -1
    try:
        return len(_finals(store, "resumable"))
    except Exception:  # noqa: BLE001 - the run is not created yet
        return -1
    finally:
        store.close()


def _label(node_id: str) -> str:
    import socket

    return f"{socket.gethostname()}/{node_id[:6]}"


def test_thirty_evaluations_spread_over_the_nodes_each_once(cluster, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/sds.db"
    out, _ = launch(_cfg(30, ["static", "contract", "bench"]), name="spread", db=db,
                    operators={"fake": FakeOperator()}, runs_csv=None, progress=False,
                    harness_factory=FakeFactory(delay_s=0.3))
    assert out.status == "finished" and out.evaluations == 30
    store = Store.open(db)
    finals = _finals(store, "spread")
    rids = [r.runtime_id for r in finals]
    assert len(finals) == 30 and len(set(rids)) == 30, Counter(rids).most_common(3)
    assert not [r for r in run_evaluations(store, out.run_id, FULL)
                if r.status in ("pending", "running")]
    nodes = Counter(r.worker for r in finals)
    # every node took evaluations; how many each is Ray's placement, which promises no even
    # split (a fresh-clone CI run on a loaded 2-core machine gave 16, 12 and 2)
    assert len(nodes) == 3 and min(nodes.values()) >= 1, nodes
    per_node = node_counts(store, out.run_id)
    assert {n["node"]: n["done"] for n in per_node} == dict(nodes)
    assert sum(n["failed"] for n in per_node) == sum(1 for r in finals if r.status != "passed")
    store.close()
    from evolve.cli import main

    capsys.readouterr()
    assert main(["status", "spread", "--db", db]) == 0
    shown = capsys.readouterr().out
    for n, c in nodes.items():  # sds status: a line per node with its count
        assert any(f"node {n}" in line and f"{c} done" in line for line in shown.splitlines())


def test_real_sim_evaluations_in_ray_workers(cluster, tmp_path):
    """The real harness and its sandboxed worker, in Ray tasks; stage rows written once."""
    db = f"sqlite:///{tmp_path}/sds.db"
    cfg = _cfg(6, ["static", "sim"], selection={"objectives": ["modeled_ratio:max"]})
    out, _ = launch(cfg, name="sim", db=db, operators={"fake": FakeOperator()},
                    runs_csv=None, progress=False)
    assert out.status == "finished" and out.evaluations == 6
    store = Store.open(db)
    finals = _finals(store, "sim")
    assert len({r.runtime_id for r in finals}) == 6
    passed = [r for r in finals if r.status == "passed"]
    assert passed, [(r.status, r.error) for r in finals]
    assert all(r.metrics["fidelity"] == "sim" and r.metrics["modeled_ratio"] > 0 for r in passed)
    assert len({r.worker for r in finals}) >= 2  # more than one node took part
    # the remote harness's stage records, written once each by the controller
    sims = Counter(e.runtime_id for e in store.evaluations(run=out.run_id, stage="sim"))
    assert all(sims[r.runtime_id] == 1 for r in passed), sims.most_common(3)
    statics = {e.program_id for e in store.evaluations(run=out.run_id, stage="static")}
    children = 0
    for r in passed:  # slot-level records land on the child's own stored program
        ref = store.get_runtime(r.runtime_id).spec["slots"]["scheduler"]
        ref = ref["program"] if isinstance(ref, dict) else ref
        if ref.startswith("sha256:"):
            children += 1
            assert store.program_by_hash(ref).id in statics
    assert children > 0
    store.close()


def test_in_flight_per_node_and_results(cluster):
    from evolve.executors import EvalJob, Gate
    from evolve.executors.ray_tasks import RayExecutor
    from runtime_modules.slots import RuntimeSpec

    ex = RayExecutor(_cfg(3, ["static", "bench"]), None, "cpu", FakeFactory(delay_s=2.5))
    assert ex.device == "cpu" and ex.capacity() == 3
    spec = RuntimeSpec.default("cpu").to_dict()
    futs = [ex.submit(EvalJob(100 + i, 1, 1, spec, spec, ("static", "bench"), ("w1",), "tiny",
                              "cpu", None, ("w1",), Gate((("tok_s", 1.0),), always=False)))
            for i in range(3)]
    most: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while not all(f.done() for f in futs) and time.monotonic() < deadline:
        now = ex.in_flight()
        if len([n for n in now if n != "queued"]) > len(most):
            most = now
        time.sleep(0.05)
    landed = [f.result(timeout=30) for f in futs]
    assert all(x.result.status == "passed" and x.result.metrics["workloads"]["w1"]["tok_s"] == 100
               for x in landed)
    assert len({x.node for x in landed}) == 3  # one per node, each its own
    assert len(most) == 3 and sum(most.values()) == 3, most  # seen in flight on each node
    assert ex.in_flight() == {}
    ex.close()


def test_node_killed_mid_run_loses_nothing_and_poison_is_given_up(cluster, tmp_path):
    db = f"sqlite:///{tmp_path}/sds.db"
    log = tmp_path / "attempts.log"
    poison = 6  # a child runtime: its harness kills its own Ray worker on every attempt
    victim = next(iter(cluster.worker_nodes))
    victim_id = victim.node_id
    killed = threading.Event()

    def killer() -> None:  # once an evaluation is running on the victim node, kill the node
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = read_log(log)
            ended = {(r, n) for w, r, n in lines if w == "end"}
            done_elsewhere = sum(1 for w, _, n in lines if w == "end" and n != victim_id)
            if done_elsewhere >= 3 and any(w == "start" and n == victim_id and (r, n) not in ended
                                           and r != poison for w, r, n in lines):
                cluster.remove_node(victim, allow_graceful=False)
                killed.set()
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    out, _ = launch(_cfg(14, ["static", "contract", "bench"]), name="killnode", db=db,
                    operators={"fake": FakeOperator()}, runs_csv=None, progress=False,
                    harness_factory=FakeFactory(delay_s=0.6, log_path=log, poison=poison,
                                                 hold_node=victim_id))
    t.join(timeout=5)
    try:
        assert killed.is_set(), "no evaluation was ever in flight on the victim node"
        assert out.status == "finished" and out.evaluations == 14
        store = Store.open(db)
        finals = _finals(store, "killnode")
        rids = [r.runtime_id for r in finals]
        assert len(finals) == 14 and len(set(rids)) == 14
        crashed = [r for r in finals if r.status == "crashed"]
        assert [r.runtime_id for r in crashed] == [poison], [(r.runtime_id, r.error)
                                                             for r in crashed]
        assert "lost 3 times" in crashed[0].error and crashed[0].artifacts["failed_stage"] \
            == "executor"
        lines = read_log(log)
        assert sum(1 for w, r, _ in lines if w == "start" and r == poison) == 3  # 1 + 2 retries
        # what was running on the killed node ran again elsewhere and passed or failed there
        starts = [(r, n) for w, r, n in lines if w == "start" and r != poison]
        cut = {r for i, (r, n) in enumerate(starts) if n == victim_id
               and any(r2 == r and n2 != victim_id for r2, n2 in starts[i + 1:])}
        assert cut, "nothing running on the killed node was run again on another"
        by_rid = {r.runtime_id: r for r in finals}
        for rid in cut:
            assert by_rid[rid].status in ("passed", "failed")
            assert by_rid[rid].worker != _label(victim_id)
        store.close()
    finally:
        if killed.is_set():  # back to 3 nodes for what follows
            cluster.add_node(num_cpus=1, object_store_memory=80 * MB)
            cluster.wait_for_nodes()


DRIVER = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import ray
from test_controller_fakes import FakeOperator
from test_ray_fakes import FakeFactory
from evolve.config import config_from_dict
from evolve.launch import launch
ray.init(address=sys.argv[2], logging_level="ERROR", log_to_driver=False)
cfg = config_from_dict({{"target": {{"slots": ["scheduler"]}}, "operators": {{"fake": 1}},
    "evaluation": {{"stages": ["static", "bench"], "workloads": ["w1"], "device": "cpu",
                   "executor": "ray"}},
    "budget": {{"max_evaluations": {budget}}}, "concurrency": {{"max_proposals": 4}}}}, "d.yaml")
out, _ = launch(cfg, name="resumable", db=sys.argv[1], operators={{"fake": FakeOperator()}},
                harness_factory=FakeFactory(delay_s=1.0), runs_csv=None, progress=False)
print("outcome", out.status, out.evaluations, flush=True)
"""


def test_sigkilled_controller_resumes_and_a_second_is_refused(cluster, tmp_path):
    budget = 36  # at 1 s each on 3 nodes: the first controller is still running when killed
    db = f"sqlite:///{tmp_path}/sds.db"
    script = DRIVER.format(tests=str(TESTS), root=str(ROOT), budget=budget)
    env = {**os.environ, "PYTHONPATH": f"{TESTS}:{ROOT}"}
    first = subprocess.Popen([sys.executable, "-c", script, db, cluster.address], env=env,
                             start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and first.poll() is None:
        if _count(db) >= 1:
            break
        time.sleep(0.1)
    assert first.poll() is None, "the first controller ended before it could be killed"

    # a second controller, through the CLI, on the live run: one line, exit 2
    cfg = tmp_path / "second.yaml"
    cfg.write_text("target: {slots: [scheduler]}\noperators: {gp: 1}\n"
                   "evaluation: {stages: [static, sim], "
                   "workloads: [kv-pressure-cpu], device: cpu, executor: ray}\n"
                   f"ray: {{address: '{cluster.address}'}}\n", encoding="utf-8")
    cli = "import sys; from evolve.cli import main; sys.exit(main(sys.argv[1:]))"
    second = subprocess.run([sys.executable, "-c", cli, "run", str(cfg), "--name",
                             "resumable", "--db", db, "--no-progress", "--runs-csv", "-"],
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    err = second.stderr.strip().splitlines()
    assert second.returncode == 2, second.stderr[-2000:]
    assert len(err) == 1 and "driven by another controller" in err[0], second.stderr[-2000:]

    while time.monotonic() < deadline and first.poll() is None and _count(db) < 6:
        time.sleep(0.1)
    assert first.poll() is None, "the first controller ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    store = Store.open(db)
    run = store.get_run("resumable")
    in_flight = [r.id for r in run_evaluations(store, run.id, FULL) if r.status == "running"]
    assert in_flight, "nothing was in flight when the controller was killed"
    owner = store.run_lease(run.id)[0]
    assert owner and f":{first.pid}:" in owner  # the dead controller still holds the lease
    t0 = time.monotonic()
    again = subprocess.run([sys.executable, "-c", script, db, cluster.address], env=env,
                           capture_output=True, text=True, timeout=150, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"outcome finished {budget}" in again.stdout
    assert time.monotonic() - t0 < 120  # taken over at once, not after the lease ran out
    finals = _finals(store, "resumable")
    rids = [r.runtime_id for r in finals]
    assert len(finals) == budget and len(set(rids)) == budget, Counter(rids).most_common(3)
    assert not [r for r in run_evaluations(store, run.id, FULL)
                if r.status in ("pending", "running")]
    resume = [e for e in store.events(run.id) if e.kind == "resume"][-1].data
    assert resume["taken_over_from"] == owner
    assert sorted(resume["in_flight_at_crash"]) == sorted(in_flight)
    assert all(store.get_evaluation(i).attempt == 2 for i in in_flight)
    assert store.run_lease(run.id) == (None, None)  # released at the end
    store.close()
