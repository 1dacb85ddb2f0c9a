"""The bench's deterministic cost model: engine-counted KV reads, repeatable, ranks policies."""

import random

import pytest

from fitness.bench import build_llm, run_workload
from fitness.costmodel import KV_TOKEN_S, STEP_S, TOKEN_S, modeled_time_s
from fitness.workloads import Request, _finish, get_workload
from runtime_modules.stub import StubRunner

SEED_RT = {"slots": {"scheduler": {"program": "seed:scheduler/priority"},
                     "cache_policy": {"program": "seed:cache_policy/scored"}}}


def test_engine_counts_kv_tokens_attended_per_step():
    rng = random.Random()
    p, m = rng.randint(5, 60), rng.randint(2, 20)
    w = _finish("one", 1, [Request(tuple(rng.randrange(1024) for _ in range(p)),
                                   max_tokens=m)], "tiny", 0, {"max_model_len": 128}, "")
    r = run_workload(build_llm(w, runner_factory=StubRunner), w, warmup=False)
    # prefill attends p KV tokens; decode step i (i = 1..m-1) attends p + i
    assert r["stats_kv_tokens_attended"] == p + sum(p + i for i in range(1, m))
    assert r["stats_scheduled_tokens"] == p + m - 1
    steps = r["steps"] - r["stats_empty_steps"]
    assert r["modeled_time_s"] == pytest.approx(
        STEP_S * steps + TOKEN_S * (p + m - 1) + KV_TOKEN_S * r["stats_kv_tokens_attended"])
    assert r["modeled_tok_s"] == pytest.approx(m / r["modeled_time_s"])


def test_cost_model_names_a_missing_counter():
    with pytest.raises(KeyError, match="kv_tokens_attended"):
        modeled_time_s({"steps": 3, "empty_steps": 0, "scheduled_tokens": 9})


def _modeled(runtime: dict, wl: str) -> dict:
    w = get_workload(wl)
    return run_workload(build_llm(w, model="tiny", runtime=runtime, device="cpu",
                                  runner_factory=StubRunner), w, warmup=False)


def test_modeled_metric_is_deterministic_and_ranks_policies():
    wl = random.choice(["kv-pressure-cpu", "shared-prefix-cpu"])
    a, b = _modeled(SEED_RT, wl), _modeled(SEED_RT, wl)
    assert a["modeled_tok_s"] == b["modeled_tok_s"]
    assert a["steps"] == b["steps"] and a["stats_preemptions"] == b["stats_preemptions"]
    # a deliberately bad policy: prefill in 16-token chunks (many more forward steps)
    bad = {"slots": {**SEED_RT["slots"],
                     "scheduler": {"program": "seed:scheduler/priority",
                                   "params": {"chunk_size": 16}}}}
    c = _modeled(bad, wl)
    assert c["steps"] > a["steps"]
    assert c["modeled_tok_s"] < 0.95 * a["modeled_tok_s"]
