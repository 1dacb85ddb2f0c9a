"""Throughput benchmark of the engine on a workload, and the Hugging Face transformers peer.

`run_workload` measures as nano-vLLM's bench.py does: one warm-up, then
tok/s = sum of max_tokens / wall time of `generate` (device synchronized on both sides of
the clock). Workloads with arrival times are driven through `add_request` / `step` instead,
each request added when its time comes. TTFT/TPOT come from the engine's per-request
metrics; the engine's work counters of the run (`stats_*`) come with every result, and
with an engine that has a step observer, the deterministic `modeled_time_s` /
`modeled_tok_s` of `fitness/costmodel.py` (a `CostMeter` priced each step of the run, on
`modeled_device`).
`run_peer` runs the same requests through transformers in the same process: padded
batched `generate`, and continuous batching where the installed version has it.
The physical floor and the bandwidth probe live in `fitness/floor.py`.
"""

from __future__ import annotations

import logging
import resource
import statistics
import tempfile
import time
from typing import Any

import torch

# Imported now, not lazily by the first model build: importing it rewraps torch.manual_seed
# and torch.compiler's cache properties, which the worker's integrity snapshot (taken after
# this module is preimported) would otherwise blame on the candidate.
import torch._dynamo

from fitness.costmodel import CostMeter, device_profile, modeled
from fitness.floor import measure_bandwidth, physical_floor
from fitness.workloads import Request, Workload

log = logging.getLogger(__name__)

__all__ = ["build_llm", "measure_bandwidth", "physical_floor", "run_peer", "run_workload",
           "summarize_latencies"]


def _sync(device: Any) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def build_llm(workload: Workload, model: str | None = None, runtime: Any = None,
              **engine_params: Any) -> Any:
    """An `LLM` for `workload`: its model and engine_overrides; explicit params win."""
    from runtime_modules import LLM
    params = {**workload.engine_overrides, **engine_params}
    return LLM(model or workload.model, runtime=runtime, **params)


def _sampling(r: Request) -> Any:
    from runtime_modules import SamplingParams
    return SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                          ignore_eos=r.ignore_eos)


def _field(obj: Any, *names: str) -> float | None:
    """The first of `names` present on `obj` (attribute or key), else None."""
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return float(v)
    return None


def summarize_latencies(metrics: list[Any], output_lens: list[int]) -> dict[str, float]:
    """TTFT and TPOT means and p50/p90 (seconds) from per-request engine metrics."""
    ttft, tpot = [], []
    for m, n in zip(metrics, output_lens):
        if m is None:
            continue
        arr = _field(m, "arrival_time", "arrival")
        first = _field(m, "first_token_time", "first_token")
        fin = _field(m, "finish_time", "finish", "finished_time")
        if arr is not None and first is not None:
            ttft.append(first - arr)
        if first is not None and fin is not None and n > 1:
            tpot.append((fin - first) / (n - 1))
    out: dict[str, float] = {}
    for name, xs in (("ttft", ttft), ("tpot", tpot)):
        if xs:
            qs = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else xs * 9
            out.update({f"{name}_mean_s": statistics.fmean(xs), f"{name}_p50_s": qs[4],
                        f"{name}_p90_s": qs[8]})
    return out


def _peak_memory(device: Any) -> tuple[str, float]:
    if str(device).startswith("cuda"):
        return "peak_cuda_bytes", float(torch.cuda.max_memory_allocated())
    # ru_maxrss is KiB on Linux: the peak resident set of this whole process
    return "peak_rss_bytes", float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _warmup(llm: Any, workload: Workload) -> None:
    """A short generate on a few of the workload's requests (cut down), as nano-vLLM warms up."""
    reqs = workload.requests[: min(4, len(workload.requests))]
    prompts = [list(r.prompt_token_ids[:64]) for r in reqs]
    sps = [_sampling(Request(r.prompt_token_ids, r.temperature, r.top_p,
                             min(r.max_tokens, 8), r.ignore_eos)) for r in reqs]
    llm.generate(prompts, sps)


