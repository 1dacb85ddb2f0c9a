"""`Harness.evaluate_workloads`: several workloads' bench stages in one worker, one report each."""

from __future__ import annotations

from fitness import sandbox
from fitness.harness import Harness
from fitness.jobs import StageRun
from fitness.result import StageResult
from population_db import Store

OPTS = {"bench_requests": 4, "bench_max_tokens": 4, "bench_repeats": 1, "cpu_threads": 1,
        "bench_check_requests": 2}
WLS = ["nanovllm-bench-cpu", "kv-pressure-cpu"]


def test_two_workloads_run_in_one_worker_and_are_recorded_per_workload(tmp_path, monkeypatch):
    store = Store.open(f"sqlite:///{tmp_path / 'sds.db'}")
    run, _ = store.get_or_create_run("wl-test", {})
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/priority"}}}
    rt = store.add_runtime(run.id, spec)
    workers, limits = [], []
    real = sandbox.run_worker

    def counting(job, timeouts, **k):
        workers.append(job.runs)
        limits.append(dict(timeouts))
        return real(job, timeouts, **k)

    monkeypatch.setattr("fitness.harness.run_worker", counting)
    h = Harness(store=store, device="cpu", options=OPTS, timeouts={"bench": 200.0})
    reports = h.evaluate_workloads(spec, ("static", "contract", "correctness", "bench"), WLS,
                                   runtime_id=rt.id, run_id=run.id)
    # one worker (an all-seed runtime tests every slot, kernels too: no light contract
    # worker first, see fitness/harness.py `_contract_first`)
    assert workers == [(StageRun("contract"), StageRun("correctness"), StageRun("bench"),
                        StageRun("bench", "kv-pressure-cpu"))]
    assert limits[0]["bench"] == 200.0  # the limit of every bench run, whatever its workload
    assert [r.workload for r in reports] == WLS
    assert [s.stage for s in reports[1].stages] == ["bench"], reports[1].to_dict()
    assert all(r.status == "passed" for r in reports), [r.to_dict() for r in reports]
    for r in reports:  # each bench ran its own workload
        assert r.stage("bench").metrics["workload"].startswith(r.workload)
        assert r.workload_hash
    rows = [e for e in store.evaluations(runtime_id=rt.id) if e.stage == "bench"]
    assert sorted(e.workload for e in rows) == sorted(WLS)
    assert len({e.workload_hash for e in rows}) == 2


def test_a_failure_on_a_later_workload_is_its_report_and_ends_the_list(monkeypatch):
    def fake(self, job):
        assert job.runs == (StageRun("bench"), StageRun("bench", "b"), StageRun("bench", "c"))
        assert job.workload == "a"
        return [StageResult("bench", "passed", {"tok_s": 1.0}),
                StageResult("bench", "failed", {}, "bench@b: wrong output")]

    monkeypatch.setattr(Harness, "_run_worker", fake)
    monkeypatch.setattr(Harness, "_workload_hash", lambda self, name: f"h-{name}")
    reports = Harness(device="cpu").evaluate_workloads({"slots": {}}, ("bench",), ["a", "b", "c"])
    assert [r.workload for r in reports] == ["a", "b"]
    assert reports[0].status == "passed" and reports[1].status == "failed"
    assert reports[1].failed_stage == "bench" and "wrong output" in reports[1].error


def test_a_failure_on_the_first_workload_leaves_the_others_out(monkeypatch):
    def fake(self, job):
        return [StageResult("correctness", "failed", {}, "token 3 differs")]

    monkeypatch.setattr(Harness, "_run_worker", fake)
    monkeypatch.setattr(Harness, "_workload_hash", lambda self, name: f"h-{name}")
    reports = Harness(device="cpu").evaluate_workloads(
        {"slots": {}}, ("correctness", "bench"), ["a", "b"])
    assert len(reports) == 1 and reports[0].failed_stage == "correctness"
