"""Every scheduler x cache-policy seed finishes every request exactly once under KV
pressure and shared prefixes (engine with the stub runner), and the seeds are editable
self-contained modules."""

from __future__ import annotations

import ast
import random

import pytest

from runtime_modules import LLM, SamplingParams
from runtime_modules.slots import EVOLVE_END, EVOLVE_START, SEEDS_DIR, seed_names
from runtime_modules.stub import StubRunner

SCHEDULERS = seed_names("scheduler")
POLICIES = seed_names("cache_policy")


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_request_finishes_once_with_invariants(scheduler, policy):
    rng = random.Random(f"{scheduler}{policy}")
    llm = LLM("tiny", runtime={"slots": {"scheduler": scheduler, "cache_policy": policy}},
              runner_factory=StubRunner, device="cpu", block_size=4, num_kv_blocks=40,
              max_num_seqs=8, max_num_batched_tokens=48, max_model_len=96)
    shared = [rng.randrange(2, 1024) for _ in range(16)]
    want = {}
    finished: dict[int, list[int]] = {}
    eng = llm.engine
    for step in range(4000):
        if step < 60 and rng.random() < 0.5:  # arrivals spread over time
            n = rng.randrange(1, 50)
            prompt = (shared[: rng.randrange(17)] if rng.random() < 0.5 else []) + [
                rng.randrange(2, 1024) for _ in range(n)]
            mt = rng.randrange(1, 30)
            rid = llm.add_request(prompt, SamplingParams(temperature=0.7, max_tokens=mt,
                                                         ignore_eos=True))
            want[rid] = mt
        for out in llm.step():
            assert out.request_id not in finished
            finished[out.request_id] = out.token_ids
        eng.block_manager.check_invariants(list(eng.live.values()))
        if step >= 60 and not llm.has_unfinished():
            break
    assert finished.keys() == want.keys()
    assert all(len(finished[r]) == want[r] for r in want)
    assert eng.block_manager.num_free_blocks == 40
    assert llm.stats["preemptions"] > 0 and llm.stats["prefix_cache_hit_tokens"] > 0


def _module(path):
    return ast.parse(path.read_text())


@pytest.mark.parametrize("ref", SCHEDULERS + POLICIES)
def test_seeds_are_self_contained_documented_and_marked(ref):
    slot, name = ref[5:].split("/")
    path = SEEDS_DIR / slot / f"{name}.py"
    tree = _module(path)
    assert ast.get_docstring(tree), f"{path} has no module docstring"
    for node in tree.body:  # runtime imports only under TYPE_CHECKING
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            assert not (mod or "").startswith("runtime_modules"), f"{path} imports {mod}"
    code = path.read_text()
    assert code.count(EVOLVE_START) >= 1 and code.count(EVOLVE_START) == code.count(EVOLVE_END)


@pytest.mark.parametrize("ref", ["seed:scheduler/priority", "seed:cache_policy/scored"])
def test_gp_targets_are_a_single_return_inside_an_evolve_block(ref):
    slot, name = ref[5:].split("/")
    path = SEEDS_DIR / slot / f"{name}.py"
    tree = _module(path)
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
              and n.name == consts["GP_TARGET"])
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value,
                                                                              ast.Constant))]
    assert len(body) == 1 and isinstance(body[0], ast.Return)
    lines = path.read_text().splitlines()
    ret = body[0].lineno - 1
    assert lines[ret - 1].strip() == EVOLVE_START and lines[ret + 1].strip() == EVOLVE_END
    assert all(a.annotation is not None for a in fn.args.args)


@pytest.mark.parametrize("watermark", [0, 64])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_no_stall_with_prompts_over_the_token_budget_or_a_watermark_over_the_cache(
        scheduler, watermark):
    """Prompts longer than the token budget (prefilled in pieces), a KV cache that holds a
    few sequences, and a watermark larger than the whole cache: every request still ends."""
    for trial in range(12):
        rng = random.Random(f"{scheduler}{watermark}{trial}")
        blocks, budget = rng.randrange(10, 30), rng.randrange(8, 40)
        llm = LLM("tiny", runner_factory=StubRunner, device="cpu", block_size=4,
                  runtime={"slots": {"scheduler": {
                      "program": scheduler, "params": {"watermark_blocks": watermark}}}},
                  num_kv_blocks=blocks, max_num_seqs=6, max_num_batched_tokens=budget,
                  max_model_len=4 * blocks, enable_prefix_caching=trial % 2 == 0,
                  freeze_gc=False)
        want = {}
        for _ in range(rng.randrange(2, 10)):
            n = rng.randrange(1, 2 * blocks)
            sp = SamplingParams(max_tokens=rng.randrange(1, 4 * blocks - n), ignore_eos=True)
            want[llm.add_request([rng.randrange(2, 1024) for _ in range(n)], sp)] = sp.max_tokens
        got = {}
        while llm.has_unfinished():
            for out in llm.step():
                got[out.request_id] = len(out.token_ids)
            llm.engine.block_manager.check_invariants(list(llm.engine.live.values()))
        assert got == want
        assert llm.engine.block_manager.num_free_blocks == blocks
