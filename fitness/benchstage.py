"""The `quick_bench` and `bench` stages: candidate vs baseline, interleaved, on the harness's clock.

Both engines are built once and warmed up; then rounds alternate their order (C B, B C, ...)
so drift (thermal, other load) hits both alike. Each run is timed with the clock captured
by the worker before any candidate code was imported (device synchronized), and
cross-checked against the bench module's own timing. Before the timed rounds, each
freshly built engine runs the workload once cold (its warm-up): that run's engine counters
give the deterministic `modeled_tok_s` of fitness/costmodel.py (`modeled_ratio` = the
candidate's over the baseline's; `work_*` = the counters behind it), recorded next to the
interleaved wall-clock `ratio`; option `cost_device` (default "h100", see
`fitness.costmodel.DEVICES`) names the GPU the model prices it on (`modeled_device`).
The candidate must really be loaded
(code hashes), and a tok/s above the workload's physical floor is rejected as a measurement
error. `quick_bench` runs a prefix of the workload once and rejects a clearly slower one.
`bench` ends with a content check: the workload once more, greedy, on the candidate, and
`bench_check_requests` of those outputs (the longest context and seeded others, see
`check_plan`) go back to the harness, which teacher-forces them through the fp32
transformers oracle in its own process (fitness/oracle.py), with correctness's near-tie
rule; a disagreement fails the stage (its speed is still recorded in the metrics). The
tie tolerance on GPU for outputs this long is not yet calibrated on a GPU.

Option `cpu_threads` (CPU only) sets torch's intra-op threads for the stage. For the `tiny`
preset one thread is both faster and far steadier: with torch's default of one thread per
core, a run on a 2-core machine shared with another process took 1 s to 23 s (spinning
OpenMP threads waiting for a descheduled peer); with one thread, 0.6 s every time.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from fitness.clock import perf_counter  # the worker imported it first: the real clock
from fitness.result import StageResult


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def _timed(llm: Any, wl: Any, device: str) -> dict[str, Any]:
    # perf_counter: captured when the worker started, before candidate code ran
    from fitness.bench import run_workload

    _sync(device)
    t0 = perf_counter()
    res = run_workload(llm, wl, warmup=False)
    _sync(device)
    own = perf_counter() - t0
    if own + 0.05 < res["wall_s"] or res["wall_s"] < 0.5 * own - 0.05:
        raise _Rejected(f"the bench's clock ({res['wall_s']:.3f} s) disagrees with the "
                        f"harness's ({own:.3f} s)")
    res["wall_s"] = own
    res["tok_s"] = wl.num_output_tokens / own
    return res


class _Rejected(Exception):
    pass


def _cold(llm: Any, wl: Any, cost_device: str = "h100") -> dict[str, Any]:
    """The workload once on a fresh engine: its work counters and modeled time."""
    from fitness.bench import run_workload

    res = run_workload(llm, wl, warmup=False, cost_device=cost_device)
    if "modeled_tok_s" not in res:
        raise RuntimeError("the engine has no step_observer: the bench's cost model cannot "
                           "price the run")
    return res


def _modeled_metrics(cand: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Modeled tok/s of both cold runs, their ratio, and the candidate's work counters."""
    from fitness.costmodel import WORK_COUNTERS

    out: dict[str, Any] = {"modeled_tok_s": cand["modeled_tok_s"],
                           "modeled_time_s": cand["modeled_time_s"],
                           "modeled_tok_s_baseline": base["modeled_tok_s"],
                           "modeled_ratio": cand["modeled_tok_s"] / base["modeled_tok_s"],
                           "modeled_device": cand["modeled_device"]}
    for who, res in (("", cand), ("_baseline", base)):
        for k in WORK_COUNTERS:
            v = res["steps"] if k == "steps" else res.get(f"stats_{k}")
            if v is not None:
                out[f"work_{k}{who}"] = v
    return out