def _drive_arrivals(llm: Any, workload: Workload) -> tuple[list[Any], int]:
    """Add each request when its arrival time comes and step until all are done."""
    pending = sorted(range(len(workload.requests)),
                     key=lambda i: workload.requests[i].arrival_s)
    ids: dict[Any, int] = {}
    done: dict[int, Any] = {}
    steps, nxt = 0, 0
    t0 = time.perf_counter()
    while nxt < len(pending) or llm.has_unfinished():
        now = time.perf_counter() - t0
        while nxt < len(pending) and workload.requests[pending[nxt]].arrival_s <= now:
            r = workload.requests[pending[nxt]]
            ids[llm.add_request(list(r.prompt_token_ids), _sampling(r))] = pending[nxt]
            nxt += 1
        if llm.has_unfinished():
            for out in llm.step() or []:
                done[ids[_request_id(out)]] = out
            steps += 1
        elif nxt < len(pending):
            time.sleep(max(0.0, workload.requests[pending[nxt]].arrival_s - now))
    missing = sorted(set(range(len(workload.requests))) - set(done))
    if missing:
        raise RuntimeError(f"engine lost {len(missing)} request(s) of workload "
                           f"{workload.name!r}: indices {missing[:10]}")
    return [done[i] for i in range(len(workload.requests))], steps


def _request_id(out: Any) -> Any:
    for n in ("request_id", "rid", "seq_id", "id"):
        v = getattr(out, n, None)
        if v is not None:
            return v
    raise AttributeError(f"engine output {type(out).__name__} has no request id field "
                         "(request_id / seq_id)")


def _check_ignore_eos(workload: Workload, lens: list[int]) -> None:
    """Raise unless every ignore_eos request produced exactly its max_tokens tokens."""
    bad = [i for i, (r, n) in enumerate(zip(workload.requests, lens))
           if r.ignore_eos and n != r.max_tokens]
    if bad:
        raise RuntimeError(f"workload {workload.name!r}: {len(bad)} ignore_eos request(s) did "
                           f"not produce max_tokens tokens, e.g. request {bad[0]}: "
                           f"{lens[bad[0]]} != {workload.requests[bad[0]].max_tokens}")


def _counters_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """How much each of the engine's numeric counters grew over a run (gauges left out)."""
    gauges = {"num_kv_blocks", "free_kv_blocks", "unfinished"}  # levels, not counters
    return {k: after[k] - before.get(k, 0) for k in after
            if isinstance(after[k], (int, float)) and k not in gauges}


def run_workload(llm: Any, workload: Workload, warmup: bool = True,
                 cost_device: str = "h100") -> dict[str, Any]:
    """Run `workload` on `llm` and return tok/s, latencies, peak memory, tokens and steps.

    Where the engine has a `step_observer`, a `CostMeter` on `cost_device` prices each step
    of the run (the warm-up excluded) and the result carries `modeled_time_s`,
    `modeled_tok_s` and `modeled_device`; the engine's previous observer is restored.
    """
    device = getattr(getattr(llm, "config", None), "device", None) or (
        "cuda" if torch.cuda.is_available() else "cpu")
    profile = device_profile(cost_device)  # a bad name fails before any work
    if warmup:
        _warmup(llm, workload)
    stats0 = dict(getattr(llm, "stats", {}) or {})
    engine = getattr(llm, "engine", None)
    meter = CostMeter(device=profile) if hasattr(engine, "step_observer") else None
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    previous = engine.step_observer if meter is not None else None
    if meter is not None:
        engine.step_observer = meter
    try:
        _sync(device)
        t0 = time.perf_counter()
        if workload.has_arrivals:
            outs, steps = _drive_arrivals(llm, workload)
        else:
            outs = llm.generate([list(r.prompt_token_ids) for r in workload.requests],
                                [_sampling(r) for r in workload.requests])
            steps = None
        _sync(device)
        wall = time.perf_counter() - t0
    finally:
        if meter is not None:
            engine.step_observer = previous
    lens = [len(o.token_ids) for o in outs]
    _check_ignore_eos(workload, lens)
    delta = _counters_delta(stats0, dict(getattr(llm, "stats", {}) or {}))
    mem_key, mem = _peak_memory(device)
    res: dict[str, Any] = {
        "workload": workload.name, "workload_hash": workload.content_hash,
        "device": str(device), "wall_s": wall,
        "tok_s": workload.num_output_tokens / wall,
        "output_tokens": sum(lens), "prompt_tokens": workload.num_prompt_tokens,
        "steps": int(delta.get("steps", steps if steps is not None else 0)),
        mem_key: mem,
    }
    res.update(summarize_latencies([getattr(o, "metrics", None) for o in outs], lens))
    res.update({f"stats_{k}": v for k, v in delta.items() if k != "steps"})
    if meter is not None:  # an engine that reports each step's work
        res.update(modeled(meter, workload.num_output_tokens))
        res["modeled_device"] = profile.name
    return res


# ----------------------------------------------------------------------------- the peer


