"""The features the evolvable policy seeds read are what they claim, on constructed block
manager states; with their seed expressions the new seeds behave as the old ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from fitness.sim import simulate
from fitness.workloads import get_workload
from runtime_modules.block_manager import BlockManager, CacheView
from runtime_modules.config import SchedulerConfig
from runtime_modules.sequence import SamplingParams, Sequence, SequenceStatus
from runtime_modules.slots import load_slot

BS = 4


class _Fifo:
    def __init__(self, n: int) -> None:
        self.free: dict[int, None] = {}
        self.view: CacheView | None = None

    def bind(self, view: CacheView) -> None:
        self.view = view

    def add(self, block) -> None:
        self.free[block.block_id] = None

    def remove(self, block_id: int) -> None:
        del self.free[block_id]

    def evict(self) -> int:
        b = next(iter(self.free))
        del self.free[b]
        return b


def _run_prefill(bm: BlockManager, seq: Sequence) -> None:
    """Admit `seq` whole and compute its prompt (as the engine would)."""
    n = seq.num_tokens - bm.num_cached_prefix_tokens(seq)
    assert bm.allocate(seq, n)
    seq.status = SequenceStatus.RUNNING
    seq.num_computed_tokens += n
    bm.commit(seq)


PREFIX = list(range(100, 112))  # three full blocks


def test_cached_prefix_blocks_counts_leading_cached_blocks_and_notices_evictions() -> None:
    bm = BlockManager(6, BS, _Fifo(6))
    a = Sequence(PREFIX + [1, 2], SamplingParams())
    b = Sequence(PREFIX + [7, 8, 9], SamplingParams())
    assert bm.cached_prefix_blocks(b) == 0
    _run_prefill(bm, a)  # 14 tokens: 4 blocks, 3 full and hashed
    assert bm.cached_prefix_blocks(b) == 3
    assert bm.cached_prefix_blocks(b) * BS == bm.num_cached_prefix_tokens(b)
    bm.free(a)  # cached contents stay until overwritten
    assert bm.cached_prefix_blocks(b) == 3
    c = Sequence(list(range(500, 515)), SamplingParams())  # needs 4 blocks: evicts FIFO
    _run_prefill(bm, c)
    assert bm.cached_prefix_blocks(b) == bm.num_cached_prefix_tokens(b) // BS < 3


def test_waiting_refs_follow_waiting_requests_through_admission_and_preemption() -> None:
    policy = _Fifo(12)
    bm = BlockManager(12, BS, policy)
    assert isinstance(policy.view, CacheView)
    a = Sequence(PREFIX + [1], SamplingParams())
    _run_prefill(bm, a)
    head = a.block_table[0]
    assert policy.view.waiting_refs(head) == 0
    w1 = Sequence(PREFIX + [5], SamplingParams())
    w2 = Sequence(PREFIX[:8] + [9, 9, 9, 9, 9], SamplingParams())
    bm.track_waiting(w1)
    bm.track_waiting(w2)
    assert policy.view.waiting_refs(head) == 2  # both prompts start with that block
    assert policy.view.waiting_refs(a.block_table[2]) == 1  # only w1 has the third block
    _run_prefill(bm, w1)  # admitted: no longer waiting
    assert policy.view.waiting_refs(head) == 1
    bm.preempt(w1)  # waiting again
    assert policy.view.waiting_refs(head) == 2
    bm.forget(w1)
    assert policy.view.waiting_refs(head) == 1
    assert policy.view.num_blocks == 12 and policy.view.num_free_blocks == bm.num_free_blocks


def _variant(tmp: Path, seed: str, fn: str, expr: str) -> object:
    src = Path(seed).read_text()
    start = src.index(f"def {fn}(")
    ret = src.index("    return ", start)
    end = src.index("\n", ret)
    path = tmp / f"{fn}_variant.py"
    path.write_text(src[:ret] + f"    return {expr}" + src[end:])
    return load_slot("scheduler", f"file:{path}").obj


def _scheduler(cls: type, blocks: int = 64, **kw):
    cfg = SchedulerConfig(8, 256, 256, BS, blocks)
    bm = BlockManager(blocks, BS, _Fifo(blocks))
    return cls(cfg, bm, **kw), bm


def _step(sched, bm: BlockManager) -> list:
    batch = sched.schedule()
    for seq, n in batch:
        seq.num_computed_tokens += n
        bm.commit(seq)
        if seq.num_computed_tokens == seq.num_tokens:
            seq.token_ids.append(7)  # the token sampled at the end of its prompt / decode
    return batch


def test_inflight_sees_a_prefix_another_sequence_is_computing(tmp_path: Path) -> None:
    # defer while a running sequence computes this request's prefix
    cls = _variant(tmp_path, "seeds/scheduler/policy.py", "defer", "inflight - 1.0")
    sched, bm = _scheduler(cls, chunk_size=4)  # 4-token chunks: a prompt takes steps
    a = Sequence(PREFIX + [1], SamplingParams(max_tokens=4))
    b = Sequence(PREFIX + [2], SamplingParams(max_tokens=4))
    sched.add(a)
    _step(sched, bm)  # a admitted, computing its first chunk
    sched.add(b)
    assert sched._prefix(b)[1] >= 1  # its prefix blocks are in flight
    waited = 0
    while sched._prefix(b)[1] > 0:  # b waits while part of its prefix is being computed
        batch = _step(sched, bm)
        assert all(s is a for s, _ in batch), "b ran while a computed the shared prefix"
        waited += 1
    assert waited >= 2
    batch = _step(sched, bm)  # the whole prefix is cached now: b comes in with its hits
    assert any(s is b for s, _ in batch)
    assert b.num_cached_tokens == 12


def test_victim_decides_which_running_sequence_is_preempted(tmp_path: Path) -> None:
    for expr, want in (("-age", "newest"), ("age", "oldest")):
        cls = _variant(tmp_path, "seeds/scheduler/policy.py", "victim", expr)
        sched, bm = _scheduler(cls, blocks=7)  # three 2-block prompts, one spare block
        seqs = []
        for i in range(3):
            s = Sequence([10 * i + j for j in range(7)], SamplingParams(max_tokens=40))
            sched.add(s)
            seqs.append(s)
            _step(sched, bm)  # one admitted per step: ages differ
        for _ in range(100):
            if any(s.num_preemptions for s in seqs):
                break
            _step(sched, bm)
        out = next(s for s in seqs if s.num_preemptions)
        # newest-first takes the last admitted; oldest-first an older one (the oldest not
        # already in the step's batch: those keep their blocks)
        assert (out is seqs[-1]) == (want == "newest"), expr


def test_an_evolved_victim_keeps_the_engine_contract(tmp_path: Path) -> None:
    src = Path("seeds/scheduler/policy.py").read_text()
    i = src.index("def victim(")
    r = src.index("    return ", i)
    path = tmp_path / "oldest.py"
    path.write_text(src[:r] + "    return age" + src[src.index("\n", r):])
    m = simulate({"slots": {"scheduler": {"program": f"file:{path}"}}},
                 get_workload("kv-pressure-cpu"))
    assert m["work_preemptions"] > 0


@pytest.mark.parametrize("workload", ["shared-prefix-cpu", "kv-pressure-cpu", "kv-pressure"])
def test_the_policy_seeds_start_out_as_the_priority_and_scored_seeds(workload: str) -> None:
    wl = get_workload(workload)
    old = {"scheduler": {"program": "seed:scheduler/priority"},
           "cache_policy": {"program": "seed:cache_policy/scored", "params": {"window": 16}}}
    new = {"scheduler": {"program": "seed:scheduler/policy", "params": {"lookahead": 1024}},
           "cache_policy": {"program": "seed:cache_policy/aware", "params": {"window": 16}}}
    a, b = simulate({"slots": old}, wl), simulate({"slots": new}, wl)
    assert {k: v for k, v in a.items() if k.startswith("work_")} == \
        {k: v for k, v in b.items() if k.startswith("work_")}


def _walk(bm: BlockManager, p: Sequence) -> tuple[int, int]:
    """(leading prefix blocks of `p` whose hash is cached, of those the leading ones whose
    tokens also match): what `cached_prefix_blocks` and the engine's hits must say, found
    by walking the cache afresh."""
    whole = hits = 0
    for i, h in enumerate(bm.prefix_hashes(p)[: (p.num_tokens - 1) // BS]):
        b = bm.hash_to_block.get(h)
        if b is None:
            break
        whole += 1
        if hits == i and bm.block_tokens[b] == tuple(p.token_ids[i * BS:(i + 1) * BS]):
            hits += 1
    return whole, hits


def test_cached_prefix_blocks_matches_a_walk_of_the_cache_under_random_churn() -> None:
    # The same probes are asked again every step, as a scheduler ranks its queue: the block
    # manager's per-sequence memos must follow every commit and eviction between the asks.
    import random

    rng = random.Random(7)
    bm = BlockManager(20, BS, _Fifo(20))
    stems = [[rng.randrange(30) for _ in range(16)] for _ in range(3)]
    live: list[Sequence] = []
    probes = [Sequence(s[: rng.randrange(5, 17)] + [99], SamplingParams()) for s in stems * 3]
    for step in range(300):
        bm.now = step
        if rng.random() < 0.5 and len(live) < 4:
            seq = Sequence(rng.choice(stems)[: rng.randrange(1, 17)] + [rng.randrange(30)],
                           SamplingParams())
            n = seq.num_tokens - bm.num_cached_prefix_tokens(seq)
            if bm.allocate(seq, n):
                seq.num_computed_tokens += n
                bm.commit(seq)
                live.append(seq)
        elif live:
            seq = live.pop(rng.randrange(len(live)))
            bm.free(seq)
        for p in probes:
            whole, hits = _walk(bm, p)
            assert bm.cached_prefix_blocks(p) == whole, step
            assert bm.num_cached_prefix_tokens(p) == hits * BS, step


def test_answers_for_waiting_requests_follow_the_cache_through_admission_and_preemption() -> None:
    # The block manager memoizes prefix answers per sequence: for requests the engine
    # tracks as waiting they must follow every change to their prefix, by other requests
    # (commits, evictions of unrelated blocks) and by their own blocks computed while
    # admitted, once preempted.
    import random

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    bm = BlockManager(24, BS, _Fifo(24))
    stems = [[rng.randrange(30) for _ in range(20)] for _ in range(3)]
    waiting = [Sequence(rng.choice(stems)[: rng.randrange(4, 21)] + [99], SamplingParams())
               for _ in range(6)]
    for p in waiting:
        bm.track_waiting(p)
    running: list[Sequence] = []
    for step in range(1500):
        bm.now = step
        op = rng.random()
        if op < 0.3 and waiting:  # admit a tracked request (it computes its own prefix)
            seq = waiting.pop(rng.randrange(len(waiting)))
            n = seq.num_tokens - bm.num_cached_prefix_tokens(seq)
            if bm.allocate(seq, n):
                seq.status = SequenceStatus.RUNNING
                seq.num_computed_tokens += n
                bm.commit(seq)
                running.append(seq)
            else:
                waiting.append(seq)
        elif op < 0.5 and running:  # preempt: waiting again, its blocks cached but free
            seq = running.pop(rng.randrange(len(running)))
            bm.preempt(seq)
            waiting.append(seq)
        elif op < 0.8:  # an untracked request comes and goes: commits and evictions
            toks = rng.choice(stems)[: rng.randrange(1, 21)] + [rng.randrange(30)]
            if rng.random() < 0.5:  # unrelated to any waiting prompt: it only evicts
                toks = [rng.randrange(100, 10**6) for _ in range(rng.randrange(4, 40))]
            seq = Sequence(toks, SamplingParams())
            n = seq.num_tokens - bm.num_cached_prefix_tokens(seq)
            if bm.allocate(seq, n):
                seq.num_computed_tokens += n
                bm.commit(seq)
                bm.free(seq)
        elif running:
            seq = running.pop(rng.randrange(len(running)))
            bm.free(seq)
            bm.forget(seq)
        for p in waiting:
            whole, hits = _walk(bm, p)
            assert bm.cached_prefix_blocks(p) == whole, (seed, step)
            assert bm.num_cached_prefix_tokens(p) == hits * BS, (seed, step)
