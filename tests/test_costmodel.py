"""The bench's deterministic cost model: a per-step roofline, per device, that ranks policies."""

import random

import pytest

from fitness.bench import build_llm, run_workload
from fitness.costmodel import (
    DEVICES,
    QWEN3_0_6B,
    CostMeter,
    ModelShape,
    device_profile,
    modeled,
    roofline_terms,
    step_time_s,
)
from fitness.workloads import Request, _finish, get_workload
from runtime_modules.stub import StubRunner

SEED_RT = {"slots": {"scheduler": {"program": "seed:scheduler/priority"},
                     "cache_policy": {"program": "seed:cache_policy/scored"}}}
H100, H200 = device_profile("h100"), device_profile("h200")


def _prefill(prompt: int, cached: int = 0) -> tuple[int, int, int, int]:
    """One sequence's prefill step: (num_seqs, tokens, kv_tokens, attn_pairs)."""
    k = prompt - cached
    return 1, k, prompt, k * cached + k * (k + 1) // 2


def _decode(lens: list[int]) -> tuple[int, int, int, int]:
    """One decode step of sequences whose KV lengths become `lens`."""
    return len(lens), len(lens), sum(lens), sum(lens)


def test_qwen3_shape_matches_its_config_and_published_size():
    from runtime_modules.config import ModelConfig
    assert ModelShape.from_config(ModelConfig.from_name("qwen3-0.6b")) == QWEN3_0_6B
    assert 595e6 < QWEN3_0_6B.params < 597e6  # 0.6 B total, 0.44 B non-embedding
    assert 440e6 < QWEN3_0_6B.body_params < 441e6
    assert QWEN3_0_6B.kv_bytes_per_token == 112 * 1024


def test_roofline_prices_decode_by_memory_and_long_prefill_by_compute():
    rng = random.Random(random.getrandbits(64))
    step = _decode([rng.randint(200, 2000) for _ in range(256)])
    mem, comp = roofline_terms(QWEN3_0_6B, H100, *step)
    assert mem > 3 * comp
    assert step_time_s(QWEN3_0_6B, H100, *step) == pytest.approx(H100.step_overhead_s + mem)
    mem, comp = roofline_terms(QWEN3_0_6B, H100, *_prefill(16384))
    assert comp > 10 * mem
    assert step_time_s(QWEN3_0_6B, H100, *_prefill(16384)) == pytest.approx(
        H100.step_overhead_s + comp)


def test_prefill_attention_makes_cost_superlinear_in_prompt_length():
    t = {n: step_time_s(QWEN3_0_6B, H100, *_prefill(n)) for n in (1024, 4096)}
    assert t[4096] > 4 * t[1024]
    # without the attention term, 4x the tokens costs at most 4x: attention is what moved it
    flat = {n: step_time_s(QWEN3_0_6B, H100, *_prefill(n)[:3], 0) for n in (1024, 4096)}
    assert flat[4096] < 4 * flat[1024]
    # and the attention term alone grows ~16x (quadratic) for 4x the prompt
    attn = {n: roofline_terms(QWEN3_0_6B, H100, *_prefill(n))[1]
            - roofline_terms(QWEN3_0_6B, H100, *_prefill(n)[:3], 0)[1] for n in (1024, 4096)}
    assert attn[4096] / attn[1024] == pytest.approx(16, rel=0.01)


def test_prefix_cache_hit_is_modeled_cheaper():
    rng = random.Random(random.getrandbits(64))
    prompt = rng.randint(1500, 6000)
    cached = rng.randint(1, prompt // 16) * 16
    assert (step_time_s(QWEN3_0_6B, H100, *_prefill(prompt, cached))
            < step_time_s(QWEN3_0_6B, H100, *_prefill(prompt)))


def test_h200_prices_a_decode_heavy_run_faster_by_about_the_bandwidth_ratio():
    rng = random.Random(random.getrandbits(64))
    meters = {d: CostMeter(device=p) for d, p in (("h100", H100), ("h200", H200))}
    lens = [rng.randint(100, 1024) for _ in range(rng.randint(64, 256))]
    for i in range(200):
        for m in meters.values():
            m(*_decode([n + i for n in lens]))
    ratio = meters["h100"].time_s / meters["h200"].time_s
    bw = H200.mem_bw_bytes_s / H100.mem_bw_bytes_s
    assert 0.9 * bw < ratio <= bw  # the per-step overhead, equal on both, pulls it below


def test_measured_bandwidth_replaces_the_profiles():
    bw = random.uniform(1e12, 5e12)
    p = H100.with_bandwidth(bw)
    assert p.mem_bw_bytes_s == bw and p.matmul_flops == H100.matmul_flops
    assert "measured" in p.source and DEVICES["h100"].mem_bw_bytes_s == 3.0e12
    with pytest.raises(ValueError, match="positive"):
        H100.with_bandwidth(0)


def test_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match="h100.*h200"):
        device_profile("a100-typo")
    assert device_profile(" H200 ") is H200


