"""The `sim` fidelity: the real engine at full size, with a runner that skips the forward pass.

The engine, its scheduler, block manager and cache policy run the candidate's code exactly
as in a real run; only the model runner is replaced by `SimRunner`, which returns a token
per sampled sequence without computing anything. Scheduling and eviction decide only
*which work* is done, and the engine counts that work itself (steps, tokens, KV read,
attention pairs), so with output lengths fixed the counters equal a real run's
(tests/test_sim_fidelity.py checks it against the `tiny` model), at a small fraction of
the cost. Each step is priced by the cost model (fitness/costmodel.py) for a stated device,
and that price drives a modeled clock: arrivals come when the modeled clock reaches them,
and TTFT/TPOT/goodput are read from it, so a simulated run is deterministic.

No peeking at the future: a trace request's realized output length (`Request.output_len`)
is known only to the runner here, which emits EOS when the sequence reaches it; the
engine and the slots see the request's `max_tokens` cap, as in real serving.

The KV cache is sized like the real runner sizes it on a GPU: device memory x
`gpu_memory_utilization`, less the weights (bf16) and an activation reserve, in blocks of
the model's KV bytes, at most what `max_num_seqs` sequences of `max_model_len` need; a
workload's own `num_kv_blocks` override wins (kv-pressure, shared-prefix).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from fitness.workloads import Request, Workload

BF16 = 2  # bytes per weight and KV element on the GPU the simulation stands for


def activation_reserve_bytes(mc: Any, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Peak activation memory of the largest step, as the real runner's warm-up measures it.

    Body: per batched token the MLP's gate and up projections (2 x intermediate) plus ~4
    hidden-sized buffers, bf16. Head: fp32 logits for `max_num_seqs` rows, x3 for the
    sampler's probabilities and sort (the real runner's warm-up samples at that size).
    """
    body = max_num_batched_tokens * (2 * mc.intermediate_size + 4 * mc.hidden_size) * BF16
    head = max_num_seqs * mc.vocab_size * 4 * 3
    return body + head


