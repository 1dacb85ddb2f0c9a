"""shared-prefix-cpu separates eviction policies: the modeled cost of the same requests
differs by several percent between a sensible score and one that evicts prefix heads."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from fitness.bench import build_llm, run_workload
from fitness.correctness import model_dir
from fitness.workloads import get_workload

ROOT = Path(__file__).resolve().parent.parent
SEED_SCORE = "hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position"


def _policy(tmp: Path, expr: str) -> str:
    code = (ROOT / "seeds" / "cache_policy" / "scored.py").read_text()
    assert SEED_SCORE in code, "the scored seed's expression changed: update this test"
    path = tmp / f"score_{abs(hash(expr))}.py"
    path.write_text(code.replace(SEED_SCORE, expr))
    return f"file:{path}"


def _modeled(tmp: Path, expr: str) -> tuple[float, int]:
    wl = get_workload("shared-prefix-cpu")
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/priority"},
                      "cache_policy": {"program": _policy(tmp, expr), "params": {"window": 64}}}}
    llm = build_llm(wl, model=str(model_dir("tiny")), runtime=spec, device="cpu")
    res = run_workload(llm, wl, warmup=False)
    return res["modeled_tok_s"], res["stats_prefix_cache_hit_tokens"]


@pytest.mark.timeout(120)
def test_eviction_choice_moves_modeled_throughput(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is faster on a shared machine
    try:
        # a frequency-aware score vs evicting the head blocks of recently used prefixes
        # (either sign of a fresh coefficient: the order, not the scale, decides)
        k = random.uniform(0.5, 5.0)
        good, good_hits = _modeled(tmp_path, f"hashed * (1.0 + num_hits) - 0.001 * {k} * position")
        bad, bad_hits = _modeled(tmp_path, f"{k} * position")
    finally:
        torch.set_num_threads(threads)
    assert good_hits > bad_hits
    # Measured 1.056 under the per-step roofline (1.118 under the old linear sum). What
    # moved: both runs take the same 54 steps, the bad score just recomputes ~2,400 more
    # prompt tokens in them; the roofline charges a token the layers' GEMMs only (the LM
    # head, 26% of the old per-token price, runs on sampled rows) and nothing in a step
    # still bound by the weight read, so recompute costs less than the sum claimed.
    assert good / bad > 1.04, (good, bad)