def test_cost_meter_as_step_observer_on_a_real_tiny_engine():
    from runtime_modules import LLM, SamplingParams
    rng = random.Random(random.getrandbits(64))
    llm = LLM("tiny", device="cpu", max_model_len=128)
    meter = CostMeter(start=100.0)
    llm.engine.step_observer, llm.engine.clock = meter, meter.now
    p, m = rng.randint(5, 60), rng.randint(2, 10)
    out = llm.generate([[rng.randrange(1024) for _ in range(p)]],
                       SamplingParams(max_tokens=m, ignore_eos=True))
    assert meter.time_s > 0 and meter.steps == m  # one prefill step, m - 1 decode steps
    met = out[0].metrics  # stamped by the modeled clock: arrival before any step
    assert met["arrival"] == 100.0 < met["first_token"] < met["finish"] == meter.now()
    assert llm.stats["attn_pairs"] == p * (p + 1) // 2 + sum(p + i for i in range(1, m))
    with pytest.raises(ValueError, match="no engine work"):
        modeled(CostMeter(), 5)


def test_run_workload_prices_each_step_and_restores_the_observer():
    rng = random.Random(random.getrandbits(64))
    p, m = rng.randint(5, 60), rng.randint(2, 20)
    w = _finish("one", 1, [Request(tuple(rng.randrange(1024) for _ in range(p)),
                                   max_tokens=m)], "tiny", 0, {"max_model_len": 128}, "")
    llm = build_llm(w, runner_factory=StubRunner)
    sentinel = CostMeter()
    llm.engine.step_observer = sentinel
    r = run_workload(llm, w, warmup=False, cost_device="h200")
    assert llm.engine.step_observer is sentinel and sentinel.steps == 0
    # prefill attends p KV tokens; decode step i (i = 1..m-1) attends p + i
    assert r["stats_kv_tokens_attended"] == p + sum(p + i for i in range(1, m))
    assert r["stats_attn_pairs"] == p * (p + 1) // 2 + sum(p + i for i in range(1, m))
    want = step_time_s(QWEN3_0_6B, H200, *_prefill(p)) + sum(
        step_time_s(QWEN3_0_6B, H200, *_decode([p + i])) for i in range(1, m))
    assert r["modeled_time_s"] == pytest.approx(want) and r["modeled_device"] == "h200"
    assert r["modeled_tok_s"] == pytest.approx(m / r["modeled_time_s"])
    with pytest.raises(ValueError, match="h100"):
        run_workload(llm, w, warmup=False, cost_device="tpu")


def _modeled(runtime: dict, wl: str) -> dict:
    w = get_workload(wl)
    return run_workload(build_llm(w, model="tiny", runtime=runtime, device="cpu",
                                  runner_factory=StubRunner), w, warmup=False)


@pytest.mark.parametrize("wl", ["kv-pressure-cpu", "shared-prefix-cpu"])
def test_modeled_metric_is_deterministic_and_ranks_policies(wl):
    a, b = _modeled(SEED_RT, wl), _modeled(SEED_RT, wl)
    assert a["modeled_tok_s"] == b["modeled_tok_s"]
    assert a["steps"] == b["steps"] and a["stats_preemptions"] == b["stats_preemptions"]
    # a deliberately bad policy: prefill in 16-token chunks (many more forward steps)
    bad = {"slots": {**SEED_RT["slots"],
                     "scheduler": {"program": "seed:scheduler/priority",
                                   "params": {"chunk_size": 16}}}}
    c = _modeled(bad, wl)
    assert c["steps"] > a["steps"]
    # measured: 0.937x on kv-pressure-cpu (0.894 under the old linear sum, which priced
    # every extra step's weight read and compute in full), 0.294x on shared-prefix-cpu
    assert c["modeled_tok_s"] < 0.95 * a["modeled_tok_s"]
