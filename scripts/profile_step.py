#!/usr/bin/env python
"""Per-step time breakdown of the engine: attention, GEMMs, LM head, sampler, host.

Runs the first requests of a workload (all in one batch, as nano-vLLM's bench does) under
the torch profiler, then splits the device time of the decode steps into categories by
operator name and input shapes (an op with the vocabulary size in its shapes is the LM head
if it is a matmul, the sampler otherwise), and sets it against the wall time per step:
wall - device busy = host time the GPU sat idle. Writes results/profile_step.json, a CSV
of the top ops and a Chrome trace.

GPU:  PYTHONPATH=. python scripts/profile_step.py --model qwen3-0.6b --workload nanovllm-bench
      (add --eager to see kernels without CUDA graphs; graphs hide per-kernel attribution on
      some CUPTI versions, and the comparison shows what graphs save on the host)
CPU:  python scripts/profile_step.py  (tiny preset; only CPU op times, no kernel split)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile

from fitness.bench import _sampling, build_llm
from fitness.workloads import Request, default_workload, get_workload

log = logging.getLogger("profile_step")

ATTN_WORDS = ("attention", "attn", "flash", "store_kv", "kvcache", "paged")
GEMM_WORDS = ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "aten::bmm",
              "gemm", "cutlass", "nvjet", "xmma", "cublas")
NORM_WORDS = ("rms", "norm")
SAMPLER_WORDS = ("multinomial", "exponential", "topk", "sort", "argmax", "softmax",
                 "cumsum", "sampler", "gumbel")


def categorize(name: str, shapes: str, vocab: int) -> str:
    """The breakdown category of one profiled op (by name, and shapes for the LM head)."""
    n = name.lower()
    has_vocab = str(vocab) in shapes
    if any(w in n for w in GEMM_WORDS):
        return "lm_head" if has_vocab else "gemm"
    if any(w in n for w in ATTN_WORDS):
        return "attention"
    if any(w in n for w in SAMPLER_WORDS) or has_vocab:
        return "sampler"
    if any(w in n for w in NORM_WORDS):
        return "norm"
    if "rotary" in n or "rope" in n:
        return "rotary"
    return "other"


def _decode_workload(name: str, n: int, prompt_cap: int, out_cap: int, seed: int):
    """The first n requests of a workload, lengths capped so a profile stays short."""
    w = get_workload(name, seed=seed)
    reqs = [Request(r.prompt_token_ids[:prompt_cap], r.temperature, r.top_p,
                    min(r.max_tokens, out_cap), True) for r in w.requests[:n]]
    return w, reqs


def profile_steps(model: str | None, workload: str | None, num_requests: int, prompt_cap: int,
                  out_cap: int, eager: bool, out_dir: Path, seed: int = 0) -> dict:
    """Profile a batch of requests step by step; write and return the breakdown."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    w, reqs = _decode_workload(workload or default_workload(device), num_requests, prompt_cap,
                               out_cap, seed)
    model = model or w.model
    extra = {"enforce_eager": True} if eager else {}
    llm = build_llm(w, model=model, **extra)
    from runtime_modules.models import model_config
    from runtime_modules.profiling import range_totals
    vocab = model_config(model).vocab_size
    # warm-up outside the profile: compile, autotune, capture graphs
    llm.generate([list(r.prompt_token_ids[:32]) for r in reqs[:4]],
                 [_sampling(Request(r.prompt_token_ids, max_tokens=4)) for r in reqs[:4]])
    for r in reqs:
        llm.add_request(list(r.prompt_token_ids), _sampling(r))
    # prefill outside the profile: the breakdown is of decode steps
    d0 = dict(llm.stats).get("decode_steps", 0)
    while llm.has_unfinished() and dict(llm.stats).get("decode_steps", 0) == d0:
        llm.step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    step_wall: list[float] = []
    with profile(activities=acts, record_shapes=True) as prof:
        while llm.has_unfinished():
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            llm.step()
            if cuda:
                torch.cuda.synchronize()
            step_wall.append(time.perf_counter() - t0)
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = out_dir / f"profile_step_{device}.trace.json"
    prof.export_chrome_trace(str(trace))
    cats: dict[str, float] = defaultdict(float)
    rows = []
    for ev in prof.key_averages(group_by_input_shape=True):
        # device time on CUDA (kernels attribute to the op that launched them); CPU time else
        t = (ev.self_device_time_total if cuda else ev.self_cpu_time_total) / 1e6
        if t <= 0:
            continue
        shapes = str(ev.input_shapes)
        cat = categorize(ev.key, shapes, vocab)
        cats[cat] += t
        rows.append({"op": ev.key, "shapes": shapes[:200], "category": cat, "self_s": t,
                     "count": ev.count})
    rows.sort(key=lambda r: -r["self_s"])
    steps = len(step_wall)
    wall = sum(step_wall)
    busy = sum(cats.values())
    res = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "model": model,
        "workload": w.name, "requests": len(reqs), "eager": eager, "decode_steps": steps,
        "wall_ms_per_step": 1e3 * wall / max(steps, 1),
        "busy_ms_per_step": 1e3 * busy / max(steps, 1),
        "host_gap_ms_per_step": 1e3 * max(wall - busy, 0.0) / max(steps, 1) if cuda else None,
        "categories_ms_per_step": {k: 1e3 * v / max(steps, 1) for k, v in sorted(cats.items())},
        # the engine's own named ranges (runtime_modules.profiling): they do not depend on
        # kernel names; inside a replayed CUDA graph there are none, so compare with --eager
        "ranges_ms_per_step": {k: 1e3 * v / max(steps, 1)
                               for k, v in range_totals(prof, device=cuda).items()},
        "trace": str(trace),
        "note": None if cuda else ("CPU run: op times are host CPU times of the torch "
                                   "reference kernels; the kernel split, the host gap and the "
                                   "CUDA-graph effect need a GPU"),
    }
    (out_dir / f"profile_step_{device}.json").write_text(json.dumps(res, indent=2))
    with (out_dir / f"profile_step_{device}_ops.csv").open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["op", "category", "self_s", "count", "shapes"])
        wr.writeheader()
        wr.writerows(rows[:60])
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="preset or HF folder (default: the workload's)")
    p.add_argument("--workload", default=None, help="default: nanovllm-bench(-cpu)")
    p.add_argument("--requests", type=int, default=None,
                   help="requests in the batch (default: 128 on CUDA, 16 on CPU)")
    p.add_argument("--prompt-cap", type=int, default=1024, help="truncate prompts to this")
    p.add_argument("--out-cap", type=int, default=None,
                   help="cap max_tokens (default: 64 on CUDA, 24 on CPU)")
    p.add_argument("--eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--out", default="results", help="output folder")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cuda = torch.cuda.is_available()
    res = profile_steps(a.model, a.workload, a.requests or (128 if cuda else 16), a.prompt_cap,
                        a.out_cap or (64 if cuda else 24), a.eager, Path(a.out))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
