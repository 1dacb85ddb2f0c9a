"""The `contract` stage for the scheduler and cache-policy slots: invariants on synthetic streams.

A fake model drives the real BlockManager exactly as the engine does (advance
num_computed_tokens by each scheduled n, commit prefix hashes, sample one token when a
sequence catches up, finish at max_tokens), while every step is checked against the
contract: budgets, no sequence twice, 1 <= n <= uncomputed, room really allocated, no
block leaked or double-freed, no stall, and every request (preempted ones included)
finishing within a step bound, so a scheduler that starves a request fails.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from fitness.result import StageResult


class ContractViolation(Exception):
    """One broken rule, with the artifacts that show it."""

    def __init__(self, msg: str, **artifacts: Any):
        super().__init__(msg)
        self.artifacts = artifacts


class _FreeList:
    """A minimal FIFO cache policy for driving schedulers (not the slot under test)."""

    def __init__(self, num_blocks: int):
        from collections import OrderedDict
        self.free: OrderedDict[int, None] = OrderedDict()

    def add(self, block: Any) -> None:
        self.free[block.block_id] = None

    def remove(self, block_id: int) -> None:
        del self.free[block_id]

    def evict(self) -> int:
        return self.free.popitem(last=False)[0]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A synthetic request stream and the engine budgets it runs under."""

    name: str
    requests: list[tuple[int, list[int], int]]  # (arrival step, prompt ids, max_tokens)
    max_num_seqs: int
    max_num_batched_tokens: int
    num_kv_blocks: int
    block_size: int = 16
    max_model_len: int = 512


