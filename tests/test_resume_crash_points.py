"""Resume after a crash between any two database writes: for every kind of consecutive pair
of writes a run makes (proposal recorded, program stored, runtime stored, evaluation
enqueued, evaluation completed, events), a session killed right there and a fresh session
on the same name end with exactly the budget of evaluations, each child evaluated once."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator

from evolve.config import config_from_dict
from evolve.controller import Controller
from evolve.population import FULL, PROPOSE, run_evaluations, run_runtimes
from population_db import Store

BUDGET = 8
WRITES = frozenset({"get_or_create_run", "set_run_status", "add_program", "add_runtime",
                    "enqueue_evaluation", "complete_evaluation", "add_evaluation",
                    "add_llm_call", "add_event"})


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way catches it."""


class KillingStore:
    """A store whose `kill_at`-th write (0-based) and every later one never happen."""

    def __init__(self, store: Store, kill_at: int | None):
        self._store, self.kill_at, self.writes = store, kill_at, []

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if name not in WRITES:
            return attr

        def write(*a, **kw):
            if self.kill_at is not None and len(self.writes) >= self.kill_at:
                raise Killed(name)
            self.writes.append(name)
            return attr(*a, **kw)

        return write


def _cfg(seed: int):
    return config_from_dict({
        "target": {"slots": ["scheduler", "cache_policy"]},
        "operators": {"fake": 1}, "islands": {"count": 2, "migration_interval": 3},
        "evaluation": {"workloads": ["w1"], "device": "cpu"},
        "budget": {"max_evaluations": BUDGET},
        "stagnation": {"window": 3, "min_improvement": 0.5, "action": "reseed"},
        "concurrency": {"max_proposals": 2, "max_evaluations": 2}, "seed": seed},
        "crash.yaml")


def _session(store: Store, cfg, kill_at: int | None,
             harness: FakeHarness | None = None) -> KillingStore:
    ks = KillingStore(store, kill_at)
    harness = harness or FakeHarness(delay_s=0.0, fail_rate=0.3)
    ctl = Controller(cfg, ks, harness, name="crash", operators={"fake": FakeOperator()})
    try:
        ctl.run()
    except Killed:
        pass
    return ks


def _code(store: Store, ref: str, slot: str) -> str:
    from evolve.population import slot_code

    return slot_code(store, slot, ref)


def _kill_points(writes: list[str], rng: random.Random) -> list[int]:
    """One kill index per distinct (previous write, next write) pair, chosen at random."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    for i in range(1, len(writes)):
        by_pair.setdefault((writes[i - 1], writes[i]), []).append(i)
    return sorted(rng.choice(idx) for idx in by_pair.values())


def test_crash_between_any_two_writes_then_resume(tmp_path):
    seed = random.randrange(1000)
    rng = random.Random(seed)
    cfg = _cfg(seed)
    reference = _session(Store.open(f"sqlite:///{tmp_path}/ref.db"), cfg, None).writes
    points = _kill_points(reference, rng)
    assert len(points) >= 8, reference  # the pipeline's pairs are all there
    for k in points:
        store = Store.open(f"sqlite:///{tmp_path}/k{k}.db")
        harness = FakeHarness(delay_s=0.0, fail_rate=0.3)
        _session(store, cfg, k, harness)
        second = rng.randrange(1, 12)  # the resumed session may die too, early on
        _session(store, cfg, second, harness)
        _session(store, cfg, None, harness)
        run = store.get_run("crash")
        full = run_evaluations(store, run.id, FULL)
        final = [r.runtime_id for r in full if r.status not in ("pending", "running")]
        where = f"seed {seed}, killed before write {k} ({reference[k]}), then {second}"
        assert len(final) == BUDGET, where
        assert len(set(final)) == len(final), f"a runtime evaluated twice; {where}"
        assert not [r for r in full if r.status in ("pending", "running")], where
        children = [r.id for r in run_runtimes(store, run.id)
                    if r.operator not in ("migration", "reseed")]
        assert sorted(children) == sorted(final), f"a child never evaluated; {where}"
        codes = [c["program"] for r in run_runtimes(store, run.id)
                 if r.operator not in ("migration", "reseed", "seed")
                 for c in r.spec["slots"].values() if c["program"].startswith("sha256:")]
        specs = [str(sorted(r.spec.items())) for r in run_runtimes(store, run.id)
                 if r.operator not in ("migration", "reseed")]
        assert len(set(specs)) == len(specs), f"a duplicate runtime evaluated; {where}"
        dup_rows = [r for r in run_evaluations(store, run.id, PROPOSE)
                    if r.status == "duplicate"]
        assert all(r.error for r in dup_rows) and codes, where
        assert run.status == "finished", where
        # a re-queued child is checked against its parent's code like any other
        rts = {r.id: r for r in run_runtimes(store, run.id)}
        for rid in final:
            if rts[rid].operator == "seed":
                continue
            parent = rts[next(p for p, role in rts[rid].parents if role == "parent")]
            changed = {s: c["program"] for s, c in rts[rid].spec["slots"].items()
                       if c != parent.spec["slots"].get(s)}
            want = {s: _code(store, parent.spec["slots"][s]["program"], s) for s in changed}
            assert harness.parents.get(rid) == want, f"runtime {rid}: {where}"
        store.close()


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
