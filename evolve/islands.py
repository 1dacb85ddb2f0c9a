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
from evolve.config import RunConfig
from evolve.population import RunState, spec_key
from evolve.store_protocol import RunStore

log = logging.getLogger(__name__)
RECENT_FAILURES = 5  # failure lines per island shown to the next prompts


class IslandBook:
    """Island pools and the periodic island events of one controller session.

    It reads the run's state and writes its own rows (copies, migration and reset events)
    through the store; whether the run stops is the controller's call (`after_result`
    returns the stagnation that asks for it)."""

    def __init__(self, cfg: RunConfig, store: RunStore, run_id: int, state: RunState,
                 objectives: list[tuple[str, float]], events: list[Any]):
        self.cfg, self.store, self.run_id, self.st = cfg, store, run_id, state
        self.objectives = objectives
        n = cfg.islands.count
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
        for rid, row in state.full_rows.items():
            m = state.members.get(rid)
            if m is not None and row.status != "passed" and row.error:
                self.failures[m.island % n].append(row.error)

    def pool(self, island: int | None) -> list[sel.Member]:
        """The breeding pool of `island` (None: every island's members), seed included,
        behavioural duplicates left out."""
        st, c = self.st, self.cfg
        members = [m for m in st.members.values()
                   if m.runtime_id == st.seed_runtime_id
                   or (island is None or m.island == island)
                   and m.runtime_id >= self.reset_from.get(m.island, 0)]
        if island is None:
            return sel.novel(sel.eligible(members, self.objectives))
        return sel.island_pool(members, self.objectives, c.selection.method,
                               c.islands.population_size, c.selection.elitism)

    def refresh_copies(self, runtime_id: int) -> None:
        """Give migrants/reseeds of `runtime_id` its fresh score."""
        src = self.st.members[runtime_id]
        for m in self.st.members.values():
            if m.score_from == runtime_id:
                m.passed, m.metrics = src.passed, dict(src.metrics)

    def after_result(self, stopping: bool) -> dict[str, Any] | None:
        """Migration every `migration_interval` evaluations; then the stagnation rule (not
        once the run is `stopping`). The stagnation event's data when the run must stop."""
        c, st = self.cfg, self.st
        if c.islands.count > 1 and c.islands.migration_size > 0 \
                and st.done % c.islands.migration_interval == 0:
            self.migrate()
        return None if stopping else self.check_stagnation()

    def _copy(self, m: sel.Member, island: int, operator: str) -> sel.Member:
        rt = self.store.add_runtime(self.run_id, m.spec, island=island,
                                    generation=m.generation, operator=operator,
                                    parents=[(m.runtime_id, "parent")])
        copy = sel.Member(rt.id, island, rt.spec, m.generation, operator, m.passed,
                          dict(m.metrics), score_from=m.score_from or m.runtime_id)
        self.st.members[rt.id] = copy
        return copy

    def migrate(self) -> None:
        """Ring migration: each island's best `migration_size` go to the next island."""
        c = self.cfg
        moved = []
        pools = {i: self.pool(i) for i in range(c.islands.count)}
        for src, dst in sel.ring_targets(c.islands.count):
            have = {spec_key(m.spec) for m in pools[dst]}
            # Every island already holds the seed: migrate its best other members.
            own = [m for m in pools[src] if m.runtime_id != self.st.seed_runtime_id]
            for m in sel.migrants(own, self.objectives, c.selection.method,
                                  c.islands.migration_size):
                if spec_key(m.spec) in have:
                    continue
                moved.append([src, dst, m.runtime_id, self._copy(m, dst, "migration").runtime_id])
        if moved:
            self.store.add_event(self.run_id, "migration",
                                 {"evaluations_done": self.st.done, "moves": moved})

    def _best_series(self) -> tuple[int, int]:
        """(evaluations in the window, index of the last significant improvement)."""
        metric, sign = self.objectives[0]
        min_imp = self.cfg.stagnation.min_improvement
        window = self.st.history[self.stag_from:]
        best, last = None, -1
        for i, (rid, _) in enumerate(window):
            m = self.st.members.get(rid)
            # a behavioural duplicate counts as an evaluation without improvement
            if m is None or not m.passed or not sel.novel([m]) \
                    or sel.fitness_values(m.metrics, self.objectives) is None:
                continue
            v = sign * float(m.metrics[metric])
            if best is None or v - best > min_imp * abs(best):
                best, last = v, i
        return len(window), last

    def check_stagnation(self) -> dict[str, Any] | None:
        """Record stagnation, then reseed the weakest island, or return the event's data
        when `stagnation.action` is `stop`."""
        sc, st = self.cfg.stagnation, self.st
        if sc.window is None:
            return None
        n, last = self._best_series()
        if n - 1 - last < sc.window:
            return None
        data = {"window": sc.window, "min_improvement": sc.min_improvement,
                "evaluations_done": st.done, "action": sc.action,
                "history_len": len(st.history)}
        self.store.add_event(self.run_id, "stagnation", data)
        self.stag_from = len(st.history)
        if sc.action == "stop":
            return data
        pools = {i: self.pool(i) for i in range(self.cfg.islands.count)}
        weakest = sel.weakest_island(pools, self.objectives)
        best = sel.rank(self.pool(None), self.objectives, self.cfg.selection.method)
        if weakest is None or not best:
            return None
        copy = self._copy(best[0], weakest, "reseed")
        self.reset_from[weakest] = copy.runtime_id
        self.store.add_event(self.run_id, "island_reset",
                             {"island": weakest, "from_runtime": best[0].runtime_id,
                              "new_runtime": copy.runtime_id})
        return None
