"""llm-diff and llm-rewrite end to end: real openai client, scripted loopback server.

Every case must end as a Proposal with checked code or a Rejected with its reason, and
every HTTP attempt must come back as an LLMCallRecord.
"""

from __future__ import annotations

import ast
import random

import pytest
from fake_llm_server import FakeLLMServer, Reply

from evolve.operators import Candidate, MutationContext, Proposal, Rejected, make_operator
from runtime_modules.slots import SLOTS

PARENT = '''"""A cache policy for tests: evicts the block with the lowest score."""

import heapq

TUNABLES = {"hit_weight": (0.0, 4.0)}


class CachePolicy:
    def __init__(self, num_blocks, hit_weight=1.0):
        self.free = {}
        self.hit_weight = hit_weight

    def add(self, block):
        self.free[block.block_id] = self.score(block)

    def remove(self, block_id):
        del self.free[block_id]

    def score(self, block):
        # EVOLVE-BLOCK-START
        value = block.freed_at + self.hit_weight * block.num_hits
        return value
        # EVOLVE-BLOCK-END

    def evict(self):
        block_id = min(self.free, key=self.free.get)
        del self.free[block_id]
        return block_id
'''

GOOD_DIFF = """Weight reuse more than age.
<<<<<<< SEARCH
        value = block.freed_at + self.hit_weight * block.num_hits
=======
        value = block.freed_at + 2.0 * self.hit_weight * block.num_hits + block.position
>>>>>>> REPLACE
"""


def ctx(seed: int = 0, **kw) -> MutationContext:
    parent = Candidate(runtime_id=7, program_id=3, slot="cache_policy", code=PARENT,
                       spec={"slots": {}}, metrics={"tok_s": 123.456, "hit_rate": 0.25},
                       artifacts={"bench": "prefix hits 12 of 40 blocks"})
    insp = (Candidate(1, 1, "cache_policy", "# BEST_PROGRAM_MARKER\nclass CachePolicy: ...\n",
                      {}, {"tok_s": 150.0}),
            Candidate(2, 2, "cache_policy", "# DIVERSE_PROGRAM_MARKER\n", {}, {"tok_s": 140.0}))
    base = {"slot": "cache_policy", "contract": SLOTS["cache_policy"].contract.__doc__,
                "parent": parent, "inspirations": insp,
                "recent_failures": ("contract: evict returned a block that is not free",),
                "rng": random.Random(seed)}
    base.update(kw)
    return MutationContext(**base)


