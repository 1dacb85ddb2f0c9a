"""Demand-aware prefix-cache eviction: the `scored` policy, its score also seeing demand.

Decides which free KV block the engine overwrites next. Free blocks wait in a heap ordered
by when they were freed (lazy deletion for prefix hits); `evict` looks at the `window`
longest-idle ones, scores each with `score(...)` at that moment, overwrites the lowest and
puts the rest back: O(window * log n). `score` is the evolved part (a GP operator rewrites
its expression): arguments are floats, `hashed` is 1.0 for a block holding a reusable
prefix, `age` = steps since its contents were written, `idle` = steps since it was freed,
`num_hits` = prefix reuses so far, `position` = block index within its sequence, and
`waiting` = how many waiting requests' prompts contain this block (read when evicting, from
the block manager's `CacheView`, given through `bind`). The seed expression ignores
`waiting`, so it starts out evicting exactly as `scored` does.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockInfo, CacheView

GP_TARGET = "score"
TUNABLES = {"window": (1, 64)}


def score(age: float, idle: float, num_hits: float, position: float, hashed: float,
          waiting: float) -> float:
    """Worth of keeping a free block's contents; the lowest-scored candidate is overwritten."""
    # EVOLVE-BLOCK-START
    return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position
    # EVOLVE-BLOCK-END


class CachePolicy:
    """Evict the lowest `score` among the `window` longest-idle free blocks."""

    view = None  # the block manager's CacheView, once bound

    def __init__(self, num_blocks: int, window: int = 8):
        self.window = window
        self.heap: list[tuple[int, int, int]] = []  # (freed_at, tiebreak, block_id)
        self.info: dict[int, tuple[int, BlockInfo]] = {}  # block_id -> (tiebreak, info)
        self.counter = 0
        self.clock = 0  # the latest engine step any block reported

    def bind(self, view: CacheView) -> None:
        """The block manager's read-only view (waiting requests per cached block)."""
        self.view = view

    def add(self, block: BlockInfo) -> None:
        """A block became free."""
        self.clock = max(self.clock, block.now)
        self.counter += 1
        self.info[block.block_id] = (self.counter, block)
        heapq.heappush(self.heap, (block.freed_at, self.counter, block.block_id))

    def remove(self, block_id: int) -> None:
        """A free cached block was taken back by a prefix hit (its heap entry goes stale)."""
        self.info.pop(block_id, None)

    def evict(self) -> int:
        """The block to overwrite next."""
        cands: list[tuple[int, int, int]] = []
        while self.heap and len(cands) < self.window:
            entry = heapq.heappop(self.heap)
            live = self.info.get(entry[2])
            if live is not None and live[0] == entry[1]:
                cands.append(entry)
        best, best_score = 0, float("inf")
        for i, (_, tie, b) in enumerate(cands):
            blk = self.info[b][1]
            now = self.clock
            waiting = self.view.waiting_refs(b) if self.view is not None else 0
            s = score(float(now - blk.allocated_at), float(now - blk.freed_at),
                      float(blk.num_hits), float(blk.position), 1.0 if blk.hashed else 0.0,
                      float(waiting))
            if s < best_score:
                best, best_score = i, s
        chosen = cands.pop(best)
        for entry in cands:
            heapq.heappush(self.heap, entry)
        del self.info[chosen[2]]
        return chosen[2]
