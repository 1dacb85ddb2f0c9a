"""gp, literal and assemble: valid, parseable, different children, reproducible per seed."""

from __future__ import annotations

import ast
import io
import random
import tokenize
from pathlib import Path

import pytest

from evolve.operators import Candidate, MutationContext, Proposal, Rejected, gp_tree, make_operator
from runtime_modules.slots import SEEDS_DIR, check_evolve_blocks, load_slot

PRIORITY = '''"""A scheduler priority in the GP-ready form (test fixture)."""

GP_TARGET = "priority"
TUNABLES = {"chunk": (16, 512)}


def priority(wait_steps, prompt_len, num_computed, remaining, num_preemptions) -> float:
    """Higher runs first."""
    # EVOLVE-BLOCK-START
    return float(wait_steps) - 0.01 * remaining + max(2 * num_preemptions, prompt_len / 64)
    # EVOLVE-BLOCK-END


def helper(x):
    return x * 3 + 7  # 11 stays: outside the block
'''

LITERALS = '''"""Constants inside and outside an EVOLVE-BLOCK (test fixture)."""

LIMIT = 128


def f(x, y):
    # EVOLVE-BLOCK-START
    scale = 0.75  # not 9
    steps = 12
    name = "keep 42"
    return x * scale + y ** 2 + steps + 1e-3
    # EVOLVE-BLOCK-END
'''

SCORED = SEEDS_DIR / "cache_policy" / "scored.py"
PRIORITY_SEED = SEEDS_DIR / "scheduler" / "priority.py"
GP_SEEDS = [("cache_policy", SCORED, "score"), ("scheduler", PRIORITY_SEED, "priority")]


def ctx(code: str, seed: int, second: str | None = None, slot: str = "scheduler",
        spec: dict | None = None, spec2: dict | None = None) -> MutationContext:
    parent = Candidate(1, 1, slot, code, spec or {"slots": {}})
    sp = None if second is None and spec2 is None else Candidate(2, 2, slot, second or code,
                                                                 spec2 or {"slots": {}})
    return MutationContext(slot=slot, contract="", parent=parent, second_parent=sp,
                           rng=random.Random(seed))


@pytest.mark.parametrize("code", [PRIORITY] + [p.read_text() for _, p, _ in GP_SEEDS],
                         ids=["priority-fixture", "seed-scored", "seed-priority"])
def test_gp_children_are_valid_different_and_reproducible(code):
    op = make_operator("gp", {"max_height": 6})
    state = random.getstate()
    children = []
    for seed in range(12):
        r = op.propose(ctx(code, seed))
        assert isinstance(r, Proposal), r
        assert r.code != code and check_evolve_blocks(code, r.code) is None
        ast.parse(r.code)
        target = gp_tree.find_target(r.code)  # still GP-ready: the next generation can vary it
        tree = gp_tree.to_tree(target.expr, gp_tree.primitive_set(target.args))
        assert tree.height <= 6
        assert r.code == op.propose(ctx(code, seed)).code  # same seed, same child
        children.append(r.code)
    assert len(set(children)) >= 6
    assert random.getstate() == state  # DEAP drew from ctx.rng, not the global random


@pytest.mark.parametrize("slot, path, fn", GP_SEEDS, ids=["scored", "priority"])
def test_gp_child_of_a_seed_loads_and_computes_its_expression(tmp_path: Path, slot, path, fn):
    r = make_operator("gp", {}).propose(ctx(path.read_text(), 3, slot=slot))
    child = tmp_path / "child.py"
    child.write_text(r.code)
    loaded = load_slot(slot, f"file:{child}")
    target = gp_tree.find_target(r.code)
    expr = gp_tree.render(gp_tree.to_tree(target.expr, gp_tree.primitive_set(target.args)))
    rng = random.Random(5)
    args = [rng.uniform(1, 100) for _ in target.args]
    assert getattr(loaded.module, fn)(*args) == pytest.approx(
        gp_tree.evaluate(expr, target.args, args))


def test_gp_crossover_takes_material_from_the_second_parent():
    other = PRIORITY.replace("0.01 * remaining", "min(num_computed, 777.0)")
    op = make_operator("gp", {"crossover_prob": 1.0})
    notes = [op.propose(ctx(PRIORITY, s, second=other)) for s in range(10)]
    assert all(isinstance(r, Proposal) and r.note.startswith("cxOnePoint") for r in notes)
    assert any("777.0" in r.code or "num_computed" in r.code for r in notes)


def test_gp_render_round_trips():
    target = gp_tree.find_target(PRIORITY)
    pset = gp_tree.primitive_set(target.args)
    src = gp_tree.render(gp_tree.to_tree(target.expr, pset))
    again = gp_tree.render(gp_tree.to_tree(ast.parse(src, mode="eval").body, pset))
    assert src == again and "prompt_len / 64.0" in src  # a constant divisor needs no guard
    guarded = gp_tree.render(gp_tree.to_tree(ast.parse("wait_steps / (remaining - 3)",
                                                       mode="eval").body, pset))
    assert gp_tree.evaluate(guarded, target.args, [5.0, 0, 0, 3.0, 0]) == 1.0  # protected
    assert guarded == gp_tree.render(gp_tree.to_tree(ast.parse(guarded, mode="eval").body, pset))
    rng = random.Random(9)
    vals = [rng.uniform(1, 50) for _ in target.args]
    assert gp_tree.evaluate(src, target.args, vals) == pytest.approx(
        vals[0] - 0.01 * vals[3] + max(2 * vals[4], vals[1] / 64))


