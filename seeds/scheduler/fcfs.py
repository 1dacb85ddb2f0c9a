"""Prefill-first FCFS scheduling with newest-first preemption (as vLLM v0 and nano-vLLM).

Decides the next batch: if any request is waiting, admit waiting requests in arrival order
(whole prompts, after their prefix-cache hits) while the sequence, token and KV-block
budgets allow, and run that prefill-only batch; otherwise run one decode token for every
running sequence in arrival order. When the KV cache is full, the newest running sequence
is preempted (its KV is recomputed later) and goes back to the front of the queue. A prompt
longer than the whole token budget is prefilled alone, in budget-sized pieces.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockManager
    from runtime_modules.sequence import Sequence

TUNABLES = {"watermark_blocks": (0, 64)}


class Scheduler:
    """Prefill-first, first come first served, newest-first preemption."""

    def __init__(self, config: Any, block_manager: BlockManager, watermark_blocks: int = 0):
        self.cfg, self.bm = config, block_manager
        self.watermark = watermark_blocks  # free blocks kept back when admitting new prompts
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
        """The next batch: prefills if any fit, else one decode token per running sequence."""
        batch = self._prefill()
        return batch if batch else self._decode()

    def _prefill(self) -> list[tuple[Sequence, int]]:
        cfg, bm = self.cfg, self.bm
        batch: list[tuple[Sequence, int]] = []
        tokens = 0
        while self.waiting and len(batch) + len(self.running) < cfg.max_num_seqs:
            seq = self.waiting[0]
            cached = bm.num_cached_prefix_tokens(seq)
            n = seq.num_uncomputed_tokens - cached
            # EVOLVE-BLOCK-START
            if tokens + n > cfg.max_num_batched_tokens:
                if batch:
                    break
                n = cfg.max_num_batched_tokens  # alone and too long: prefill it in pieces
            # the watermark keeps room for running sequences to grow; with none running
            # it would only hold back a request that fits (a stall if > the cache)
            need_watermark = self.watermark if self.running and not seq.block_table else 0
            if bm.num_free_blocks < need_watermark or not bm.can_allocate(seq, n):
                break
            # EVOLVE-BLOCK-END
            bm.allocate(seq, n)
            seq.status = type(seq.status).RUNNING
            batch.append((seq, n))
            tokens += n
            if seq.num_computed_tokens + n == seq.num_tokens:
                self.waiting.popleft()
                self.running[seq.seq_id] = seq
            else:
                break  # a piece of a long prompt: it runs alone
        return batch

    def _requeue(self, seq: Sequence) -> None:
        """Back to the front of the queue, but behind a prompt part-way through its pieces:
        that one holds blocks, so a request stuck in front of it could wait forever."""
        if self.waiting and self.waiting[0].block_table:
            self.waiting.insert(1, seq)
        else:
            self.waiting.appendleft(seq)

    def _decode(self) -> list[tuple[Sequence, int]]:
        cfg, bm = self.cfg, self.bm
        bs = bm.block_size
        limit = min(cfg.max_num_seqs, cfg.max_num_batched_tokens)
        batch: list[tuple[Sequence, int]] = []
        add = batch.append
        running = self.running
        for seq in list(running.values()):
            if len(batch) >= limit:
                break
            if seq.seq_id not in running:
                continue  # preempted below as a victim for an older sequence
            if seq.num_computed_tokens < len(seq.block_table) * bs or bm.allocate(seq, 1):
                add((seq, 1))  # fits the blocks it holds (15 steps in 16), or got a new one
                continue
            while not bm.can_allocate(seq, 1):
                _, victim = running.popitem()  # the newest running sequence
                bm.preempt(victim)
                self._requeue(victim)
                if victim is seq:
                    break
            else:
                bm.allocate(seq, 1)
                add((seq, 1))
        return batch
