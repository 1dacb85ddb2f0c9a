"""A deterministic cost model of a run: what its engine work would cost on a GPU.

On a shared CPU, wall-clock tok/s of the same runtime varies by far more (0.3x..3.9x
measured, seed against itself) than scheduler and cache-policy choices change the work
(a few percent), so a search that selects on wall time selects noise. This model prices
the work the engine itself counted, step by step, the way a GPU would:

    modeled_time_s = sum over non-empty engine steps of
        STEP_S + TOKEN_S * tokens computed in the step + KV_TOKEN_S * KV tokens attended
    modeled_tok_s  = output tokens / modeled_time_s

Because the cost is linear, the sum needs only the engine's cumulative counters
(`llm.stats`): non-empty steps (`steps - empty_steps`), `scheduled_tokens` (tokens computed,
recompute after preemption included) and `kv_tokens_attended` (per scheduled sequence, its
KV length after the step). They are counted by the engine from the batch it checked and
ran, never by a slot, so a candidate cannot set them.

Coefficients: Qwen3-0.6B in bf16 on an H100 (facts from ../shared/FIELD_NOTES.md).
- STEP_S: every forward step reads all weights once: 28 layers x 15.7 M params
  (q 1024x2048, k/v 1024x1024 each, o 2048x1024, MLP 3 x 1024x3072) + the tied
  151,936 x 1024 LM head = 596 M params x 2 bytes = 1.19 GB, at the measured ~3.0 TB/s
  copy bandwidth: 0.40 ms. Decode is memory-bound: fewer, fuller steps are cheaper.
- TOKEN_S: 2 FLOP per parameter per token = 1.19 GFLOP, at ~600 TFLOP/s (about 60% of the
  H100's 989 TFLOP/s dense bf16): 2.0 us; plus writing its KV (112 KiB at 3.0 TB/s,
  0.04 us). Prefill is compute-bound: recomputing a preempted prompt costs this per token.
- KV_TOKEN_S: reading one token's KV (28 layers x 2 x 8 KV heads x 128 x 2 bytes =
  112 KiB) at 3.0 TB/s: 38 ns.
The sum (not the max) of the memory and compute terms slightly overprices large mixed
steps; it ranks runtimes the way a GPU would, which is what selection needs. The model is
the same whatever the preset run: a `tiny` run is priced as if it were Qwen3-0.6B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STEP_S = 596e6 * 2 / 3.0e12            # weight read per forward step (0.40 ms)
TOKEN_S = 2 * 596e6 / 600e12 + 114688 / 3.0e12  # compute + KV write per token (2.0 us)
KV_TOKEN_S = 114688 / 3.0e12           # KV read per attended token (38 ns)

# the engine counters the model reads (deltas over one run)
COUNTERS = ("steps", "empty_steps", "scheduled_tokens", "kv_tokens_attended")
# the work counters recorded next to it for people (what explains a modeled ratio)
WORK_COUNTERS = ("steps", "prefill_steps", "decode_steps", "empty_steps", "scheduled_tokens",
                 "generated_tokens", "kv_tokens_attended", "preemptions",
                 "prefix_cache_hit_tokens")


def modeled_time_s(counters: Mapping[str, Any]) -> float:
    """Modeled GPU seconds of a run from its engine counter deltas (see the module doc)."""
    missing = [k for k in COUNTERS if k not in counters]
    if missing:
        raise KeyError(f"engine counters {missing} missing from {sorted(counters)}: the cost "
                       "model needs runtime_modules' Engine.stats (kv_tokens_attended)")
    model_steps = int(counters["steps"]) - int(counters["empty_steps"])
    return (STEP_S * model_steps + TOKEN_S * int(counters["scheduled_tokens"])
            + KV_TOKEN_S * int(counters["kv_tokens_attended"]))


def modeled(counters: Mapping[str, Any], output_tokens: int) -> dict[str, float]:
    """`modeled_time_s` and `modeled_tok_s` (output tokens / modeled time) of one run."""
    t = modeled_time_s(counters)
    if t <= 0:
        raise ValueError(f"modeled time {t} s from counters {dict(counters)}: the run did no "
                         "engine work")
    return {"modeled_time_s": t, "modeled_tok_s": output_tokens / t}
