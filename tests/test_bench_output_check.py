"""The `bench` stage checks the candidate's own greedy outputs at the bench's shapes against
the oracle: a module right on short prompts and wrong on long contexts fails there."""

from __future__ import annotations

from pathlib import Path

from fitness.harness import Harness
from fitness.workloads import get_workload

CANDIDATES = Path(__file__).parent / "candidates"
OPTS = {"bench_requests": 6, "bench_max_tokens": 8, "bench_repeats": 1, "cpu_threads": 1}


def test_short_window_kernel_passes_correctness_and_fails_the_bench_output_check():
    wl = get_workload("nanovllm-bench-cpu")
    assert max(len(r.prompt_token_ids) for r in wl.requests[:6]) > 56  # past the window
    spec = {"slots": {"decode_attention": f"file:{CANDIDATES / 'short_window_decode.py'}"}}
    report = Harness(device="cpu", options=OPTS).evaluate(
        spec, stages=("static", "correctness", "bench"), workload=wl.name)
    assert report.stage("correctness").status == "passed", report.to_dict()
    bench = report.stage("bench")
    assert bench.status == "failed", report.to_dict()
    assert "disagrees with the oracle" in bench.error and "request" in bench.error
    assert bench.artifacts["request"] < 6 and bench.artifacts["position"] >= 0
    assert bench.metrics["tok_s"] > 0  # measured, then refused: the speed is still recorded


def test_seed_passes_the_bench_output_check_on_the_checked_requests():
    report = Harness(device="cpu", options={**OPTS, "bench_check_requests": 3}).evaluate(
        {"slots": {}}, stages=("bench",), workload="nanovllm-bench-cpu")
    m = report.stage("bench").metrics
    assert report.status == "passed", report.to_dict()
    assert m["output_check_requests"] == 3
    assert m["output_check_tokens_compared"] == 3 * 8 and m["output_check_near_ties"] == 0
    off = Harness(device="cpu", options={**OPTS, "bench_check_requests": 0}).evaluate(
        {"slots": {}}, stages=("bench",), workload="nanovllm-bench-cpu")
    assert off.status == "passed" and off.stage("bench").metrics["output_check_requests"] == 0


class _Oracle:
    """Logits that put `best[j]` first at generated position j, `runner_up` `gap` nats behind."""

    def __init__(self, best, runner_up, gap, vocab=8):
        self.best, self.runner_up, self.gap, self.vocab = best, runner_up, gap, vocab

    def __call__(self, ids, logits_to_keep):
        from types import SimpleNamespace

        import torch
        assert logits_to_keep == len(self.best)
        logits = torch.full((1, logits_to_keep, self.vocab), -30.0)
        for j, (b, r) in enumerate(zip(self.best, self.runner_up)):
            logits[0, j, b] = 0.0
            logits[0, j, r] = -self.gap
        return SimpleNamespace(logits=logits)


def test_oracle_check_accepts_near_ties_only_and_stops_the_sequence_there():
    from fitness.correctness import oracle_check
    oracle = _Oracle(best=[1, 2, 3, 4], runner_up=[5, 5, 5, 5], gap=0.05)
    # token 1 is the runner-up 0.05 nats behind: a near-tie at 0.1, not at 0.01
    m, err, _ = oracle_check(oracle, [[0, 0]], [[1, 5, 7, 7]], [4], 0.1, "cpu")
    assert err is None and m["near_ties"] == 1 and m["tokens_compared"] == 2
    assert abs(m["max_logprob_gap"] - 0.05) < 1e-4
    m, err, where = oracle_check(oracle, [[0, 0]], [[1, 5, 7, 7]], [4], 0.01, "cpu")
    assert err and "token 1 is 5" in err and where["position"] == 1
    assert where["expected_prefix"] == [1, 2]
    _, err, _ = oracle_check(oracle, [[0, 0]], [[1, 2, 3]], [4], 0.1, "cpu")
    assert err and "produced 3 tokens" in err
