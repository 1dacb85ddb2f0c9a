"""Candidate code that forges the result channel or patches the judge in-process is caught:
by `static` first, and by the worker's integrity check and the harness's protocol check
when `static` is skipped."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from fitness.channel import protocol_violation
from fitness.harness import Harness
from fitness.jobs import StageRun
from fitness.static import check_static

CANDIDATES = Path(__file__).parent / "candidates"
SMALL = {"quick_bench_requests": 2, "bench_requests": 2, "bench_max_tokens": 6,
         "quick_bench_repeats": 2, "bench_repeats": 2, "quick_bench_min_ratio": 0.2}


def _eval(name: str, stages: tuple[str, ...]):
    h = Harness(device="cpu", timeouts={"contract": 60, "correctness": 60}, options=SMALL)
    return h.evaluate({"slots": {"scheduler": f"file:{CANDIDATES / name}"}}, stages=stages)


def test_results_forged_ahead_for_later_stages_are_rejected():
    report = _eval("forge_ahead.py", ("contract", "correctness", "quick_bench", "bench"))
    assert report.status == "rejected", report.to_dict()
    assert "protocol" in report.error and "correctness" in report.error
    assert report.stage("bench") is None and "tok_s" not in report.metrics


def test_patching_the_clock_is_rejected_at_the_contract_naming_it():
    report = _eval("patch_engine.py", ("contract", "correctness"))
    assert report.status == "rejected", report.to_dict()
    assert report.stages[-1].stage == "contract" and "monotonic_ns" in report.error


def test_patching_engine_and_torch_is_rejected_by_the_stage_that_runs_them():
    # the contract runs in a worker without the engine or torch (nothing there to patch);
    # the correctness worker imports both before the candidate, so the patch is seen
    report = _eval("patch_engine_torch.py", ("contract", "correctness"))
    assert report.status == "rejected", report.to_dict()
    assert [(s.stage, s.status) for s in report.stages] == [("contract", "passed"),
                                                            ("correctness", "rejected")]
    for name in ("LLM.step", "Tensor.tolist"):
        assert name in report.error, report.error


@pytest.mark.parametrize("code,needle", [
    ("import gc\n", "'gc'"),
    ("import sys\nsys.modules['time'].perf_counter = len\n", "'sys'"),
    ("import time\nf = getattr(time, 'perf_' + 'counter')\n", "getattr"),
    ("def f():\n    return f.__globals__\n", "__globals__"),
    ("import torch\ntorch.cuda.synchronize = len\n", "torch.cuda.synchronize"),
    ("from runtime_modules.llm import LLM\nLLM.step = len\n", "LLM.step"),
    ("import os\nos._exit(0)\n", "_exit"),
    ("x = ().__class__.__bases__[0].__subclasses__()\n", "__"),
])
def test_static_rejects_interpreter_access_and_patching(code, needle):
    res = check_static("scheduler", code + (CANDIDATES / "starving_scheduler.py").read_text())
    assert res.status == "rejected", res
    assert needle in res.error and res.artifacts["line"] <= code.count("\n")


def test_protocol_allows_only_the_stage_sequence_of_the_job():
    stages = [StageRun("contract"), StageRun("correctness")]
    hello = {"type": "hello"}

    def res(stage, status="passed"):
        return {"type": "result", "stage": stage, "status": status}

    good = [hello, {"type": "start", "stage": "contract"}, res("contract"),
            {"type": "start", "stage": "correctness"}, res("correctness", "failed"),
            {"type": "done"}]
    for i, msg in enumerate(good):
        assert protocol_violation(good[:i], msg, stages) is None, (i, msg)
    bad = [([], res("contract")), (good[:2], res("correctness")), (good[:3], res("contract")),
           (good[:1], {"type": "start", "stage": "correctness"}),
           (good[:2], {"type": "start", "stage": "correctness"}),
           (good[:5], {"type": "start", "stage": "bench"}), (good, res("contract")),
           (good[:2], {"type": "done"}), (good[:1], hello)]
    for seen, msg in bad:
        assert protocol_violation(seen, msg, stages), (seen, msg)


def test_protocol_tells_a_stage_on_another_workload_from_the_same_stage_on_the_jobs():
    runs = [StageRun("bench"), StageRun("bench", "kv-pressure-cpu")]
    first = {"type": "start", "stage": "bench", "workload": None}
    other = {"type": "start", "stage": "bench", "workload": "kv-pressure-cpu"}
    passed = {"type": "result", "stage": "bench", "workload": None, "status": "passed"}
    seen = [{"type": "hello"}, first, passed]
    assert protocol_violation(seen, other, runs) is None
    why = protocol_violation(seen, first, runs)  # the job's workload again, not the other
    assert why and "'bench@kv-pressure-cpu' next" in why
    forged = {**passed, "workload": "kv-pressure-cpu"}  # a result for the run not started
    assert protocol_violation(seen[:2], forged, runs)


def test_a_harness_removes_its_own_program_dir():
    h = Harness(device="cpu")
    path = h.program_dir
    assert path.is_dir()
    del h
    gc.collect()
    assert not path.exists()


def test_a_worker_that_dies_between_stages_leaves_a_crash_not_a_pass():
    from fitness.channel import SandboxRun
    from fitness.outcome import stage_results
    run = SandboxRun(messages=[{"type": "hello"}, {"type": "start", "stage": "contract"},
                               {"type": "result", "stage": "contract", "status": "passed",
                                "metrics": {}, "artifacts": {}}], returncode=-6)
    out = stage_results(run, [StageRun("contract"), StageRun("correctness"), StageRun("bench")])
    assert [(r.stage, r.status) for r in out] == [("contract", "passed"),
                                                  ("correctness", "crashed")]
    assert "SIGABRT" in out[1].error and "after contract passed" in out[1].error
