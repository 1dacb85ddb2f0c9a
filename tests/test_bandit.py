"""The operator bandit: it learns which operator improves children per unit cost, takes the
config weights as its prior, and its state is rebuilt from the database after a kill."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeReport, inside_block
from test_resume_crash_points import Killed, KillingStore

from evolve.bandit import Pull, ThompsonBandit, gain, restore, run_arms
from evolve.config import config_from_dict
from evolve.controller import Controller
from evolve.operators.base import MutationContext, Proposal, Rejected
from evolve.population import load_state, slot_code
from fitness.result import StageResult
from population_db import Store


def test_thompson_learns_the_arm_that_pays():
    rng = random.Random(7)
    b = ThompsonBandit({"good": 1.0, "bad": 1.0, "worse": 1.0})
    chosen = []
    for _ in range(300):
        arm = b.choose(rng)
        chosen.append(arm)
        # good improves one child in three by 2% at 1 s; bad never; worse never, and dearly
        b.record(Pull(arm, 0.02 if arm == "good" and rng.random() < 1 / 3 else 0.0,
                      5.0 if arm == "worse" else 1.0))
    late = chosen[100:]
    assert late.count("good") > 0.8 * len(late), {a: late.count(a) for a in b.prior}
    probs = b.probabilities()
    assert probs["good"] > 0.9 and abs(sum(probs.values()) - 1.0) < 1e-9
    rows = {s.arm: s for s in b.status()}
    assert rows["good"].improved > 0 and rows["bad"].improved == 0
    assert rows["good"].pulls + rows["bad"].pulls + rows["worse"].pulls == 300
    assert rows["good"].mean_reward > 0 == rows["bad"].mean_reward


def test_weights_are_the_prior_and_cost_divides_the_gain():
    b = ThompsonBandit({"gp": 3.0, "literal": 3.0, "assemble": 1.0})
    p = b.probabilities(draws=20000)
    assert p["assemble"] < p["gp"] and p["assemble"] < p["literal"], p
    assert b.prior == {"gp": 3 / 7, "literal": 3 / 7, "assemble": 1 / 7}
    off = ThompsonBandit({"gp": 3.0, "assemble": 1.0}, enabled=False)
    assert off.probabilities() == {"gp": 0.75, "assemble": 0.25}
    picks = [off.choose(random.Random(i)) for i in range(2000)]
    assert 0.7 < picks.count("gp") / 2000 < 0.8
    # equal gains: the cheaper arm earns the larger reward
    assert Pull("a", 0.1, 1.0).reward_with(0) == 10 * Pull("a", 0.1, 10.0).reward_with(0)
    assert Pull("a", 0.1, 1.0, 0.02).reward_with(3) == pytest.approx(0.16)
    assert abs(gain({"x": 110.0}, {"x": 100.0}, ("x", 1.0)) - 0.1) < 1e-12
    assert gain({"x": 90.0}, {"x": 100.0}, ("x", 1.0)) == 0.0
    assert abs(gain({"x": 90.0}, {"x": 100.0}, ("x", -1.0)) - 0.1) < 1e-12
    assert gain({"x": 120.0, "novel": 0}, {"x": 100.0}, ("x", 1.0)) == 0.0
    assert gain({"x": 100.05}, {"x": 100.0}, ("x", 1.0)) == 0.0  # below MIN_GAIN: no gain
    assert gain({"x": 100.2}, {"x": 100.0}, ("x", 1.0)) > 0


def test_llm_models_are_arms_of_their_own():
    cfg = config_from_dict({"operators": {"llm-diff": 2, "gp": 1},
                            "llm": {"models": {"m1": 3, "m2": 1, "m0": 0}}}, "t.yaml")
    assert run_arms(cfg) == {"llm-diff@m1": 1.5, "llm-diff@m2": 0.5, "gp": 1.0}


class ScoredByCode:
    """tok_s = 100 * 1.01^(number of '# good' lines in the runtime's programs)."""

    def __init__(self, store: Store):
        self.store = store

    def evaluate(self, spec, stages=(), workload="", **kw):
        code = "".join(slot_code(self.store, s, c["program"]) for s, c in spec["slots"].items()
                       if s in ("scheduler", "cache_policy"))
        tok_s = 100.0 * 1.01 ** code.count("# good")
        return FakeReport([StageResult(s, "passed", duration_s=0.01) for s in stages],
                          {"tok_s": tok_s})


class Tagger:
    """Adds a unique `# <tag> ...` line inside the parent's EVOLVE-BLOCK, or, every
    `reject_every`-th call, rejects. Its children's operator is not its arm's name, so
    the bandit must read arms from what the run recorded, not guess them."""

    def __init__(self, tag: str, reject_every: int = 0):
        self.name, self.tag, self.reject_every, self.calls = f"{tag}-op", tag, reject_every, 0

    def propose(self, ctx: MutationContext) -> Proposal | Rejected:
        self.calls += 1
        if self.reject_every and self.calls % self.reject_every == 0:
            return Rejected(self.name, ctx.slot, "no SEARCH/REPLACE blocks")
        code = inside_block(ctx.parent.code, f"# {self.tag} {ctx.rng.getrandbits(48)}")
        return Proposal(self.name, ctx.slot, code=code)


def _cfg(budget: int, seed: int = 3):
    return config_from_dict({
        "target": {"slots": ["scheduler", "cache_policy"]},
        "operators": {"good": 1, "bad": 1},
        "evaluation": {"workloads": ["w1"], "device": "cpu"},
        "budget": {"max_evaluations": budget},
        "concurrency": {"max_proposals": 1, "max_evaluations": 1}, "seed": seed}, "bandit.yaml")


def _ctl(store, budget: int, kill_at: int | None = None) -> Controller:
    ctl = Controller(_cfg(budget), KillingStore(store, kill_at), ScoredByCode(store),
                     name="b", operators={"good": Tagger("good"), "bad": Tagger("bad", 3)})
    try:
        ctl.run()
    except Killed:
        pass
    return ctl


def _same(a: ThompsonBandit, b: ThompsonBandit) -> None:
    assert a.pulls == b.pulls and a.improved == b.improved
    assert all(abs(a.rewards[k] - b.rewards[k]) < 1e-9 for k in a.rewards)
    assert abs(a.max_reward - b.max_reward) < 1e-9


def _restored(store: Store, budget: int) -> ThompsonBandit:
    run = store.get_run("b")
    bandit, _ = restore(_cfg(budget), store, run.id, load_state(store, run.id),
                        store.events(run.id))
    return bandit


def test_a_run_prefers_the_operator_that_improves(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/b.db")
    ctl = _ctl(store, 40)
    made = {op: sum(m.operator == f"{op}-op" for m in ctl.st.members.values())
            for op in ("good", "bad")}
    assert made["good"] > 2 * made["bad"], made
    rows = {s.arm: s for s in ctl.bandit_status()}
    assert rows["good"].improved > 0 and rows["bad"].improved == 0
    assert rows["good"].probability > rows["bad"].probability
    _same(ctl.bandit, _restored(store, 40))


def test_bandit_state_survives_a_kill(tmp_path):
    rng = random.Random(random.randrange(1 << 30))
    store = Store.open(f"sqlite:///{tmp_path}/b.db")
    killed = _ctl(store, 30, kill_at=rng.randrange(40, 90))
    assert killed.reason is None  # it really died mid-run
    restored = _restored(store, 30)
    _same(killed.bandit, restored)  # every settled outcome it knew was recorded
    assert sum(restored.pulls.values()) > 5
    resumed = _ctl(store, 30)
    # the resumed session started from the restored posterior and went on from there
    assert all(resumed.bandit.pulls[a] >= restored.pulls[a] for a in restored.pulls)
    _same(resumed.bandit, _restored(store, 30))
    assert resumed.bandit.pulls["good"] > resumed.bandit.pulls["bad"]
