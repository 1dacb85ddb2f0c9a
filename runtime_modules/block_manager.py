"""Paged KV-cache bookkeeping with hash-based prefix caching.

Blocks hold `block_size` tokens of KV. A full block whose KV is computed gets a chained hash
(hash of the previous block's hash and its own token ids), so a later sequence with the same
prefix can reuse it. Freed blocks keep their contents until overwritten; which free block
is overwritten next is the `cache_policy` slot's choice (`evict`). The narrow interface a
scheduler uses: `num_cached_prefix_tokens / can_allocate / allocate / preempt / free`,
plus cheap read-only features for policies: `prefix_hashes`, `cached_prefix_blocks` and
`waiting_refs` (how many waiting requests' prompts contain a cached block). A cache policy
with a `bind(view)` method is given a `CacheView` of those at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime_modules.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class BlockInfo:
    """What a cache policy learns about a block when it becomes free."""

    block_id: int
    hashed: bool       # holds a reusable prefix (a prefix hit may take it back)
    position: int      # block index within the sequence that filled it
    num_hits: int      # prefix-cache reuses so far
    allocated_at: int  # engine step when its current contents were started
    freed_at: int      # engine step when it became free
    now: int           # current engine step


class CacheView:
    """What a cache policy may read from the block manager (read-only, O(1) per call)."""

    __slots__ = ("_bm",)

    def __init__(self, bm: BlockManager):
        self._bm = bm

    def waiting_refs(self, block_id: int) -> int:
        """Waiting requests whose prompt contains the cached prefix block `block_id`."""
        return self._bm.waiting_refs(block_id)

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence uses (free, or holding an evictable cached prefix)."""
        return self._bm.num_free_blocks

    @property
    def num_blocks(self) -> int:
        """All KV blocks."""
        return self._bm.num_blocks


class CachePolicyError(RuntimeError):
    """The cache_policy slot broke its contract."""


