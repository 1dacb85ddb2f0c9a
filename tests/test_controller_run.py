"""The controller end to end with a cheap fake harness and operator: everything recorded
(programs, runtimes, keyed evaluations, lineage, proposals rejected or duplicate), failed
children never parents, budget / stagnation / wall-clock stops recorded as events."""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator, inside_block

from evolve.config import config_from_dict
from evolve.launch import launch
from evolve.population import FULL, PROPOSE, run_evaluations, run_runtimes, slot_hashes
from population_db import Store


def _cfg(**over):
    raw = {"target": {"slots": ["scheduler", "cache_policy"],
                      "runtime": {"slots": {"scheduler": "seed:scheduler/priority",
                                            "cache_policy": "seed:cache_policy/scored"}}},
           "operators": {"fake": 1}, "islands": {"count": 2, "migration_interval": 5},
           "evaluation": {"workloads": ["w1", "w2"], "device": "cpu"},
           "budget": {"max_evaluations": 14},
           "concurrency": {"max_proposals": 2, "max_evaluations": 2},
           "seed": random.randrange(1000)}
    for k, v in over.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
    return config_from_dict(raw, "test.yaml")


def _go(tmp_path, cfg, name="t", harness=None):
    db = f"sqlite:///{tmp_path}/sds.db"
    out, summary = launch(cfg, name=name, db=db, harness=harness or FakeHarness(),
                          operators={"fake": FakeOperator()}, runs_csv=tmp_path / "runs.csv",
                          progress=False)
    return out, summary, Store.open(db)


def test_small_run_records_everything(tmp_path):
    cfg = _cfg()
    out, summary, store = _go(tmp_path, cfg, harness=FakeHarness(fail_rate=0.1))
    assert out.status == "finished" and out.reason == "max_evaluations"
    runtimes = {r.id: r for r in run_runtimes(store, out.run_id)}
    full = run_evaluations(store, out.run_id, FULL)
    assert len(full) == 14 and all(r.status in ("passed", "failed") for r in full)
    evaluated = [r.runtime_id for r in full]
    assert len(set(evaluated)) == len(evaluated)  # one keyed row per runtime
    own = [i for i, r in runtimes.items() if r.operator not in ("migration", "reseed")]
    assert sorted(own) == sorted(evaluated)  # every child evaluated, none twice
    status = {r.runtime_id: r.status for r in full}
    seed = next(i for i, r in runtimes.items() if r.operator == "seed")
    for rid, rt in runtimes.items():
        if rid == seed:
            assert rt.parents == ()
            continue
        parents = [p for p, role in rt.parents if role == "parent"]
        assert len(parents) == 1
        src = parents[0]
        while runtimes[src].operator in ("migration", "reseed"):
            src = next(p for p, role in runtimes[src].parents if role == "parent")
        assert status[src] == "passed", f"runtime {rid} bred from a failed parent {src}"
    # each stage of the two workloads went through the harness; children carry program rows
    child = next(i for i, r in runtimes.items() if r.operator == "fake")
    prog_ref = [c["program"] for c in runtimes[child].spec["slots"].values()
                if c["program"].startswith("sha256:")]
    assert prog_ref and store.get_program(prog_ref[0]).operator == "fake"
    assert any(e.depth >= 1 for e in store.ancestors(child))
    best = summary["best_runtime"]
    assert {e.node.id for e in store.ancestors(best)} >= {seed} or best == seed
    # rejected and duplicate proposals are recorded with their reasons, never evaluated
    props = run_evaluations(store, out.run_id, PROPOSE)
    assert all(p.error for p in props) and {p.status for p in props} <= {"rejected", "duplicate"}
    dups = [p for p in props if p.status == "duplicate"]
    assert dups, "the fake operator repeats children: some must be recorded as duplicates"
    evaluated_code = set().union(*(slot_hashes(store, runtimes[i].spec, cfg.target.slots, {})
                                   for i in evaluated))
    for p in dups:  # a duplicate's code was evaluated once, under another runtime
        prog = store.get_program(p.program_id)
        assert (prog.slot, prog.code_hash) in evaluated_code
    kinds = [e.kind for e in store.events(out.run_id)]
    assert kinds.count("budget_stop") == 1 and "start" in kinds and "migration" in kinds
    assert store.get_run(out.run_id).status == "finished"
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert len(rows) == 1 and rows[0]["tags.run"] == "t"
    assert int(rows[0]["metrics.evaluations"]) == 14
    assert float(rows[0]["metrics.speedup"]) == summary["speedup"] or \
        abs(float(rows[0]["metrics.speedup"]) - summary["speedup"]) < 1e-4
    assert set(rows[0]) >= {"params.target_slots", "params.operators", "metrics.llm_usd",
                            "metrics.gpu_s", "metrics.wall_s", "tags.workload", "tags.device"}
    # a second run appends a second row
    _go(tmp_path, _cfg(budget={"max_evaluations": 3}), name="t2")
    assert len(list(csv.DictReader((tmp_path / "runs.csv").open()))) == 2


