"""The harness's job for its worker survives the trip down the job pipe, and a stage on
another workload is a field of its run, never part of the stage's name."""

from __future__ import annotations

import json

import pytest

from fitness.jobs import StageRun, WorkerJob
from fitness.stages import WorkerContext


def _job() -> WorkerJob:
    return WorkerJob(runs=(StageRun("contract"), StageRun("bench"),
                           StageRun("bench", "kv-pressure-cpu")),
                     spec={"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}},
                     slots=("scheduler",), device="cpu", model="tiny",
                     workload="nanovllm-bench-cpu", seed=1234,
                     baseline={"slots": {}}, options={"parents": {"scheduler": "x = 1\n"}})


def test_a_job_round_trips_through_json():
    job = _job()
    assert WorkerJob.from_dict(json.loads(json.dumps(job.to_dict()))) == job


def test_each_run_gets_its_own_workload_or_the_jobs():
    job = _job()
    ctxs = [WorkerContext.from_job(job, r) for r in job.runs]
    assert [c.workload for c in ctxs] == ["nanovllm-bench-cpu"] * 2 + ["kv-pressure-cpu"]
    assert job.stage_names == ["contract", "bench", "bench"]
    assert all(c.seed == 1234 and c.slots == ["scheduler"] for c in ctxs)


def test_a_run_names_itself_in_messages_by_fields_and_in_errors_by_label():
    other = StageRun("bench", "kv-pressure-cpu")
    assert other.label == "bench@kv-pressure-cpu" and StageRun("bench").label == "bench"
    msg = {"type": "start", **other.to_dict()}
    assert other.matches(msg) and not StageRun("bench").matches(msg)
    assert StageRun("bench").matches({"type": "result", "stage": "bench"})


@pytest.mark.parametrize("bad", [{"name": ""}, {"name": "bench", "workload": ""},
                                 {"name": "bench", "workload": 3}])
def test_a_malformed_run_is_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match="StageRun"):
        StageRun(**bad)


def test_runs_must_be_a_tuple_of_stage_runs():
    with pytest.raises(TypeError, match="runs"):
        WorkerJob(runs=["bench"], spec={})  # type: ignore[arg-type]
