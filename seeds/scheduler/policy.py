"""Priority scheduling with chunked prefill, every decision an evolvable function.

Decides the next batch like the `priority` seed (exactly like it when `lookahead` covers the
queue): running sequences first (decode or their next prompt chunk), then waiting requests by
`priority(...)`, highest first (ties: arrival order), newest-first preemption. Four
decisions are EVOLVE-BLOCKs, each a function of cheap read-only features:

- `priority`: the admission order of waiting requests;
- `defer`: whether a request that would fit stays waiting this step (> 0: it waits);
- `victim`: which running sequence is preempted first when the KV cache is full;
- `reserve`: how many free KV blocks admission keeps back for running sequences to grow.

Features (floats): `wait_steps` (scheduler steps since it arrived), `prompt_len` (tokens
still to prefill), `cached` (of those, tokens whose prefix blocks are in the prefix cache
now), `inflight` (tokens of its prefix, past the cached ones, that a running sequence is
computing right now: after that prefill they are cached), `remaining` (its `max_tokens`
cap minus tokens generated; the realized length is never known), `num_preemptions`,
`free` (free KV blocks), `total` (all KV blocks), `running` (running sequences), `queue`
(waiting requests); for victims `age` (steps since admitted), `computed` (tokens in its KV),
`blocks` (KV blocks it holds). Only the first `lookahead` waiting requests (in queue
order) are ranked each step, which bounds the cost of the features: with `lookahead` at
least the queue length it schedules exactly as the `priority` seed does (tested); the
default 128 keeps full-size shared-prefix at ~1.6 s per simulation instead of ~3 s, and
alone moves that workload's modeled tok/s by +2%.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockManager
    from runtime_modules.sequence import Sequence

GP_TARGET = ("priority", "defer", "victim", "reserve")
TUNABLES = {"chunk_size": (16, 65536), "watermark_blocks": (0, 64), "lookahead": (1, 1024)}


def priority(wait_steps: float, prompt_len: float, cached: float, inflight: float,
             remaining: float, num_preemptions: float, free: float, running: float,
             queue: float) -> float:
    """How urgently a waiting request should be admitted; higher goes first."""
    # EVOLVE-BLOCK-START
    return wait_steps + 4.0 * num_preemptions - 0.01 * prompt_len
    # EVOLVE-BLOCK-END


def defer(prompt_len: float, cached: float, inflight: float, free: float, running: float,
          queue: float) -> float:
    """Greater than 0: the request stays waiting this step although it would fit."""
    # EVOLVE-BLOCK-START
    return -1.0
    # EVOLVE-BLOCK-END


def victim(age: float, computed: float, remaining: float, blocks: float,
           num_preemptions: float) -> float:
    """Which running sequence to preempt first when KV runs out: the highest score."""
    # EVOLVE-BLOCK-START
    return -age
    # EVOLVE-BLOCK-END


def reserve(watermark: float, running: float, queue: float, free: float,
            total: float) -> float:
    """Free KV blocks that admitting new requests must leave for running sequences."""
    # EVOLVE-BLOCK-START
    return watermark
    # EVOLVE-BLOCK-END


class Scheduler:
    """Decode first, then waiting prompts by `priority`, chunked; evolvable preemption."""

    def __init__(self, config: Any, block_manager: BlockManager, chunk_size: int = 2048,
                 watermark_blocks: int = 0, lookahead: int = 128):
        self.cfg, self.bm = config, block_manager
        self.chunk_size = chunk_size
        self.watermark = watermark_blocks
        self.lookahead = max(1, int(lookahead))
        self.waiting: list[Sequence] = []
        self.arrived: dict[int, int] = {}  # seq_id -> step it arrived
        self.admitted: dict[int, tuple[int, int]] = {}  # seq_id -> (step, admission order)
        self.running: dict[int, Sequence] = {}  # admission order
        self.computing: dict[int, list[int]] = {}  # seq_id -> prefix hashes it computes
        self.inflight: dict[int, int] = {}  # prefix block hash -> sequences computing it
        self.steps = 0
        self.order = 0

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
        self.admitted.pop(seq.seq_id, None)
        self._done_computing(seq)

    # ------------------------------------------------------------------ features

    def _done_computing(self, seq: Sequence) -> None:
        hashes = self.computing.pop(seq.seq_id, None)
        if hashes:
            inflight = self.inflight
            for h in hashes:
                c = inflight[h] - 1
                if c:
                    inflight[h] = c
                else:
                    del inflight[h]

    def _prefix(self, seq: Sequence) -> tuple[int, int]:
        """(cached, inflight) prefix blocks of a waiting request."""
        bm = self.bm
        cached = bm.cached_prefix_blocks(seq)
        if not self.inflight:
            return cached, 0
        inflight, n = self.inflight, 0
        for h in bm.prefix_hashes(seq)[cached:]:
            if h not in inflight:
                break
            n += 1
        return cached, n

    def _keys(self, head: list[Sequence], free: float, queue: float) -> dict[int, float]:
        """priority(...) of each request in `head`."""
        bs, steps, running = float(self.bm.block_size), self.steps, float(len(self.running))
        keys = {}
        for seq in head:
            cached, inflight = self._prefix(seq)
            sp = seq.sampling_params
            keys[seq.seq_id] = priority(
                float(steps - self.arrived[seq.seq_id]), float(seq.num_uncomputed_tokens),
                cached * bs, inflight * bs,
                float(sp.max_tokens - seq.num_completion_tokens),
                float(seq.num_preemptions), free, running, queue)
        return keys

    def _victim(self, scheduled: set[int]) -> Sequence:
        """The running sequence `victim` scores highest (ties: the newest admitted), among
        those not already in this step's batch (their blocks are promised to it)."""
        best, best_key = None, None
        bs = self.bm.block_size
        for seq in self.running.values():
            if seq.seq_id in scheduled:
                continue
            step, order = self.admitted[seq.seq_id]
            sp = seq.sampling_params
            s = victim(float(self.steps - step), float(seq.num_computed_tokens),
                       float(sp.max_tokens - seq.num_completion_tokens),
                       float(-(-seq.num_computed_tokens // bs)), float(seq.num_preemptions))
            if best_key is None or (s, order) > best_key:
                best, best_key = seq, (s, order)
        return best

    def _preempt(self, seq: Sequence) -> None:
        self.running.pop(seq.seq_id)
        self.admitted.pop(seq.seq_id, None)
        self._done_computing(seq)
        self.bm.preempt(seq)
        self.waiting.append(seq)

    def _admit(self, seq: Sequence, n: int) -> None:
        bm = self.bm
        bm.allocate(seq, n)  # takes its prefix-cache hits first
        seq.status = type(seq.status).RUNNING
        self.running[seq.seq_id] = seq
        self.order += 1
        self.admitted[seq.seq_id] = (self.steps, self.order)
        full = seq.num_prompt_tokens // bm.block_size
        start = seq.num_computed_tokens // bm.block_size
        if start < full:  # the prefix blocks this sequence will compute
            hashes = bm.prefix_hashes(seq)[start:full]
            for h in hashes:
                self.inflight[h] = self.inflight.get(h, 0) + 1
            self.computing[seq.seq_id] = hashes

    # ------------------------------------------------------------------ the step

    def schedule(self) -> list[tuple[Sequence, int]]:
        """Running sequences first (decode or next chunk), then waiting prompts by priority."""
        self.steps += 1
        cfg, bm, running = self.cfg, self.bm, self.running
        batch: list[tuple[Sequence, int]] = []
        budget = cfg.max_num_batched_tokens
        preempted = False
        bs = bm.block_size
        scheduled: set[int] = set()
        for seq in list(running.values()):
            if len(batch) >= cfg.max_num_seqs or budget <= 0:
                break
            if seq.seq_id not in running:
                continue  # preempted as a victim for another sequence
            if seq.seq_id in self.computing and seq.num_computed_tokens >= seq.num_prompt_tokens:
                self._done_computing(seq)  # its prefix blocks are cached now
            n = min(seq.num_uncomputed_tokens, budget, self.chunk_size)
            if seq.num_computed_tokens + n <= len(seq.block_table) * bs:
                batch.append((seq, n))  # fits the blocks it holds: no block-manager call
                scheduled.add(seq.seq_id)
                budget -= n
                continue
            while not bm.can_allocate(seq, n):
                out = self._victim(scheduled)
                self._preempt(out)
                preempted = True
                if out is seq:
                    break
            else:
                bm.allocate(seq, n)
                batch.append((seq, n))
                scheduled.add(seq.seq_id)
                budget -= n
        if preempted or not self.waiting or budget <= 0 or len(batch) >= cfg.max_num_seqs \
                or bm.num_free_blocks == 0:  # nothing can be admitted without a free block
            return batch
        free, queue = float(bm.num_free_blocks), float(len(self.waiting))
        head = self.waiting[: self.lookahead]
        # stable sort: equal priorities keep arrival order
        keys = self._keys(head, free, queue)
        head.sort(key=lambda s: keys[s.seq_id], reverse=True)
        keep = float(reserve(float(self.watermark), float(len(running)), queue, free,
                             float(bm.num_blocks)))
        admitted: set[int] = set()
        for seq in head:
            if len(batch) >= cfg.max_num_seqs or budget <= 0:
                break
            cached = bm.num_cached_prefix_tokens(seq)
            n = min(seq.num_uncomputed_tokens - cached, budget, self.chunk_size)
            # the reserve keeps room for running sequences to grow (none running: it
            # would only hold back a request that fits, a stall if > the cache)
            if (running and bm.num_free_blocks < keep) or not bm.can_allocate(seq, n):
                break
            if running and self._defer(seq):
                continue
            self._admit(seq, n)
            batch.append((seq, n))
            budget -= n
            admitted.add(seq.seq_id)
        if admitted:
            self.waiting = [s for s in head if s.seq_id not in admitted] + \
                self.waiting[self.lookahead:]
        else:
            self.waiting[: self.lookahead] = head
        return batch

    def _defer(self, seq: Sequence) -> bool:
        cached, inflight = self._prefix(seq)
        bs = self.bm.block_size
        return defer(float(seq.num_uncomputed_tokens), float(cached * bs),
                     float(inflight * bs), float(self.bm.num_free_blocks),
                     float(len(self.running)), float(len(self.waiting))) > 0
