"""Profiler ranges: every model part shows up by name when profiling, and costs nothing when not."""

import torch
from torch.profiler import ProfilerActivity, profile

from runtime_modules import LLM, SamplingParams
from runtime_modules.profiling import RANGES, prof_range, range_totals


def test_ranges_cover_attention_gemms_lm_head_and_sampler():
    llm = LLM("tiny", device="cpu", max_num_seqs=4, max_model_len=64, seed=3)
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        llm.add_request(torch.randint(2, 1000, (9,), generator=g).tolist(),
                        SamplingParams(temperature=0.8, max_tokens=4))
    llm.step()  # prefill outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        llm.step()  # one decode step
    totals = range_totals(prof, device=False)
    assert set(totals) == set(RANGES)
    assert all(totals[r] > 0 for r in RANGES), totals


def test_prof_range_is_a_no_op_without_a_profiler():
    assert not torch.autograd._profiler_enabled()
    assert prof_range("attention") is prof_range("mlp")  # the shared null context
    with profile(activities=[ProfilerActivity.CPU]):
        assert prof_range("attention") is not prof_range("mlp")