def _hf_model(model: str, device: str, dtype: torch.dtype, seed: int) -> Any:
    """The transformers model with the engine's weights (a preset is written to a temp dir)."""
    from transformers import AutoModelForCausalLM

    from runtime_modules.models import PRESETS, save_pretrained
    path = model
    if model in PRESETS:
        path = tempfile.mkdtemp(prefix=f"sds-peer-{model}-")
        save_pretrained(model, path, seed=seed, dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


def _peer_generate(hf: Any, reqs: tuple[Request, ...], device: str, batch_size: int) -> float:
    """Wall seconds of padded batched `generate` over `reqs` (left padding, sampling)."""
    _sync(device)
    t0 = time.perf_counter()
    for i in range(0, len(reqs), batch_size):
        chunk = reqs[i:i + batch_size]
        width = max(len(r.prompt_token_ids) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, r in enumerate(chunk):
            n = len(r.prompt_token_ids)
            ids[j, width - n:] = torch.tensor(r.prompt_token_ids)
            mask[j, width - n:] = 1
        new = max(r.max_tokens for r in chunk)
        with torch.inference_mode():
            # min_new_tokens = max_new_tokens: ignore_eos, every row runs to the batch maximum
            hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                        do_sample=True, temperature=chunk[0].temperature, top_p=chunk[0].top_p,
                        top_k=0, max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
    _sync(device)
    return time.perf_counter() - t0


def _peer_continuous(hf: Any, reqs: tuple[Request, ...], device: str) -> float:
    """Wall seconds of transformers' continuous batching, per-request max_new_tokens."""
    from transformers import GenerationConfig
    gc = GenerationConfig(do_sample=True, temperature=reqs[0].temperature,
                          top_p=reqs[0].top_p, top_k=0, max_new_tokens=max(
                              r.max_tokens for r in reqs), eos_token_id=None, pad_token_id=0)
    mgr = hf.init_continuous_batching(generation_config=gc)
    mgr.start()
    try:
        _sync(device)
        t0 = time.perf_counter()
        ids = {mgr.add_request(list(r.prompt_token_ids), max_new_tokens=r.max_tokens)
               for r in reqs}
        finished: set[str] = set()
        while len(finished) < len(ids):
            res = mgr.get_result(timeout=1)
            if res is None:
                if not mgr.is_running():
                    raise RuntimeError("transformers continuous batching stopped with "
                                       f"{len(ids) - len(finished)} request(s) unfinished")
                continue
            if res.is_finished():
                if getattr(res, "error", None):
                    raise RuntimeError(f"transformers continuous batching: {res.error}")
                finished.add(res.request_id)
        _sync(device)
        return time.perf_counter() - t0
    finally:
        mgr.stop(block=True)


def run_peer(workload: Workload, model: str | None = None, device: str | None = None,
             dtype: torch.dtype | None = None, seed: int = 0, batch_size: int | None = None,
             max_requests: int | None = None, methods: tuple[str, ...] = ("generate",
                                                                         "continuous")
             ) -> dict[str, Any]:
    """The workload through Hugging Face transformers: tok/s per method and the best.

    `max_requests` runs only the first N requests (tok/s is still tokens / time of those).
    Continuous batching is used only where the installed transformers has
    `init_continuous_batching`; a failure there is logged and recorded, not hidden.
    """
    import transformers
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    reqs = workload.requests[:max_requests] if max_requests else workload.requests
    tokens = sum(r.max_tokens for r in reqs)
    hf = _hf_model(model or workload.model, device, dtype, seed)
    out: dict[str, Any] = {"peer": f"transformers {transformers.__version__}",
                           "peer_requests": len(reqs)}
    if "generate" in methods:
        bs = batch_size or (64 if device.startswith("cuda") else 32)
        warm = (Request(reqs[0].prompt_token_ids[:16], max_tokens=4),)
        _peer_generate(hf, warm, device, 1)
        out["peer_generate_tok_s"] = tokens / _peer_generate(hf, reqs, device, bs)
        out["peer_generate_batch"] = bs
    if "continuous" in methods:
        if not hasattr(hf, "init_continuous_batching"):
            out["peer_continuous_error"] = "not in this transformers version"
        else:
            try:
                out["peer_continuous_tok_s"] = tokens / _peer_continuous(hf, reqs, device)
            except Exception as e:  # noqa: BLE001 - recorded; the generate figure still stands
                log.warning("transformers continuous batching failed: %s", e)
                out["peer_continuous_error"] = f"{type(e).__name__}: {e}"[:300]
    rates = {k: v for k, v in out.items() if k.endswith("_tok_s")}
    if not rates:
        raise RuntimeError(f"transformers peer produced no figure: {out}")
    best = max(rates, key=rates.get)
    out["peer_tok_s"] = rates[best]
    out["peer_method"] = best.removeprefix("peer_").removesuffix("_tok_s")
    del hf
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out
