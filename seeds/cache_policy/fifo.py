"""FIFO prefix-cache eviction: reuse empty blocks first, then the oldest cached contents.

Decides which free KV block the engine overwrites next. Blocks that hold no reusable
prefix are taken first; among cached blocks the one whose contents were written earliest
(`allocated_at`) goes first, however recently it was reused. A heap with lazy deletion
keeps each operation O(log n).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockInfo

TUNABLES: dict = {}


class CachePolicy:
    """Empty blocks first, then cached blocks in the order their contents were written."""

    def __init__(self, num_blocks: int):
        self.empty: OrderedDict[int, None] = OrderedDict()
        self.heap: list[tuple[int, int, int]] = []  # (allocated_at, tiebreak, block_id)
        self.live: dict[int, int] = {}  # block_id -> tiebreak of its valid heap entry
        self.counter = 0

    def add(self, block: BlockInfo) -> None:
        """A block became free."""
        if not block.hashed:
            self.empty[block.block_id] = None
            return
        self.counter += 1
        # EVOLVE-BLOCK-START
        key = block.allocated_at
        # EVOLVE-BLOCK-END
        self.live[block.block_id] = self.counter
        heapq.heappush(self.heap, (key, self.counter, block.block_id))

    def remove(self, block_id: int) -> None:
        """A free cached block was taken back by a prefix hit (its heap entry goes stale)."""
        self.live.pop(block_id, None)
        self.empty.pop(block_id, None)

    def evict(self) -> int:
        """The block to overwrite next."""
        if self.empty:
            return self.empty.popitem(last=False)[0]
        while True:
            _, tie, b = heapq.heappop(self.heap)
            if self.live.get(b) == tie:
                del self.live[b]
                return b