class BlockManager:
    """Allocates KV blocks to sequences; the only KV interface a scheduler uses."""

    def __init__(self, num_blocks: int, block_size: int, policy: Any,
                 enable_prefix_caching: bool = True, policy_name: str = "cache_policy"):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.policy, self.policy_name = policy, policy_name
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_count = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.block_tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self.num_hits = [0] * num_blocks
        self.allocated_at = [0] * num_blocks
        self.position = [0] * num_blocks
        self.hash_to_block: dict[int, int] = {}
        self._num_free = num_blocks
        self._version = 0  # bumped when hash_to_block changes (invalidates the memos)
        # seq_id -> (tokens, _version, answer) for `_hits` and `cached_prefix_blocks`: a
        # scheduler asks about the same waiting requests every step, and the answers move
        # only when the cache or the sequence does (a queue of hundreds held back cost ~5 ms
        # a step without them)
        self._hit_memo: dict[int, tuple[int, int, list[int]]] = {}
        self._cpb: dict[int, tuple[int, int, int]] = {}
        self.now = 0
        self.prefix_hit_tokens = 0
        self.num_preemptions = 0
        # chained block hash -> waiting requests whose prompt has that block (engine-fed)
        self._waiting_refs: dict[int, int] = {}
        self._tracked: dict[int, list[int]] = {}  # seq_id -> the hashes counted for it
        self._engine_seqs: set[int] = set()  # sequences the engine tracks, until finished
        # Prefix-chain index for `cached_prefix_blocks`: a hash names its whole prefix, so
        # "every block of the chain up to this one is cached" is a property of the hash
        # (`_whole`); parents and cached children let commits and evictions keep it.
        self._whole: set[int] = set()
        self._parent: dict[int, int] = {}  # cached hash -> its chain's previous hash
        self._children: dict[int, set[int]] = {}  # hash -> cached hashes that follow it
        for b in range(num_blocks):
            policy.add(BlockInfo(b, False, 0, 0, 0, 0, 0))
        bind = getattr(policy, "bind", None)
        if callable(bind):
            bind(CacheView(self))

    # ------------------------------------------------------------------ scheduler interface

    @property
    def num_free_blocks(self) -> int:
        """Blocks not used by any sequence (free or holding an evictable cached prefix)."""
        return self._num_free

    def num_cached_prefix_tokens(self, seq: Sequence) -> int:
        """Tokens of `seq` (without blocks) found in the prefix cache; leaves >= 1 to compute."""
        if seq.block_table:
            return 0
        return len(self._hits(seq)) * self.block_size

    def prefix_hashes(self, seq: Sequence) -> list[int]:
        """Chained hashes of `seq`'s full blocks except the last token's (cached on `seq`)."""
        return self._block_hashes(seq, (seq.num_tokens - 1) // self.block_size)

    def cached_prefix_blocks(self, seq: Sequence) -> int:
        """Leading full blocks of `seq` whose hash is in the prefix cache now (a feature:
        unlike `num_cached_prefix_tokens`, tokens are not compared, so a hash collision
        would count; the engine's own hits still compare them)."""
        if not self.enable_prefix_caching:
            return 0
        ntok, version = len(seq.token_ids), self._version
        memo = self._cpb.get(seq.seq_id)
        if memo is not None and memo[0] == ntok and memo[1] == version:
            return memo[2]
        # "blocks 0..i all cached" is monotone in i: binary search, O(log blocks)
        hashes, whole = self.prefix_hashes(seq), self._whole
        lo, hi = 0, (ntok - 1) // self.block_size
        while lo < hi:
            mid = (lo + hi) // 2
            if hashes[mid] in whole:
                lo = mid + 1
            else:
                hi = mid
        self._cpb[seq.seq_id] = (ntok, version, lo)
        return lo

    def waiting_refs(self, block_id: int) -> int:
        """How many waiting requests' prompts contain the cached block `block_id` (0 if it
        holds no reusable prefix)."""
        h = self.block_hash[block_id]
        return self._waiting_refs.get(h, 0) if h is not None else 0

    def track_waiting(self, seq: Sequence) -> None:
        """Engine: `seq` waits (new or preempted): count its prefix blocks as wanted."""
        if not self.enable_prefix_caching or seq.seq_id in self._tracked:
            return
        self._engine_seqs.add(seq.seq_id)
        hashes = list(self.prefix_hashes(seq))
        refs = self._waiting_refs
        for h in hashes:
            refs[h] = refs.get(h, 0) + 1
        self._tracked[seq.seq_id] = hashes

    def forget(self, seq: Sequence) -> None:
        """Engine: `seq` finished (after `free`): stop tracking it."""
        self._untrack(seq)
        self._engine_seqs.discard(seq.seq_id)
        self._cpb.pop(seq.seq_id, None)
        self._hit_memo.pop(seq.seq_id, None)

    def _untrack(self, seq: Sequence) -> None:
        hashes = self._tracked.pop(seq.seq_id, None)
        if hashes:
            refs = self._waiting_refs
            for h in hashes:
                c = refs[h] - 1
                if c:
                    refs[h] = c
                else:
                    del refs[h]

    def can_allocate(self, seq: Sequence, n: int) -> bool:
        """Whether `allocate(seq, n)` would succeed now."""
        table = seq.block_table
        if table:  # fast path: a running sequence (once per sequence per step)
            return -(-(seq.num_computed_tokens + n) // self.block_size) - len(table) \
                <= self._num_free
        return self._free_needed(seq, n) <= self._num_free

    def allocate(self, seq: Sequence, n: int) -> bool:
        """Make room for `n` more tokens after seq.num_computed_tokens; False changes nothing.

        A sequence without blocks first takes its prefix-cache hits (raising
        num_computed_tokens and num_cached_tokens by the tokens found).
        """
        bs, table = self.block_size, seq.block_table
        if table:  # fast path: a running sequence usually needs no new block
            need = -(-(seq.num_computed_tokens + n) // bs) - len(table)
            if need <= 0:
                return True
            if need > self._num_free:
                return False
            for _ in range(need):
                table.append(self._take_free(len(table)))
            return True
        if self._free_needed(seq, n) > self._num_free:
            return False
        if seq.num_computed_tokens:
            raise RuntimeError(f"{seq}: has computed tokens but no blocks")
        if self._tracked:
            self._untrack(seq)  # admitted: no longer waiting
        hits = self._hits(seq)
        for b in hits:
            if self.ref_count[b] == 0:
                self.policy.remove(b)
                self._num_free -= 1
            self.ref_count[b] += 1
            self.num_hits[b] += 1
            table.append(b)
        seq.num_computed_tokens = seq.num_cached_tokens = len(hits) * bs
        seq.num_hashed_blocks = len(hits)
        self.prefix_hit_tokens += len(hits) * bs
        for _ in range(-(-(seq.num_computed_tokens + n) // bs) - len(table)):
            table.append(self._take_free(len(table)))
        return True

    def preempt(self, seq: Sequence) -> None:
        """Free `seq`'s blocks so its KV is recomputed later; it goes back to WAITING."""
        self.free(seq)
        seq.num_computed_tokens = seq.num_cached_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        if seq.seq_id in self._engine_seqs:
            self.track_waiting(seq)  # waiting again: its prompt is wanted again

    def free(self, seq: Sequence) -> None:
        """Release `seq`'s blocks (cached contents stay reusable until evicted)."""
        ref, add, now = self.ref_count, self.policy.add, self.now
        table = seq.block_table
        for i in range(len(table) - 1, -1, -1):  # tail first: a policy may favour heads
            b = table[i]
            ref[b] -= 1
            if ref[b] == 0:
                self._num_free += 1
                add(BlockInfo(b, self.block_hash[b] is not None, self.position[b],
                              self.num_hits[b], self.allocated_at[b], now, now))
        seq.block_table = []
        seq.num_hashed_blocks = 0
        seq.kv_epoch += 1

    # ------------------------------------------------------------------ engine interface

    def commit(self, seq: Sequence) -> None:
        """Register the hashes of `seq`'s newly completed blocks (engine, after a step)."""
        if not self.enable_prefix_caching:
            return
        full = seq.num_computed_tokens // self.block_size
        if full <= seq.num_hashed_blocks:
            return
        hashes = self._block_hashes(seq, full)
        bs, toks = self.block_size, seq.token_ids
        for i in range(seq.num_hashed_blocks, full):
            b, h = seq.block_table[i], hashes[i]
            if self.block_hash[b] is None and h not in self.hash_to_block:
                self.hash_to_block[h] = b
                self.block_hash[b] = h
                self.block_tokens[b] = tuple(toks[i * bs:(i + 1) * bs])
                self._version += 1
                self._link(h, hashes[i - 1] if i else None)
            # else: the same prefix is already cached in another block; keep that one
        seq.num_hashed_blocks = full

    def _link(self, h: int, parent: int | None) -> None:
        """A block of hash `h` joined the cache: index it, and mark what became whole."""
        if parent is not None:
            self._parent[h] = parent
            self._children.setdefault(parent, set()).add(h)
        if parent is None or parent in self._whole:
            stack = [h]
            while stack:  # this block and its cached descendants are whole now
                x = stack.pop()
                if x not in self._whole:
                    self._whole.add(x)
                    stack.extend(self._children.get(x, ()))

    def _unlink(self, h: int) -> None:
        """The block of hash `h` left the cache: it and its descendants are not whole."""
        parent = self._parent.pop(h, None)
        if parent is not None:
            kids = self._children.get(parent)
            if kids is not None:
                kids.discard(h)
                if not kids:
                    del self._children[parent]
        stack = [h]
        while stack:
            x = stack.pop()
            if x in self._whole:
                self._whole.discard(x)
                stack.extend(self._children.get(x, ()))

    def check_invariants(self, live: list[Sequence]) -> None:
        """Assert ref counts match the block tables of `live` sequences (tests, debugging)."""
        counts = [0] * self.num_blocks
        for s in live:
            for b in s.block_table:
                counts[b] += 1
        assert counts == self.ref_count, "ref counts disagree with block tables"
        assert self._num_free == counts.count(0), "free count disagrees with ref counts"
        for h, b in self.hash_to_block.items():
            assert self.block_hash[b] == h, f"block {b} lost its hash"

    # ------------------------------------------------------------------ internals

    def _block_hashes(self, seq: Sequence, upto: int) -> list[int]:
        hashes, bs, toks = seq.block_hashes, self.block_size, seq.token_ids
        prev = hashes[-1] if hashes else -1
        for i in range(len(hashes), upto):
            prev = hash((prev, tuple(toks[i * bs:(i + 1) * bs])))
            hashes.append(prev)
        return hashes

    def _hits(self, seq: Sequence) -> list[int]:
        if not self.enable_prefix_caching:
            return []
        ntok, version = len(seq.token_ids), self._version
        memo = self._hit_memo.get(seq.seq_id)
        if memo is not None and memo[0] == ntok and memo[1] == version:
            return memo[2]
        bs, toks, hits = self.block_size, seq.token_ids, []
        max_blocks = (ntok - 1) // bs
        hashes = self._block_hashes(seq, max_blocks)
        for i in range(max_blocks):
            b = self.hash_to_block.get(hashes[i])
            if b is None or self.block_tokens[b] != tuple(toks[i * bs:(i + 1) * bs]):
                break
            hits.append(b)
        self._hit_memo[seq.seq_id] = (ntok, version, hits)
        return hits

    def _free_needed(self, seq: Sequence, n: int) -> int:
        bs = self.block_size
        if seq.block_table:
            return -(-(seq.num_computed_tokens + n) // bs) - len(seq.block_table)
        hits = self._hits(seq)
        k = len(hits)
        ref = self.ref_count
        idle_hits = [ref[b] for b in hits].count(0)  # 1.7x the generator at 40 hits
        return -(-(k * bs + n) // bs) - k + idle_hits

    def _take_free(self, position: int) -> int:
        b = self.policy.evict()
        if not isinstance(b, int) or not 0 <= b < self.num_blocks or self.ref_count[b] != 0:
            raise CachePolicyError(
                f"cache_policy {self.policy_name!r}: evict() returned {b!r}, which is not a "
                f"free block id in [0, {self.num_blocks})")
        h = self.block_hash[b]
        if h is not None:
            if self.hash_to_block.get(h) == b:
                del self.hash_to_block[h]
                self._unlink(h)
            self.block_hash[b] = self.block_tokens[b] = None
            self._version += 1
        self.ref_count[b] = 1
        self.num_hits[b] = 0
        self.allocated_at[b] = self.now
        self.position[b] = position
        self._num_free -= 1
        return b