def op(name: str, url: str, **kw):
    llm = {"models": {"m1": 1.0}, "base_url": url, "prices": {"m1": [1.0, 3.0]},
           "retries": 1, "backoff_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 5}
    llm.update(kw.pop("llm", {}))
    return make_operator(name, {"llm": llm, "repair_rounds": 0, "weight": 2.0, **kw})


def run(name: str, script: list[Reply], **kw):
    context = kw.pop("context", None) or ctx()
    with FakeLLMServer(script) as srv:
        result = op(name, srv.base_url, **kw).propose(context)
        return result, srv.prompts()


def test_good_diff_gives_a_checked_child():
    result, prompts = run("llm-diff", [Reply(GOOD_DIFF, usage=(900, 120))])
    assert isinstance(result, Proposal) and result.operator == "llm-diff"
    assert "2.0 * self.hit_weight" in result.code and "block.position" in result.code
    ast.parse(result.code)
    assert result.code.replace("2.0 * ", "").replace(" + block.position", "") == PARENT
    (call,) = result.llm_calls
    assert call.cost_usd == pytest.approx((900 * 1.0 + 120 * 3.0) / 1e6)
    assert call.response == GOOD_DIFF and call.prompt == prompts[0]


def test_prompt_carries_contract_code_metrics_failures_and_inspirations():
    _, (prompt,) = run("llm-diff", [Reply(GOOD_DIFF)])
    assert "Chooses which free KV block to overwrite next" in prompt  # the contract
    assert "value = block.freed_at + self.hit_weight * block.num_hits" in prompt
    assert "tok_s: 123.5" in prompt and "prefix hits 12 of 40 blocks" in prompt
    assert "evict returned a block that is not free" in prompt
    assert "BEST_PROGRAM_MARKER" in prompt and "DIVERSE_PROGRAM_MARKER" in prompt
    assert "EVOLVE-BLOCK-START" in prompt and "<<<<<<< SEARCH" in prompt


def test_full_rewrite_gives_a_checked_child():
    new = PARENT.replace("self.hit_weight * block.num_hits", "self.hit_weight * block.num_hits ** 2")
    reply = f"Square the hits.\n```python\n{new}```\n"
    result, (prompt,) = run("llm-rewrite", [Reply(reply)])
    assert isinstance(result, Proposal) and result.code == new
    assert "exactly one fenced block" in prompt


NO_CHANGE_DIFF = GOOD_DIFF.replace("2.0 * self.hit_weight * block.num_hits + block.position",
                                   "self.hit_weight * block.num_hits")


@pytest.mark.parametrize("name, reply, reason", [
    ("llm-diff", "I would make it faster by caching.", "no SEARCH/REPLACE blocks"),
    ("llm-diff", "", "empty reply"),
    ("llm-diff", GOOD_DIFF.replace("block.freed_at +", "block.allocated_at +", 1),
     "block 1: the SEARCH text is not in the code"),
    ("llm-diff", ("<<<<<<< SEARCH\n        return block_id\n=======\n        return 0\n"
                 ">>>>>>> REPLACE\n"), "outside the EVOLVE-BLOCKs"),
    ("llm-diff", ("<<<<<<< SEARCH\nTUNABLES = {\"hit_weight\": (0.0, 4.0)}\n=======\n"
                 "TUNABLES = {\"hit_weight\": (0.0, 8.0)}\n>>>>>>> REPLACE\n"),
     "outside the EVOLVE-BLOCKs (before the first block)"),
    ("llm-diff", GOOD_DIFF + "<<<<<<< SEARCH\n        del self.free[block_id]\n=======\n"
                 "        pass\n>>>>>>> REPLACE\n", "block 2: the SEARCH text matches 2 places"),
    ("llm-diff", GOOD_DIFF.replace("+ block.position", "+ (block.position"), "syntax error"),
    ("llm-diff", GOOD_DIFF.replace("=======\n", ""), "malformed SEARCH/REPLACE"),
    ("llm-diff", NO_CHANGE_DIFF, "no change"),
    ("llm-rewrite", "Here is the idea, no code.", "no ```python fenced code block"),
    ("llm-rewrite", "```python\ndef broken(:\n```\n", "syntax error at line 1"),
    ("llm-rewrite", f"```python\n{PARENT.replace('return block_id', 'return 0')}```",
     "outside the EVOLVE-BLOCKs"),
    ("llm-rewrite", f"```python\n{PARENT}```\n```python\n{PARENT}```", "2 python code blocks"),
])
def test_malformed_reply_is_rejected_with_its_reason(name, reply, reason):
    result, _ = run(name, [Reply(reply)])
    assert isinstance(result, Rejected), result
    assert reason in result.reason and result.operator == name
    assert len(result.llm_calls) == 1 and result.llm_calls[0].response == reply


def test_repair_round_shows_the_error_and_can_succeed():
    bad = GOOD_DIFF.replace("block.freed_at +", "block.freed_time +", 1)
    result, prompts = run("llm-diff", [Reply(bad), Reply(GOOD_DIFF)], repair_rounds=1)
    assert isinstance(result, Proposal) and "repair" in result.note
    assert len(result.llm_calls) == 2 and len(prompts) == 2
    assert "the SEARCH text is not in the code" in prompts[1] and bad.strip() in prompts[1]
    assert "Chooses which free KV block" in prompts[1]  # the original request is repeated


def test_failed_repair_reports_each_round():
    result, prompts = run("llm-diff", [Reply("nothing"), Reply("")], repair_rounds=1)
    assert isinstance(result, Rejected) and len(prompts) == 2
    assert "round 1: no SEARCH/REPLACE blocks" in result.reason
    assert "round 2: empty reply" in result.reason


def test_429_then_success_yields_a_child_with_both_calls():
    result, _ = run("llm-diff", [Reply(status=429), Reply(GOOD_DIFF)])
    assert isinstance(result, Proposal)
    assert "429" in result.llm_calls[0].error and result.llm_calls[1].error is None


def test_timeout_ends_as_a_rejection_with_the_call_recorded():
    result, _ = run("llm-rewrite", [Reply("late", delay_s=3.0)],
                    llm={"timeout_s": 0.3, "retries": 0})
    assert isinstance(result, Rejected) and "timeout" in result.reason
    assert len(result.llm_calls) == 1 and "timeout" in result.llm_calls[0].error


def test_budget_refusal_is_a_rejection_without_calls():
    c = ctx(budget_ok=lambda est: est < 1e-9)
    result, prompts = run("llm-diff", [Reply(GOOD_DIFF)], context=c)
    assert isinstance(result, Rejected) and "budget" in result.reason
    assert result.llm_calls == () and prompts == []


def test_unknown_option_is_an_error_naming_it():
    with pytest.raises(ValueError, match="repair_round"):
        make_operator("llm-diff", {"llm": {"models": "m", "prices": {"m": [0, 0]}},
                                   "repair_round": 1})
    with pytest.raises(ValueError, match="unknown operator 'llm-patch'"):
        make_operator("llm-patch", {})


def test_crlf_reply_and_run_config_llm_section_work():
    from evolve.config import LLMConfig

    with FakeLLMServer([Reply(GOOD_DIFF.replace("\n", "\r\n"))]) as srv:
        llm = LLMConfig(models={"m1": 1.0}, base_url=srv.base_url, prices={"m1": [1.0, 3.0]},
                        api_key_env="SDS_TEST_UNSET_KEY_VAR")
        result = make_operator("llm-diff", {"llm": llm}).propose(ctx())
        auth = {k.lower(): v for k, v in srv.requests[0]["headers"].items()}["authorization"]
    assert isinstance(result, Proposal) and "block.position" in result.code
    assert auth.startswith("Bearer ") and len(auth) > len("Bearer ")  # a non-empty key


def test_repair_round_asks_the_budget_before_its_call():
    asked: list[float] = []
    c = ctx(budget_ok=lambda est: asked.append(est) or len(asked) < 2)  # one call allowed
    bad = GOOD_DIFF.replace("block.freed_at +", "block.freed_time +", 1)
    result, prompts = run("llm-diff", [Reply(bad), Reply(GOOD_DIFF)], repair_rounds=1,
                          context=c)
    assert isinstance(result, Rejected) and "budget" in result.reason
    assert len(prompts) == 1 and len(result.llm_calls) == 1  # the repair call was never sent
    # the first call reserves a default reply (nothing known yet); the repair reserves by
    # the reply just seen (50 tokens out), though its prompt is longer
    assert len(asked) == 2 and asked[0] > 2048 * 3.0 / 1e6 and 0 < asked[1] < asked[0]
    assert asked[1] < (4096 * 3.0) / 1e6  # not max_tokens at the output price
