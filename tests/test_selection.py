"""Selection: failed candidates never become parents, tournament favours the fit, NSGA-II
returns the non-dominated front first, elites survive the pool, migration targets a ring."""

from __future__ import annotations

import random

from evolve import selection as sel


def _members(rng: random.Random, n: int, fail_every: int = 3) -> list[sel.Member]:
    out = []
    for i in range(n):
        failed = (i + 1) % fail_every == 0
        out.append(sel.Member(i + 1, 0, {"slots": {}}, passed=not failed,
                              metrics={} if failed else {"tok_s": rng.uniform(50, 150),
                                                         "peak_mem": rng.uniform(1, 9)}))
    return out


def test_tournament_never_picks_failed_and_prefers_fit():
    rng = random.Random(random.randrange(1 << 30))
    members = _members(rng, 24)
    # a failed member with a huge score must still never be picked
    members.append(sel.Member(99, 0, {}, passed=False, metrics={"tok_s": 1e9}))
    objs = [("tok_s", 1.0)]
    picks = [sel.tournament(members, objs, "tournament", 3, rng) for _ in range(400)]
    assert all(p.passed for p in picks)
    mean_pick = sum(p.metrics["tok_s"] for p in picks) / len(picks)
    elig = sel.eligible(members, objs)
    assert mean_pick > sum(m.metrics["tok_s"] for m in elig) / len(elig)
    best = max(elig, key=lambda m: m.metrics["tok_s"])
    assert sel.rank(members, objs)[0] is best


def test_minimised_objective_ranks_low_first():
    rng = random.Random(random.randrange(1 << 30))
    members = _members(rng, 12)
    ranked = sel.rank(members, [("peak_mem", -1.0)])
    vals = [m.metrics["peak_mem"] for m in ranked]
    assert vals == sorted(vals)


def test_nsga2_orders_the_pareto_front_first():
    rng = random.Random(random.randrange(1 << 30))
    members = _members(rng, 30, fail_every=1000)
    objs = [("tok_s", 1.0), ("peak_mem", -1.0)]
    front = sel.pareto_front(members, objs)

    def dominated(m):
        return any(o.metrics["tok_s"] >= m.metrics["tok_s"] and o.metrics["peak_mem"]
                   <= m.metrics["peak_mem"] and o is not m and (
                       o.metrics["tok_s"] > m.metrics["tok_s"]
                       or o.metrics["peak_mem"] < m.metrics["peak_mem"]) for o in members)

    assert front and all(not dominated(m) for m in front)
    assert {id(m) for m in members if not dominated(m)} == {id(m) for m in front}
    ranked = sel.rank(members, objs, "nsga2")
    assert {id(m) for m in ranked[:len(front)]} == {id(m) for m in front}
    picks = [sel.tournament(members, objs, "nsga2", 4, rng) for _ in range(200)]
    share = sum(1 for p in picks if any(p is f for f in front)) / len(picks)
    assert share > len(front) / len(members)


def test_pool_keeps_elites_and_newest_and_no_failed():
    rng = random.Random(random.randrange(1 << 30))
    members = _members(rng, 40)
    objs = [("tok_s", 1.0)]
    pool = sel.island_pool(members, objs, "tournament", population_size=6, elitism=2)
    assert len(pool) == 6 and all(m.passed for m in pool)
    top2 = sel.rank(members, objs)[:2]
    assert pool[:2] == top2
    newest = sorted((m for m in sel.eligible(members, objs) if m not in top2),
                    key=lambda m: -m.runtime_id)[:4]
    assert pool[2:] == newest


def test_migrants_ring_and_weakest_island():
    rng = random.Random(random.randrange(1 << 30))
    a, b = _members(rng, 10), _members(rng, 10)
    for m in b:
        m.island = 1
        if m.passed:
            m.metrics["tok_s"] -= 1000  # island 1 is clearly weaker
    objs = [("tok_s", 1.0)]
    mig = sel.migrants(a, objs, "tournament", 2)
    assert mig == sel.rank(a, objs)[:2]
    assert sel.ring_targets(3) == [(0, 1), (1, 2), (2, 0)] and sel.ring_targets(1) == []
    assert sel.weakest_island({0: a, 1: b}, objs) == 1
    assert sel.weakest_island({0: a, 1: []}, objs) == 1