def test_stagnation_stop_is_an_event(tmp_path):
    cfg = _cfg(stagnation={"window": 4, "min_improvement": 0.01, "action": "stop"},
               budget={"max_evaluations": 40})
    out, _summary, store = _go(tmp_path, cfg, harness=FakeHarness(flat=True, fail_rate=0.0))
    assert out.reason == "stagnation" and out.status == "finished"
    assert out.evaluations < 40
    ev = store.events(out.run_id, "stagnation")
    assert len(ev) == 1 and ev[0].data["window"] == 4
    assert store.events(out.run_id, "stop")[0].data["reason"] == "stagnation"


def test_stagnation_counts_failed_children(tmp_path):
    """Every child failing is no improvement: the rule must fire, not wait for a pass."""
    window = random.randint(3, 6)
    cfg = _cfg(stagnation={"window": window, "min_improvement": 0.01, "action": "stop"},
               budget={"max_evaluations": 40})
    out, _summary, store = _go(tmp_path, cfg, harness=FakeHarness(fail_rate=1.0))
    assert out.reason == "stagnation", out
    # the seed passed, then `window` children failed (plus those already in flight)
    ev = store.events(out.run_id, "stagnation")
    assert len(ev) == 1 and ev[0].data["evaluations_done"] == 1 + window
    assert out.evaluations <= 1 + window + cfg.concurrency.max_evaluations


def test_stagnation_reseeds_weakest_island(tmp_path):
    cfg = _cfg(stagnation={"window": 3, "min_improvement": 0.5, "action": "reseed"},
               budget={"max_evaluations": 16})
    out, _, store = _go(tmp_path, cfg)
    assert out.reason == "max_evaluations"
    resets = store.events(out.run_id, "island_reset")
    assert resets
    rts = {r.id: r for r in run_runtimes(store, out.run_id)}
    copy = rts[resets[0].data["new_runtime"]]
    assert copy.operator == "reseed" and copy.island == resets[0].data["island"]


def test_wall_budget_and_failed_seed(tmp_path):
    cfg = _cfg(budget={"max_evaluations": 1000, "max_wall_seconds": 0.6})
    out, _, store = _go(tmp_path, cfg, harness=FakeHarness(delay_s=0.05))
    assert out.reason == "max_wall_seconds" and out.evaluations < 1000
    assert store.events(out.run_id, "budget_stop")[0].data["budget"] == "max_wall_seconds"

    class BrokenSeed(FakeHarness):
        def evaluate(self, spec, **kw):
            rep = super().evaluate(spec, **kw)
            rep.stages[-1].status, rep.stages[-1].error = "failed", "tokens differ at 3"
            return rep

    out, _summary, store = _go(tmp_path, _cfg(), name="broken", harness=BrokenSeed())
    assert out.status == "failed" and out.reason == "seed_failed" and out.evaluations == 1
    assert store.get_run("broken").status == "failed"
    out, _summary, store = _go(tmp_path, _cfg(), name="broken", harness=BrokenSeed())
    assert (out.status, out.reason, out.evaluations) == ("failed", "seed_failed", 1)


