"""Model runner: owns the model, the paged KV cache, CUDA graphs and the sampler.

`run(batch)` prepares inputs (InputBuilder), runs the model through the kernel slots, and
samples on the device; the sampled tokens are fetched once per step, the only host sync.
Decode batches (every sequence brings one token) replay a CUDA graph on CUDA, padded to
the next captured size (padding rows: context_len 0, slot -1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from runtime_modules.config import EngineConfig, ModelConfig
from runtime_modules.inputs import InputBuilder, StepInputs
from runtime_modules.models import AttnMeta, Kernels, build_model
from runtime_modules.profiling import prof_range
from runtime_modules.sampler import sample
from runtime_modules.sequence import Sequence

log = logging.getLogger(__name__)
CPU_KV_BYTES = 1 << 30   # default KV budget on CPU
CPU_MAX_BLOCKS = 4096    # and at most this many blocks (block-manager start-up cost)


def graph_sizes(requested: list[int] | None, max_num_seqs: int) -> list[int]:
    """Decode batch sizes to capture: sorted, capped at max_num_seqs, ending with it."""
    sizes = requested or [1, 2, 4, 8] + list(range(16, max_num_seqs + 1, 16))
    sizes = sorted({min(s, max_num_seqs) for s in sizes})
    if sizes[-1] < max_num_seqs:
        sizes.append(max_num_seqs)  # every decode batch has a graph to replay
    return sizes


def graph_size_for(batch: int, sizes: list[int]) -> int:
    """The smallest captured size that holds `batch` rows."""
    for s in sizes:
        if s >= batch:
            return s
    raise ValueError(f"decode batch of {batch} exceeds the largest captured size {sizes[-1]}")


def fill_decode_statics(x: StepInputs, bs: int, ids: torch.Tensor, pos: torch.Tensor,
                        slots: torch.Tensor, ctx: torch.Tensor, tables: torch.Tensor) -> None:
    """Copy a decode step into a graph's static inputs, rows past x.num_seqs as padding.

    Padding rows get slot -1 (no KV write), context_len 0 (no KV read) and token/position
    0 (a valid embedding row and rotary position whatever earlier steps left there);
    their block tables may hold stale ids, which a kernel must not read at context 0.
    """
    b, w = x.num_seqs, x.meta.block_tables.shape[1]
    if not 0 < b <= bs <= ids.shape[0] or w > tables.shape[1]:
        raise ValueError(f"decode batch {b} (table width {w}) does not fit graph size {bs} "
                         f"of static buffers [{ids.shape[0]}, {tables.shape[1]}]")
    ids[:b].copy_(x.input_ids, non_blocking=True)
    pos[:b].copy_(x.positions, non_blocking=True)
    slots[:b].copy_(x.meta.slot_mapping, non_blocking=True)
    ctx[:b].copy_(x.meta.context_lens, non_blocking=True)
    tables[:b, :w].copy_(x.meta.block_tables, non_blocking=True)
    if bs > b:
        ids[b:bs].zero_()
        pos[b:bs].zero_()
        slots[b:bs].fill_(-1)
        ctx[b:bs].zero_()


def kv_block_bytes(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of one KV block over all layers (K and V)."""
    elem = torch.empty(0, dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * block_size * cfg.num_key_value_heads * cfg.head_dim * elem


class ModelRunner:
    """Runs scheduled batches on the model; one per engine."""

    def __init__(self, model: str | Path, model_config: ModelConfig, config: EngineConfig,
                 kernels: Kernels):
        self.cfg, self.mcfg = config, model_config
        self.device = torch.device(config.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        max_pos = max(config.max_model_len, 1)
        self.model = build_model(model, model_config, kernels, str(self.device), config.dtype,
                                 config.seed, max_pos)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.builder = InputBuilder(config.block_size, config.max_model_len, str(self.device))
        self.num_kv_blocks = config.num_kv_blocks or self._auto_num_blocks()
        self._allocate_kv(self.num_kv_blocks)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        if self.device.type == "cuda" and not config.enforce_eager:
            self._capture_graphs()

    # ------------------------------------------------------------------ memory

    def _kv_layers(self):
        return [layer.self_attn for layer in self.model.layers]

    def _allocate_kv(self, num_blocks: int) -> None:
        c, m = self.cfg, self.mcfg
        # kv: [2, layers, num_blocks, block_size, Hkv, D]; zeros so padding never reads NaN
        self.kv = torch.zeros(2, m.num_hidden_layers, num_blocks, c.block_size,
                              m.num_key_value_heads, m.head_dim, dtype=c.dtype,
                              device=self.device)
        for i, attn in enumerate(self._kv_layers()):
            attn.k_cache, attn.v_cache = self.kv[0, i], self.kv[1, i]

    def _auto_num_blocks(self) -> int:
        c = self.cfg
        per_block = kv_block_bytes(self.mcfg, c.block_size, c.dtype)
        want = c.max_num_seqs * -(-c.max_model_len // c.block_size)
        if self.device.type != "cuda":
            return max(1, min(want, CPU_KV_BYTES // per_block, CPU_MAX_BLOCKS))
        temp_blocks = -(-c.max_model_len // c.block_size)
        self._allocate_kv(temp_blocks)
        temp_bytes = self.kv.numel() * self.kv.element_size()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(self.device)
        self._warmup(temp_blocks)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(self.device) - temp_bytes
        current = torch.cuda.memory_allocated(self.device) - temp_bytes
        del self.kv
        for attn in self._kv_layers():
            attn.k_cache = attn.v_cache = torch.empty(0)
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        used = total - free
        budget = total * c.gpu_memory_utilization - used - (peak - current)
        blocks = int(budget // per_block)
        if blocks < 1:
            raise RuntimeError(f"no GPU memory left for the KV cache (budget {budget / 2**30:.2f}"
                               f" GiB at gpu_memory_utilization={c.gpu_memory_utilization}); "
                               "lower max_num_batched_tokens or raise the utilization")
        log.info("KV cache: %d blocks (%.2f GiB)", blocks, blocks * per_block / 2**30)
        return min(blocks, max(want, 1))

    @torch.inference_mode()
    def _warmup(self, temp_blocks: int) -> None:
        """A largest-size prefill into a throwaway cache, to measure peak activations."""
        c = self.cfg
        seq_len = min(c.max_model_len, c.max_num_batched_tokens)
        n = max(1, min(c.max_num_batched_tokens // seq_len, c.max_num_seqs))
        dev = self.device
        t = n * seq_len
        ids = torch.randint(0, self.mcfg.vocab_size, (t,), device=dev, dtype=torch.int32)
        pos = torch.arange(seq_len, device=dev, dtype=torch.int32).repeat(n)
        meta = AttnMeta(False, torch.full((t,), -1, dtype=torch.int32, device=dev),
                        torch.full((n,), seq_len, dtype=torch.int32, device=dev),
                        torch.arange(temp_blocks, dtype=torch.int32, device=dev).repeat(n, 1),
                        torch.arange(0, t + 1, seq_len, dtype=torch.int32, device=dev), seq_len)
        self.model(ids, pos, meta)
        # the LM head and a top-p sampler at max_num_seqs rows peak well above the prefill's
        # few sampled rows ([S, vocab] fp32 logits, probs, sort values + int64 indices, ...)
        rows = torch.randn(c.max_num_seqs, self.mcfg.hidden_size, device=dev, dtype=c.dtype)
        logits = self.model.compute_logits(rows)
        ones = torch.ones(c.max_num_seqs, device=dev)
        sample(logits, ones, ones * 0.9, torch.Generator(device=dev).manual_seed(0))

    # ------------------------------------------------------------------ CUDA graphs

    def _graph_sizes(self) -> list[int]:
        return graph_sizes(self.cfg.cuda_graph_sizes, self.cfg.max_num_seqs)

    @torch.inference_mode()
    def _capture_graphs(self) -> None:
        c, dev = self.cfg, self.device
        sizes = self._graph_sizes()
        mx, width = sizes[-1], self.builder.width
        self.g_ids = torch.zeros(mx, dtype=torch.int32, device=dev)
        self.g_pos = torch.zeros(mx, dtype=torch.int32, device=dev)
        self.g_slots = torch.full((mx,), -1, dtype=torch.int32, device=dev)
        self.g_ctx = torch.zeros(mx, dtype=torch.int32, device=dev)
        self.g_tables = torch.zeros(mx, width, dtype=torch.int32, device=dev)
        self.g_out = torch.zeros(mx, self.mcfg.hidden_size, dtype=c.dtype, device=dev)
        pool = None
        for bs in reversed(sizes):
            meta = AttnMeta(True, self.g_slots[:bs], self.g_ctx[:bs], self.g_tables[:bs])
            self.model(self.g_ids[:bs], self.g_pos[:bs], meta)  # warm up (Triton compiles)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool):
                    self.g_out[:bs] = self.model(self.g_ids[:bs], self.g_pos[:bs], meta)
            except Exception as e:
                raise RuntimeError(f"CUDA-graph capture of the decode step failed at batch "
                                   f"size {bs}: {type(e).__name__}: {e}; a kernel slot is not "
                                   "graph-safe (host sync or data-dependent shapes), or pass "
                                   "enforce_eager=True") from e
            pool = graph.pool() if pool is None else pool
            self.graphs[bs] = graph
        torch.cuda.synchronize()
        self.graph_sizes = sizes

    def _replay(self, x: StepInputs) -> torch.Tensor:
        bs = graph_size_for(x.num_seqs, self.graph_sizes)
        fill_decode_statics(x, bs, self.g_ids, self.g_pos, self.g_slots, self.g_ctx,
                            self.g_tables)
        self.graphs[bs].replay()
        return self.g_out[:x.num_seqs]

    # ------------------------------------------------------------------ steps

    @torch.inference_mode()
    def run(self, batch: list[tuple[Sequence, int]]) -> list[int]:
        """Run one step; the sampled tokens of the sequences that complete, in batch order."""
        x = self.builder.prepare(batch)
        if x.meta.is_decode and self.graphs and x.num_seqs <= self.graph_sizes[-1]:
            hidden = self._replay(x)
        else:
            hidden = self.model(x.input_ids, x.positions, x.meta)
        if x.num_sampled == 0:
            return []
        if x.logits_indices is not None:
            hidden = hidden[x.logits_indices]
        logits = self.model.compute_logits(hidden)
        with prof_range("sampler"):
            tokens = sample(logits, x.temperatures, x.top_ps, self.generator)
        return tokens.tolist()  # the step's one host sync

    def release(self, seq: Sequence) -> None:
        """A sequence finished: drop its host-side state."""
        self.builder.release(seq)
