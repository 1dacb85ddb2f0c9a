"""The physical floor: the figure docs/SOURCES.md derives for Qwen3-0.6B, and its lower-bound
properties."""

import random

import pytest

from fitness.floor import (
    QWEN3_0_6B,
    distinct_prompt_tokens,
    kv_bytes_per_token,
    measure_bandwidth,
    physical_floor,
)
from fitness.workloads import Request, _finish, get_workload


def test_qwen3_floor_on_nanovllm_bench_matches_the_documented_figure():
    f = physical_floor(QWEN3_0_6B, get_workload("nanovllm-bench"), 3.0e12)
    assert kv_bytes_per_token(QWEN3_0_6B) == 112 * 1024          # 112 KiB per token
    assert f["kv_bytes"] == pytest.approx(13.9e12, rel=0.01)
    assert f["weight_bytes"] == pytest.approx(1.2e12, rel=0.03)
    assert f["decode_steps"] == 1023
    assert f["max_tok_s"] == pytest.approx(25_500, rel=0.02)
    assert f["min_time_s"] == pytest.approx(5.25, rel=0.02)
    h200 = physical_floor(QWEN3_0_6B, get_workload("nanovllm-bench"), 4.3e12)
    assert h200["max_tok_s"] == pytest.approx(36_000, rel=0.02)


def test_model_config_object_works_like_a_dict():
    from runtime_modules.config import ModelConfig
    w = get_workload("nanovllm-bench-cpu")
    a = physical_floor(ModelConfig.from_name("qwen3-0.6b"), w, 1e12)
    b = physical_floor(QWEN3_0_6B, w, 1e12)
    assert a["max_tok_s"] == pytest.approx(b["max_tok_s"], rel=1e-3)


def test_floor_grows_with_work_and_bandwidth():
    w = get_workload("nanovllm-bench-cpu")
    bw = random.uniform(1e10, 1e12)
    base = physical_floor(QWEN3_0_6B, w, bw)
    assert physical_floor(QWEN3_0_6B, w, 2 * bw)["min_time_s"] < base["min_time_s"]
    longer = [Request(**{**r.__dict__, "max_tokens": r.max_tokens + 7}) for r in w.requests]
    w2 = _finish(w.name, w.version, longer, w.model, w.seed, w.engine_overrides, "")
    assert physical_floor(QWEN3_0_6B, w2, bw)["kv_bytes"] > base["kv_bytes"]


def test_shared_prefixes_count_once_and_arrivals_bound_the_time():
    w = get_workload("shared-prefix-cpu")
    assert distinct_prompt_tokens(w) < w.num_prompt_tokens / 2
    a = get_workload("arrivals-cpu")
    f = physical_floor(QWEN3_0_6B, a, 1e15)   # absurd bandwidth: arrivals dominate
    assert f["min_time_s"] == pytest.approx(a.requests[-1].arrival_s)


def test_bad_bandwidth_and_config_are_named():
    w = get_workload("nanovllm-bench-cpu")
    with pytest.raises(ValueError, match="bandwidth"):
        physical_floor(QWEN3_0_6B, w, 0)
    with pytest.raises(ValueError, match="hidden_size"):
        physical_floor({"vocab_size": 10}, w, 1e12)


def test_cpu_bandwidth_is_plausible():
    bw = measure_bandwidth("cpu", nbytes=32 << 20, repeats=2)
    assert 1e8 < bw < 1e13
