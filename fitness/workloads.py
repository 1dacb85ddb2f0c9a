"""Named, versioned benchmark workloads, generated deterministically from a seed.

A workload is plain data: requests (prompt token ids, sampling settings, arrival time),
engine parameters it needs (`engine_overrides`, e.g. a small KV cache for `kv-pressure`),
the model it is sized for, and a content hash (sha256 of its canonical JSON) that every
evaluation records, so two results are only compared when they ran the same requests.

`nanovllm-bench` is exactly nano-vLLM's bench.py workload (see docs/SOURCES.md):
random.seed(0); all 256 prompts first, each `randint(100, 1024)` ids of `randint(0, 10000)`;
then per request `max_tokens = randint(100, 1024)`, temperature 0.6, ignore_eos. Totals:
142,827 prompt tokens and 133,966 output tokens. Each workload has a `-cpu` variant sized
for the `tiny` preset (vocab 1024) so that one run takes seconds on two CPU cores.

Bump a workload's version whenever its generator changes: the hash changes anyway, the
version says so to people.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TINY_VOCAB = 1024


@dataclass(frozen=True)
class Request:
    """One request: prompt token ids, sampling settings, and when it arrives (seconds)."""

    prompt_token_ids: tuple[int, ...]
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 64
    ignore_eos: bool = True
    arrival_s: float = 0.0
    # The realized output length (a trace's): the request stops there as at an EOS. Only
    # the harness's driver knows it; the engine and its slots see `max_tokens`, the cap a
    # real server is given. None: the request runs to max_tokens (ignore_eos workloads).
    output_len: int | None = None

    @property
    def num_output_tokens(self) -> int:
        """The tokens this request produces: its realized length, else max_tokens."""
        return self.max_tokens if self.output_len is None else self.output_len

    def to_dict(self) -> dict[str, Any]:
        """Canonical dict form (used for the content hash)."""
        d = {"prompt_token_ids": list(self.prompt_token_ids), "temperature": self.temperature,
             "top_p": self.top_p, "max_tokens": self.max_tokens,
             "ignore_eos": self.ignore_eos, "arrival_s": self.arrival_s}
        if self.output_len is not None:  # absent from built-in workloads: hashes unchanged
            d["output_len"] = self.output_len
        return d


@dataclass(frozen=True)
class Workload:
    """A named, versioned set of requests plus the engine settings and model it is meant for."""

    name: str
    version: int
    requests: tuple[Request, ...]
    engine_overrides: dict[str, Any] = field(default_factory=dict)
    model: str = "qwen3-0.6b"
    seed: int = 0
    description: str = ""
    content_hash: str = ""

    @property
    def num_prompt_tokens(self) -> int:
        """Total prompt tokens over all requests."""
        return sum(len(r.prompt_token_ids) for r in self.requests)

    @property
    def num_output_tokens(self) -> int:
        """Total output tokens (max_tokens, or a trace's realized lengths): tok/s's numerator."""
        return sum(r.num_output_tokens for r in self.requests)

    @property
    def has_arrivals(self) -> bool:
        """True when requests arrive over time (drive the engine step by step)."""
        return any(r.arrival_s > 0 for r in self.requests)

    def canonical_json(self) -> str:
        """The JSON whose sha256 is the content hash (sorted keys, no whitespace)."""
        body = {"name": self.name, "version": self.version, "model": self.model,
                "seed": self.seed, "engine_overrides": self.engine_overrides,
                "requests": [r.to_dict() for r in self.requests]}
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def summary(self) -> dict[str, Any]:
        """A short description for logs and CSV rows (no token ids)."""
        return {"name": self.name, "version": self.version, "model": self.model,
                "seed": self.seed, "content_hash": self.content_hash,
                "num_requests": len(self.requests), "prompt_tokens": self.num_prompt_tokens,
                "output_tokens": self.num_output_tokens,
                "engine_overrides": dict(self.engine_overrides)}


def _finish(name: str, version: int, requests: list[Request], model: str, seed: int,
            engine_overrides: dict[str, Any], description: str) -> Workload:
    w = Workload(name=name, version=version, requests=tuple(requests),
                 engine_overrides=dict(engine_overrides), model=model, seed=seed,
                 description=description)
    digest = hashlib.sha256(w.canonical_json().encode()).hexdigest()
    return Workload(**{**w.__dict__, "content_hash": digest})


# ----------------------------------------------------------------------------- generators


def _nanovllm(name: str, seed: int, num_seqs: int, max_input: int, max_output: int,
              min_len: int, vocab_hi: int, model: str, overrides: dict[str, Any]) -> Workload:
    # The order of random calls is nano-vLLM's: every prompt first (one comprehension),
    # then every max_tokens. Any other order gives different totals.
    rng = random.Random(seed)
    prompts = [[rng.randint(0, vocab_hi) for _ in range(rng.randint(min_len, max_input))]
               for _ in range(num_seqs)]
    maxes = [rng.randint(min_len, max_output) for _ in range(num_seqs)]
    reqs = [Request(tuple(p), temperature=0.6, max_tokens=m, ignore_eos=True)
            for p, m in zip(prompts, maxes)]
    return _finish(name, 1, reqs, model, seed, overrides,
                   f"{num_seqs} random prompts of {min_len}..{max_input} ids, "
                   f"max_tokens {min_len}..{max_output}, temperature 0.6, ignore_eos")


def nanovllm_bench(seed: int = 0) -> Workload:
    """nano-vLLM's bench.py workload, exactly (Qwen3-0.6B, max_model_len 4096)."""
    return _nanovllm("nanovllm-bench", seed, 256, 1024, 1024, 100, 10000, "qwen3-0.6b",
                     {"max_model_len": 4096})


def nanovllm_bench_cpu(seed: int = 0) -> Workload:
    """The same generator scaled down for the `tiny` preset on CPU."""
    return _nanovllm("nanovllm-bench-cpu", seed, 32, 128, 64, 16, TINY_VOCAB - 1, "tiny",
                     {"max_model_len": 512})


def _shared_prefix(name: str, seed: int, num_prefixes: int, prefix_len: int, num_reqs: int,
                   suffix: tuple[int, int], out: tuple[int, int], vocab: int, model: str,
                   overrides: dict[str, Any]) -> Workload:
    rng = random.Random(seed)
    systems = [[rng.randrange(vocab) for _ in range(prefix_len)] for _ in range(num_prefixes)]
    # Zipf-like popularity with the hot set drifting over time: recency (LRU) and
    # popularity-aware policies then keep different prefixes than FIFO does.
    reqs = []
    for i in range(num_reqs):
        shift = (i * num_prefixes) // num_reqs
        weights = [1.0 / (1 + ((k - shift) % num_prefixes)) for k in range(num_prefixes)]
        k = rng.choices(range(num_prefixes), weights=weights)[0]
        user = [rng.randrange(vocab) for _ in range(rng.randint(*suffix))]
        reqs.append(Request(tuple(systems[k] + user), temperature=0.6,
                            max_tokens=rng.randint(*out), ignore_eos=True))
    return _finish(name, 1, reqs, model, seed, overrides,
                   f"{num_reqs} requests over {num_prefixes} shared system prompts of "
                   f"{prefix_len} tokens (drifting Zipf popularity); KV cache too small to "
                   "keep every prefix, so eviction policy matters")


def shared_prefix(seed: int = 0) -> Workload:
    """Chat-like: 512 requests over 16 system prompts of 2048 tokens, KV for ~half of them."""
    # 32 running sequences hold ~600 private blocks; the rest (~900) caches ~7 of 16 prefixes.
    return _shared_prefix("shared-prefix", seed, 16, 2048, 512, (32, 256), (32, 256), 151936,
                          "qwen3-0.6b", {"max_model_len": 4096, "max_num_seqs": 32,
                                         "num_kv_blocks": 1536, "block_size": 16})


def _revisit(name: str, seed: int, num_hot: int, num_cold: int, prefix_len: int,
             num_reqs: int, hot_every: int, burst: int, suffix_min: int, out: tuple[int, int],
             vocab: int, model: str, overrides: dict[str, Any]) -> Workload:
    rng = random.Random(seed)
    hot = [[rng.randrange(vocab) for _ in range(prefix_len)] for _ in range(num_hot)]
    cold = [[rng.randrange(vocab) for _ in range(prefix_len)] for _ in range(num_cold)]
    # Every `hot_every`-th request uses the next hot prefix (round robin); the others walk
    # the cold prefixes, `burst` requests each, wrapping around. A hot prefix comes back
    # after more distinct prefixes than the cache holds, a cold one after all the others:
    # recency alone (LRU) loses the hot ones, hit counts alone keep stale cold bursts, and
    # evicting a prefix's head block first wastes the blocks behind it (hashes chain).
    reqs, h, c = [], 0, 0
    for i in range(num_reqs):
        if i % hot_every == 0:
            prefix, h = hot[h % num_hot], h + 1
        else:
            prefix, c = cold[(c // burst) % num_cold], c + 1
        # user turns grow by one token per request, so admitting shortest prompts first
        # (the priority seed) sees the same revisit order as arrival order does
        user = [rng.randrange(vocab) for _ in range(suffix_min + i)]
        reqs.append(Request(tuple(prefix + user), temperature=0.6,
                            max_tokens=rng.randint(*out), ignore_eos=True))
    return _finish(name, 2, reqs, model, seed, overrides,
                   f"{num_reqs} requests over {num_hot} hot and {num_cold} cold system "
                   f"prompts of {prefix_len} tokens (hot every {hot_every}th request, cold "
                   f"in bursts of {burst}), short answers: prefill of evicted prefixes "
                   "dominates, so eviction and admission order matter")


def shared_prefix_cpu(seed: int = 0) -> Workload:
    """Shared prefixes for `tiny`: 3 hot and 12 cold prompts of 256 tokens, 48 requests."""
    # v2. Outputs of 2..6 tokens keep steps few, so recomputed prefill is much of the
    # modeled time (v1 with 8..24 outputs: eviction moved it < 2%). 112 blocks: 4 running
    # sequences plus ~3 cached prefixes. Measured modeled ratios (cold run, scored policy
    # with window 64, priority seed) against the seed score: evict head blocks first 0.89,
    # MRU (idle) 0.92, tail blocks first (-position) 0.92, FIFO (-age) 0.94, LRU (-idle)
    # 0.96, hashed * (1 + hits) 1.014; the seed score with window 8: 0.97. Admission by
    # remaining tokens or longest prompt first (breaks the revisit order): 0.90..0.92.
    return _revisit("shared-prefix-cpu", seed, 3, 12, 256, 48, 3, 2, 4, (2, 6), TINY_VOCAB,
                    "tiny", {"max_model_len": 512, "max_num_seqs": 4, "num_kv_blocks": 112,
                             "block_size": 16})


def _kv_pressure(name: str, seed: int, num_reqs: int, prompt: tuple[int, int],
                 out: tuple[int, int], vocab: int, model: str, block_size: int,
                 fraction: float, overrides: dict[str, Any]) -> Workload:
    rng = random.Random(seed)
    reqs = []
    for _ in range(num_reqs):
        p = [rng.randrange(vocab) for _ in range(rng.randint(*prompt))]
        reqs.append(Request(tuple(p), temperature=0.6, max_tokens=rng.randint(*out),
                            ignore_eos=True))
    # Blocks for every request at its final length, then keep only `fraction` of that.
    demand = sum(-(-(len(r.prompt_token_ids) + r.max_tokens) // block_size) for r in reqs)
    longest = max(-(-(len(r.prompt_token_ids) + r.max_tokens) // block_size) for r in reqs)
    blocks = max(int(demand * fraction), 2 * longest)
    return _finish(name, 1, reqs, model, seed,
                   {**overrides, "num_kv_blocks": blocks, "block_size": block_size},
                   f"{num_reqs} requests needing {demand} KV blocks at full length, "
                   f"{blocks} available: admission and preemption decide the speed")


def kv_pressure(seed: int = 0) -> Workload:
    """256 long-output requests with KV memory for about a quarter of their full demand."""
    return _kv_pressure("kv-pressure", seed, 256, (100, 1024), (256, 1024), 151936,
                        "qwen3-0.6b", 16, 0.25, {"max_model_len": 4096})


def kv_pressure_cpu(seed: int = 0) -> Workload:
    """kv-pressure sized for `tiny`: 24 requests, KV for about a third of the demand."""
    return _kv_pressure("kv-pressure-cpu", seed, 24, (32, 128), (24, 96), TINY_VOCAB,
                        "tiny", 16, 0.33, {"max_model_len": 512})


def _arrivals(name: str, seed: int, num_reqs: int, rate: float, prompt: tuple[int, int],
              out: tuple[int, int], vocab: int, model: str,
              overrides: dict[str, Any]) -> Workload:
    rng = random.Random(seed)
    t = 0.0
    reqs = []
    for _ in range(num_reqs):
        p = [rng.randrange(vocab) for _ in range(rng.randint(*prompt))]
        # Rounded so the canonical JSON (and the hash) is stable across platforms.
        reqs.append(Request(tuple(p), temperature=0.6, max_tokens=rng.randint(*out),
                            ignore_eos=True, arrival_s=round(t, 6)))
        t += rng.expovariate(rate)  # Poisson arrivals; the first request arrives at 0
    return _finish(name, 1, reqs, model, seed, overrides,
                   f"{num_reqs} requests arriving as a Poisson process at {rate}/s: "
                   "TTFT and TPOT under load")


def arrivals(seed: int = 0) -> Workload:
    """512 requests arriving at 24 requests/s (about 21 s of arrivals)."""
    return _arrivals("arrivals", seed, 512, 24.0, (100, 1024), (64, 512), 151936,
                     "qwen3-0.6b", {"max_model_len": 4096})


def arrivals_cpu(seed: int = 0) -> Workload:
    """48 requests arriving at 24 requests/s (about 2 s of arrivals) for `tiny`."""
    return _arrivals("arrivals-cpu", seed, 48, 24.0, (16, 128), (8, 48), TINY_VOCAB,
                     "tiny", {"max_model_len": 512})


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "nanovllm-bench": nanovllm_bench,
    "nanovllm-bench-cpu": nanovllm_bench_cpu,
    "shared-prefix": shared_prefix,
    "shared-prefix-cpu": shared_prefix_cpu,
    "kv-pressure": kv_pressure,
    "kv-pressure-cpu": kv_pressure_cpu,
    "arrivals": arrivals,
    "arrivals-cpu": arrivals_cpu,
}

_CACHE: dict[tuple[str, int], Workload] = {}


def list_workloads() -> list[str]:
    """The names of every known workload."""
    return list(WORKLOADS)


def get_workload(name: str, seed: int | None = None) -> Workload:
    """The workload `name` generated from `seed` (None: its default seed, 0).

    >>> get_workload("nanovllm-bench").num_output_tokens
    133966
    """
    if isinstance(name, str) and name.startswith("trace:"):
        from fitness.traces import load_trace_workload  # a file: read anew (it may change)
        return load_trace_workload(name)
    if not isinstance(name, str) or name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}: expected one of {', '.join(WORKLOADS)}")
    if seed is None:
        seed = 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"workload {name!r}: seed must be an int, got {seed!r}")
    key = (name, seed)
    if key not in _CACHE:  # frozen data, so sharing one instance is safe
        _CACHE[key] = WORKLOADS[name](seed)
    return _CACHE[key]


def default_workload(device: str) -> str:
    """The workload a benchmark runs by default on `device` ("cpu" or "cuda")."""
    return "nanovllm-bench-cpu" if device == "cpu" else "nanovllm-bench"
