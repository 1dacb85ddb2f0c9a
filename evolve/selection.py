"""Parent selection with DEAP: tournament within an island, NSGA-II for several objectives.

Fitness values come from the metrics of each runtime's evaluation in the database
(`Member.metrics`); a member that did not pass, or lacks an objective's metric, has no
fitness and never becomes a parent. An island's breeding pool keeps its `elitism` best
members and fills the rest with the most recent passed ones (steady state, oldest out),
so diversity survives while the best are never lost. A behavioural duplicate (metrics
`novel: 0`: it did exactly the work an earlier member did) never enters a pool, so it can
neither displace a member nor be bred from twice.

Example:
    order = rank(members, [("tok_s", 1.0)], "tournament")
    parent = tournament(pool, [("tok_s", 1.0)], "tournament", 3, random.Random(0))
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # deap (and numpy under it) load on first ranking: `sds runs` needs neither
    from deap import base

Objectives = list[tuple[str, float]]  # (metric, +1.0 maximise / -1.0 minimise)


@dataclass
class Member:
    """A runtime of the run as selection sees it."""

    runtime_id: int
    island: int
    spec: dict[str, Any]
    generation: int = 0
    operator: str = "seed"
    passed: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    score_from: int | None = None  # migrants/reseeds: the runtime whose evaluation scores them


def fitness_values(metrics: dict[str, Any] | None, objectives: Objectives) -> tuple[float, ...] | None:
    """The objective values from `metrics`, or None when one is missing or not finite."""
    if not metrics:
        return None
    values = []
    for name, _ in objectives:
        v = metrics.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        values.append(float(v))
    return tuple(values)


def eligible(members: list[Member], objectives: Objectives) -> list[Member]:
    """Members that may become parents: passed, with every objective measured."""
    return [m for m in members if m.passed and fitness_values(m.metrics, objectives) is not None]


def novel(members: list[Member]) -> list[Member]:
    """Members that are not behavioural duplicates of an earlier one (`novel` unset or 1)."""
    return [m for m in members if m.metrics.get("novel", 1) != 0]


class _Ind:
    """A DEAP individual wrapping a Member (DEAP only needs `.fitness`)."""

    __slots__ = ("fitness", "member", "order")

    def __init__(self, member: Member, fitness: base.Fitness):
        self.member = member
        self.fitness = fitness
        self.order = 0


def _individuals(members: list[Member], objectives: Objectives) -> list[_Ind]:
    from deap import base

    weights = tuple(w for _, w in objectives)
    fit_cls = type("SdsFitness", (base.Fitness,), {"weights": weights})
    inds = []
    for m in eligible(members, objectives):
        f = fit_cls()
        f.values = fitness_values(m.metrics, objectives)
        inds.append(_Ind(m, f))
    return inds


def _ranked(members: list[Member], objectives: Objectives, method: str) -> list[_Ind]:
    from deap import tools

    inds = _individuals(members, objectives)
    if method == "nsga2" and len(objectives) > 1:
        # Non-dominated fronts, crowding distance inside each: the NSGA-II order.
        ordered = tools.selNSGA2(inds, len(inds))
    elif method in ("tournament", "nsga2"):
        # DEAP fitnesses compare lexicographically on weighted values: best first.
        ordered = sorted(inds, key=lambda i: i.fitness, reverse=True)
    else:
        raise ValueError(f"selection method must be 'tournament' or 'nsga2', got {method!r}")
    for i, ind in enumerate(ordered):
        ind.order = i
    return ordered


def rank(members: list[Member], objectives: Objectives, method: str = "tournament") -> list[Member]:
    """Eligible members, best first (NSGA-II front order when several objectives)."""
    return [i.member for i in _ranked(members, objectives, method)]


def pareto_front(members: list[Member], objectives: Objectives) -> list[Member]:
    """The first non-dominated front of the eligible members."""
    from deap import tools

    inds = _individuals(members, objectives)
    if not inds:
        return []
    return [i.member for i in tools.sortNondominated(inds, len(inds), first_front_only=True)[0]]


def island_pool(members: list[Member], objectives: Objectives, method: str,
                population_size: int, elitism: int) -> list[Member]:
    """The breeding pool of one island: its `elitism` best, then the newest eligible ones
    (behavioural duplicates left out)."""
    ranked = rank(novel(members), objectives, method)
    elites = ranked[:elitism]
    chosen = {id(m) for m in elites}
    newest = sorted((m for m in ranked if id(m) not in chosen), key=lambda m: m.runtime_id,
                    reverse=True)
    return elites + newest[: max(0, population_size - len(elites))]


def tournament(pool: list[Member], objectives: Objectives, method: str, size: int,
               rng: random.Random) -> Member:
    """One parent: the best of `size` members drawn at random (with replacement) from `pool`.

    Under NSGA-II the comparison is by front and crowding order; failed members are never
    in the pool, so they are never picked.
    """
    ranked = _ranked(pool, objectives, method)
    if not ranked:
        raise ValueError("no eligible parent: every member of the pool failed or lacks "
                         f"the objectives {[n for n, _ in objectives]}")
    aspirants = [ranked[rng.randrange(len(ranked))] for _ in range(max(1, size))]
    return min(aspirants, key=lambda i: i.order).member


def migrants(pool: list[Member], objectives: Objectives, method: str, k: int) -> list[Member]:
    """The `k` best members of an island, to be copied into the next island of the ring."""
    return rank(pool, objectives, method)[:k]


def ring_targets(n_islands: int) -> list[tuple[int, int]]:
    """(source, destination) island pairs of the migration ring."""
    return [(i, (i + 1) % n_islands) for i in range(n_islands)] if n_islands > 1 else []


def weakest_island(pools: dict[int, list[Member]], objectives: Objectives) -> int | None:
    """The island whose best primary objective is worst (an empty island is weakest)."""
    _, sign = objectives[0]
    worst, worst_val = None, math.inf
    for island, pool in sorted(pools.items()):
        vals = [fitness_values(m.metrics, objectives) for m in eligible(pool, objectives)]
        best = max((v[0] * sign for v in vals), default=-math.inf)
        if best < worst_val:
            worst, worst_val = island, best
    return worst
