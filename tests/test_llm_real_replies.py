"""The LLM operators against replies as real models give them (scripted loopback server).

SEARCH texts that real models send (without the original indentation, or a fragment of a
line), replies cut at max_tokens, reasoning models' null content and `<think>` drafts,
timeouts after the server did the work, and the dollar reservation by recent replies.
Each case asserts the recorded reason (or the child), and what the next prompt shows.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer, Reply

from evolve.llm import LLMClient, LLMSettings, strip_reasoning
from evolve.operators import Candidate, MutationContext, Proposal, Rejected, make_operator
from evolve.operators.edits import EditError, apply_diff, check_child, parse_diff
from runtime_modules.slots import SLOTS

SEED = (Path(__file__).resolve().parents[1] / "seeds" / "cache_policy" / "scored.py").read_text()
LINE = "    return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position\n"
assert LINE in SEED

# The case that once produced a module-level `return`: the SEARCH text without its
# indentation used to match inside the indented line, and the replacement's second line
# came out at column 0 (ast.parse accepts that; compile() does not).
UNINDENTED = ("Reward reuse more.\n<<<<<<< SEARCH\n" + LINE.lstrip() + "=======\n"
              "bonus = 2.0 * num_hits\n"
              "return hashed * (1.0 + bonus) / (1.0 + 0.01 * idle) - 0.001 * position\n"
              ">>>>>>> REPLACE\n")
GOOD = ("<<<<<<< SEARCH\n" + LINE + "=======\n"
        "    return hashed * (1.0 + 2.0 * num_hits) / (1.0 + 0.01 * idle) - 0.001 * position\n"
        ">>>>>>> REPLACE\n")


def ctx(seed: int = 0, **kw) -> MutationContext:
    parent = Candidate(3, 2, "cache_policy", SEED, {"slots": {}}, {"modeled_ratio": 1.0}, {})
    base = {"slot": "cache_policy", "contract": SLOTS["cache_policy"].contract.__doc__,
            "parent": parent, "rng": random.Random(seed)}
    base.update(kw)
    return MutationContext(**base)


def llm(url: str, **kw) -> dict:
    d = {"models": {"m1": 1.0}, "base_url": url, "prices": {"m1": [1.0, 3.0]},
         "retries": 0, "backoff_s": 0.0, "timeout_s": 5, "max_tokens": 512}
    d.update(kw)
    return d


def propose(script: list[Reply], name: str = "llm-diff", repair_rounds: int = 0,
            context: MutationContext | None = None, **llm_kw):
    with FakeLLMServer(script) as srv:
        op = make_operator(name, {"llm": llm(srv.base_url, **llm_kw),
                                  "repair_rounds": repair_rounds})
        return op.propose(context or ctx()), srv


# ----------------------------------------------------------------- 1. whole-line matching

def test_old_substring_apply_would_have_stored_a_module_level_return():
    """The failure this applier prevents: the naive result parses but does not compile."""
    import ast

    (search, replace), = parse_diff(UNINDENTED)
    naive = SEED.replace(search, replace, 1)
    ast.parse(naive)  # parses...
    with pytest.raises(SyntaxError, match="'return' outside function"):
        compile(naive, "<child>", "exec")
    with pytest.raises(EditError, match="'return' outside function"):
        check_child(SEED, naive)  # ...and check_child now catches it


def test_unindented_search_matches_the_whole_line_and_reindents_the_replacement():
    result, _ = propose([Reply(UNINDENTED)])
    assert isinstance(result, Proposal), result
    assert "    bonus = 2.0 * num_hits\n    return hashed * (1.0 + bonus)" in result.code
    compile(result.code, "<child>", "exec")
    assert result.code.count("\n") == SEED.count("\n") + 1  # one line added, none lost


def test_overindented_search_is_dedented_the_same_way():
    reply = GOOD.replace("    return", "        return")  # both SEARCH and REPLACE at 8
    code = apply_diff(SEED, parse_diff(reply))
    assert "\n    return hashed * (1.0 + 2.0 * num_hits)" in code
    compile(code, "<child>", "exec")


def test_fragment_of_a_line_does_not_match_and_the_repair_shows_the_real_lines():
    fragment = ("<<<<<<< SEARCH\n(1.0 + num_hits)\n=======\n(1.0 + 3 * num_hits)\n"
                ">>>>>>> REPLACE\n")
    result, srv = propose([Reply(fragment), Reply(GOOD)], repair_rounds=1)
    assert isinstance(result, Proposal) and "2.0 * num_hits" in result.code
    repair = srv.prompts()[1]
    assert "not in the code as whole lines" in repair
    assert "'(1.0 + num_hits)' is in no line of the code" in repair
    # the code's closest region, numbered, so the model can copy the real line
    assert f"{SEED.splitlines().index(LINE.rstrip()) + 1:4d}| {LINE.rstrip()}" in repair


def test_unmatched_search_is_rejected_with_the_exact_reason_when_no_repair_is_left():
    bad = GOOD.replace("0.01 * idle", "0.02 * idle", 1)
    result, _ = propose([Reply(bad)])
    assert isinstance(result, Rejected) and result.fixable
    assert "SEARCH/REPLACE block 1: the SEARCH text is not in the code as whole lines" \
        in result.reason


def test_the_slot_static_checks_run_before_a_child_is_stored():
    reply = GOOD.replace("    return hashed * (1.0 + 2.0",
                         "    import subprocess\n    return hashed * (1.0 + 2.0")
    result, _ = propose([Reply(reply)])
    assert isinstance(result, Rejected)
    assert result.reason.startswith("static check: cache_policy:") and "subprocess" in \
        result.reason


def test_ambiguous_search_names_the_lines_it_matches():
    code = "def f():\n    # EVOLVE-BLOCK-START\n    x = 1\n    x = 1\n    # EVOLVE-BLOCK-END\n"
    with pytest.raises(EditError, match=r"matches 2 places \(at lines 3, 4\)"):
        apply_diff(code, [("x = 1\n", "x = 2\n")])


# ------------------------------------------------------------- 2. finish_reason, reasoning

def test_a_reply_cut_at_max_tokens_says_so_and_the_repair_asks_for_less():
    cut = GOOD[: len(GOOD) // 2]
    result, srv = propose([Reply(cut, finish_reason="length"), Reply(GOOD)], repair_rounds=1)
    assert isinstance(result, Proposal)
    first = result.llm_calls[0]
    assert first.finish_reason == "length"
    assert first.error == "truncated at max_tokens=512 (finish_reason length)"
    assert "truncated at max_tokens=512" in srv.prompts()[1] and "shorter" in srv.prompts()[1]


def test_truncated_without_repair_is_recorded_as_truncated_not_malformed():
    result, _ = propose([Reply(GOOD[:40], finish_reason="length")])
    assert isinstance(result, Rejected)
    assert result.reason == "truncated at max_tokens=512 (finish_reason length)"


def test_reasoning_model_null_content_reads_the_reasoning_field():
    for key in ("reasoning_content", "reasoning"):
        result, _ = propose([Reply(None, reasoning="Plan: weight hits.\n" + GOOD,
                                   reasoning_key=key)])
        assert isinstance(result, Proposal), (key, result)
        assert "2.0 * num_hits" in result.code


def test_reasoning_that_used_every_token_is_truncated_not_empty():
    result, _ = propose([Reply(None, reasoning="<think>hmm " * 50, finish_reason="length")])
    assert isinstance(result, Rejected) and result.reason.startswith("truncated at max_tokens")


def test_null_content_and_no_reasoning_is_an_empty_reply_with_its_finish_reason():
    result, _ = propose([Reply(None)])
    assert isinstance(result, Rejected)
    assert result.reason == "empty reply (no content, finish_reason stop)"


def test_think_drafts_are_not_parsed_as_code():
    draft = GOOD.replace("2.0 * num_hits", "99.0 * num_hits")
    reply = f"<think>\nFirst idea:\n{draft}\nNo, smaller.\n</think>\n{GOOD}"
    result, _ = propose([Reply(reply)])
    assert isinstance(result, Proposal) and "2.0 * num_hits" in result.code
    assert "99.0" not in result.code
    only = propose([Reply(f"<think>\n{draft}")])[0]  # an unclosed draft is no answer
    assert isinstance(only, Rejected) and "empty reply" in only.reason
    assert strip_reasoning("a<THINK>x</THINK>b") == "ab"


# ------------------------------------------------------------------------ 5. accounting

def test_a_timeout_is_billed_by_an_estimate_marked_as_such():
    result, _ = propose([Reply(GOOD, delay_s=2.0)], timeout_s=0.3)
    assert isinstance(result, Rejected) and "timeout" in result.reason
    (call,) = result.llm_calls
    assert call.estimated and "billed by estimate" in call.error
    assert call.tokens_in > 0 and call.tokens_out == 512  # no reply seen: max_tokens here
    assert call.cost_usd == pytest.approx((call.tokens_in * 1.0 + 512 * 3.0) / 1e6)


def test_reservation_follows_the_models_recent_replies():
    settings = LLMSettings.from_dict(llm("http://127.0.0.1:9/v1", max_tokens=8000,
                                         prices={"m1": [3.0, 15.0]}))
    with FakeLLMServer([Reply("x", usage=(1000, 300))]) as srv:
        client = LLMClient(LLMSettings.from_dict({**llm(srv.base_url, max_tokens=8000),
                                                   "prices": {"m1": [3.0, 15.0]}}))
        before = client.estimate_cost("m1", "p" * 4000)
        client.chat("p" * 4000, random.Random(0))
        after = client.estimate_cost("m1", "p" * 4000)
    assert before == pytest.approx(settings.cost("m1", 1000, 2048))  # FIRST_REPLY_TOKENS
    assert after == pytest.approx(settings.cost("m1", 1000, 450))  # 1.5x the 300 seen
    print(f"reservation per call: ${before:.4f} before any reply, ${after:.4f} after")


def test_a_repair_round_goes_to_the_same_model():
    models = {"m1": 1.0, "m2": 1.0, "m3": 1.0}
    prices = {m: [1.0, 1.0] for m in models}
    bad = GOOD.replace("0.01 * idle", "0.03 * idle", 1)
    for seed in range(6):
        result, srv = propose([Reply(bad), Reply(GOOD)], repair_rounds=1, context=ctx(seed),
                              models=models, prices=prices)
        sent = [r["body"]["model"] for r in srv.requests]
        assert len(sent) == 2 and sent[0] == sent[1], (seed, sent)
        assert isinstance(result, Proposal) and "repair" in result.note


# --------------------------------------------------------------- 3. dead endpoints, client

def test_403_first_is_fatal_at_once_and_later_calls_are_not_sent():
    with FakeLLMServer([Reply(status=403), Reply(GOOD)]) as srv:
        client = LLMClient(LLMSettings.from_dict(llm(srv.base_url, retries=2)))
        first = client.chat("p", random.Random(0))
        second = client.chat("p", random.Random(0))
        sent = len(srv.requests)
    assert first.fatal and "answered HTTP 403 to the first call" in first.fatal
    assert srv.base_url in first.fatal and "(model m1)" in first.fatal
    assert second.fatal == first.fatal and second.calls == () and sent == 1


def test_auth_failures_after_a_success_count_toward_the_limit_only():
    script = [Reply(GOOD)] + [Reply(status=401)] * 3
    with FakeLLMServer(script) as srv:
        client = LLMClient(LLMSettings.from_dict(llm(srv.base_url,
                                                     max_consecutive_failures=3)))
        results = [client.chat("p", random.Random(0)) for _ in range(4)]
    assert results[0].text and [r.fatal is not None for r in results] == [False, False,
                                                                          False, True]
    assert "failed 3 calls in a row" in results[3].fatal and "HTTP 401" in results[3].fatal
