"""Feature scales: what the evolvable functions see in a simulation, and what gp does with it."""

from __future__ import annotations

import ast
import math
import random
import types

from evolve.operators import Candidate, MutationContext, make_operator
from evolve.operators.gp import _scaled_constant
from fitness.features import FeatureProbe, scales_of, use_of, variation_of
from fitness.sim import simulate
from fitness.workloads import get_workload

SEED = {"slots": {"scheduler": {"program": "seed:scheduler/policy"},
                  "cache_policy": {"program": "seed:cache_policy/aware"}}}

PRIORITY = '''"""fixture"""
GP_TARGET = "priority"


def priority(wait_steps, cached, rare) -> float:
    """Higher first."""
    # EVOLVE-BLOCK-START
    return wait_steps
    # EVOLVE-BLOCK-END
'''


def test_probe_records_mean_magnitudes_and_restores_the_function():
    mod = types.ModuleType("m")
    exec(PRIORITY, mod.__dict__)  # noqa: S102 - a fixture module from a literal
    original = mod.priority
    probe = FeatureProbe(every=1)
    probe.attach([mod])
    assert mod.priority is not original
    for i in range(10):  # cached is -1000 on every call, rare nonzero once
        assert mod.priority(float(i), -1000.0, 50.0 if i == 3 else 0.0) == float(i)
    probe.detach()
    assert mod.priority is original
    s = probe.scales()
    assert s["feat:priority:cached"] == 1000.0
    assert s["feat:priority:wait_steps"] == 4.5
    assert s["feat:priority:rare"] == 5.0  # a mean: a mostly-0 feature still has a scale
    assert s["feat:priority:return"] == 4.5
    assert scales_of(s, "priority") == {"wait_steps": 4.5, "cached": 1000.0, "rare": 5.0,
                                        "return": 4.5}
    # between consecutive calls: wait_steps always changed, cached never, rare twice in 9
    assert variation_of(s, "priority") == {"wait_steps": 1.0, "cached": 0.0, "rare": 2 / 9}


def test_add_term_prefers_features_that_vary_between_consecutive_calls():
    metrics = {"feat:priority:wait_steps": 50.0, "feat:priority:cached": 5000.0,
               "feat:priority:rare": 5.0, "feat:priority:return": 50.0,
               "featvar:priority:wait_steps": 1.0, "featvar:priority:cached": 0.5,
               "featvar:priority:rare": 0.0}
    op = make_operator("gp", {"mutations": ["add_term"]})
    picked = []
    for seed in range(200):
        parent = Candidate(1, 1, "scheduler", PRIORITY, {"slots": {}}, metrics)
        out = op.propose(MutationContext(slot="scheduler", contract="", parent=parent,
                                         rng=random.Random(seed)))
        picked.append(out.note.rsplit("* ", 1)[1])
    # fresh (3 in 4): cached 0.5 against rare's floor 0.02
    assert picked.count("cached") > 5 * picked.count("rare"), picked
    # the expression's own wait_steps (the most varied) only from the 1 in 4 drawn from all
    assert 0.1 * len(picked) < picked.count("wait_steps") < 0.4 * len(picked), picked


def test_add_term_mostly_brings_in_a_feature_the_expression_lacks():
    metrics = {f"featvar:priority:{a}": 1.0 for a in ("wait_steps", "cached", "rare")}
    op = make_operator("gp", {"mutations": ["add_term"]})
    code = PRIORITY.replace("return wait_steps", "return wait_steps + rare")
    assert code != PRIORITY  # the expression uses wait_steps and rare; cached is unused
    parent = Candidate(1, 1, "scheduler", code, {"slots": {}}, metrics)
    picked = [op.propose(MutationContext(slot="scheduler", contract="", parent=parent,
                                         rng=random.Random(seed))).note.rsplit("* ", 1)[1]
              for seed in range(300)]
    # 3 in 4 from the unused one, plus its third of the 1 in 4 drawn from all: ~0.83
    share = picked.count("cached") / len(picked)
    assert share > 0.7, {a: picked.count(a) for a in set(picked)}


def test_probe_measures_which_arguments_the_result_depends_on():
    mod = types.ModuleType("m")
    exec(PRIORITY.replace("return wait_steps", "return wait_steps + cached * rare"),  # noqa: S102
         mod.__dict__)
    probe = FeatureProbe(every=1)
    probe.attach([mod])
    for i in range(41):  # cached differs on every call; rare is nonzero on 2 of them
        mod.priority(float(i), float(1000 + 7 * i), 1.0 if i in (10, 30) else 0.0)
    probe.detach()
    uses = use_of(probe.scales(), "priority")
    assert uses["wait_steps"] == 1.0
    # cached changes the result only where rare is nonzero: 2 of the 40 calls with a previous
    assert uses["cached"] == 2 / 40
    # rare changes it where it differs from the previous call's: calls 10, 11, 30, 31
    assert uses["rare"] == 4 / 40


