"""A deterministic cost model: what each engine step would cost on a given GPU (a roofline).

On a shared CPU, wall-clock tok/s of the same runtime varies by far more (0.3x..3.9x
measured, seed against itself) than scheduler and cache-policy choices change the work
(a few percent), so a search that selects on wall time selects noise. This model prices
the work the engine itself counted, one step at a time, the way a GPU would. The engine
tells a step observer (`Engine.step_observer`, set to a `CostMeter`) each non-empty step's
work, counted from the batch it checked and ran, never by a slot:
`num_seqs` (sequences scheduled), `tokens` (tokens computed, recompute after preemption
included), `kv_tokens` (per sequence, its KV length after the step: the KV read) and
`attn_pairs` (per sequence with k new tokens after c cached: k*c + k*(k+1)/2, attention's
query x context pairs). A step costs

    step_time_s = step_overhead_s + max(bytes / mem_bw_bytes_s, flops / matmul_flops)
    bytes = params * dtype_bytes                      all weights, read once per step
          + kv_bytes_per_token * (kv_tokens + tokens)  KV read by attention, KV written
    flops = 2 * body_params * tokens                   GEMMs of the layers, every token
          + 2 * vocab * hidden * num_seqs              LM head, one row per sequence
          + 4 * layers * num_heads * head_dim * attn_pairs   QK^T and PV, 2 FLOP per MAC

and a run costs the sum of its steps; modeled_tok_s = output tokens / modeled_time_s.

Why the max, not the sum: on a GPU the weight and KV streams and the tensor-core math
overlap (a step is bound by whichever is slower), so decode (few tokens, much KV) is
priced by bandwidth and long prefill (many tokens, quadratic attention) by compute. The
old linear model summed them and priced no prefill attention at all; for long prompts
that is the largest cost, and exactly what prefix caching saves.

Shape (Qwen3-0.6B, config in docs/SOURCES.md; a `tiny` run is priced as if it
were this model, so CPU runs rank like the target): per layer q 1024x2048, k and v
1024x1024 each, o 2048x1024, MLP 3 x 1024x3072 = 15.73 M; x 28 = 440.4 M (`body_params`),
plus the tied 151,936 x 1024 embedding / LM head counted once (155.6 M) and norms (66 k):
596.0 M params, x 2 bytes (bf16) = 1.19 GB read per step. KV per token: 28 layers x 2
(K, V) x 8 KV heads x 128 x 2 bytes = 112 KiB. Attention per (query, context) pair:
4 x 28 x 16 x 128 = 229 kFLOP.

Devices (`DEVICES`): bandwidth is the sustained copy bandwidth, not the datasheet peak:
H100 SXM 80 GB, 3.35 TB/s spec (NVIDIA H100 datasheet), ~3.0 TB/s measured copy;
H200 141 GB, 4.8 TB/s spec (NVIDIA H200 datasheet), ~4.3 TB/s measured copy (both from
docs/SOURCES.md; `sds bench` measures it, and `DeviceProfile.with_bandwidth` takes that
figure). Compute: 989 TFLOP/s dense bf16 on both (same GH100 die; datasheet figures with
sparsity are twice that), times 0.6 (`MATMUL_EFFICIENCY`, an estimate of what cuBLAS
reaches on these shapes, as in the old model; not measured here). `step_overhead_s`:
50 us, an estimate (CUDA-graph replay, the input copy and the copy-back of sampled ids,
each of the order of 10 us), not measured; the Python scheduler's own time is left out.

Left out: attention kernels run below GEMM efficiency (and prefill re-reads K/V per query
tile), eager vs CUDA-graph launch cost, tensor parallelism, sampling, the embedding
gather, and the LM head's cost on rows that sample nothing (a partial prefill chunk is
charged one row anyway). No coefficient has been checked on a GPU yet. See
docs/COSTMODEL.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_modules.config import ModelConfig

MATMUL_EFFICIENCY = 0.6  # estimated fraction of dense bf16 peak that GEMMs reach
STEP_OVERHEAD_S = 50e-6  # estimated launch/host floor per step (CUDA graphs)

# the engine counters the model's inputs come from (cumulative forms in Engine.stats)
COUNTERS = ("steps", "empty_steps", "scheduled_tokens", "kv_tokens_attended", "attn_pairs")
# the work counters recorded next to a modeled figure for people (what explains a ratio)
WORK_COUNTERS = ("steps", "prefill_steps", "decode_steps", "empty_steps", "scheduled_tokens",
                 "generated_tokens", "kv_tokens_attended", "attn_pairs", "preemptions",
                 "prefix_cache_hit_tokens")


@dataclass(frozen=True)
class DeviceProfile:
    """A GPU as the roofline sees it: bandwidth, matmul rate, memory, per-step floor."""

    name: str
    mem_bw_bytes_s: float   # sustained copy bandwidth (bytes/s), not the datasheet peak
    matmul_flops: float     # achievable dense bf16 FLOP/s
    memory_gb: float        # device memory (sizes the KV cache in simulation)
    step_overhead_s: float  # launch/host floor of one step
    source: str             # where each number comes from

    def with_bandwidth(self, bytes_s: float) -> DeviceProfile:
        """This profile with a measured bandwidth (e.g. `sds bench`'s probe) in place."""
        if not bytes_s > 0:
            raise ValueError(f"bandwidth must be a positive number of bytes/s, got {bytes_s!r}")
        return replace(self, mem_bw_bytes_s=float(bytes_s),
                       source=f"{self.source}; bandwidth {bytes_s / 1e12:.3g} TB/s measured")


DEVICES: dict[str, DeviceProfile] = {
    "h100": DeviceProfile(
        "h100", 3.0e12, MATMUL_EFFICIENCY * 989e12, 80.0, STEP_OVERHEAD_S,
        "NVIDIA H100 SXM 80GB datasheet: 3.35 TB/s HBM3, 989 TFLOP/s dense bf16; ~3.0 TB/s "
        "measured copy (docs/SOURCES.md); 0.6 GEMM efficiency and 50 us/step are estimates"),
    "h200": DeviceProfile(
        "h200", 4.3e12, MATMUL_EFFICIENCY * 989e12, 141.0, STEP_OVERHEAD_S,
        "NVIDIA H200 141GB datasheet: 4.8 TB/s HBM3e, 989 TFLOP/s dense bf16 (as H100); "
        "~4.3 TB/s measured copy (docs/SOURCES.md); 0.6 GEMM efficiency and 50 us/step are "
        "estimates"),
}


def device_profile(name: str) -> DeviceProfile:
    """The profile of a named GPU, e.g. `device_profile("h200").mem_bw_bytes_s == 4.3e12`."""
    key = str(name).strip().lower()
    if key not in DEVICES:
        raise ValueError(f"unknown cost-model device {name!r}: expected one of "
                         f"{', '.join(sorted(DEVICES))}")
    return DEVICES[key]


def _params(layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int,
            intermediate: int, vocab: int, tied: bool = True) -> tuple[int, int]:
    """(body, total) weight counts of a Qwen3-style decoder: layers; + embeddings and norms."""
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    body = layers * (attn + 3 * hidden * intermediate)
    norms = layers * (2 * hidden + 2 * head_dim) + hidden  # input/post + q/k norms; final
    return body, body + vocab * hidden * (1 if tied else 2) + norms


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that the roofline needs."""

    layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    params: int          # total weights read per step (a tied LM head counted once)
    dtype_bytes: int = 2  # bf16

    @property
    def body_params(self) -> int:
        """Weights of the transformer layers: the GEMMs every token goes through."""
        return _params(self.layers, self.hidden, self.num_heads, self.num_kv_heads,
                       self.head_dim, self.intermediate, self.vocab)[0]

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers."""
        return self.layers * 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @classmethod
    def from_config(cls, cfg: ModelConfig, dtype_bytes: int = 2) -> ModelShape:
        """The shape of a `runtime_modules.config.ModelConfig` (priced in `dtype_bytes`)."""
        dims = (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size, cfg.vocab_size)
        _, total = _params(*dims, tied=cfg.tie_word_embeddings)
        return cls(*dims, params=total, dtype_bytes=dtype_bytes)


QWEN3_0_6B = ModelShape(28, 1024, 16, 8, 128, 3072, 151936,
                        params=_params(28, 1024, 16, 8, 128, 3072, 151936)[1])


def roofline_terms(shape: ModelShape, device: DeviceProfile, num_seqs: int, tokens: int,
                   kv_tokens: int, attn_pairs: int) -> tuple[float, float]:
    """(memory seconds, compute seconds) of one step; see the module docstring."""
    kv = shape.kv_bytes_per_token
    nbytes = shape.params * shape.dtype_bytes + kv * (kv_tokens + tokens)
    flops = (2 * shape.body_params * tokens + 2 * shape.vocab * shape.hidden * num_seqs
             + 4 * shape.layers * shape.num_heads * shape.head_dim * attn_pairs)
    return nbytes / device.mem_bw_bytes_s, flops / device.matmul_flops


def step_time_s(shape: ModelShape, device: DeviceProfile, num_seqs: int, tokens: int,
                kv_tokens: int, attn_pairs: int) -> float:
    """Modeled seconds of one non-empty step: overhead + max(memory, compute)."""
    return device.step_overhead_s + max(roofline_terms(shape, device, num_seqs, tokens,
                                                       kv_tokens, attn_pairs))


class CostMeter:
    """Sums modeled step times; set as `engine.step_observer`, and `now` as `engine.clock`.

    >>> m = CostMeter(); m(256, 256, 256 * 600, 256 * 600); m.steps, round(m.time_s, 4)
    (1, 0.0063)
    """

    def __init__(self, shape: ModelShape = QWEN3_0_6B, device: DeviceProfile | None = None,
                 start: float = 0.0) -> None:
        self.shape = shape
        self.device = device if device is not None else device_profile("h100")
        self.start = start
        self.time_s = 0.0  # modeled seconds of the steps seen so far
        self.steps = 0     # non-empty steps priced

    def __call__(self, num_seqs: int, tokens: int, kv_tokens: int, attn_pairs: int) -> None:
        """Price one step (the engine's step-observer signature)."""
        self.time_s += step_time_s(self.shape, self.device, num_seqs, tokens, kv_tokens,
                                   attn_pairs)
        self.steps += 1

    def now(self) -> float:
        """The modeled clock: `start` plus the modeled time so far."""
        return self.start + self.time_s


def modeled(meter: CostMeter | float, output_tokens: int) -> dict[str, float]:
    """`modeled_time_s` and `modeled_tok_s` of a run from its meter (or modeled seconds)."""
    t = meter.time_s if isinstance(meter, CostMeter) else float(meter)
    if t <= 0:
        raise ValueError(f"modeled time {t} s: the run did no engine work the meter saw")
    return {"modeled_time_s": t, "modeled_tok_s": output_tokens / t}
