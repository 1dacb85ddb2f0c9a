"""Workloads: nano-vLLM's exact benchmark, determinism, content hashes, the CPU variants."""

import hashlib
import random

import pytest

from fitness import workloads as wl
from fitness.workloads import get_workload, list_workloads


def test_nanovllm_bench_matches_nano_vllm_totals():
    w = get_workload("nanovllm-bench")
    assert len(w.requests) == 256
    assert w.num_prompt_tokens == 142_827
    assert w.num_output_tokens == 133_966
    assert w.engine_overrides["max_model_len"] == 4096
    r = w.requests[0]
    assert (r.temperature, r.ignore_eos, r.top_p) == (0.6, True, 1.0)
    assert all(100 <= len(q.prompt_token_ids) <= 1024 and 100 <= q.max_tokens <= 1024
               for q in w.requests)
    assert max(max(q.prompt_token_ids) for q in w.requests) <= 10000


def test_nanovllm_bench_is_the_global_random_sequence():
    # nano-vLLM seeds the module-level generator; ours must draw the very same numbers.
    random.seed(0)
    first = [random.randint(0, 10000) for _ in range(random.randint(100, 1024))]
    assert list(get_workload("nanovllm-bench").requests[0].prompt_token_ids) == first


@pytest.mark.parametrize("name", list_workloads())
def test_workload_is_deterministic_and_hashed(name):
    a = wl.WORKLOADS[name](0)   # bypass the cache: generate twice from scratch
    b = wl.WORKLOADS[name](0)
    assert a.content_hash == b.content_hash == get_workload(name).content_hash
    assert a.content_hash == hashlib.sha256(a.canonical_json().encode()).hexdigest()
    other = get_workload(name, seed=random.randrange(1, 10**6))
    assert other.content_hash != a.content_hash
    assert len(a.requests) > 0 and all(r.max_tokens >= 1 for r in a.requests)
    arrivals = [r.arrival_s for r in a.requests]
    assert arrivals == sorted(arrivals)


def test_hash_covers_every_field():
    w = get_workload("arrivals-cpu")
    r0 = w.requests[0]
    for change in ({"max_tokens": r0.max_tokens + 1}, {"temperature": 0.0},
                   {"arrival_s": 0.5}, {"prompt_token_ids": r0.prompt_token_ids[:-1]}):
        reqs = (wl.Request(**{**r0.__dict__, **change}),) + w.requests[1:]
        changed = wl._finish(w.name, w.version, list(reqs), w.model, w.seed,
                             w.engine_overrides, w.description)
        assert changed.content_hash != w.content_hash, change


def test_cpu_variants_fit_the_tiny_preset():
    for name in list_workloads():
        if not name.endswith("-cpu"):
            continue
        w = get_workload(name)
        assert w.model == "tiny"
        assert max(max(r.prompt_token_ids) for r in w.requests) < wl.TINY_VOCAB
        limit = w.engine_overrides["max_model_len"]
        assert max(len(r.prompt_token_ids) + r.max_tokens for r in w.requests) <= limit


@pytest.mark.parametrize("name", ["kv-pressure", "kv-pressure-cpu"])
def test_kv_pressure_demands_more_kv_than_it_gets(name):
    w = get_workload(name)
    bs = w.engine_overrides["block_size"]
    demand = sum(-(-(len(r.prompt_token_ids) + r.max_tokens) // bs) for r in w.requests)
    assert w.engine_overrides["num_kv_blocks"] < demand / 2


def test_shared_prefix_revisits_more_prefixes_than_the_cache_holds():
    w = get_workload("shared-prefix-cpu")
    heads = [r.prompt_token_ids[:256] for r in w.requests]
    blocks, bs = w.engine_overrides["num_kv_blocks"], w.engine_overrides["block_size"]
    assert len(set(heads)) * 256 // bs > 2 * blocks  # far more prefixes than fit
    assert all(heads.count(h) >= 2 for h in heads)  # every prefix comes back
    # shortest-prompt-first admission sees the arrival order (user turns grow)
    lens = [len(r.prompt_token_ids) for r in w.requests]
    assert lens == sorted(lens) and len(set(lens)) == len(lens)


def test_arrivals_spread_over_time():
    w = get_workload("arrivals-cpu")
    assert w.has_arrivals and w.requests[0].arrival_s == 0.0
    assert w.requests[-1].arrival_s > 0.5


def test_unknown_workload_names_the_known_ones():
    with pytest.raises(ValueError, match="nanovllm-bench-cpu") as e:
        get_workload("nanovlm-bench")
    assert "nanovlm-bench" in str(e.value)
    with pytest.raises(TypeError, match="seed"):
        get_workload("arrivals-cpu", seed="1")