def scenarios(seed: int) -> list[Scenario]:
    """Light load, KV pressure (preemption needed), shared prefixes, staggered arrivals."""
    r = random.Random(seed)

    def prompt(lo: int, hi: int) -> list[int]:
        return [r.randrange(1000) for _ in range(r.randint(lo, hi))]

    light = [(0, prompt(1, 60), r.randint(1, 12)) for _ in range(10)]
    pressure = [(0, prompt(20, 50), r.randint(30, 50)) for _ in range(8)]
    heads = [prompt(33, 48) for _ in range(2)]
    shared = [(i // 3, r.choice(heads) + prompt(1, 20), r.randint(2, 8)) for i in range(10)]
    arrivals = [(r.randint(0, 30), prompt(5, 90), r.randint(1, 10)) for _ in range(10)]
    return [Scenario("light", light, 4, 128, 64),
            Scenario("kv_pressure", pressure, 8, 256, 14),
            Scenario("shared_prefix", shared, 6, 96, 40),
            Scenario("arrivals", arrivals, 3, 64, 48)]


def simulate(sched_cls: type, params: dict[str, Any], sc: Scenario, policy: Any = None,
             ) -> dict[str, Any]:
    """Run `sc` through a scheduler and the real BlockManager, checking every step."""
    from runtime_modules.block_manager import BlockManager
    from runtime_modules.sched_config import SchedulerConfig
    from runtime_modules.sequence import SamplingParams, Sequence

    cfg = SchedulerConfig(max_num_seqs=sc.max_num_seqs, max_num_batched_tokens=sc.max_num_batched_tokens,
                          max_model_len=sc.max_model_len, block_size=sc.block_size,
                          num_kv_blocks=sc.num_kv_blocks)
    bm = BlockManager(sc.num_kv_blocks, sc.block_size, policy or _FreeList(sc.num_kv_blocks))
    sched = sched_cls(cfg, bm, **params)
    pending = sorted(((a, i, p, m) for i, (a, p, m) in enumerate(sc.requests)),
                     key=lambda t: t[:2])
    seqs: list[Any] = []
    live: dict[int, Any] = {}
    max_tokens: dict[int, int] = {}
    bound = 50 + 3 * sum(len(p) + m for _, p, m in sc.requests)
    stall = steps = 0
    tok = random.Random(len(sc.requests))
    for step in range(bound):
        bm.now = step
        while pending and pending[0][0] <= step:
            _, _i, p, m = pending.pop(0)
            s = Sequence(p, SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True))
            seqs.append(s)
            live[s.seq_id], max_tokens[s.seq_id] = s, m
            sched.add(s)
        if not live and not pending:
            break
        before = {sid: (s.num_computed_tokens, s.num_preemptions, bool(s.block_table))
                  for sid, s in live.items()}
        batch = sched.schedule()
        _check_batch(batch, cfg, live, before, sc, step)
        steps += 1
        if not batch:
            stall += 1
            _check_idle(stall, sched, live, sc, step)
            continue
        stall = 0
        _fake_forward(batch, bm, sched, live, max_tokens, tok)
        try:
            bm.check_invariants(list(live.values()))
        except AssertionError as e:
            raise ContractViolation(f"scenario {sc.name}: block accounting broken at step "
                                    f"{step}: {e} (leaked or double-freed block)") from None
    _check_all_finished(sched, live, len(pending), sc, bound)
    return {"steps": steps, "preemptions": bm.num_preemptions,
            "prefix_hit_tokens": bm.prefix_hit_tokens}


def _fake_forward(batch: list[tuple[Any, int]], bm: Any, sched: Any, live: dict[int, Any],
                  max_tokens: dict[int, int], tok: random.Random) -> None:
    """What the engine does after a step, with a fake model: compute the scheduled tokens'
    KV, sample a token for each sequence that caught up, finish those at max_tokens."""
    from runtime_modules.sequence import SequenceStatus

    for s, n in batch:
        s.num_computed_tokens += n
        bm.commit(s)
    for s, _ in batch:
        if s.num_computed_tokens == s.num_tokens:
            s.token_ids.append(tok.randrange(1000))
            if s.num_completion_tokens >= max_tokens[s.seq_id]:
                s.status = SequenceStatus.FINISHED
                bm.free(s)
                sched.finish(s)
                del live[s.seq_id]


def _check_idle(stall: int, sched: Any, live: dict[int, Any], sc: Scenario, step: int) -> None:
    """After an empty batch: not `stall` = 100 in a row, and not while claiming to be done."""
    if stall >= 100:
        raise ContractViolation(
            f"scenario {sc.name}: empty batches for 100 steps in a row at step {step} "
            f"with {len(live)} unfinished request(s) (stall)",
            waiting=[repr(s) for s in list(live.values())[:5]])
    if live and not sched.has_unfinished():
        raise ContractViolation(f"scenario {sc.name}: has_unfinished() is False at "
                                f"step {step} with {len(live)} request(s) unfinished")


def _check_all_finished(sched: Any, live: dict[int, Any], pending: int, sc: Scenario,
                        bound: int) -> None:
    """After the last step: every request finished within `bound` steps, and the scheduler
    agrees that none is left."""
    if live or pending:
        starved = min(live.values(), key=lambda s: s.num_completion_tokens) if live else None
        raise ContractViolation(
            f"scenario {sc.name}: {len(live) + pending} request(s) unfinished after "
            f"{bound} steps (starvation); e.g. {starved!r}",
            starved=repr(starved), step_bound=bound)
    if sched.has_unfinished():
        raise ContractViolation(f"scenario {sc.name}: has_unfinished() is True after every "
                                "request finished")


def _check_batch(batch: Any, cfg: Any, live: dict[int, Any], before: dict[int, tuple],
                 sc: Scenario, step: int) -> None:
    from runtime_modules.sequence import SequenceStatus

    where = f"scenario {sc.name}, step {step}"
    if not isinstance(batch, list):
        raise ContractViolation(f"{where}: schedule() returned {type(batch).__name__}, "
                                "expected a list of (Sequence, n) tuples")
    if len(batch) > cfg.max_num_seqs:
        raise ContractViolation(f"{where}: {len(batch)} sequences in a batch; max_num_seqs is "
                                f"{cfg.max_num_seqs}", batch_size=len(batch))
    seen: set[int] = set()
    total = 0
    for item in batch:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int)):
            raise ContractViolation(f"{where}: batch entry {item!r} is not (Sequence, int)")
        s, n = item
        sid = getattr(s, "seq_id", None)
        if sid not in live:
            raise ContractViolation(f"{where}: scheduled {s!r}, which is not an unfinished "
                                    "request")
        if sid in seen:
            raise ContractViolation(f"{where}: {s!r} is twice in one batch", seq_id=sid)
        seen.add(sid)
        if not 1 <= n <= s.num_uncomputed_tokens:
            raise ContractViolation(f"{where}: {s!r} scheduled with n={n}; expected 1 <= n <= "
                                    f"{s.num_uncomputed_tokens} (uncomputed tokens)", n=n)
        if len(s.block_table) * sc.block_size < s.num_computed_tokens + n:
            raise ContractViolation(f"{where}: {s!r} scheduled for {n} tokens without "
                                    "block_manager.allocate() making room for them")
        if s.num_computed_tokens + n > cfg.max_model_len:
            raise ContractViolation(f"{where}: {s!r} would exceed max_model_len "
                                    f"{cfg.max_model_len}")
        if s.status is not SequenceStatus.RUNNING:
            raise ContractViolation(f"{where}: {s!r} scheduled but its status is not RUNNING")
        total += n
    if total > cfg.max_num_batched_tokens:
        raise ContractViolation(f"{where}: {total} tokens in a batch; max_num_batched_tokens "
                                f"is {cfg.max_num_batched_tokens}", tokens=total)
    for sid, s in live.items():
        computed, preempts, had_blocks = before[sid]
        moved = s.num_computed_tokens != computed
        legal = s.num_preemptions > preempts or (not had_blocks and s.num_cached_tokens > 0)
        if moved and not legal:
            raise ContractViolation(f"{where}: {s!r}: num_computed_tokens changed from "
                                    f"{computed} inside schedule(); only the engine and "
                                    "block_manager may change it")