def sim_num_kv_blocks(mc: Any, engine: dict[str, Any], memory_gb: float,
                      utilization: float) -> int:
    """KV blocks a GPU of `memory_gb` GiB would hold for model config `mc` (see module doc;
    a datasheet's "80 GB" is taken as 80 GiB, slightly more than such a GPU reports)."""
    bs = int(engine.get("block_size", 16))
    seqs = int(engine.get("max_num_seqs", 256))
    tokens = int(engine.get("max_num_batched_tokens", 16384))
    max_len = int(engine.get("max_model_len", 4096))
    params = _param_count(mc)
    budget = memory_gb * 2**30 * utilization - params * BF16 \
        - activation_reserve_bytes(mc, tokens, seqs)
    per_block = 2 * mc.num_hidden_layers * bs * mc.num_key_value_heads * mc.head_dim * BF16
    blocks = int(budget // per_block)
    if blocks < 1:
        raise ValueError(f"sim: no memory left for the KV cache on a {memory_gb} GB device at "
                         f"gpu_memory_utilization={utilization} (weights {params * BF16 / 2**30:.2f}"
                         " GiB)")
    return min(blocks, seqs * -(-max_len // bs))


def _param_count(mc: Any) -> int:
    """Weights of a Qwen3/Llama decoder (tied LM head counted once)."""
    h, i, d = mc.hidden_size, mc.intermediate_size, mc.head_dim
    attn = h * mc.num_attention_heads * d * 2 + h * mc.num_key_value_heads * d * 2
    layer = attn + 3 * h * i
    head = mc.vocab_size * h * (1 if getattr(mc, "tie_word_embeddings", True) else 2)
    return mc.num_hidden_layers * layer + head


class SimRunner:
    """A model runner whose sequences end (EOS) at their realized lengths, harness-owned.

    `stops` maps a request id to its realized output length (never on the sequence). With
    no `inner` runner it computes nothing: one deterministic token per sampled sequence
    (the `sim` fidelity). With the engine's own ModelRunner as `inner` it runs the real
    model with the same stops (calibration, the counter-equality test). Either way no token
    before a stop is EOS, so output lengths, and with them the engine's counters, are the
    same, and prefix hashes of generated text behave as in a real run.
    """

    def __init__(self, num_kv_blocks: int, eos: int, vocab: int, inner: Any = None):
        self.num_kv_blocks, self.inner = num_kv_blocks, inner
        self._eos, self._vocab = eos, vocab
        self._stops: dict[int, int] = {}

    def stop_at(self, request_id: int, output_len: int) -> None:
        """Request `request_id` ends (EOS) when it has `output_len` tokens."""
        self._stops[request_id] = output_len

    def run(self, batch: list[tuple[Any, int]]) -> list[int]:
        """The tokens of the sequences that complete in this step, in batch order."""
        real = self.inner.run(batch) if self.inner is not None else None
        out = []
        stops, eos, vocab = self._stops, self._eos, self._vocab
        for seq, n in batch:
            if seq.num_computed_tokens + n != len(seq.token_ids):
                continue
            k = len(seq.token_ids) - seq.num_prompt_tokens + 1  # completion length after it
            tok = real[len(out)] if real is not None else \
                (seq.request_id * 7919 + k * 104729) % vocab
            stop = stops.get(seq.request_id)
            if stop is not None and k >= stop:
                tok = eos
            elif tok == eos:
                tok = (tok + 1) % vocab
            out.append(tok)
        return out

    def release(self, seq: Any) -> None:
        """A sequence finished."""
        self._stops.pop(seq.request_id, None)
        if self.inner is not None:
            self.inner.release(seq)


def _sampling(r: Request) -> Any:
    from runtime_modules import SamplingParams
    # a request with a realized length stops at EOS; the engine sees only the cap
    return SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                          ignore_eos=r.output_len is None)


def build_sim_llm(workload: Workload, spec: Any, device: Any, memory_gb: float | None = None,
                  utilization: float = 0.9, engine_params: dict[str, Any] | None = None,
                  model: str | None = None, real: bool = False) -> tuple[Any, Any]:
    """An LLM with the spec's slots and a SimRunner, sized for `device` (a DeviceProfile).

    `real=True` runs the real model instead (the engine's own ModelRunner inside the
    SimRunner, same KV size and stops): the reference the simulation is checked against.
    """
    from runtime_modules import LLM
    from runtime_modules.models import model_config

    name = model or workload.model
    mc = model_config(name)
    params = {**workload.engine_overrides, **(engine_params or {})}
    if "num_kv_blocks" not in params or params["num_kv_blocks"] is None:
        import dataclasses

        from runtime_modules.config import EngineConfig
        defaults = {f.name: f.default for f in dataclasses.fields(EngineConfig)}
        params["num_kv_blocks"] = sim_num_kv_blocks(
            mc, {**defaults, **params}, memory_gb or device.memory_gb, utilization)
    eos = min(mc.eos_ids) if mc.eos_ids else 0
    holder: list[Any] = []

    def factory(model_: Any, mc_: Any, config: Any, kernels: Any) -> Any:
        if real:
            from runtime_modules.model_runner import ModelRunner
            holder.append(SimRunner(config.num_kv_blocks, eos, mc.vocab_size,
                                    ModelRunner(model_, mc_, config, kernels)))
        else:
            holder.append(SimRunner(config.num_kv_blocks, eos, mc.vocab_size))
        return holder[0]

    params.setdefault("device", "cpu")  # the sim runner needs no device; `real` may ask one
    params.setdefault("freeze_gc", False)
    llm = LLM(name, runtime=spec, runner_factory=factory, **params)
    return llm, holder[0]


def _pct(xs: list[float], q: int) -> float:
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def latency_metrics(ttft: list[float], tpot: list[float], makespan: float,
                    slo_ttft_s: float, slo_tpot_s: float) -> dict[str, float]:
    """TTFT/TPOT mean and p50/p90/p99 (as vLLM's serving benchmark reports them), goodput."""
    out: dict[str, float] = {}
    for name, xs in (("ttft", ttft), ("tpot", tpot)):
        if xs:
            out[f"modeled_{name}_mean_s"] = statistics.fmean(xs)
            for q in (50, 90, 99):
                out[f"modeled_{name}_p{q}_s"] = _pct(xs, q)
    good = sum(1 for a, b in zip(ttft, tpot) if a <= slo_ttft_s and b <= slo_tpot_s)
    out["goodput"] = good / makespan if makespan > 0 else 0.0  # requests/s within the SLO
    out["slo_attainment"] = good / len(ttft) if ttft else 0.0
    return out


def simulate(spec: Any, workload: Workload, device: str = "h100",
             memory_gb: float | None = None, utilization: float = 0.9,
             slo_ttft_s: float = 1.0, slo_tpot_s: float = 0.05,
             engine_params: dict[str, Any] | None = None, model: str | None = None,
             on_llm: Callable[[Any], None] | None = None, real: bool = False,
             timing: dict[str, float] | None = None,
             max_modeled_s: float | None = None,
             max_steps: int | None = None,
             bandwidth: float | None = None,
             features: bool = False) -> dict[str, Any]:
    """Run `workload` with `spec` in simulation on the modeled clock; metrics and counters.

    `modeled_tok_s` is output tokens over the makespan (first arrival to last finish on the
    modeled clock; the busy time alone is `modeled_busy_s`), so a trace replayed at its
    timestamps is bounded by its arrivals and its latencies tell policies apart.
    `real=True` drives the real model the same way (same clock, same stops); `timing`, if
    given, receives the wall seconds of the drive (`wall_s`, engine build excluded), kept
    out of the metrics so that they stay deterministic. `features=True` adds the typical
    magnitude of each evolvable function's arguments and result (`feat:*`, see
    fitness/features.py). `max_modeled_s` stops a run whose
    modeled clock passes it, `max_steps` one that takes more engine steps (`SimTooSlow`): a
    policy far slower than its baseline need not be simulated to the end.
    Example:
        simulate({"slots": {}}, get_workload("shared-prefix"))["modeled_tok_s"]
    """
    from fitness.costmodel import device_profile

    prof = device_profile(device)
    if bandwidth:  # a copy bandwidth measured on the machine (`sds bench`), bytes/s
        prof = prof.with_bandwidth(bandwidth)
    llm, runner = build_sim_llm(workload, spec, prof, memory_gb, utilization, engine_params,
                                model, real)
    if on_llm is not None:
        on_llm(llm)
    probe = None
    if features:
        from fitness.features import FeatureProbe
        probe = FeatureProbe()
        probe.attach(list(llm.slot_modules.values()))
    try:
        metrics = _drive(llm, runner, workload, prof, slo_ttft_s, slo_tpot_s, timing,
                         max_modeled_s, max_steps)
    finally:
        if probe is not None:
            probe.detach()
    if probe is not None:
        metrics.update(probe.scales())
    return metrics


def _drive(llm: Any, runner: Any, workload: Workload, prof: Any, slo_ttft_s: float,
           slo_tpot_s: float, timing: dict[str, float] | None, max_modeled_s: float | None,
           max_steps: int | None) -> dict[str, Any]:
    """Drive the built engine through the workload on the modeled clock (see `simulate`)."""
    from fitness.costmodel import QWEN3_0_6B, WORK_COUNTERS, CostMeter

    meter = CostMeter(QWEN3_0_6B, prof)
    idle = [0.0]  # modeled seconds with nothing to run (waiting for arrivals)
    engine = llm.engine
    engine.clock = lambda: meter.now() + idle[0]
    engine.step_observer = meter
    stats0 = dict(engine.stats)
    steps0 = engine.steps
    reqs = workload.requests
    order = sorted(range(len(reqs)), key=lambda i: reqs[i].arrival_s)
    index: dict[int, int] = {}
    done: dict[int, Any] = {}
    nxt = 0
    t0 = time.perf_counter()
    while nxt < len(order) or llm.has_unfinished():
        now = engine.clock()
        while nxt < len(order) and reqs[order[nxt]].arrival_s <= now:
            r = reqs[order[nxt]]
            rid = llm.add_request(list(r.prompt_token_ids), _sampling(r))
            if r.output_len is not None:
                runner.stop_at(rid, r.output_len)
            index[rid] = order[nxt]
            nxt += 1
        if not llm.has_unfinished():
            idle[0] += reqs[order[nxt]].arrival_s - now  # jump to the next arrival
            continue
        if max_modeled_s is not None and now > max_modeled_s:
            raise SimTooSlow(f"the modeled clock passed {max_modeled_s:.3f} s with "
                             f"{len(reqs) - len(done)} of {len(reqs)} requests unfinished")
        if max_steps is not None and engine.steps - steps0 > max_steps:
            raise SimTooSlow(f"{max_steps} engine steps with {len(reqs) - len(done)} of "
                             f"{len(reqs)} requests unfinished")
        before = meter.steps
        for out in llm.step():
            done[index[out.request_id]] = out
        if meter.steps == before and nxt < len(order):
            # an empty step (the scheduler held everything back): time passes to the next
            # arrival, else the engine's stall guard ends a scheduler that never admits
            idle[0] += max(0.0, reqs[order[nxt]].arrival_s - now)
    if timing is not None:
        timing["wall_s"] = time.perf_counter() - t0
    metrics = _outcome(workload, done, slo_ttft_s, slo_tpot_s)
    metrics.update(modeled_busy_s=meter.time_s, modeled_device=prof.name,
                   num_kv_blocks=engine.num_kv_blocks)
    stats = engine.stats
    for k in WORK_COUNTERS:
        if k in stats:
            metrics[f"work_{k}"] = stats[k] - stats0.get(k, 0)
    return metrics


def _outcome(workload: Workload, done: dict[int, Any], slo_ttft_s: float,
             slo_tpot_s: float) -> dict[str, Any]:
    """Throughput and latency of a finished simulation from its outputs (request index ->
    output); every request must be there with exactly its realized length."""
    reqs = workload.requests
    missing = sorted(set(range(len(reqs))) - set(done))
    if missing:
        raise RuntimeError(f"sim lost {len(missing)} request(s) of {workload.name!r}: "
                           f"indices {missing[:10]}")
    ttft, tpot, out_tokens, last = [], [], 0, 0.0
    for i, out in done.items():
        r, n = reqs[i], len(out.token_ids)
        want = r.num_output_tokens
        if n != want:
            raise RuntimeError(f"sim: request {i} of {workload.name!r} produced {n} tokens, "
                               f"expected {want}")
        out_tokens += n
        first, fin = out.metrics["first_token"], out.metrics["finish"]
        ttft.append(first - r.arrival_s)
        if n > 1:
            tpot.append((fin - first) / (n - 1))
        last = max(last, fin)
    makespan = last - min(r.arrival_s for r in reqs)
    metrics: dict[str, Any] = {
        "modeled_tok_s": out_tokens / makespan if makespan > 0 else math.inf,
        "modeled_time_s": makespan, "output_tokens": out_tokens, "workload": workload.name,
    }
    metrics.update(latency_metrics(ttft, tpot, makespan, slo_ttft_s, slo_tpot_s))
    return metrics


# the evaluation options the sim stage reads, with their defaults
SIM_OPTIONS = {"sim_device": "h100", "sim_memory_gb": None, "sim_gpu_memory_utilization": 0.9,
               "sim_bandwidth": None, "slo_ttft_s": 1.0, "slo_tpot_s": 0.05}


def sim_options(options: dict[str, Any]) -> dict[str, Any]:
    """The sim settings of an evaluation's options (defaults filled): part of its cache key."""
    return {k: options.get(k, v) for k, v in SIM_OPTIONS.items()}


def run_sim_stage(ctx: Any) -> Any:
    """The `sim` stage in the worker: simulate ctx.workload with ctx.spec (see `simulate`)."""
    from fitness.correctness import loaded_mismatch
    from fitness.result import StageResult
    from fitness.workloads import get_workload

    o = sim_options(ctx.options)
    wl = get_workload(ctx.workload)
    why: list[str] = []

    def check(llm: Any) -> None:
        w = loaded_mismatch(llm, ctx.spec)
        if w:
            why.append(w)
            raise _NotLoaded(w)

    limit = (ctx.options.get("sim_max_modeled_s") or {}).get(ctx.workload)
    max_steps = (ctx.options.get("sim_max_steps") or {}).get(ctx.workload)
    try:
        m = simulate(ctx.spec, wl, device=o["sim_device"], memory_gb=o["sim_memory_gb"],
                     utilization=o["sim_gpu_memory_utilization"], slo_ttft_s=o["slo_ttft_s"],
                     slo_tpot_s=o["slo_tpot_s"], on_llm=check, max_modeled_s=limit,
                     max_steps=max_steps, bandwidth=o["sim_bandwidth"],
                     features=True)
    except _NotLoaded:
        return StageResult("sim", "rejected", {}, why[0])
    except SimTooSlow as e:
        return StageResult("sim", "rejected", {"modeled_time_limit_s": limit},
                           f"sim: far slower than the baseline on {ctx.workload} "
                           f"(option sim_max_slowdown): {e}")
    m["fidelity"] = "sim"
    return StageResult("sim", "passed", m, None, {"workload_hash": wl.content_hash})


class _NotLoaded(Exception):
    pass


class SimTooSlow(RuntimeError):
    """The simulation passed its modeled-time limit."""
