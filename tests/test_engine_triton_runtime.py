"""The CUDA seed runtime (Triton kernels) gives the same greedy tokens as the torch runtime,
through prefill, a cached prefix and decode (CPU: Triton interpreter, TRITON_INTERPRET=1)."""

from __future__ import annotations

import os

import pytest
import torch

from runtime_modules import LLM, RuntimeSpec, SamplingParams

RUNNABLE = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


@pytest.mark.skipif(not RUNNABLE, reason="Triton kernels need CUDA or TRITON_INTERPRET=1")
def test_triton_runtime_matches_torch_runtime(tiny_hf_dir):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    common = {"device": device, "dtype": torch.float32, "max_model_len": 64, "block_size": 8,
              "num_kv_blocks": 24, "enforce_eager": True}
    tri = LLM(tiny_hf_dir, runtime=RuntimeSpec.default("cuda"), **common)
    ref = LLM(tiny_hf_dir, runtime=RuntimeSpec.default("cpu"), **common)
    assert tri.loaded_slots["decode_attention"]["code_hash"] != \
        ref.loaded_slots["decode_attention"]["code_hash"]
    g = torch.Generator().manual_seed(11)
    a = torch.randint(2, 1024, (19,), generator=g).tolist()
    wave1 = [a, torch.randint(2, 1024, (3,), generator=g).tolist()]
    wave2 = [a[:17] + torch.randint(2, 1024, (2,), generator=g).tolist()]  # 2 cached blocks
    sp = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    for wave in (wave1, wave2):
        got = [o.token_ids for o in tri.generate(wave, sp)]
        want = [o.token_ids for o in ref.generate(wave, sp)]
        assert got == want
    assert tri.stats["prefix_cache_hit_tokens"] == 16
