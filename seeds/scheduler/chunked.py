"""Chunked-prefill scheduling: decode tokens first, then prompt chunks within the budget.

Decides the next batch as one mixed step: every running sequence (in admission order) gets
its next tokens (one for a decoding sequence, the next chunk of at most `chunk_size` for a
partly prefilled one), then waiting requests are admitted in arrival order with chunks of
their prompts while the token budget and KV blocks last. Prefill never stalls decoding, and
a long prompt is spread over several steps. When the KV cache is full, the newest running
sequence is preempted (recomputed later) and no new request is admitted in that step.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockManager
    from runtime_modules.sequence import Sequence

TUNABLES = {"chunk_size": (16, 65536), "watermark_blocks": (0, 64)}


class Scheduler:
    """Decode first, then chunked prefill of waiting prompts, newest-first preemption."""

    def __init__(self, config: Any, block_manager: BlockManager, chunk_size: int = 2048,
                 watermark_blocks: int = 0):
        self.cfg, self.bm = config, block_manager
        self.chunk_size = chunk_size
        self.watermark = watermark_blocks
        self.waiting: deque[Sequence] = deque()
        self.running: dict[int, Sequence] = {}  # admission order; popitem() gives the newest

    def add(self, seq: Sequence) -> None:
        """A new request."""
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        """Any sequence waiting or running."""
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """The engine finished `seq` (blocks already freed)."""
        self.running.pop(seq.seq_id, None)

    def schedule(self) -> list[tuple[Sequence, int]]:
        """Running sequences first (decode or next chunk), then new prompts' chunks."""
        cfg, bm, running = self.cfg, self.bm, self.running
        batch: list[tuple[Sequence, int]] = []
        budget = cfg.max_num_batched_tokens
        preempted = False
        bs = bm.block_size
        for seq in list(running.values()):
            if len(batch) >= cfg.max_num_seqs or budget <= 0:
                break
            if seq.seq_id not in running:
                continue  # preempted as a victim for an older sequence
            n = min(seq.num_uncomputed_tokens, budget, self.chunk_size)
            if seq.num_computed_tokens + n <= len(seq.block_table) * bs:
                batch.append((seq, n))  # fits the blocks it holds: no block-manager call
                budget -= n
                continue
            while not bm.can_allocate(seq, n):
                _, victim = running.popitem()  # the newest running sequence
                bm.preempt(victim)
                self.waiting.appendleft(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.allocate(seq, n)
                batch.append((seq, n))
                budget -= n
        if preempted:
            return batch
        while self.waiting and len(batch) < cfg.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            cached = bm.num_cached_prefix_tokens(seq)
            # EVOLVE-BLOCK-START
            n = min(seq.num_uncomputed_tokens - cached, budget, self.chunk_size)
            # the watermark keeps room for running sequences to grow (none running: it
            # would only hold back a request that fits, a stall if > the cache)
            if (running and bm.num_free_blocks < self.watermark) or not bm.can_allocate(seq, n):
                break
            # EVOLVE-BLOCK-END
            bm.allocate(seq, n)
            seq.status = type(seq.status).RUNNING
            self.waiting.popleft()
            running[seq.seq_id] = seq
            batch.append((seq, n))
            budget -= n
        return batch
