"""Islands of a run: breeding pools, ring migration, stagnation and island reseeding.

Membership comes from `runtimes.island`; the seed runtime belongs to every island. A
migrant or a reseeded copy is a new runtime row (operator `migration` / `reseed`, a
`parent` edge to the original) scored by the original's evaluation, never re-evaluated.
A reseed empties the island: members older than the `island_reset` event's new runtime
are left out of its pool, also after a resume (the events are replayed).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from evolve import selection as sel
from evolve.population import spec_key

log = logging.getLogger(__name__)
RECENT_FAILURES = 5  # failure lines per island shown to the next prompts


class IslandBook:
    """Island pools and the periodic island events of one controller session."""

    def __init__(self, ctl: Any, events: list[Any]):
        self.ctl = ctl
        n = ctl.cfg.islands.count
        self.failures: dict[int, deque[str]] = {i: deque(maxlen=RECENT_FAILURES)
                                                for i in range(n)}
        self.reset_from: dict[int, int] = {}  # island -> first runtime id still in its pool
        self.stag_from = 0  # index into state.history where the stagnation window restarts
        for e in events:
            d = e.data or {}
            if e.kind == "island_reset":
                self.reset_from[int(d["island"])] = int(d["new_runtime"])
            if e.kind == "stagnation":
                self.stag_from = int(d.get("history_len", self.stag_from))
        for rid, row in ctl.st.full_rows.items():
            m = ctl.st.members.get(rid)
            if m is not None and row.status != "passed" and row.error:
                self.failures[m.island % n].append(row.error)

    def pool(self, island: int | None) -> list[sel.Member]:
        """The breeding pool of `island` (None: every island's members), seed included,
        behavioural duplicates left out."""
        ctl, st = self.ctl, self.ctl.st
        c = ctl.cfg
        members = [m for m in st.members.values()
                   if m.runtime_id == st.seed_runtime_id
                   or (island is None or m.island == island)
                   and m.runtime_id >= self.reset_from.get(m.island, 0)]
        if island is None:
            return sel.novel(sel.eligible(members, ctl.objectives))
        return sel.island_pool(members, ctl.objectives, c.selection.method,
                               c.islands.population_size, c.selection.elitism)

    def refresh_copies(self, runtime_id: int) -> None:
        """Give migrants/reseeds of `runtime_id` its fresh score."""
        src = self.ctl.st.members[runtime_id]
        for m in self.ctl.st.members.values():
            if m.score_from == runtime_id:
                m.passed, m.metrics = src.passed, dict(src.metrics)

    def after_result(self) -> None:
        """Migration every `migration_interval` evaluations; then the stagnation rule."""
        c, st = self.ctl.cfg, self.ctl.st
        if c.islands.count > 1 and c.islands.migration_size > 0 \
                and st.done % c.islands.migration_interval == 0:
            self.migrate()
        self.check_stagnation()

    def _copy(self, m: sel.Member, island: int, operator: str) -> sel.Member:
        ctl = self.ctl
        rt = ctl.store.add_runtime(ctl.run_id, m.spec, island=island, generation=m.generation,
                                   operator=operator, parents=[(m.runtime_id, "parent")])
        copy = sel.Member(rt.id, island, rt.spec, m.generation, operator, m.passed,
                          dict(m.metrics), score_from=m.score_from or m.runtime_id)
        ctl.st.members[rt.id] = copy
        return copy

    def migrate(self) -> None:
        """Ring migration: each island's best `migration_size` go to the next island."""
        ctl, c = self.ctl, self.ctl.cfg
        moved = []
        pools = {i: self.pool(i) for i in range(c.islands.count)}
        for src, dst in sel.ring_targets(c.islands.count):
            have = {spec_key(m.spec) for m in pools[dst]}
            # Every island already holds the seed: migrate its best other members.
            own = [m for m in pools[src] if m.runtime_id != ctl.st.seed_runtime_id]
            for m in sel.migrants(own, ctl.objectives, c.selection.method,
                                  c.islands.migration_size):
                if spec_key(m.spec) in have:
                    continue
                moved.append([src, dst, m.runtime_id, self._copy(m, dst, "migration").runtime_id])
        if moved:
            ctl.store.add_event(ctl.run_id, "migration",
                                {"evaluations_done": ctl.st.done, "moves": moved})

    def _best_series(self) -> tuple[int, int]:
        """(evaluations in the window, index of the last significant improvement)."""
        ctl = self.ctl
        metric, sign = ctl.objectives[0]
        min_imp = ctl.cfg.stagnation.min_improvement
        window = ctl.st.history[self.stag_from:]
        best, last = None, -1
        for i, (rid, _) in enumerate(window):
            m = ctl.st.members.get(rid)
            # a behavioural duplicate counts as an evaluation without improvement
            if m is None or not m.passed or not sel.novel([m]) \
                    or sel.fitness_values(m.metrics, ctl.objectives) is None:
                continue
            v = sign * float(m.metrics[metric])
            if best is None or v - best > min_imp * abs(best):
                best, last = v, i
        return len(window), last

    def check_stagnation(self) -> None:
        """Record stagnation, then stop the run or reseed the weakest island."""
        ctl, sc = self.ctl, self.ctl.cfg.stagnation
        if sc.window is None or ctl.reason is not None:
            return
        n, last = self._best_series()
        if n - 1 - last < sc.window:
            return
        data = {"window": sc.window, "min_improvement": sc.min_improvement,
                "evaluations_done": ctl.st.done, "action": sc.action,
                "history_len": len(ctl.st.history)}
        ctl.store.add_event(ctl.run_id, "stagnation", data)
        self.stag_from = len(ctl.st.history)
        if sc.action == "stop":
            ctl._stop("stagnation", data)
            return
        pools = {i: self.pool(i) for i in range(ctl.cfg.islands.count)}
        weakest = sel.weakest_island(pools, ctl.objectives)
        best = sel.rank(self.pool(None), ctl.objectives, ctl.cfg.selection.method)
        if weakest is None or not best:
            return
        copy = self._copy(best[0], weakest, "reseed")
        self.reset_from[weakest] = copy.runtime_id
        ctl.store.add_event(ctl.run_id, "island_reset",
                            {"island": weakest, "from_runtime": best[0].runtime_id,
                             "new_runtime": copy.runtime_id})
