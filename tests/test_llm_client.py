"""The LLM client over the real openai package against a scripted loopback server."""

from __future__ import annotations

import random

import pytest
from fake_llm_server import FakeLLMServer, Reply

from evolve.llm import LLMClient, LLMConfigError, LLMSettings


def settings(url: str, **kw) -> LLMSettings:
    d = {"models": {"model-a": 1.0}, "base_url": url, "prices": {"model-a": [2.5, 10.0]},
         "retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}
    d.update(kw)
    return LLMSettings.from_dict(d)


def test_success_records_tokens_cost_and_latency():
    rng = random.Random(11)
    t_in, t_out = rng.randint(50, 5000), rng.randint(10, 2000)
    with FakeLLMServer([Reply(content="hello there", usage=(t_in, t_out))]) as srv:
        result = LLMClient(settings(srv.base_url)).chat("the prompt text", rng)
        body = srv.requests[0]["body"]
    assert result.text == "hello there" and result.error is None
    (call,) = result.calls
    assert (call.tokens_in, call.tokens_out, call.error) == (t_in, t_out, None)
    assert call.cost_usd == pytest.approx((t_in * 2.5 + t_out * 10.0) / 1e6)
    assert call.latency_s > 0 and call.model == "model-a" and call.prompt == "the prompt text"
    assert body["model"] == "model-a" and body["messages"][-1]["content"] == "the prompt text"
    assert body["max_tokens"] == 4096 and body["temperature"] == pytest.approx(0.8)


def test_429_then_success_is_retried_and_every_attempt_recorded():
    script = [Reply(status=429), Reply(status=503), Reply(content="ok")]
    slept = []
    with FakeLLMServer(script) as srv:
        client = LLMClient(settings(srv.base_url), sleep=slept.append)
        result = client.chat("p", random.Random(1))
        n_requests = len(srv.requests)
    assert result.text == "ok" and n_requests == 3
    assert [c.error is None for c in result.calls] == [False, False, True]
    assert "429" in result.calls[0].error and "503" in result.calls[1].error
    assert result.calls[0].cost_usd == 0 and result.calls[0].tokens_in == 0
    assert len(slept) == 2 and all(0 <= s <= 0.05 for s in slept)


def test_retries_give_up_with_the_last_error():
    with FakeLLMServer([Reply(status=500)] * 3) as srv:
        result = LLMClient(settings(srv.base_url), sleep=lambda s: None).chat("p", random.Random(random.getrandbits(64)))
    assert result.text is None and len(result.calls) == 3
    assert "500" in result.error and "gave up after 3 attempts" in result.error


def test_client_error_is_not_retried():
    with FakeLLMServer([Reply(status=400), Reply(content="never")]) as srv:
        result = LLMClient(settings(srv.base_url)).chat("p", random.Random(random.getrandbits(64)))
        assert len(srv.requests) == 1
    assert result.text is None and "400" in result.error and len(result.calls) == 1


def test_timeout_is_recorded_as_an_error():
    with FakeLLMServer([Reply(content="late", delay_s=10.0)]) as srv:
        client = LLMClient(settings(srv.base_url, timeout_s=0.3, retries=0))
        result = client.chat("p", random.Random(random.getrandbits(64)))
    (call,) = result.calls
    assert result.text is None and "timeout" in call.error and "timeout" in result.error
    assert 0.25 < call.latency_s < 8.0  # cut at the timeout, long before the reply (wide: a busy CPU)


def test_budget_refusal_sends_nothing():
    asked = []
    with FakeLLMServer([Reply(content="x")]) as srv:
        client = LLMClient(settings(srv.base_url, max_tokens=1000))
        result = client.chat("q" * 4000, random.Random(random.getrandbits(64)), lambda est: asked.append(est) or False)
        assert srv.requests == []
    assert result.text is None and result.calls == () and "budget" in result.error
    # estimate: ~1000 prompt tokens at $2.5/M plus 1000 reply tokens at $10/M
    assert asked == [pytest.approx((1000 * 2.5 + 1000 * 10.0) / 1e6)]


def test_models_are_sampled_by_weight():
    s = LLMSettings.from_dict({"models": {"a": 3.0, "b": 1.0, "c": 0.0},
                               "prices": {"a": [0, 0], "b": [0, 0], "c": [0, 0]},
                               "base_url": "http://127.0.0.1:9/v1"})
    client = LLMClient(s)
    picks = [client.pick_model(random.Random(i)) for i in range(400)]
    assert "c" not in picks and 0.6 < picks.count("a") / 400 < 0.9


@pytest.mark.parametrize("bad, needle", [
    ({"models": {}}, "models"),
    ({"models": {"a": 1}, "prices": {}}, "no entry for model(s) ['a']"),
    ({"models": {"a": 1}, "prices": {"a": [1]}}, "prices.a"),
    ({"models": {"a": 1}, "prices": {"a": [1, 2]}, "retries": -1}, "llm.retries"),
    ({"models": {"a": 1}, "prices": {"a": [1, 2]}, "temprature": 1}, "temprature"),
])
def test_bad_settings_name_the_key(bad, needle):
    with pytest.raises(LLMConfigError) as e:
        LLMSettings.from_dict(bad)
    assert needle in str(e.value)


def test_missing_api_key_for_openai_is_an_error(monkeypatch):
    monkeypatch.delenv("SDS_TEST_NO_SUCH_KEY", raising=False)
    s = LLMSettings.from_dict({"models": "a", "prices": {"a": [1, 1]},
                               "api_key_env": "SDS_TEST_NO_SUCH_KEY"})
    with pytest.raises(LLMConfigError, match="SDS_TEST_NO_SUCH_KEY"):
        s.api_key()
    monkeypatch.setenv("SDS_TEST_NO_SUCH_KEY", "sk-test")
    assert s.api_key() == "sk-test"
