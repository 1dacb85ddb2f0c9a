"""Slot contracts: what a module plugged into each slot must define and do.

The docstrings below are the whole specification an evolved module must meet: prompts
carry them, and the fitness harness checks candidates against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class SlotError(ValueError):
    """A slot, program reference, module or parameter is not what the contract asks for."""

    def __init__(self, slot: str, problem: str):
        super().__init__(f"slot {slot!r}: {problem}")
        self.slot = slot
        self.problem = problem


# ----------------------------------------------------------------------------- contracts


class Scheduler(Protocol):
    """Decides which sequences run in the next engine step and how many tokens each brings.

    `__init__(config: SchedulerConfig, block_manager: BlockManager, **tunables)`.
    `add(seq)`: a new request arrives (status WAITING, no blocks).
    `schedule() -> list[tuple[Sequence, int]]`: the next batch as (sequence, n new tokens).
    Rules: each sequence at most once; 1 <= n <= seq.num_uncomputed_tokens;
    `block_manager.allocate(seq, n)` must have returned True for it during this call (for a
    sequence without blocks, call `block_manager.num_cached_prefix_tokens(seq)` first: the
    allocation takes those prefix-cache hits and raises seq.num_computed_tokens);
    set seq.status = RUNNING; len(batch) <= config.max_num_seqs;
    sum(n) <= config.max_num_batched_tokens; never let a sequence's KV exceed
    config.max_model_len. When blocks run out, `block_manager.preempt(seq)` frees a running
    sequence (its KV is recomputed later); the scheduler keeps it and schedules it again.
    The engine samples a token for every sequence whose num_computed_tokens reaches
    num_tokens in the step, then calls `finish(seq)` for those that ended (status FINISHED,
    blocks already freed): drop them from your queues.
    `has_unfinished() -> bool`: any sequence still waiting or running.
    """

    def __init__(self, config: Any, block_manager: Any, **tunables: Any) -> None: ...
    def add(self, seq: Any) -> None: ...
    def schedule(self) -> list[tuple[Any, int]]: ...
    def finish(self, seq: Any) -> None: ...
    def has_unfinished(self) -> bool: ...


class CachePolicy(Protocol):
    """Chooses which free KV block to overwrite next (prefix-cache eviction).

    `__init__(num_blocks: int, **tunables)`. At start the engine `add`s every block, unhashed.
    `add(block: BlockInfo)`: the block became free. If `block.hashed`, it still holds a
    reusable prefix (a later prefix hit may take it back through `remove`); fields:
    block_id, hashed, position (block index within its sequence), num_hits (prefix reuses so
    far), allocated_at, freed_at, now (engine step counters).
    `remove(block_id)`: a free cached block was taken by a prefix-cache hit; forget it.
    `evict() -> int`: pick one currently free block to overwrite, forget it, return its id.
    Called only when at least one block is free. Keep every operation O(1) or O(log n):
    it runs once per allocated block.
    """

    def __init__(self, num_blocks: int, **tunables: Any) -> None: ...
    def add(self, block: Any) -> None: ...
    def remove(self, block_id: int) -> None: ...
    def evict(self) -> int: ...


def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    """Paged attention for one new query token per sequence.

    q: [B, Hq, D]; k_cache, v_cache: [num_blocks, block_size, Hkv, D];
    block_tables: [B, max_blocks] int32 (block ids of each sequence's KV, in order);
    context_lens: [B] int32, number of KV tokens of each sequence including the current one.
    Query head h attends to KV head h // (Hq // Hkv) over positions 0..context_len-1.
    Returns a fresh [B, Hq, D] tensor in q.dtype: softmax(q.k * scale) @ v, fp32 accumulation.
    Rows with context_len 0 are padding: any output, but no out-of-bounds access.
    Must be CUDA-graph safe: no host synchronization and no shapes that depend on values.
    """


def prefill_attention(q, k_cache, v_cache, cu_seqlens_q, context_lens, block_tables, scale,
                      max_seqlen_q):
    """Causal paged attention for several new tokens per sequence (prefill, chunks, mixed).

    q: [T, Hq, D], the new tokens of B sequences packed; cu_seqlens_q: [B+1] int32 offsets
    into q; context_lens: [B] int32, the KV length of each sequence after this step (its new
    K/V are already written into the cache); block_tables: [B, max_blocks] int32;
    max_seqlen_q: the largest q length (a host int). Query j of sequence b sits at position
    context_lens[b] - q_len_b + j and attends to KV positions 0..that position (GQA as in
    decode_attention). Returns a fresh [T, Hq, D] tensor in q.dtype.
    """


def store_kvcache(key, value, k_cache, v_cache, slot_mapping):
    """Write new keys and values into the paged cache, in place; returns None.

    key, value: [N, Hkv, D]; k_cache, v_cache: [num_blocks, block_size, Hkv, D];
    slot_mapping: [N] int32, slot = block_id * block_size + offset; a slot < 0 is padding
    and must be skipped.
    """


def rmsnorm(x, weight, eps, residual=None):
    """RMSNorm, optionally fused with a residual add.

    x: [T, H]; weight: [H]. y = x / sqrt(mean(x**2, -1) + eps) * weight, computed in fp32 and
    returned in x.dtype. With residual ([T, H]): h = x + residual, return (rmsnorm(h), h).
    Never modifies its inputs in place.
    """


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What a slot expects a module to define."""

    name: str
    symbol: str
    kind: str  # "class" | "function"
    params: tuple[str, ...]  # required leading parameters, in order
    contract: Any
    default_cpu: str
    default_cuda: str


SLOTS: dict[str, SlotInfo] = {
    s.name: s
    for s in (
        SlotInfo("scheduler", "Scheduler", "class", ("config", "block_manager"), Scheduler,
                 "seed:scheduler/fcfs", "seed:scheduler/fcfs"),
        SlotInfo("cache_policy", "CachePolicy", "class", ("num_blocks",), CachePolicy,
                 "seed:cache_policy/lru", "seed:cache_policy/lru"),
        SlotInfo("decode_attention", "decode_attention", "function",
                 ("q", "k_cache", "v_cache", "block_tables", "context_lens", "scale"),
                 decode_attention, "seed:decode_attention/torch_paged",
                 "seed:decode_attention/triton_split_kv"),
        SlotInfo("prefill_attention", "prefill_attention", "function",
                 ("q", "k_cache", "v_cache", "cu_seqlens_q", "context_lens", "block_tables",
                  "scale", "max_seqlen_q"),
                 prefill_attention, "seed:prefill_attention/torch_paged",
                 "seed:prefill_attention/triton_paged"),
        SlotInfo("store_kvcache", "store_kvcache", "function",
                 ("key", "value", "k_cache", "v_cache", "slot_mapping"), store_kvcache,
                 "seed:store_kvcache/torch_index", "seed:store_kvcache/triton_store"),
        SlotInfo("rmsnorm", "rmsnorm", "function", ("x", "weight", "eps", "residual"), rmsnorm,
                 "seed:rmsnorm/torch_rms", "seed:rmsnorm/triton_rms"),
    )
}


def slot_info(slot: str) -> SlotInfo:
    """The SlotInfo of `slot`, or a SlotError listing the known slots."""
    try:
        return SLOTS[slot]
    except KeyError:
        raise SlotError(slot, f"unknown slot; known slots: {', '.join(SLOTS)}") from None

