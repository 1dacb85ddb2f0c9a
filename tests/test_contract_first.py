"""A contract check starts light: when no worker was started ahead, the `contract` stage runs
in a worker that imports neither the engine nor torch (scheduler and cache-policy slots),
while the worker for the later stages starts beside it; a failed contract kills that one.
(The start-up time itself is measured by scripts/bench_cli.py, not here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fitness import integrity, sandbox
from fitness.harness import Harness
from fitness.proctrack import marker_pids

ROOT = Path(__file__).resolve().parent.parent
STARVING = ROOT / "tests" / "candidates" / "starving_scheduler.py"
PROBE = """
import json, sys
from fitness import integrity
integrity.preimport(json.loads(sys.argv[1]), json.loads(sys.argv[2]))
print(json.dumps(sorted(m for m in ("torch", "triton", "numpy") if m in sys.modules)))
"""


def _heavy_after_preimport(stages: list[str], slots: list[str] | None) -> list[str]:
    p = subprocess.run([sys.executable, "-c", PROBE, json.dumps(stages), json.dumps(slots)],
                       capture_output=True, text=True, timeout=120, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_scheduler_contract_imports_no_torch_but_a_kernel_contract_does() -> None:
    assert _heavy_after_preimport(["contract"], ["scheduler", "cache_policy"]) == []
    assert "torch" in _heavy_after_preimport(["contract"], ["rmsnorm"])
    assert "torch" in _heavy_after_preimport(["contract", "sim"], ["scheduler"])
    assert "torch" in integrity.preimport_names(["contract"], None)  # unknown slots: all


def _spy(monkeypatch) -> tuple[list, list]:
    runs, spawned = [], []
    real_run, real_spawn = sandbox.run_worker, sandbox.spawn_worker

    def run(job, timeouts, **k):
        runs.append((job.stage_names, k.get("worker")))
        return real_run(job, timeouts, **k)

    def spawn(*a, **k):
        w = real_spawn(*a, **k)
        spawned.append(w)
        return w

    monkeypatch.setattr("fitness.harness.run_worker", run)
    monkeypatch.setattr("fitness.harness.spawn_worker", spawn)
    return runs, spawned


def test_a_failed_contract_ends_before_the_later_worker_is_used(monkeypatch) -> None:
    runs, spawned = _spy(monkeypatch)
    h = Harness(device="cpu")
    spec = {"slots": {"scheduler": {"program": f"file:{STARVING}"}}}
    report = h.evaluate(spec, stages=("static", "contract", "correctness"))
    assert [s.stage for s in report.stages] == ["static", "contract"]
    assert report.stages[-1].status == "failed" and "stall" in report.stages[-1].error
    assert runs == [(["contract"], None)]  # only the light worker ran a job
    (later,) = spawned  # the worker for correctness: started, then killed unused
    assert later.r_fd == -1 and later.proc.poll() is not None
    assert not marker_pids(later.marker) and not later.workdir.exists()


def test_a_passed_contract_goes_on_in_the_worker_started_beside_it(monkeypatch) -> None:
    runs, spawned = _spy(monkeypatch)
    h = Harness(device="cpu")
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/priority"}}}
    # the scheduler under test (an all-seed runtime would test every slot, kernels too)
    report = h.evaluate(spec, stages=("contract", "correctness"), slots=["scheduler"])
    assert report.status == "passed", report.to_dict()
    assert [s.stage for s in report.stages] == ["contract", "correctness"]
    (later,) = spawned
    assert runs == [(["contract"], None), (["correctness"], later)]


def test_a_kernel_contract_stays_in_one_worker(monkeypatch) -> None:
    # a kernel's contract needs torch itself: a light worker would save nothing
    runs, spawned = _spy(monkeypatch)
    h = Harness(device="cpu")
    spec = {"slots": {"rmsnorm": {"program": "seed:rmsnorm/torch_rms"}}}
    report = h.evaluate(spec, stages=("contract", "correctness"))
    assert report.status == "passed", report.to_dict()
    assert runs == [(["contract", "correctness"], None)] and not spawned
