"""A two-slot LLM run against the loopback server: a good scheduler edit and a good cache
edit, proposed on different parents (the scheduler's on the seed, the cache's on a child
with a neutral scheduler change), end up joined by crossover in one evaluated runtime,
and that runtime ranks first.

The server answers like a coding model: the scheduler edit comes with its SEARCH text
unindented (the applier re-indents it), the cache edit's first reply has a SEARCH line
that is not in the code and is fixed in a repair round (whose note is stored). The harness
is a cheap fake whose objective reads the code: each good edit is worth a fixed gain, so
only a runtime with both can rank first.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fake_llm_server import FakeLLMServer, Reply

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeReport

from evolve.config import config_from_dict
from evolve.launch import launch
from evolve.population import slot_code
from evolve.runs_csv import run_summary
from fitness.result import StageResult
from population_db import Store

SCHED = "    return wait_steps + 4.0 * num_preemptions - 0.01 * prompt_len\n"
SCHED_GOOD = "    return wait_steps + 4.0 * num_preemptions - 0.05 * prompt_len\n"
SCHED_NEUTRAL = "    return wait_steps + 4.5 * num_preemptions - 0.01 * prompt_len\n"
CACHE = "    return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position\n"
CACHE_GOOD = "    return hashed * (1.0 + 2.0 * num_hits) / (1.0 + 0.01 * idle) - 0.001 * position\n"
GAIN = {"scheduler": 0.010, "cache_policy": 0.012, "neutral": 0.001}


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


SENT: list[str] = []


def respond(prompt: str, i: int) -> Reply:
    """Scheduler: on the seed (objective `parent 1, seed 1`), a neutral change first, then
    the good one. Cache: the good edit only on the neutral child (`parent 1.001`). Anything
    else: no useful reply. So the two good edits are made on different parents, and only
    a crossover can join them."""
    slot = re.search(r"fills the\s+`(\w+)` slot", prompt).group(1)
    repair = prompt.startswith("Your previous reply could not be used")
    on_seed = "(parent 1, seed 1)" in prompt
    if slot == "scheduler" and on_seed and not repair:
        new = SCHED_GOOD if "neutral" in SENT else SCHED_NEUTRAL
        SENT.append("good" if new == SCHED_GOOD else "neutral")
        return Reply("Prefer short prompts.\n" + block(SCHED.lstrip(), new.lstrip()),
                     usage=(1500, 90))
    if slot == "cache_policy" and "(parent 1.001, seed 1)" in prompt:  # (a repair prompt
        # repeats the original one)
        if repair:
            return Reply(block(CACHE, CACHE_GOOD), usage=(2500, 80))
        return Reply(block(CACHE.replace("0.01 * idle", "0.1 * idle"), CACHE_GOOD),
                     usage=(1500, 80))
    return Reply("The parent already looks good to me; no change.", usage=(1500, 20))


class CodeHarness(FakeHarness):
    """modeled_ratio = 1 + the gain of each good edit present in the runtime's code."""

    def __init__(self, db: str):
        super().__init__(fail_rate=0.0)
        self.db = db

    def evaluate(self, spec, stages=(), workload="", baseline=None, runtime_id=None,
                 run_id=None, **kw):
        super().evaluate(spec, stages, workload, baseline, runtime_id, run_id, **kw)
        store = Store.open(self.db)
        lines = {"scheduler": ("scheduler", SCHED_GOOD), "cache_policy": ("cache_policy",
                                                                        CACHE_GOOD),
                 "neutral": ("scheduler", SCHED_NEUTRAL)}
        ratio = 1.0 + sum(GAIN[k] for k, (s, line) in lines.items()
                          if line in slot_code(store, s, spec["slots"][s]["program"]))
        return FakeReport([StageResult(s, "passed") for s in stages],
                          {"modeled_ratio": ratio, "tok_s": 100.0 * ratio})


def test_edits_on_different_parents_are_combined_and_rank_first(tmp_path):
    seed = 7
    db = f"sqlite:///{tmp_path}/sds.db"
    SENT.clear()
    with FakeLLMServer([], responder=respond, max_requests=200) as srv:
        raw = {"seed": seed,
               "target": {"slots": ["scheduler", "cache_policy"],
                          "runtime": {"slots": {"scheduler": "seed:scheduler/priority",
                                                "cache_policy": "seed:cache_policy/scored"}}},
               "operators": {"llm-diff": {"weight": 2, "repair_rounds": 1}, "assemble": 2},
               "llm": {"models": {"coder": 1.0}, "base_url": srv.base_url, "retries": 0,
                       "prices": {"coder": [1.0, 2.0]}},
               "selection": {"objectives": ["modeled_ratio:max"], "tournament_size": 1},
               "search": {"bandit": False},  # operators by weight: no drift to one arm
               "evaluation": {"workloads": ["w1"], "device": "cpu"},
               "budget": {"max_evaluations": 12},
               "concurrency": {"max_proposals": 1, "max_evaluations": 1}}
        cfg = config_from_dict(raw, "multislot.yaml")
        out, summary = launch(cfg, name="multi", db=db, harness=CodeHarness(db),
                              runs_csv=None, progress=False)
    store = Store.open(db)
    best = store.best_runtime("multi", "modeled_ratio")
    print(f"seed {seed}: {out.evaluations} evaluations (stop: {out.reason}), best r{best.runtime.id} "
          f"({best.runtime.operator}) modeled_ratio {best.score:.4f}")
    assert best.score == 1.0 + GAIN["scheduler"] + GAIN["cache_policy"]
    codes = {s: slot_code(store, s, best.runtime.spec["slots"][s]["program"])
             for s in ("scheduler", "cache_policy")}
    assert SCHED_GOOD in codes["scheduler"] and CACHE_GOOD in codes["cache_policy"]
    # joined by crossover of two runtimes, each carrying one of the edits
    assert best.runtime.operator == "assemble"
    roles = {role: pid for pid, role in best.runtime.parents}
    assert {"parent", "second_parent"} <= set(roles)  # (and maybe inspirations)
    makers = {}
    for slot, line in (("scheduler", SCHED_GOOD), ("cache_policy", CACHE_GOOD)):
        ref = best.runtime.spec["slots"][slot]["program"]
        first = next(r for r in store.list_runtimes("multi")
                     if r.spec["slots"][slot]["program"] == ref)
        assert first.operator == "llm-diff" and line in codes[slot]
        makers[slot] = first
    a, b = makers["scheduler"], makers["cache_policy"]
    assert a.id != b.id
    for x, y in ((a, b), (b, a)):  # made on different parents: neither descends from the other
        assert y.id not in {e.node.id for e in store.ancestors(x.id)}
    pa = next(p for p, role in a.parents if role == "parent")
    pb = next(p for p, role in b.parents if role == "parent")
    assert pa != pb and store.get_runtime(pa).operator == "seed"
    assert SCHED_NEUTRAL in slot_code(store, "scheduler",
                                      store.get_runtime(pb).spec["slots"]["scheduler"]["program"])
    # the unindented SEARCH was re-indented; the cache edit needed a repair round, noted
    assert "\n" + SCHED_GOOD in codes["scheduler"]
    notes = [e.data.get("note") for e in store.events(out.run_id, "bandit")]
    assert "after 1 repair round(s)" in notes
    # every view agrees it ranks first
    s = run_summary(store, "multi")
    assert s["best_runtime"] == best.runtime.id and s["gain"] == best.score
    assert summary["best_runtime"] == best.runtime.id
    assert s["llm_usd"] > 0 and s["llm_calls"] == len(srv.requests)
