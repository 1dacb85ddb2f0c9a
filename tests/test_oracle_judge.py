"""The oracle runs in the harness's process and judges what the worker reports: a wrong
engine fails `correctness` there, and a worker that reports no (or other) outputs than the
harness asked for is rejected, never passed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fitness import channel, sandbox
from fitness.benchstage import bench_workload, check_plan
from fitness.correctness import MAX_TOKENS, prompts_for
from fitness.harness import Harness
from fitness.jobs import StageRun, WorkerJob
from fitness.oracle import OracleJudge

CANDIDATES = Path(__file__).parent / "candidates"


def test_a_wrong_engine_fails_correctness_in_the_harness_and_the_worker_stops(monkeypatch):
    runs = []
    real = sandbox.run_worker

    def keep(job, timeouts, **k):
        runs.append(real(job, timeouts, **k))
        return runs[-1]

    monkeypatch.setattr("fitness.harness.run_worker", keep)
    spec = {"slots": {"prefill_attention": f"file:{CANDIDATES / 'offbyone_prefill.py'}"}}
    report = Harness(device="cpu").evaluate(spec, stages=("correctness", "bench"))
    assert report.failed_stage == "correctness" and report.status == "failed", report.to_dict()
    assert "the oracle's greedy token" in report.error
    res = report.stage("correctness")
    assert res.artifacts["position"] >= 0 and res.artifacts["expected_prefix"]
    assert "outputs" not in res.artifacts  # consumed by the judge, not stored
    (run,) = runs
    assert run.judged_failure and [m["stage"] for m in run.messages
                                   if m.get("type") == "start"] == ["correctness"]


def _msg(stage, artifacts):
    return {"type": "result", "stage": stage, "status": "passed", "metrics": {},
            "error": None, "artifacts": artifacts, "duration_s": 0.1}


def test_missing_or_malformed_outputs_are_rejected(tmp_path):
    judge = OracleJudge("cpu", tmp_path)
    job = WorkerJob(runs=(), spec={}, model="tiny", seed=5, workload="other-workload")
    n = len(prompts_for(5, judge.model("tiny").config.vocab_size))
    for bad in (None, "x", [[1] * MAX_TOKENS] * (n - 1), [[1.5] * MAX_TOKENS] * n):
        out = judge.judge(job, StageRun("correctness"),
                          _msg("correctness", {} if bad is None else {"outputs": bad}))
        assert out["status"] == "rejected" and "no outputs" in out["error"], bad
    # the bench check: the worker may not choose which requests are checked
    opts = {"bench_requests": 6, "bench_max_tokens": 4, "bench_check_requests": 3}
    job = dataclasses.replace(job, options=opts)
    pick, lens = check_plan(bench_workload("nanovllm-bench-cpu", False, opts), opts, 5)
    other = sorted(set(range(6)) - set(pick))[:3]
    # the run's own workload, not the job's, decides which requests are checked
    out = judge.judge(job, StageRun("bench", "nanovllm-bench-cpu"), _msg("bench", {
        "output_check": {"indices": other, "outputs": [[1] * n for n in lens]}}))
    assert out["status"] == "rejected" and str(pick) in out["error"]


def test_the_judge_passes_true_outputs_and_fails_a_changed_token(tmp_path):
    import torch
    judge = OracleJudge("cpu", tmp_path)
    oracle = judge.model("tiny")
    opts = {"bench_requests": 5, "bench_max_tokens": 3, "bench_check_requests": 2}
    job = WorkerJob(runs=(), spec={}, model="tiny", seed=11, options=opts,
                    workload="nanovllm-bench-cpu")
    wl = bench_workload("nanovllm-bench-cpu", False, opts)
    pick, lens = check_plan(wl, opts, 11)
    outs = []
    for i, n in zip(pick, lens):  # the oracle's own greedy continuation
        ids = list(wl.requests[i].prompt_token_ids)
        for _ in range(n):
            with torch.no_grad():
                ids.append(int(oracle(torch.tensor([ids])).logits[0, -1].argmax()))
        outs.append(ids[-n:])
    good = judge.judge(job, StageRun("bench"),
                       _msg("bench", {"output_check": {"indices": pick, "outputs": outs}}))
    assert good["status"] == "passed", good
    assert good["metrics"]["output_check_tokens_compared"] == sum(lens)
    assert "output_check" not in good["artifacts"]
    outs[1][1] = (outs[1][1] + 1) % oracle.config.vocab_size
    bad = judge.judge(job, StageRun("bench"),
                      _msg("bench", {"output_check": {"indices": pick, "outputs": outs}}))
    assert bad["status"] == "failed" and f"request {pick[1]}" in bad["error"]
    assert bad["artifacts"]["position"] == 1


def test_a_judge_that_raises_makes_the_stage_crashed_not_passed():
    def boom(run, msg):
        raise RuntimeError("no GPU memory for the oracle")

    out = channel._judged(boom, StageRun("bench", "kv-pressure-cpu"), _msg("bench", {}))
    assert out["status"] == "crashed" and "oracle raised RuntimeError" in out["error"]
    assert out["error"].startswith("bench@kv-pressure-cpu: ")


def test_out_of_vocabulary_tokens_fail_the_candidate_not_the_harness(tmp_path):
    judge = OracleJudge("cpu", tmp_path)
    vocab = judge.model("tiny").config.vocab_size
    job = WorkerJob(runs=(), spec={}, model="tiny", seed=3, workload="nanovllm-bench-cpu")
    n = len(prompts_for(3, vocab))
    outs = [[1] * MAX_TOKENS for _ in range(n)]
    outs[0][2] = vocab + 10**12
    out = judge.judge(job, StageRun("correctness"), _msg("correctness", {"outputs": outs}))
    assert out["status"] == "failed" and "outside the vocabulary" in out["error"]
    assert out["artifacts"]["position"] == 2