def check_scheduler(slot: str, loaded: Any, ctx: Any) -> StageResult:
    """The scheduler's contract on every scenario."""
    metrics: dict[str, Any] = {}
    for sc in scenarios(ctx.seed):
        try:
            metrics[sc.name] = simulate(loaded.obj, dict(loaded.params), sc)
        except ContractViolation as e:
            return StageResult("contract", "failed", metrics, str(e),
                               {"scenario": sc.name, "seed": ctx.seed, **e.artifacts})
    return StageResult("contract", "passed", metrics)


def check_cache_policy(slot: str, loaded: Any, ctx: Any) -> StageResult:
    """The cache policy's contract: a fresh permutation on eviction, then the engine scenarios."""
    cls, params = loaded.obj, dict(loaded.params)
    from runtime_modules.block_manager import BlockInfo

    n = 64
    pol = cls(n, **params)
    for b in range(n):
        pol.add(BlockInfo(b, False, 0, 0, 0, 0, 0))
    got = [pol.evict() for _ in range(n)]
    if sorted(got) != list(range(n)):
        dup = sorted({b for b in got if got.count(b) > 1})[:5]
        return StageResult("contract", "failed", {}, f"evict() over {n} free blocks must return "
                           f"each exactly once; repeated {dup}, got {got[:12]}...",
                           {"evicted": got[:64]})
    from runtime_modules.slots import load_slot

    fcfs = load_slot("scheduler", "seed:scheduler/fcfs").obj
    metrics: dict[str, Any] = {}
    for sc in scenarios(ctx.seed):
        try:
            metrics[sc.name] = simulate(fcfs, {}, sc, policy=cls(sc.num_kv_blocks, **params))
        except ContractViolation as e:
            return StageResult("contract", "failed", metrics, str(e),
                               {"scenario": sc.name, "seed": ctx.seed, **e.artifacts})
        except RuntimeError as e:  # CachePolicyError from the BlockManager
            return StageResult("contract", "failed", metrics,
                               f"scenario {sc.name}: {type(e).__name__}: {e}",
                               {"scenario": sc.name, "seed": ctx.seed})
    return StageResult("contract", "passed", metrics)