def test_resume_never_evaluates_past_a_lowered_budget(tmp_path):
    """Children left queued by a killed session are evaluated only while the budget lasts."""
    out, _, store = _go(tmp_path, _cfg(budget={"max_evaluations": 3}), name="low")
    rts = [r for r in run_runtimes(store, out.run_id) if r.operator == "fake"]
    extra = random.randint(2, 4)
    for i in range(extra):  # what a session killed with `extra` children in flight leaves
        spec = {**rts[0].spec, "engine": {"max_num_seqs": 8 + i}}
        rt = store.add_runtime(out.run_id, spec, island=0, generation=1, operator="fake",
                               parents=[(rts[0].id, "parent")])
        store.enqueue_evaluation(out.run_id, rt.id, FULL)
    out, summary, store = _go(tmp_path, _cfg(budget={"max_evaluations": 4}), name="low")
    assert out.evaluations == 4 and summary["evaluations"] == 4
    assert summary["in_flight_or_queued"] == extra - 1  # left pending for a larger budget


def test_nsga2_two_objectives_run(tmp_path):
    cfg = _cfg(selection={"method": "nsga2", "objectives": ["tok_s:max", "peak_mem:min"]},
               budget={"max_evaluations": 8})
    out, summary, _ = _go(tmp_path, cfg)
    assert out.evaluations == 8 and summary["by_status"].get("passed", 0) >= 2


def test_llm_calls_recorded_and_dollar_budget_never_exceeded(tmp_path):
    import time

    from evolve.operators.base import LLMCallRecord, Proposal, Rejected
    from evolve.population import llm_usage

    class PricedOperator(FakeOperator):
        """A first call and a repair call of 1 cent each, each asked of the budget first;
        slow enough that concurrent proposals overlap, as LLM calls do."""

        def propose(self, ctx):
            calls = []
            for i in range(2):
                if not ctx.budget_ok(0.01):
                    return Rejected("llm-diff", ctx.slot, "dollar budget exhausted", tuple(calls))
                time.sleep(0.02)
                calls.append(LLMCallRecord("m", f"prompt {i}: " + ctx.contract[:40], "reply",
                                           120, 40, 0.01, 0.02))
            code = inside_block(ctx.parent.code, f"# llm {ctx.rng.getrandbits(40)}")
            return Proposal("llm-diff", ctx.slot, code=code, llm_calls=tuple(calls))

    # >= 4 cents: with 3 proposals in flight the worst interleaving reserves 3 first calls,
    # so at least one repair call (and its child) always fits; 3 cents may leave none.
    limit = 0.01 * random.randint(4, 9)
    cfg = _cfg(budget={"max_evaluations": 100, "max_llm_usd": limit},
               concurrency={"max_proposals": 3, "max_evaluations": 2})
    db = f"sqlite:///{tmp_path}/sds.db"
    out, summary = launch(cfg, name="llm", db=db, harness=FakeHarness(),
                          operators={"fake": PricedOperator()}, runs_csv=None, progress=False)
    store = Store.open(db)
    usage = llm_usage(store, out.run_id)
    assert out.reason == "max_llm_usd" and out.evaluations < 100
    # every call was asked for before it was made: the limit holds with proposals in flight
    assert limit - 0.01 - 1e-9 <= usage["usd"] <= limit + 1e-9, (usage, limit)
    assert usage["calls"] == round(usage["usd"] / 0.01) and usage["tokens_in"] == 120 * usage["calls"]
    assert summary["llm_usd"] == usage["usd"]
    progs = [store.get_program(c["program"]) for r in run_runtimes(store, out.run_id)
             for c in r.spec["slots"].values() if c["program"].startswith("sha256:")]
    assert progs and all(p.llm_call_id is not None for p in progs)
    assert store.get_llm_call(progs[0].llm_call_id).run_id == out.run_id
    assert store.events(out.run_id, "budget_stop")[0].data["budget"] == "max_llm_usd"