@pytest.mark.parametrize("code, reason", [
    (PRIORITY.replace('GP_TARGET = "priority"', ""), "no GP_TARGET"),
    (PRIORITY.replace('"priority"', '"prio"'), "no module-level def prio"),
    (PRIORITY.replace("0.01 * remaining", "remaining ** 2"), "unsupported construct"),
    (PRIORITY.replace("    # EVOLVE-BLOCK-START\n", "").replace("    # EVOLVE-BLOCK-END\n", ""),
     "not inside an EVOLVE-BLOCK"),
])
def test_gp_rejects_modules_it_cannot_vary(code, reason):
    r = make_operator("gp", {}).propose(ctx(code, 0))
    assert isinstance(r, Rejected) and reason in r.reason


def _numbers(code: str) -> list[str]:
    return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline)
            if t.type == tokenize.NUMBER]


def test_literal_changes_only_numbers_inside_blocks_keeping_types():
    op = make_operator("literal", {"max_changes": 3})
    before = _numbers(LITERALS)
    seen = set()
    for seed in range(15):
        r = op.propose(ctx(LITERALS, seed))
        assert isinstance(r, Proposal), r
        assert check_evolve_blocks(LITERALS, r.code) is None and r.code != LITERALS
        ast.parse(r.code)
        after = _numbers(r.code)
        assert len(after) == len(before) and after[0] == "128"  # LIMIT is outside
        for old, new in zip(before, after):
            assert ("." in old or "e" in old) == ("." in new or "e" in new)  # ints stay ints
            assert float(new) >= 0
        assert '"keep 42"' in r.code and "# not 9" in r.code
        assert r.code == op.propose(ctx(LITERALS, seed)).code
        seen.add(r.code)
    assert len(seen) >= 10


def test_literal_keeps_powers_of_two_powers_of_two():
    code = "def f(x):\n    # EVOLVE-BLOCK-START\n    return x[:64]\n    # EVOLVE-BLOCK-END\n"
    news = {make_operator("literal", {}).propose(ctx(code, s)).code for s in range(10)}
    assert news == {code.replace("64", "128"), code.replace("64", "32")}


def test_literal_rejects_code_without_blocks_or_numbers():
    no_block = "def f(x):\n    return x * 2.5\n"
    r = make_operator("literal", {}).propose(ctx(no_block, 0))
    assert isinstance(r, Rejected) and "no EVOLVE-BLOCK" in r.reason
    no_num = "def f(x):\n    # EVOLVE-BLOCK-START\n    return x\n    # EVOLVE-BLOCK-END\n"
    r = make_operator("literal", {}).propose(ctx(no_num, 0))
    assert isinstance(r, Rejected) and "no numeric constants" in r.reason


SPEC_A = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"},
                    "cache_policy": {"program": "seed:cache_policy/scored",
                                     "params": {"window": 8}}},
          "engine": {"max_num_seqs": 64, "block_size": 16}}
SPEC_B = {"slots": {"scheduler": {"program": "sha256:" + "ab" * 32},
                    "cache_policy": {"program": "seed:cache_policy/scored",
                                     "params": {"window": 32}},
                    "rmsnorm": {"program": "seed:rmsnorm/torch_rms"}},
          "engine": {"max_num_seqs": 128, "max_num_batched_tokens": 2048}}


def test_assemble_mixes_genes_from_both_parents():
    op = make_operator("assemble", {})
    children = []
    for seed in range(20):
        r = op.propose(ctx("", seed, spec=SPEC_A, spec2=SPEC_B))
        assert isinstance(r, Proposal) and r.code is None and r.spec != SPEC_A
        for slot, choice in r.spec["slots"].items():
            options = [s["slots"].get(slot) for s in (SPEC_A, SPEC_B)]
            if slot == "cache_policy":  # same program: params drawn from either
                assert choice["params"]["window"] in (8, 32)
            else:
                assert choice in options
        for key, value in r.spec["engine"].items():
            assert value in (SPEC_A["engine"].get(key), SPEC_B["engine"].get(key))
        assert r.spec == op.propose(ctx("", seed, spec=SPEC_A, spec2=SPEC_B)).spec
        children.append(repr(r.spec))
    assert len(set(children)) >= 8


def test_assemble_rejects_without_a_distinct_second_parent():
    op = make_operator("assemble", {})
    r = op.propose(ctx("", 0, spec=SPEC_A))
    assert isinstance(r, Rejected) and "second parent" in r.reason
    r = op.propose(ctx("", 0, spec=SPEC_A, spec2=SPEC_A))
    assert isinstance(r, Rejected) and "no change" in r.reason


@pytest.mark.parametrize("name, options, needle", [
    ("gp", {"max_height": 0}, "operators.gp.max_height"),
    ("gp", {"crossover_prob": "high"}, "operators.gp.crossover_prob"),
    ("gp", {"mutations": ["flip"]}, "operators.gp.mutations"),
    ("literal", {"sigma": -1}, "operators.literal.sigma"),
    ("literal", {"max_change": 2}, "max_change"),
    ("assemble", {"attempts": 2.5}, "operators.assemble.attempts"),
])
def test_bad_options_name_the_key(name, options, needle):
    with pytest.raises(ValueError) as e:
        make_operator(name, options)
    assert needle in str(e.value)


def test_gp_is_reproducible_when_proposals_run_in_threads():
    from concurrent.futures import ThreadPoolExecutor

    op = make_operator("gp", {})
    sequential = [op.propose(ctx(PRIORITY, s)).code for s in range(16)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda s: op.propose(ctx(PRIORITY, s)).code, range(16)))
    assert threaded == sequential
