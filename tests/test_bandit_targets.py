"""Arms aimed at one evolvable function: the bandit learns where a change pays."""

from __future__ import annotations

import ast
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bandit import ScoredByCode, _same
from test_controller_fakes import inside_block

from evolve.bandit import operator_of, restore, run_arms, search_targets, target_of
from evolve.config import config_from_dict
from evolve.controller import Controller
from evolve.operators import Candidate, MutationContext, Proposal, Rejected, make_operator
from evolve.population import load_state
from population_db import Store
from runtime_modules.slots import SEEDS_DIR

POLICY = (SEEDS_DIR / "scheduler" / "policy.py").read_text()
RUNTIME = {"slots": {"scheduler": {"program": "seed:scheduler/policy"},
                     "cache_policy": {"program": "seed:cache_policy/aware"}}}


def _cfg(budget: int = 30, targets: bool = True, ops: dict | None = None):
    return config_from_dict({
        "target": {"slots": ["scheduler", "cache_policy"], "runtime": RUNTIME},
        "operators": ops or {"gp": 3, "literal": 3, "assemble": 1},
        "search": {"targets": targets},
        "evaluation": {"workloads": ["w1"], "device": "cpu"},
        "budget": {"max_evaluations": budget},
        "concurrency": {"max_proposals": 1, "max_evaluations": 1}, "seed": 5}, "t.yaml")


def test_targets_are_the_seed_programs_functions(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/t.db")
    assert search_targets(_cfg(), store) == {
        "scheduler": ["priority", "defer", "victim", "reserve"], "cache_policy": ["score"]}
    assert search_targets(_cfg(targets=False), store) is None


def test_weights_split_so_operator_and_slot_keep_their_chances():
    targets = {"scheduler": ["priority", "defer", "victim", "reserve"],
               "cache_policy": ["score"]}
    arms = run_arms(_cfg(), targets)
    assert arms["assemble"] == 1  # not aimable: one arm
    assert arms["gp#scheduler.priority"] == 3 / 2 / 4
    assert arms["gp#cache_policy.score"] == 3 / 2
    assert arms["literal#scheduler.victim"] == 3 / 2 / 4
    for op in ("gp", "literal"):  # the operator's weight, half of it per slot
        assert abs(sum(w for a, w in arms.items() if operator_of(a) == op) - 3) < 1e-12
        assert abs(sum(w for a, w in arms.items()
                       if operator_of(a) == op and target_of(a)[0] == "scheduler") - 1.5) < 1e-12
    assert target_of("gp#scheduler.priority") == ("scheduler", "priority")
    assert target_of("gp#cache_policy") == ("cache_policy", None)
    assert target_of("llm-diff@m1") == (None, None)
    assert run_arms(_cfg(), None) == {"gp": 3, "literal": 3, "assemble": 1}


def _ctx(focus: str | None, seed: int) -> MutationContext:
    parent = Candidate(1, 1, "scheduler", POLICY, {"slots": {}})
    return MutationContext(slot="scheduler", contract="", parent=parent, focus=focus,
                           rng=random.Random(seed))


def _bodies(code: str) -> dict[str, str]:
    return {n.name: ast.unparse(n) for n in ast.parse(code).body
            if isinstance(n, ast.FunctionDef)}


def test_gp_and_literal_change_only_the_function_they_are_aimed_at():
    before = _bodies(POLICY)
    for seed in range(12):
        for op, focus in (("gp", "victim"), ("gp", "reserve"), ("literal", "priority")):
            out = make_operator(op, {}).propose(_ctx(focus, seed))
            assert isinstance(out, Proposal), out
            after = _bodies(out.code)
            changed = {f for f in before if before[f] != after[f]}
            assert changed == {focus}, (op, focus, seed, changed)
    # `victim` holds no constant to perturb: said so, nothing else is changed instead
    out = make_operator("literal", {}).propose(_ctx("victim", 0))
    assert isinstance(out, Rejected) and "victim" in out.reason


class AimedTagger:
    """A fake `gp`: a '# good' line when aimed at `priority`, a neutral line elsewhere."""

    name = "gp"

    def propose(self, ctx: MutationContext) -> Proposal:
        tag = "good" if ctx.focus == "priority" else "meh"
        return Proposal(self.name, ctx.slot,
                        code=inside_block(ctx.parent.code, f"# {tag} {ctx.rng.getrandbits(48)}"))


def _run(store: Store, budget: int) -> Controller:
    cfg = _cfg(budget, ops={"gp": 1})
    ctl = Controller(cfg, store, ScoredByCode(store), name="t", operators={"gp": AimedTagger()})
    ctl.run()
    return ctl


def test_a_run_learns_which_function_pays_and_a_resume_knows_it(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/t.db")
    ctl = _run(store, 40)
    rows = {s.arm: s for s in ctl.bandit_status()}
    assert set(rows) == {"gp#scheduler.priority", "gp#scheduler.defer", "gp#scheduler.victim",
                         "gp#scheduler.reserve", "gp#cache_policy.score"}
    pulls = {a: r.pulls for a, r in rows.items()}
    # the prior gives priority 1/8 of the pulls; the bandit learned to give it the most
    assert pulls["gp#scheduler.priority"] > 0.4 * sum(pulls.values()), pulls
    assert rows["gp#scheduler.priority"].improved > 0
    assert all(r.improved == 0 for a, r in rows.items() if a != "gp#scheduler.priority")
    run = store.get_run("t")
    cfg = _cfg(40, ops={"gp": 1})
    restored, _ = restore(cfg, store, run.id, load_state(store, run.id), store.events(run.id))
    _same(ctl.bandit, restored)


def test_leverage_explores_the_function_whose_changes_move_the_objective():
    from evolve.bandit import Pull, ThompsonBandit

    def fed(leverage: float) -> dict[str, float]:
        b = ThompsonBandit({"victim": 1.0, "priority": 1.0}, leverage=leverage)
        for _ in range(10):  # victim: small gains often; priority: large moves, mostly worse
            b.record(Pull("victim", 0.002, 1.0, 0.002))
            b.record(Pull("priority", 0.0, 1.0, 0.008))
        return b.probabilities()

    assert fed(0.0)["victim"] > 0.9  # gains alone: the small sure thing takes everything
    assert fed(1.0)["priority"] > 0.6  # with spread: the lever that moves things is tried


def test_gp_mutation_weights():
    with __import__("pytest").raises(ValueError, match="mapping"):
        make_operator("gp", {"mutations": {"add_term": -1}})
    op = make_operator("gp", {"mutations": {"add_term": 1, "shrink": 0}})
    assert op.mutations == ("add_term",)
    for seed in range(5):
        out = op.propose(_ctx("priority", seed))
        assert "mut_add_term" in out.note, out.note


def test_every_arm_is_tried_before_the_posterior_decides():
    from evolve.bandit import Pull, ThompsonBandit

    rng = random.Random(3)
    b = ThompsonBandit({"a": 10.0, "b": 1.0, "c": 0.1}, min_pulls=2)
    for _ in range(6):
        arm = b.choose(rng)
        b.record(Pull(arm, 0.05 if arm == "a" else 0.0, 1.0))
    assert b.pulls == {"a": 2, "b": 2, "c": 2}
    late = [b.choose(rng) for _ in range(50)]
    assert late.count("a") > 40  # then the posterior: the arm that paid
    assert ThompsonBandit({"a": 1.0}, enabled=False, min_pulls=5).choose(rng) == "a"