def test_edits_outside_evolve_blocks_rejected_whatever_the_operator(tmp_path):
    """The controller checks every code proposal itself: an operator that skips the check
    (a plugin, a bug) cannot put frozen-code edits into the run."""

    class Rogue(FakeOperator):
        def propose(self, ctx):
            tag = f"sds_rogue_{ctx.rng.getrandbits(40)}"
            if next(self._calls) % 2 == 0:  # every other proposal edits frozen code
                return Proposal("rogue", ctx.slot, code=f"{tag} = 1\n" + ctx.parent.code)
            return Proposal("rogue", ctx.slot, code=inside_block(ctx.parent.code, f"# {tag}"))

    from evolve.operators.base import Proposal

    cfg = _cfg(budget={"max_evaluations": 6})
    db = f"sqlite:///{tmp_path}/sds.db"
    out, _ = launch(cfg, name="rogue", db=db, harness=FakeHarness(fail_rate=0.0),
                    operators={"fake": Rogue()}, runs_csv=None, progress=False)
    store = Store.open(db)
    assert out.evaluations == 6
    rejected = [p for p in run_evaluations(store, out.run_id, PROPOSE) if p.status == "rejected"]
    assert rejected and all("outside the EVOLVE-BLOCKs" in p.error for p in rejected)
    for rt in run_runtimes(store, out.run_id):
        for c in rt.spec["slots"].values():
            if c["program"].startswith("sha256:"):
                assert not store.get_program(c["program"]).code.startswith("sds_rogue_")


def test_top_k_tuned_at_the_end(tmp_path, monkeypatch):
    import evolve.tune

    calls = []
    monkeypatch.setattr(evolve.tune, "tune_runtime",
                        lambda store, rid, **kw: calls.append((rid, kw["trials"])))
    cfg = _cfg(budget={"max_evaluations": 8}, tune={"top_k": 2, "trials": 3})
    out, summary, store = _go(tmp_path, cfg)
    full = [r for r in run_evaluations(store, out.run_id, FULL) if r.status == "passed"]
    top2 = [r.runtime_id for r in sorted(full, key=lambda r: -r.metrics["tok_s"])[:2]]
    assert [c[0] for c in calls] == top2 and all(c[1] == 3 for c in calls)
    assert summary["best_runtime"] == top2[0]
    assert [e.data["runtime"] for e in store.events(out.run_id, "tune")] == top2


def test_resume_by_name_with_a_larger_budget(tmp_path):
    cfg = _cfg(budget={"max_evaluations": 5})
    out1, _, store = _go(tmp_path, cfg, name="grow")
    assert out1.evaluations == 5
    raw = {**cfg.raw, "budget": {"max_evaluations": 9}}
    out2, summary, store = _go(tmp_path, config_from_dict(raw, "test.yaml"), name="grow")
    assert out2.run_id == out1.run_id and out2.evaluations == 9 and summary["evaluations"] == 9
    assert store.events(out2.run_id, "config_changed")[0].data["sections"] == ["budget"]
    assert len(store.events(out2.run_id, "resume")) == 1


def test_run_can_tune_its_best_runtime_at_the_end(tmp_path):
    cfg = _cfg(budget={"max_evaluations": 6}, tune={"top_k": 1, "trials": 3},
               evaluation={"workloads": ["kv-pressure-cpu"]})
    out, _, store = _go(tmp_path, cfg, name="tuned", harness=FakeHarness(fail_rate=0.0))
    assert out.status == "finished"
    events = store.events(out.run_id, "tune")
    assert len(events) == 1
    parent = events[0].data["runtime"]
    metric, sign = cfg.selection.parsed_objectives()[0]
    best = max((r for r in run_evaluations(store, out.run_id, FULL) if r.status == "passed"),
               key=lambda r: sign * r.metrics[metric])
    assert parent == best.runtime_id
    # every trial passed, so the best trial's parameters became a child of the tuned runtime
    tuned = [r for r in run_runtimes(store, out.run_id) if r.operator == "tune"]
    assert len(tuned) == 1 and [p[0] for p in tuned[0].parents] == [parent]
    import optuna

    study = optuna.load_study(study_name=f"sds-tune-rt{parent}-kv-pressure-cpu",
                              storage=f"sqlite:///{tmp_path}/sds.db")
    assert len([t for t in study.trials if t.state.is_finished()]) == 3
