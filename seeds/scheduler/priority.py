"""Priority scheduling with chunked prefill: decode first, then the highest-priority prompts.

Decides the next batch like the chunked scheduler (running sequences first, then chunks of
waiting prompts within the token budget), but waiting requests are admitted in order of
`priority(...)`, highest first (ties: arrival order). `priority` is the evolved part (a GP
operator rewrites its expression); its float arguments: `wait_steps` = scheduler steps
since the request arrived, `prompt_len` = tokens still to prefill, `num_computed` = tokens
already in the cache, `remaining` = tokens still to generate, `num_preemptions` = times the
request was preempted. When the KV cache is full, the newest running sequence is preempted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockManager
    from runtime_modules.sequence import Sequence

GP_TARGET = "priority"
TUNABLES = {"chunk_size": (16, 65536), "watermark_blocks": (0, 64)}


def priority(wait_steps: float, prompt_len: float, num_computed: float, remaining: float,
             num_preemptions: float) -> float:
    """How urgently a waiting request should be admitted; higher goes first."""
    # EVOLVE-BLOCK-START
    return wait_steps + 4.0 * num_preemptions - 0.01 * prompt_len
    # EVOLVE-BLOCK-END


class Scheduler:
    """Decode first, then waiting prompts by `priority`, chunked; newest-first preemption."""

    def __init__(self, config: Any, block_manager: BlockManager, chunk_size: int = 2048,
                 watermark_blocks: int = 0):
        self.cfg, self.bm = config, block_manager
        self.chunk_size = chunk_size
        self.watermark = watermark_blocks
        self.waiting: list[Sequence] = []
        self.arrived: dict[int, int] = {}  # seq_id -> step it arrived
        self.running: dict[int, Sequence] = {}  # admission order; popitem() gives the newest
        self.steps = 0

    def add(self, seq: Sequence) -> None:
        """A new request."""
        self.waiting.append(seq)
        self.arrived[seq.seq_id] = self.steps

    def has_unfinished(self) -> bool:
        """Any sequence waiting or running."""
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence) -> None:
        """The engine finished `seq` (blocks already freed)."""
        self.running.pop(seq.seq_id, None)
        self.arrived.pop(seq.seq_id, None)

    def _key(self, seq: Sequence) -> float:
        sp = seq.sampling_params
        return priority(float(self.steps - self.arrived[seq.seq_id]),
                        float(seq.num_uncomputed_tokens), float(seq.num_computed_tokens),
                        float(sp.max_tokens - seq.num_completion_tokens),
                        float(seq.num_preemptions))

    def schedule(self) -> list[tuple[Sequence, int]]:
        """Running sequences first (decode or next chunk), then waiting prompts by priority."""
        self.steps += 1
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
                self.waiting.append(victim)
                preempted = True
                if victim is seq:
                    break
            else:
                bm.allocate(seq, n)
                batch.append((seq, n))
                budget -= n
        if preempted or not self.waiting or budget <= 0 or len(batch) >= cfg.max_num_seqs:
            return batch
        # stable sort: equal priorities keep arrival order
        self.waiting.sort(key=self._key, reverse=True)
        admitted = 0
        for seq in self.waiting:
            if len(batch) >= cfg.max_num_seqs or budget <= 0:
                break
            cached = bm.num_cached_prefix_tokens(seq)
            n = min(seq.num_uncomputed_tokens - cached, budget, self.chunk_size)
            # the watermark keeps room for running sequences to grow (none running: it
            # would only hold back a request that fits, a stall if > the cache)
            if (running and bm.num_free_blocks < self.watermark) or not bm.can_allocate(seq, n):
                break
            bm.allocate(seq, n)
            seq.status = type(seq.status).RUNNING
            running[seq.seq_id] = seq
            batch.append((seq, n))
            budget -= n
            admitted += 1
        del self.waiting[:admitted]
        return batch