def _shrink(wl: Any, quick: bool, opts: dict[str, Any]) -> Any:
    """The workload, cut to `[quick_]bench_requests` requests and `bench_max_tokens` outputs."""
    n = opts.get("quick_bench_requests" if quick else "bench_requests")
    if quick and n is None:
        n = max(2, len(wl.requests) // 4)
    cap = opts.get("bench_max_tokens")
    reqs, name = wl.requests, wl.name
    if n is not None:
        reqs, name = reqs[: int(n)], f"{name}[:{int(n)}]"
    if cap is not None:
        reqs = tuple(dataclasses.replace(r, max_tokens=min(r.max_tokens, int(cap))) for r in reqs)
        name = f"{name}[max_tokens<={int(cap)}]"
    return dataclasses.replace(wl, requests=reqs, name=name)


def _check_lens(wl: Any, opts: dict[str, Any]) -> list[int]:
    """Each request's greedy length in the check: its max_tokens, capped by
    `bench_check_tokens`."""
    cap = opts.get("bench_check_tokens")
    return [min(r.max_tokens, int(cap)) if cap else r.max_tokens for r in wl.requests]


def check_plan(wl: Any, opts: dict[str, Any], seed: int) -> tuple[list[int], list[int]]:
    """Which requests of the (shrunk) bench workload the oracle checks, and their lengths.

    The one with the longest context and `bench_check_requests - 1` others drawn with the
    evaluation's seed; each runs greedy to its `max_tokens` (capped by `bench_check_tokens`).
    The worker and the harness both compute it, so the worker cannot choose what is checked.
    """
    import random

    reqs = wl.requests
    n = min(int(opts.get("bench_check_requests", 4)), len(reqs))
    if n <= 0:
        return [], []
    lens = _check_lens(wl, opts)
    longest = max(range(len(reqs)), key=lambda i: len(reqs[i].prompt_token_ids) + lens[i])
    rest = [i for i in range(len(reqs)) if i != longest]
    pick = [longest] + sorted(random.Random(seed).sample(rest, n - 1))
    return pick, [lens[i] for i in pick]


def _greedy_outputs(llm: Any, wl: Any, opts: dict[str, Any], seed: int) -> dict[str, Any]:
    """The whole workload once more, greedy, on the candidate; the checked requests' outputs.

    All requests run together, so the checked ones see the bench's batch sizes, context
    lengths and (warm) prefix cache, not the correctness stage's short prompts. The harness
    teacher-forces them through the oracle in its own process (fitness/oracle.py).
    """
    from runtime_modules import SamplingParams

    pick, _ = check_plan(wl, opts, seed)
    if not pick:
        return {"indices": [], "outputs": []}
    params = [SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=n)
              for n in _check_lens(wl, opts)]
    outs = llm.generate([list(r.prompt_token_ids) for r in wl.requests], params)
    return {"indices": pick, "outputs": [[int(t) for t in outs[i].token_ids] for i in pick]}


def bench_workload(name: str, quick: bool, opts: dict[str, Any]) -> Any:
    """The workload `name` as the (quick_)bench stage runs it with these options."""
    from fitness.workloads import get_workload
    return _shrink(get_workload(name), quick, opts)


def _set_threads(value: Any) -> None:
    """torch's intra-op thread count for this worker, from the `cpu_threads` option."""
    import torch

    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"evaluation option cpu_threads must be a positive integer, got "
                         f"{value!r}")
    torch.set_num_threads(value)


def _interleaved(cand: Any, base: Any, wl: Any, device: str,
                 repeats: int) -> dict[str, list[dict[str, Any]]]:
    """`repeats` timed runs of the candidate and of the baseline engine, alternating which
    goes first, so that a drift of the machine weighs on both alike."""
    runs: dict[str, list[dict[str, Any]]] = {"cand": [], "base": []}
    for r in range(repeats):
        order = ("cand", "base") if r % 2 == 0 else ("base", "cand")
        for who in order:
            runs[who].append(_timed(cand if who == "cand" else base, wl, device))
    return runs


