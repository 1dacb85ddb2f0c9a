"""LRU prefix-cache eviction: reuse empty blocks first, then the cached block idle longest.

Decides which free KV block the engine overwrites next. Blocks that hold no reusable
prefix are taken first (nothing is lost); among blocks that still hold a cached prefix,
the one freed longest ago goes first, so recently used prefixes survive.
Every operation is O(1) (ordered dicts).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime_modules.block_manager import BlockInfo

TUNABLES: dict = {}


class CachePolicy:
    """Empty blocks first, then least recently freed cached blocks."""

    def __init__(self, num_blocks: int):
        self.empty: OrderedDict[int, None] = OrderedDict()
        self.cached: OrderedDict[int, None] = OrderedDict()

    def add(self, block: BlockInfo) -> None:
        """A block became free."""
        (self.cached if block.hashed else self.empty)[block.block_id] = None

    def remove(self, block_id: int) -> None:
        """A free cached block was taken back by a prefix hit."""
        self.cached.pop(block_id, None)
        self.empty.pop(block_id, None)

    def evict(self) -> int:
        """The block to overwrite next."""
        # EVOLVE-BLOCK-START
        if self.empty:
            return self.empty.popitem(last=False)[0]
        return self.cached.popitem(last=False)[0]
        # EVOLVE-BLOCK-END