def test_add_term_counts_a_named_but_unused_feature_as_fresh():
    code = PRIORITY.replace("return wait_steps", "return wait_steps + cached * rare")
    varies = {f"featvar:priority:{a}": 1.0 for a in ("wait_steps", "cached", "rare")}
    op = make_operator("gp", {"mutations": ["add_term"]})

    def picks(metrics: dict) -> list[str]:
        parent = Candidate(1, 1, "scheduler", code, {"slots": {}}, metrics)
        return [op.propose(MutationContext(slot="scheduler", contract="", parent=parent,
                                           rng=random.Random(seed))).note.rsplit("* ", 1)[1]
                for seed in range(200)]

    # named: every feature counts as used, so the draw is from all three alike
    named = picks(varies)
    assert 0.2 < named.count("cached") / len(named) < 0.5, named
    # measured: the result almost never depends on cached (rare is mostly 0), so it is the
    # fresh feature and drawn 3 in 4 plus its share of the rest
    measured = picks({**varies, "featuse:priority:wait_steps": 1.0,
                      "featuse:priority:cached": 0.01, "featuse:priority:rare": 0.3})
    assert measured.count("cached") / len(measured) > 0.7, measured


def test_sim_reports_scales_without_changing_the_result():
    wl = get_workload("kv-pressure-cpu")  # preempts: `victim` is called too
    plain = simulate(SEED, wl, model="tiny")
    probed = simulate(SEED, wl, model="tiny", features=True)
    feats = {k: v for k, v in probed.items() if k.startswith("feat:")}
    assert {k: v for k, v in probed.items()
            if not k.startswith(("feat:", "featvar:", "featuse:"))} == plain
    # the policy seed's four decisions and the cache score were all seen
    for fn in ("priority", "defer", "victim", "reserve", "score"):
        assert f"feat:{fn}:return" in feats, (fn, sorted(feats))
    assert plain["work_preemptions"] > 0
    assert feats["feat:priority:prompt_len"] > 10
    # the seed's admission order depends on prompt_len, never on queue (not in it)
    assert probed["featuse:priority:prompt_len"] > 0.1
    assert probed["featuse:priority:queue"] == 0.0
    assert feats["feat:reserve:total"] == plain["num_kv_blocks"]  # read at every admission
    # the probe is gone: a second plain run agrees
    assert simulate(SEED, wl, model="tiny") == plain


def test_scaled_constant_sizes_the_new_term_like_the_expression():
    rng = random.Random(7)
    scales = {"wait_steps": 100.0, "cached": 2000.0, "return": 100.0, "never": 0.0}
    weights = [_scaled_constant(scales, "cached", rng) for _ in range(400)]
    terms = [abs(w) * 2000.0 / 100.0 for w in weights]  # term size / expression size
    assert all(0.099 <= t <= 10.1 for t in terms), (min(terms), max(terms))
    assert 0.3 < sum(w > 0 for w in weights) / len(weights) < 0.7
    logs = sorted(math.log10(t) for t in terms)
    assert abs(logs[len(logs) // 2]) < 0.2  # log-uniform around 1
    # no scale for the feature: the unscaled draw (1e-3..10)
    other = [abs(_scaled_constant(scales, "never", rng)) for _ in range(200)]
    assert min(other) < 0.01 and max(other) > 1


def test_gp_add_term_uses_the_parents_measured_scales():
    metrics = {"feat:priority:wait_steps": 50.0, "feat:priority:cached": 5000.0,
               "feat:priority:rare": 0.0, "feat:priority:return": 50.0}
    op = make_operator("gp", {"mutations": ["add_term"]})
    seen = 0
    for seed in range(40):
        parent = Candidate(1, 1, "scheduler", PRIORITY, {"slots": {}}, metrics)
        out = op.propose(MutationContext(slot="scheduler", contract="", parent=parent,
                                         rng=random.Random(seed)))
        assert out.code, out
        expr = out.note.split(": ", 1)[1]
        tree = ast.parse(expr, mode="eval").body
        assert isinstance(tree, ast.BinOp) and isinstance(tree.right, ast.BinOp)
        if ast.unparse(tree.right.right) == "cached":
            seen += 1
            weight = ast.literal_eval(ast.unparse(tree.right.left))
            assert 0.099 * 50 / 5000 <= abs(weight) <= 10.1 * 50 / 5000, expr
    assert seen >= 5