def _speed_metrics(runs: dict[str, list[dict[str, Any]]], workload: str) -> dict[str, Any]:
    """Median tok/s of both engines, the spread of their per-repeat ratios, and the
    candidate's latencies and peak memory from its last run."""
    c_tok = [x["tok_s"] for x in runs["cand"]]
    b_tok = [x["tok_s"] for x in runs["base"]]
    ratios = [c / b for c, b in zip(c_tok, b_tok)]
    last = runs["cand"][-1]
    metrics: dict[str, Any] = {
        "tok_s": statistics.median(c_tok), "tok_s_baseline": statistics.median(b_tok),
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratio_stdev": statistics.stdev(ratios) if len(ratios) > 1 else 0.0,
        "repeats": len(c_tok), "workload": workload, "output_tokens": last["output_tokens"],
    }
    for k, v in last.items():
        if k.startswith(("ttft", "tpot", "peak_mem")) and isinstance(v, (int, float)):
            metrics[k] = v
    return metrics


def run_bench_stage(ctx: Any, quick: bool) -> StageResult:
    """Interleaved candidate/baseline measurement; see the module docstring."""
    from fitness.bench import build_llm
    from fitness.correctness import loaded_mismatch, model_dir
    from fitness.floor import measure_bandwidth, physical_floor
    from runtime_modules.slots import RuntimeSpec

    stage = "quick_bench" if quick else "bench"
    device = "cuda" if str(ctx.device).startswith("cuda") else "cpu"
    opts = ctx.options
    if device == "cpu" and opts.get("cpu_threads") is not None:
        _set_threads(opts["cpu_threads"])
    wl = bench_workload(ctx.workload, quick, opts)
    repeats = int(opts.get("quick_bench_repeats" if quick else "bench_repeats",
                           2 if quick else 3))
    model = ctx.model if ctx.model else wl.model
    if model in ("tiny",):
        model = str(model_dir(model))
    baseline = ctx.baseline or RuntimeSpec.default(device).to_dict()
    cand = build_llm(wl, model=model, runtime=ctx.spec, device=device)
    why = loaded_mismatch(cand, ctx.spec)
    if why:
        return StageResult(stage, "rejected", {}, why, {"loaded": cand.loaded_slots})
    base = build_llm(wl, model=model, runtime=baseline, device=device)
    # The first (cold) run of each fresh engine is the modeled one and the warm-up.
    cost_device = str(opts.get("cost_device", "h100"))
    cold = {who: _cold(llm, wl, cost_device) for who, llm in (("cand", cand), ("base", base))}
    try:
        runs = _interleaved(cand, base, wl, device, repeats)
    except _Rejected as e:
        return StageResult(stage, "rejected", {}, str(e), {"workload": wl.name})
    c_tok = [x["tok_s"] for x in runs["cand"]]
    b_tok = [x["tok_s"] for x in runs["base"]]
    metrics = _speed_metrics(runs, wl.name)
    metrics.update(_modeled_metrics(cold["cand"], cold["base"]))
    bandwidth = opts.get("bandwidth") or measure_bandwidth(device)
    floor = physical_floor(cand.model_config, wl, bandwidth,
                           dtype_bytes=2 if device == "cuda" else 4)
    metrics["floor_tok_s"] = floor["max_tok_s"]
    if max(c_tok) > floor["max_tok_s"]:
        return StageResult(stage, "rejected", metrics,
                           f"{max(c_tok):.1f} tok/s is above the physical floor's "
                           f"{floor['max_tok_s']:.1f} tok/s: a measurement error, not a speed-up",
                           {"floor": floor})
    if not quick:  # judged by the harness's oracle: see fitness/oracle.py
        return StageResult(stage, "passed", metrics, None,
                           {"output_check": _greedy_outputs(cand, wl, opts, ctx.seed)})
    min_ratio = float(opts.get("quick_bench_min_ratio", 0.75))
    if quick and metrics["ratio"] < min_ratio:
        return StageResult(stage, "rejected", metrics,
                           f"clearly slower than the baseline: {metrics['ratio']:.3f}x "
                           f"(threshold {min_ratio}x)", {"tok_s": c_tok, "baseline": b_tok})
    return StageResult(stage, "passed", metrics)
