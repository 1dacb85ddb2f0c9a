"""Identity of children: a run drops a child only when the whole runtime is one it has (the
same slot code on another runtime is a new child), crossover joins gains two parents made
in different slots, and a child that does the same work as a member is marked not novel and
never bred from."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeReport, inside_block, spec_score

from evolve.config import config_from_dict
from evolve.controller import Controller
from evolve.operators.assemble import AssembleOperator
from evolve.operators.base import MutationContext, Proposal
from evolve.population import (
    FULL,
    PROPOSE,
    behaviour_key,
    run_evaluations,
    run_runtimes,
    runtime_key,
    slot_code,
)
from fitness.result import StageResult
from population_db import Store
from runtime_modules.slots import code_hash

SCHED, CACHE = "seed:scheduler/priority", "seed:cache_policy/scored"


def _cfg(operators: dict, budget: int | dict, **over):
    raw = {"target": {"slots": ["scheduler", "cache_policy"],
                      "runtime": {"slots": {"scheduler": SCHED, "cache_policy": CACHE}}},
           "operators": operators, "evaluation": {"workloads": ["w1"], "device": "cpu"},
           "budget": budget if isinstance(budget, dict) else {"max_evaluations": budget},
           "concurrency": {"max_proposals": 1, "max_evaluations": 1}, "seed": 5, **over}
    return config_from_dict(raw, "dedupe.yaml")


class CodeScore:
    """tok_s 100, +10 for each target slot whose code carries a '# gain' line."""

    def __init__(self, store: Store):
        self.store = store

    def evaluate(self, spec, stages=(), workload="", **kw):
        tok_s = 100.0 + sum(10.0 for s in ("scheduler", "cache_policy")
                            if "# gain" in slot_code(self.store, s, spec["slots"][s]["program"]))
        return FakeReport([StageResult(s, "passed") for s in stages], {"tok_s": tok_s})


def test_runtime_key_is_the_code_and_params_of_every_slot(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/k.db")
    sched = slot_code(store, "scheduler", SCHED)
    base = {"slots": {"scheduler": {"program": SCHED},
                      "cache_policy": {"program": CACHE, "params": {"window": 64}}}}
    same_code = {"slots": {**base["slots"],
                           "scheduler": {"program": f"sha256:{code_hash(sched)}"}}}
    other_params = {"slots": {**base["slots"],
                              "cache_policy": {"program": CACHE, "params": {"window": 8}}}}
    cache: dict[str, str] = {}
    assert runtime_key(store, base, cache) == runtime_key(store, same_code, cache)
    assert runtime_key(store, base, cache) != runtime_key(store, other_params, cache)
    assert runtime_key(store, base, cache) != runtime_key(
        store, {**base, "engine": {"max_num_seqs": 8}}, cache)


class SameCode:
    """Always the same scheduler code C; the cache policy's window alternates 16 / 32, so
    C lands on two different runtimes, then on each of them again."""

    name = "same"

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, ctx: MutationContext) -> Proposal:
        self.calls += 1
        code = inside_block(slot_code(None, "scheduler", SCHED), "# the same edit")
        spec = {**ctx.parent.spec, "slots": {
            **ctx.parent.spec["slots"],
            "cache_policy": {"program": CACHE, "params": {"window": 16 * (1 + self.calls % 2)}}}}
        return Proposal(self.name, "scheduler", code=code, spec=spec)


def test_same_slot_code_on_another_runtime_is_a_child_the_same_runtime_a_duplicate(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/d.db")
    cfg = _cfg({"same": 1}, {"max_evaluations": 10, "max_proposals": 5},
               target={"slots": ["scheduler"], "runtime": {
                   "slots": {"scheduler": SCHED, "cache_policy": CACHE}}},
               search={"method": "random"})
    out = Controller(cfg, store, CodeScore(store), name="d",
                     operators={"same": SameCode()}).run()
    assert out.reason == "max_proposals"
    children = [r for r in run_runtimes(store, out.run_id) if r.operator == "same"]
    # one program, two runtimes: both evaluated (a dedupe by code hash dropped the second)
    assert len({c.spec["slots"]["scheduler"]["program"] for c in children}) == 1
    assert sorted(c.spec["slots"]["cache_policy"]["params"]["window"] for c in children) \
        == [16, 32]
    done = {r.runtime_id for r in run_evaluations(store, out.run_id, FULL)
            if r.status == "passed"}
    assert {c.id for c in children} <= done
    dups = [r for r in run_evaluations(store, out.run_id, PROPOSE) if r.status == "duplicate"]
    assert len(dups) == 3 and all("already has this runtime" in r.error for r in dups)


def _change(store: Store, run_id: int, seed, slot: str, tok_s: float = 110.0) -> int:
    """A passed child of the seed whose `slot` carries a gain (what a mutation would make)."""
    ref = seed.spec["slots"][slot]["program"]
    code = inside_block(slot_code(store, slot, ref), f"# gain {tok_s}")
    prog = store.add_program(slot, code, operator="literal", run_id=run_id)
    spec = {**seed.spec, "slots": {**seed.spec["slots"],
                                   slot: {**seed.spec["slots"][slot], "program": prog.ref}}}
    rt = store.add_runtime(run_id, spec, island=0, generation=1, operator="literal",
                           parents=[(seed.id, "parent")])
    eid = store.enqueue_evaluation(run_id, rt.id, FULL)
    store.complete_evaluation(eid, "passed", metrics={"tok_s": tok_s}, duration_s=0.1)
    return rt.id


def test_crossover_joins_a_scheduler_gain_and_a_cache_gain(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/x.db")
    cfg = _cfg({"assemble": 1}, budget=1)
    Controller(cfg, store, CodeScore(store), name="x",
               operators={"assemble": AssembleOperator()}).run()  # the seed only
    run = store.get_run("x")
    seed = run_runtimes(store, run.id)[0]
    a = _change(store, run.id, seed, "scheduler")
    b = _change(store, run.id, seed, "cache_policy")
    # the best member changed the scheduler too: a second parent picked by fitness alone
    # would mostly be it, and crossing it with `a` only swaps one scheduler for another
    c = _change(store, run.id, seed, "scheduler", tok_s=115.0)
    ctl = Controller(_cfg({"assemble": 1}, budget=4), store, CodeScore(store), name="x",
                     operators={"assemble": AssembleOperator()})
    assert ctl.run().reason == "max_evaluations"  # loads the population, proposes nothing
    seconds = {ctl._second_parent(ctl.st.members[p]).runtime_id for p in (a, c) * 20}
    assert seconds == {b}, seconds  # never the other scheduler change, though it is fitter
    assert {ctl._second_parent(ctl.st.members[b]).runtime_id for _ in range(20)} <= {a, c}
    cfg = _cfg({"assemble": 1}, budget=8)
    out = Controller(cfg, store, CodeScore(store), name="x",
                     operators={"assemble": AssembleOperator()}).run()
    rts = {r.id: r for r in run_runtimes(store, out.run_id)}
    both = [r for r in rts.values()
            if r.spec["slots"]["scheduler"] == rts[a].spec["slots"]["scheduler"]
            and r.spec["slots"]["cache_policy"] == rts[b].spec["slots"]["cache_policy"]]
    assert len(both) == 1 and both[0].operator == "assemble", list(rts.values())
    row = next(r for r in run_evaluations(store, out.run_id, FULL) if r.runtime_id == both[0].id)
    assert row.status == "passed" and row.metrics["tok_s"] == 120.0

    def changed(rid: int) -> set[str]:
        return {s for s, c in rts[rid].spec["slots"].items() if c != seed.spec["slots"][s]}

    # a crossover whose first parent changed one slot got a second parent that changed
    # another (there always was one: `b`, or `a` and the other scheduler change)
    crossed = [{role: p for p, role in r.parents} for r in rts.values()
               if r.operator == "assemble"]
    single = [c for c in crossed if len(changed(c["parent"])) == 1]
    assert single, crossed
    for c in single:
        assert changed(c["second_parent"]) - changed(c["parent"]), c


class CounterHarness:
    """Counters from the spec: half of all children do the seed's work exactly (novel 0),
    the rest their own; tok_s is noisy for every child, as wall clock is."""

    def evaluate(self, spec, stages=(), workload="", baseline=None, **kw):
        r = spec_score(spec)
        seedlike = spec == baseline or r < 0.5
        work = {"work_steps": 50 if seedlike else int(1000 * r),
                "work_scheduled_tokens": 4096, "work_steps_baseline": 50}
        tok_s = 100.0 if spec == baseline else 100.0 * (1.0 + r)
        return FakeReport([StageResult(s, "passed") for s in stages], {"tok_s": tok_s, **work})


class Commenter:
    name = "fake"

    def propose(self, ctx: MutationContext) -> Proposal:
        return Proposal("fake", ctx.slot,
                        code=inside_block(ctx.parent.code, f"# {ctx.rng.getrandbits(48)}"))


def test_behavioural_duplicates_are_marked_and_never_bred_from(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/n.db")
    cfg = _cfg({"fake": 1}, budget=30, seed=random.randrange(1000),
               evaluation={"workloads": ["w1", "w2"], "device": "cpu"})
    out = Controller(cfg, store, CounterHarness(), name="n",
                     operators={"fake": Commenter()}).run()
    rows = sorted((r for r in run_evaluations(store, out.run_id, FULL) if r.status == "passed"),
                  key=lambda r: (r.finished_at, r.id))
    seen: set[str] = set()
    for r in rows:  # novel iff no earlier member did the same work on every workload
        key = behaviour_key(r.metrics)
        assert key is not None and r.metrics["novel"] == int(key not in seen), r.metrics
        seen.add(key)
    stale = {r.runtime_id for r in rows if r.metrics["novel"] == 0}
    assert stale and len(stale) < len(rows) - 1  # both kinds happened
    for rt in run_runtimes(store, out.run_id):
        assert not {p for p, _ in rt.parents} & stale, f"runtime {rt.id} bred from a duplicate"


def test_behavioural_duplicates_count_as_stagnation(tmp_path):
    """Children that only look faster (noise) but do the seed's work are no progress."""

    class SeedWork(CounterHarness):
        def evaluate(self, spec, stages=(), workload="", baseline=None, **kw):
            rep = super().evaluate(spec, stages, workload, baseline, **kw)
            rep.metrics["work_steps"] = 50
            return rep

    store = Store.open(f"sqlite:///{tmp_path}/s.db")
    cfg = _cfg({"fake": 1}, budget=40, stagnation={"window": 5, "min_improvement": 0.01})
    out = Controller(cfg, store, SeedWork(), name="s", operators={"fake": Commenter()}).run()
    assert out.reason == "stagnation" and out.evaluations <= 7
    rows = [r for r in run_evaluations(store, out.run_id, FULL) if r.status == "passed"]
    assert max(r.metrics["tok_s"] for r in rows) > 101.0  # they did look better
    assert sum(r.metrics["novel"] for r in rows) == 1  # only the seed
