"""How `gp` changes an expression is chosen by a bandit of its own, and a change that hurts a
lot has its opposite tried next (`search.reflect`): operator outputs, the controller's use of
them, and the state a resumed run or `sds status` rebuilds."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bandit import _same
from test_bandit_targets import POLICY, RUNTIME
from test_controller_fakes import FakeReport, inside_block

from evolve.bandit import restore, stored_status, variation_bandit
from evolve.config import config_from_dict
from evolve.controller import Controller
from evolve.operators import Candidate, MutationContext, Proposal, make_operator
from evolve.operators.literal import mirror, numeric_literals
from evolve.population import load_state, slot_code
from fitness.result import StageResult
from population_db import Store

TERM = re.compile(r"\+ (-?[0-9.e+-]+) \* (\w+)$")


def _ctx(seed: int, focus: str = "priority", variation: str | None = None,
         second: str | None = None) -> MutationContext:
    parent = Candidate(1, 1, "scheduler", POLICY, {"slots": {}})
    other = Candidate(2, 2, "scheduler", second, {"slots": {}}) if second else None
    return MutationContext(slot="scheduler", contract="", parent=parent, second_parent=other,
                           focus=focus, variation=variation, rng=random.Random(seed))


def test_add_term_carries_the_same_term_with_the_other_sign():
    op = make_operator("gp", {"mutations": {"add_term": 1}})
    for seed in range(10):
        out = op.propose(_ctx(seed))
        assert isinstance(out, Proposal) and out.variation == "add_term", out
        child, back = TERM.search(out.note), TERM.search(out.reverse_note)
        assert child and back, (out.note, out.reverse_note)
        assert back.group(2) == child.group(2)  # the same feature
        assert float(back.group(1)) == -float(child.group(1))  # weighted the other way
        assert out.reverse not in (out.code, POLICY)
        # both differ from the parent in the priority function only, at the same place
        assert out.code.replace(child.group(0), "") == out.reverse.replace(back.group(0), "")


def test_other_variations_say_what_they_were_and_carry_no_reverse():
    op = make_operator("gp", {})
    for variation in ("uniform", "node_replacement", "shrink", "ephemeral"):
        for seed in range(3):
            out = op.propose(_ctx(seed, variation=variation))
            assert isinstance(out, Proposal), out
            assert out.variation == variation and f"mut_{variation}" in out.note
            assert out.reverse is None
    # crossover when asked for and there is a second tree for the function
    other = POLICY.replace("return wait_steps + 4.0 * num_preemptions - 0.01 * prompt_len",
                           "return remaining * 2.0 - cached")
    out = op.propose(_ctx(1, variation="crossover", second=other))
    assert out.variation == "crossover" and "cxOnePoint" in out.note, out.note
    # without a second tree it falls back to a mutation, and says which
    out = op.propose(_ctx(1, variation="crossover"))
    assert isinstance(out, Proposal) and out.variation in op.mutations
    weights = make_operator("gp", {"crossover_prob": 0.2, "mutations": {
        "add_term": 3, "shrink": 1}}).variation_weights()
    assert weights == pytest.approx({"add_term": 0.6, "shrink": 0.2, "crossover": 0.2})


def test_literal_reverse_moves_each_constant_as_far_the_other_way():
    assert mirror("0.01", "0.02") == "0.005"
    assert mirror("4.0", "2.0") == "8.0"
    assert mirror("4", "6") == "2" and mirror("3", "7") is None  # no negative literal
    assert mirror("64", "128") == "32" and mirror("64", "32") == "128"
    assert mirror("0.0", "0.05") is None  # the other way from 0 is negative: no literal
    op = make_operator("literal", {"sigma": 1.0, "max_changes": 2})
    for seed in range(8):
        out = op.propose(_ctx(seed))
        assert isinstance(out, Proposal), out
        before = [t for *_, t in numeric_literals(POLICY)]
        child = [t for *_, t in numeric_literals(out.code)]
        back = [t for *_, t in numeric_literals(out.reverse)]
        for b, c, r in zip(before, child, back):
            if b == c:
                assert r == b
            else:  # the same factor, inverted (3 significant digits of rounding)
                assert abs(float(c) * float(r) - float(b) ** 2) <= 2e-3 * float(b) ** 2


class ByTags:
    """tok_s = 100 * 1.05^(# good lines) * 0.9^(# bad lines) over the scheduler's code."""

    def __init__(self, store: Store):
        self.store = store

    def evaluate(self, spec, stages=(), workload="", **kw):
        code = slot_code(self.store, "scheduler", spec["slots"]["scheduler"]["program"])
        tok_s = 100.0 * 1.05 ** code.count("# good") * 0.9 ** code.count("# bad")
        return FakeReport([StageResult(s, "passed", duration_s=0.01) for s in stages],
                          {"tok_s": tok_s})


class Lever:
    """A fake `gp`: every child adds a `# bad` line (10% worse) and carries, as its
    reverse, the parent with a `# good` line (5% better); the variation it was asked for
    is the one it reports."""

    name = "gp"

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    def propose(self, ctx: MutationContext) -> Proposal:
        self.asked.append(ctx.variation)
        tag = ctx.rng.getrandbits(48)
        return Proposal(self.name, ctx.slot, code=inside_block(ctx.parent.code, f"# bad {tag}"),
                        variation=ctx.variation or "add_term",
                        reverse=inside_block(ctx.parent.code, f"# good {tag}"),
                        reverse_note=f"good {tag}")


def _cfg(budget: int, **search):
    return config_from_dict({
        "target": {"slots": ["scheduler"], "runtime": {"slots": {
            "scheduler": RUNTIME["slots"]["scheduler"]}}},
        "operators": {"gp": 1}, "search": search,
        "evaluation": {"workloads": ["w1"], "device": "cpu"},
        "budget": {"max_evaluations": budget},
        "concurrency": {"max_proposals": 1, "max_evaluations": 1}, "seed": 4}, "t.yaml")


def _run(tmp_path, budget: int = 13, **search):
    store = Store.open(f"sqlite:///{tmp_path}/r.db")
    ctl = Controller(_cfg(budget, **search), store, ByTags(store), name="r",
                     operators={"gp#scheduler.priority": Lever(), "gp": Lever()})
    ctl.run()
    return store, ctl


def test_a_child_much_worse_than_its_parent_has_its_opposite_bred_next(tmp_path):
    store, ctl = _run(tmp_path)
    run = store.get_run("r")
    events = store.events(run.id)
    reflected = [e.data["runtime"] for e in events if e.kind == "reflect"]
    notes = {e.data["runtime"]: e.data for e in events if e.kind == "bandit"}
    assert len(reflected) >= 3, [e.kind for e in events]
    for rid in reflected:
        m = ctl.st.members[rid]
        parent = dict(ctl.st.edges[rid])
        p_id = next(p for p, role in parent.items() if role == "parent")
        # the opposite: a child of the same parent, credited to the same arm
        twin = [c for c, d in notes.items() if d.get("note", "").startswith(f"reflects r{rid}:")]
        assert len(twin) == 1, (rid, twin)
        t = twin[0]
        assert next(p for p, role in ctl.st.edges[t] if role == "parent") == p_id
        assert notes[t]["arm"] == notes[rid]["arm"]
        assert ctl.st.members[t].metrics["tok_s"] > ctl.st.members[p_id].metrics["tok_s"] \
            > m.metrics["tok_s"]
    assert all(e.data["change"] <= -0.02 for e in events if e.kind == "reflect")
    # reflections (the `good` children) never get reflected themselves
    assert not set(reflected) & {c for c, d in notes.items() if "reflects" in d.get("note", "")}
    best = max(ctl.st.members.values(), key=lambda m: m.metrics.get("tok_s", 0))
    assert best.metrics["tok_s"] > 100 * 1.05 ** 2 - 1e-6  # opposites of opposites' children


def test_no_reflection_when_off_or_for_random_sampling(tmp_path):
    for i, search in enumerate(({"reflect": None}, {"method": "random"},
                                {"reflect": 0.5})):  # 10% worse is not 50% worse
        store, _ = _run(tmp_path / str(i), 8, **search)
        events = store.events(store.get_run("r").id)
        assert not [e for e in events if e.kind == "reflect"], search
        assert not [e for e in events if "reflects" in (e.data or {}).get("note", "")]


class ByVariation:
    """A fake `gp` whose child is better (`# good`) only when asked for `shrink`."""

    name = "gp"

    def propose(self, ctx: MutationContext) -> Proposal:
        tag = "good" if ctx.variation == "shrink" else "meh"
        return Proposal(self.name, ctx.slot, variation=ctx.variation or "uniform",
                        code=inside_block(ctx.parent.code, f"# {tag} {ctx.rng.getrandbits(48)}"))


def test_the_variation_bandit_learns_which_variation_pays_and_is_restored(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/v.db")
    cfg = _cfg(40, reflect=None)
    ctl = Controller(cfg, store, ByTags(store), name="v",
                     operators={"gp#scheduler.priority": ByVariation(), "gp": ByVariation()})
    ctl.run()
    v = ctl.bandit.variations
    assert v is not None and set(v.prior) == {f"gp/{k}" for k in (
        "uniform", "node_replacement", "ephemeral", "shrink", "add_term", "crossover")}
    # the prior gives shrink 1/10 of the choices (crossover 0.5, five mutations share the rest)
    assert v.pulls["gp/shrink"] > 0.4 * sum(v.pulls.values()), v.pulls
    assert v.improved["gp/shrink"] > 0 and sum(v.improved.values()) == v.improved["gp/shrink"]
    run = store.get_run("v")
    restored, _ = restore(cfg, store, run.id, load_state(store, run.id), store.events(run.id))
    _same(v, restored.variations)
    status = stored_status(store, "v")
    rows = {a["arm"]: a for a in status["variations"]}
    assert rows["gp/shrink"]["pulls"] == v.pulls["gp/shrink"]
    # random sampling: no variation bandit in charge, the operator draws by its own weights
    assert variation_bandit(_cfg(5, method="random")).enabled is False
    assert stored_status(store, "v")["variations"]  # what `sds status` shows
