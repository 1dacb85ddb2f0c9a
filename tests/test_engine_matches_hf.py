"""The engine's greedy output equals transformers' for every seed scheduler x cache policy,
with prefix-cache hits, with preemption under tiny KV memory, and with chunked prefill."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch

from runtime_modules import LLM, SamplingParams
from runtime_modules.slots import seed_names

SCHEDULERS = seed_names("scheduler")
POLICIES = seed_names("cache_policy")
MAX_TOKENS = 10


def _hf_greedy(path, prompts: list[list[int]], max_new: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, GenerationConfig
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gc = GenerationConfig(do_sample=False, max_new_tokens=max_new, min_new_tokens=max_new,
                          eos_token_id=None, pad_token_id=0)
    outs = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p])
            o = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
            outs.append(o[0, len(p):].tolist())
    return outs


@pytest.fixture(scope="module")
def case(tiny_hf_dir):
    """Two waves of prompts of mixed lengths; the second shares prefixes with the first."""
    rng = random.Random(1234)
    base = [[rng.randrange(2, 1024) for _ in range(n)] for n in (3, 17, 41, 24, 9, 33)]
    shared = [rng.randrange(2, 1024) for _ in range(20)]
    wave2 = [base[2][:35] + [rng.randrange(2, 1024) for _ in range(4)],
             shared + [rng.randrange(2, 1024) for _ in range(5)],
             shared + [rng.randrange(2, 1024) for _ in range(11)],
             base[5] + [7]]
    prompts = base + wave2
    ref = _hf_greedy(tiny_hf_dir, prompts, MAX_TOKENS)
    # the oracle must be able to fail: outputs are not one repeated token
    assert sum(len(set(r)) for r in ref) > 5 * len(ref)
    return {"wave1": base, "wave2": wave2, "ref": ref}


def _spec(scheduler: str, policy: str) -> dict:
    return {"slots": {"scheduler": {"program": scheduler},
                      "cache_policy": {"program": policy}}}


GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_greedy_matches_hf_with_prefix_hits(tiny_hf_dir, case, scheduler, policy):
    llm = LLM(tiny_hf_dir, runtime=_spec(scheduler, policy), device="cpu", block_size=8,
              max_num_seqs=4, max_model_len=128)
    out1 = llm.generate(case["wave1"], GREEDY)
    out2 = llm.generate(case["wave2"], GREEDY)
    got = [o.token_ids for o in out1 + out2]
    assert got == case["ref"]
    assert llm.stats["prefix_cache_hit_tokens"] > 0
    assert llm.loaded_slots["scheduler"]["name"] == scheduler.split("/")[1]
    assert llm.engine.block_manager.num_free_blocks == llm.engine.num_kv_blocks


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_greedy_matches_hf_under_preemption_and_chunking(tiny_hf_dir, case, scheduler, policy):
    # 10 blocks of 8 tokens hold one long sequence (<= 7 blocks) but never all of them;
    # a 16-token budget forces the 41-token prompt to be prefilled in pieces
    llm = LLM(tiny_hf_dir, runtime=_spec(scheduler, policy), device="cpu", block_size=8,
              num_kv_blocks=10, max_num_batched_tokens=16, max_num_seqs=6, max_model_len=128)
    prompts = case["wave1"] + case["wave2"]
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == case["ref"]
    assert llm.stats["preemptions"] > 0
    assert llm.stats["generated_tokens"] >= MAX_TOKENS * len(prompts)
    assert llm.engine.block_manager.num_free_blocks == 10


def test_eos_stops_generation(tiny_hf_dir, case, tmp_path):
    """A sequence ends at its first eos token (finish_reason 'stop') unless ignore_eos."""
    ref = case["ref"][1]
    eos = ref[4]
    stop_at = ref.index(eos)
    d = tmp_path / "eos_model"
    shutil.copytree(tiny_hf_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["eos_token_id"] = eos
    (d / "config.json").write_text(json.dumps(cfg))
    llm = LLM(d, device="cpu", max_model_len=128)
    sp = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    out = llm.generate([case["wave1"][1]], sp)[0]
    assert out.token_ids == ref[:stop_at + 1] and out.finish_reason == "stop"
    out = llm.generate([case["wave1"][1]], GREEDY)[0]
    assert out.token_ids == ref and out.finish_reason == "length"


def test_max_model_len_finishes_sequences(tiny_hf_dir, case):
    llm = LLM(tiny_hf_dir, device="cpu", max_model_len=20)
    prompt = case["wave1"][1]  # 17 tokens: room for 3 more
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=50,
                                                ignore_eos=True))[0]
    assert out.token_ids == case["ref"][1][:3] and out.finish_reason == "length"
