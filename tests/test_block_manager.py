"""Block manager invariants: ref counts, prefix hits of the right tokens, no leaked blocks,
and a cache policy that breaks its contract is named."""

from __future__ import annotations

import random

import pytest

from runtime_modules.block_manager import BlockManager, CachePolicyError
from runtime_modules.sequence import SamplingParams, Sequence
from runtime_modules.slots import load_slot, seed_names

POLICIES = seed_names("cache_policy")


def _bm(policy_ref: str, num_blocks: int, block_size: int = 4) -> BlockManager:
    cls = load_slot("cache_policy", policy_ref).obj
    return BlockManager(num_blocks, block_size, cls(num_blocks), True, policy_ref)


@pytest.mark.parametrize("policy", POLICIES)
def test_random_operations_keep_invariants_and_hits_match_tokens(policy):
    rng = random.Random(policy)
    bm = _bm(policy, num_blocks=24)
    prefixes = [[rng.randrange(50) for _ in range(12)] for _ in range(3)]
    live: list[Sequence] = []
    hits = 0
    for step in range(400):
        bm.now = step
        op = rng.random()
        if op < 0.35 and len(live) < 8:
            toks = rng.choice(prefixes)[: rng.randrange(1, 13)] + [
                rng.randrange(50) for _ in range(rng.randrange(1, 10))]
            seq = Sequence(toks, SamplingParams())
            cached = bm.num_cached_prefix_tokens(seq)
            assert cached % 4 == 0 and cached < seq.num_tokens
            n = seq.num_tokens - cached
            if bm.allocate(seq, n):
                assert seq.num_computed_tokens == cached
                for i in range(cached // 4):  # every hit block holds exactly these tokens
                    assert bm.block_tokens[seq.block_table[i]] == tuple(toks[4 * i:4 * i + 4])
                hits += cached
                seq.num_computed_tokens += n
                bm.commit(seq)
                live.append(seq)
            else:
                assert not seq.block_table and seq.num_computed_tokens == 0
        elif op < 0.7 and live:
            seq = rng.choice(live)  # decode one token
            if bm.allocate(seq, 1):
                seq.num_computed_tokens += 1
                seq.token_ids.append(rng.randrange(50))
                bm.commit(seq)
        elif op < 0.85 and live:
            seq = live.pop(rng.randrange(len(live)))
            bm.preempt(seq)
            assert seq.num_computed_tokens == 0 and not seq.block_table
        elif live:
            bm.free(live.pop(rng.randrange(len(live))))
        bm.check_invariants(live)
        for s in live:
            assert len(s.block_table) * 4 >= s.num_computed_tokens
    for s in live:
        bm.free(s)
    bm.check_invariants([])
    assert bm.num_free_blocks == 24 and hits > 0 and bm.prefix_hit_tokens == hits


def test_shared_prefix_blocks_are_ref_counted():
    bm = _bm("seed:cache_policy/lru", num_blocks=8)
    a = Sequence(list(range(10)), SamplingParams())
    assert bm.allocate(a, 10)
    a.num_computed_tokens = 10
    bm.commit(a)
    b = Sequence(list(range(9)) + [99], SamplingParams())
    assert bm.num_cached_prefix_tokens(b) == 8
    free_before = bm.num_free_blocks
    assert bm.allocate(b, 2)
    assert b.block_table[:2] == a.block_table[:2] and b.num_cached_tokens == 8
    assert [bm.ref_count[x] for x in a.block_table[:2]] == [2, 2]
    assert bm.num_free_blocks == free_before - 1  # only b's own third block was new
    bm.free(a)
    assert [bm.ref_count[x] for x in b.block_table[:2]] == [1, 1]
    bm.free(b)
    c = Sequence(list(range(12)), SamplingParams())
    assert bm.num_cached_prefix_tokens(c) == 8  # freed blocks stay reusable until evicted
    bm.check_invariants([])


def test_a_prompt_made_of_whole_cached_blocks_still_computes_one_token():
    bm = _bm("seed:cache_policy/fifo", num_blocks=8)
    a = Sequence(list(range(8)), SamplingParams())
    assert bm.allocate(a, 8)
    a.num_computed_tokens = 8
    bm.commit(a)
    b = Sequence(list(range(8)), SamplingParams())
    assert bm.num_cached_prefix_tokens(b) == 4


def test_a_policy_returning_a_used_block_is_named():
    class Liar:
        def __init__(self, n):
            pass

        def add(self, block):
            pass

        def remove(self, block_id):
            pass

        def evict(self):
            return 0

    bm = BlockManager(4, 4, Liar(4), True, "liar")
    s = Sequence([1, 2, 3, 4, 5], SamplingParams())
    with pytest.raises(CachePolicyError, match="liar"):
        bm.allocate(s, 5)
