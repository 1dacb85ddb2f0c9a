"""The physical floor of a workload: the least time any engine needs, from bytes and FLOPs.

Every decode step must read all weights once and the whole KV cache of every running
sequence. Assuming every sequence of the workload runs in one batch from the start (as in
nano-vLLM's bench, and the fewest weight reads any schedule can do), the run's bytes are
    weights x (number of decode steps) + KV bytes per token x sum over sequences and steps
    of the context length read,
and time >= bytes / bandwidth + prefill FLOPs / peak FLOP rate. For Qwen3-0.6B in bf16 on
`nanovllm-bench` that is ~13.9 TB of KV and ~1.2 TB of weights (docs/SOURCES.md):
about 25,500 tok/s at an H100's ~3.0 TB/s measured copy bandwidth.

A tok/s above the floor is a measurement error, never a fast candidate: the harness
rejects it. Prefill counts each distinct prompt prefix once (perfect prefix caching), and a
workload with arrivals can never end before its last request arrives, so the floor stays
a true lower bound on time for every schedule.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from fitness.workloads import Workload

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peak used for prefill FLOPs when the caller names none:
# H100 SXM, 989 TFLOP/s (NVIDIA H100 datasheet). A higher peak only lowers the floor.
DEFAULT_PEAK_FLOPS = 989e12

_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "vocab_size")

# Qwen3-0.6B (docs/SOURCES.md), so the floor can be computed without building the model.
QWEN3_0_6B = {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
              "vocab_size": 151936, "tie_word_embeddings": True}


def _cfg(model_config: Any) -> dict[str, Any]:
    """The fields the floor needs, from a dict, a dataclass or a transformers config."""
    get = model_config.get if isinstance(model_config, dict) else (
        lambda k, d=None: getattr(model_config, k, d))
    missing = [k for k in _CONFIG_KEYS if get(k) is None]
    if missing:
        raise ValueError(f"physical_floor: model config lacks {missing}; expected a "
                         f"Qwen3/Llama-style config with {list(_CONFIG_KEYS)}, got "
                         f"{type(model_config).__name__}")
    c = {k: int(get(k)) for k in _CONFIG_KEYS}
    c["head_dim"] = int(get("head_dim") or c["hidden_size"] // c["num_attention_heads"])
    c["tie_word_embeddings"] = bool(get("tie_word_embeddings", False))
    return c


def layer_params(model_config: Any) -> int:
    """Parameters of the decoder layers and final norm (Qwen3: with q/k norms)."""
    c = _cfg(model_config)
    h, d = c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    attn = h * q + 2 * h * kv + q * h + 2 * d    # q, k, v, o projections; q/k RMSNorm
    mlp = 3 * h * c["intermediate_size"]         # gate, up, down
    return c["num_hidden_layers"] * (attn + mlp + 2 * h) + h


def decode_weight_bytes(model_config: Any, dtype_bytes: int = 2) -> int:
    """Bytes of weights one decode step reads: layers + the LM head (embedding rows are few)."""
    c = _cfg(model_config)
    return (layer_params(model_config) + c["vocab_size"] * c["hidden_size"]) * dtype_bytes


def kv_bytes_per_token(model_config: Any, dtype_bytes: int = 2) -> int:
    """K and V bytes one token occupies over all layers."""
    c = _cfg(model_config)
    return c["num_hidden_layers"] * 2 * c["num_key_value_heads"] * c["head_dim"] * dtype_bytes


def distinct_prompt_tokens(workload: Workload) -> int:
    """Prompt tokens left to compute with perfect prefix caching (nodes of the prompt trie)."""
    prompts = sorted(r.prompt_token_ids for r in workload.requests)
    total, prev = 0, ()
    for p in prompts:
        lcp = 0
        for a, b in zip(p, prev):
            if a != b:
                break
            lcp += 1
        total += len(p) - lcp
        prev = p
    return total


def prefill_flops(model_config: Any, workload: Workload) -> float:
    """FLOPs of prefill: 2 x matmul params per token plus causal attention (QK^T and PV)."""
    c = _cfg(model_config)
    per_token = 2 * (layer_params(model_config) + c["vocab_size"] * c["hidden_size"])
    attn_width = c["num_hidden_layers"] * c["num_attention_heads"] * c["head_dim"]
    # Causal attention over a prompt of n tokens: ~n^2/2 scores, 2 matmuls, 2 FLOPs each.
    attn = sum(2 * attn_width * len(r.prompt_token_ids) ** 2 for r in workload.requests)
    return per_token * distinct_prompt_tokens(workload) + attn


def decode_kv_token_reads(workload: Workload) -> tuple[int, int]:
    """(KV token reads over all decode steps, number of decode steps), all sequences together.

    Request i's first token comes from prefill; decode step t = 1 .. max_tokens_i - 1
    reads its prompt plus t tokens of context.
    """
    reads, steps = 0, 0
    for r in workload.requests:
        p, n = len(r.prompt_token_ids), r.max_tokens - 1
        reads += n * p + n * (n + 1) // 2
        steps = max(steps, n)
    return reads, steps


def physical_floor(model_config: Any, workload: Workload, bandwidth: float,
                   dtype_bytes: int = 2, peak_flops: float | None = DEFAULT_PEAK_FLOPS
                   ) -> dict[str, float]:
    """The least time (and most output tok/s) physically possible for `workload`.

    `bandwidth` in bytes/s (from `measure_bandwidth`); `peak_flops` in FLOP/s for prefill,
    None to leave compute out. Returns min_time_s, max_tok_s, kv_bytes, weight_bytes,
    prefill_flops, decode_steps.
    """
    if not bandwidth or bandwidth <= 0:
        raise ValueError(f"physical_floor: bandwidth must be > 0 bytes/s, got {bandwidth!r}")
    kv_reads, steps = decode_kv_token_reads(workload)
    kv = kv_reads * kv_bytes_per_token(model_config, dtype_bytes)
    weights = steps * decode_weight_bytes(model_config, dtype_bytes)
    flops = prefill_flops(model_config, workload)
    t = (kv + weights) / bandwidth + (flops / peak_flops if peak_flops else 0.0)
    last_arrival = max((r.arrival_s for r in workload.requests), default=0.0)
    t = max(t, last_arrival)
    return {"min_time_s": t, "max_tok_s": workload.num_output_tokens / t,
            "kv_bytes": float(kv), "weight_bytes": float(weights),
            "prefill_flops": float(flops), "decode_steps": float(steps),
            "bandwidth": float(bandwidth), "peak_flops": float(peak_flops or 0.0)}


def measure_bandwidth(device: str | torch.device = "cpu", nbytes: int | None = None,
                      repeats: int = 5) -> float:
    """Copy bandwidth in bytes/s (read + write counted) of a large same-device copy.

    CUDA: 1 GiB device-to-device, timed with events, best of `repeats`. CPU: 256 MiB
    memcpy, best of `repeats` by wall clock.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        n = nbytes or (1 << 30)
        src = torch.empty(n, dtype=torch.uint8, device=dev)
        src.random_(0, 255)
        dst = torch.empty_like(src)
        dst.copy_(src)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        del src, dst
        torch.cuda.empty_cache()
    elif dev.type == "cpu":
        n = nbytes or (256 << 20)
        src = torch.empty(n, dtype=torch.uint8).fill_(7)  # content is irrelevant to memcpy
        dst = torch.empty_like(src)
        dst.copy_(src)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            dst.copy_(src)
            best = min(best, time.perf_counter() - t0)
    else:
        raise ValueError(f"measure_bandwidth: device must be cpu or cuda, got {device!r}")
    bw = 2 * n / best  # a copy reads n bytes and writes n bytes
    log.info("copy bandwidth on %s: %.3g B/s", dev, bw)
    return bw
