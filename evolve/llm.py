"""The LLM client: one chat call to any OpenAI-compatible endpoint, with our own retries.

Built on the real `openai` package (OpenAI, vLLM, SGLang, llama.cpp and Ollama all speak its
API at a `base_url`). The client's own retries are switched off (`max_retries=0`) so that
every attempt, failed or not, becomes an `LLMCallRecord` the controller stores with tokens,
cost and latency. The dollar budget is asked before every attempt, with an estimate from
the model's recent replies (its first call reserves FIRST_REPLY_TOKENS of reply).

Replies are read as real models give them: the finish reason is kept (`length` means the
reply was cut at `max_tokens`), `<think>` drafts are dropped, and a reasoning field
(`reasoning_content`, `reasoning`) is read when the content is empty. A call that timed out
is billed by an estimate (the server may have done the work), marked as such.

An endpoint that cannot work is stopped early: a 401/403/404 before any call succeeded, or
`max_consecutive_failures` transport or auth failures in a row, make the client `dead`;
every later chat returns at once with `fatal` set to one line naming the URL, the model and
the last error, which the controller turns into a failed run.

Example:
    settings = LLMSettings.from_dict({"models": {"gpt-4o-mini": 1.0},
                                      "base_url": "http://127.0.0.1:8000/v1",
                                      "prices": {"gpt-4o-mini": [0.15, 0.60]}})
    result = LLMClient(settings).chat("Say hi", rng=random.Random(0))
    result.text, result.calls
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

from evolve.operators.base import LLMCallRecord

log = logging.getLogger(__name__)

# 408 and 409 are retried by the openai client itself too: transient on every server we know.
RETRY_STATUSES = frozenset({408, 409, 429})
NO_KEY = "sds-no-key"  # local servers want any non-empty key
SETTINGS_KEYS = frozenset({"models", "base_url", "api_key_env", "temperature", "max_tokens",
                           "timeout_s", "retries", "backoff_s", "backoff_max_s", "prices",
                           "system_prompt", "max_consecutive_failures"})
FATAL_FIRST = frozenset({401, 403, 404})  # wrong key or URL: fatal when nothing worked yet
OPENAI_URL = "https://api.openai.com/v1"
# Reply tokens reserved for a model's first call, before any reply of its was seen: a diff
# reply is a few hundred tokens, a whole-module rewrite one to two thousand. Reserving
# max_tokens instead (4096 by default) at the output price refused first calls, and so
# stopped runs, whose budget was nearly all left.
FIRST_REPLY_TOKENS = 2048


class LLMConfigError(ValueError):
    """LLM settings that cannot work, naming the key, the bad value and what is expected."""


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """How to reach an endpoint and what to pay: see `from_dict` for the accepted keys."""

    models: tuple[tuple[str, float], ...]  # (model name, sampling weight)
    base_url: str | None = None
    api_key_env: str | None = None  # environment variable holding the key
    temperature: float = 0.8
    max_tokens: int = 4096
    timeout_s: float = 120.0
    retries: int = 3  # extra attempts after the first, on 429 / 5xx / timeouts / connection
    backoff_s: float = 1.0  # first back-off; doubles per retry, with full jitter
    backoff_max_s: float = 60.0
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # USD per 1M in/out
    system_prompt: str | None = None
    max_consecutive_failures: int = 6  # transport/auth failures in a row that stop a run

    @staticmethod
    def from_dict(d: dict[str, Any], where: str = "llm") -> LLMSettings:
        """Validate a settings mapping; errors name `where.key`, the value and the expected form.

        Keys: models ({name: weight} | [{name, weight}] | "name"), base_url, api_key_env,
        temperature, max_tokens, timeout_s, retries, backoff_s, backoff_max_s,
        prices ({model: [usd_per_1M_in, usd_per_1M_out]} or {model: {input, output}};
        every model must have one, 0 for a free local server), system_prompt,
        max_consecutive_failures.
        """
        if dataclasses.is_dataclass(d) and not isinstance(d, type):
            d = dataclasses.asdict(d)  # evolve.config.LLMConfig
        if not isinstance(d, dict):
            raise LLMConfigError(f"{where} must be a mapping, got {d!r}")
        unknown = set(d) - SETTINGS_KEYS
        if unknown:
            raise LLMConfigError(f"{where}: unknown key(s) {sorted(unknown)}; "
                                 f"expected some of {sorted(SETTINGS_KEYS)}")
        models = _parse_models(d.get("models"), f"{where}.models")
        prices = _parse_prices(d.get("prices") or {}, f"{where}.prices")
        missing = [m for m, _ in models if m not in prices]
        if missing:
            raise LLMConfigError(f"{where}.prices has no entry for model(s) {missing}; expected "
                                 "[usd_per_1M_input, usd_per_1M_output] for each (0 if free)")
        kw: dict[str, Any] = {}
        for key, typ, lo in (("temperature", float, 0.0), ("max_tokens", int, 1),
                             ("timeout_s", float, 1e-3), ("retries", int, 0),
                             ("backoff_s", float, 0.0), ("backoff_max_s", float, 0.0),
                             ("max_consecutive_failures", int, 1)):
            if key in d:
                kw[key] = _number(d[key], typ, lo, f"{where}.{key}")
        for key in ("base_url", "api_key_env", "system_prompt"):
            if d.get(key) is not None:
                if not isinstance(d[key], str) or not d[key]:
                    raise LLMConfigError(f"{where}.{key} must be a non-empty string, "
                                         f"got {d[key]!r}")
                kw[key] = d[key]
        return LLMSettings(models=models, prices=prices, **kw)

    def key_is_placeholder(self) -> bool:
        """Whether calls go out without a real key (none named, or the variable is unset)."""
        return self.api_key_env is None or not os.environ.get(self.api_key_env)

    def url(self) -> str:
        """The endpoint calls go to (the openai package's default when none is set)."""
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL

    def api_key(self) -> str:
        """The key from the named environment variable.

        A placeholder when no variable is named, or when it is unset and `base_url` is not
        OpenAI's (local servers want any non-empty key); an error for OpenAI itself.
        """
        if self.api_key_env is None:
            return NO_KEY
        key = os.environ.get(self.api_key_env, "")
        if not key and self.base_url and "api.openai.com" not in self.base_url:
            log.warning("%s is not set; sending a placeholder key to %s (local servers accept "
                        "any non-empty key)", self.api_key_env, self.base_url)
            return NO_KEY
        if not key:
            raise LLMConfigError(f"llm.api_key_env names {self.api_key_env!r}, which is not set "
                                 "in the environment; export it, or leave api_key_env out for "
                                 "a local server that needs no key")
        return key

    def cost(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Dollars for a call from the price table."""
        p_in, p_out = self.prices[model]
        return (tokens_in * p_in + tokens_out * p_out) / 1e6


def _number(value: Any, typ: type, lo: float, where: str) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        ok = ok and float(value).is_integer()
    if not ok or not math.isfinite(value) or value < lo:
        kind = "an integer" if typ is int else "a number"
        raise LLMConfigError(f"{where} must be {kind} >= {lo}, got {value!r}")
    return typ(value)


def _parse_models(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if isinstance(value, str):
        value = {value: 1.0}
    elif isinstance(value, list):
        pairs = {}
        for item in value:
            if isinstance(item, str):
                pairs[item] = 1.0
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                pairs[item["name"]] = item.get("weight", 1.0)
            else:
                raise LLMConfigError(f"{where}: each entry must be a name or {{name, weight}}, "
                                     f"got {item!r}")
        value = pairs
    if not isinstance(value, dict) or not value:
        raise LLMConfigError(f"{where} must name at least one model ({{name: weight}}), "
                             f"got {value!r}")
    models = tuple((str(m), _number(w, float, 0.0, f"{where}.{m}")) for m, w in value.items())
    if sum(w for _, w in models) <= 0:
        raise LLMConfigError(f"{where}: the weights must not all be 0, got {dict(models)}")
    return models


def _parse_prices(value: Any, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(value, dict):
        raise LLMConfigError(f"{where} must be a mapping model -> [in, out], got {value!r}")
    prices = {}
    for model, p in value.items():
        if isinstance(p, dict) and set(p) == {"input", "output"}:
            p = [p["input"], p["output"]]
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise LLMConfigError(f"{where}.{model} must be [usd_per_1M_input, "
                                 f"usd_per_1M_output], got {p!r}")
        prices[str(model)] = (_number(p[0], float, 0.0, f"{where}.{model}[0]"),
                              _number(p[1], float, 0.0, f"{where}.{model}[1]"))
    return prices


def estimate_tokens(text: str) -> int:
    """A rough token count (about 4 characters a token) for budget estimates."""
    return max(1, math.ceil(len(text) / 4))


_THINK = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|\Z)", re.DOTALL | re.IGNORECASE)
REASONING_FIELDS = ("reasoning_content", "reasoning")  # where servers put a model's thoughts


def strip_reasoning(text: str) -> str:
    """`text` without its `<think>...</think>` sections (an unclosed one runs to the end)."""
    out = _THINK.sub("", text or "")
    return out.lstrip("\n") if out != text else out


@dataclass(frozen=True, slots=True)
class ChatResult:
    """The reply text (None when every attempt failed or was refused) and all attempts made.

    `finish_reason` is the server's (`stop`, `length`, ...); `fatal` is set when the endpoint
    cannot work at all (the run should stop), with one line saying why.
    """

    text: str | None
    calls: tuple[LLMCallRecord, ...]
    error: str | None = None  # why there is no text
    model: str = ""
    finish_reason: str | None = None
    fatal: str | None = None


class LLMClient:
    """Chat completions with recorded retries, cost accounting and a budget check per attempt."""

    def __init__(self, settings: LLMSettings, sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self._sleep = sleep
        self._client = openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key(),
                                     timeout=settings.timeout_s, max_retries=0)
        self._lock = threading.Lock()
        self._recent_out: dict[str, deque[int]] = {}  # model -> tokens out of recent replies
        self._chars_per_token = 4.0  # refined from the usage servers report
        self._succeeded = 0  # HTTP calls that got a reply
        self._in_a_row = 0  # transport/auth failures since the last reply
        self.dead: str | None = None  # set once the endpoint is judged unusable
        self._warned: set[tuple[str, str]] = set()  # (model, problem) already on the console

    def pick_model(self, rng: random.Random) -> str:
        """A model drawn by weight."""
        names = [m for m, _ in self.settings.models]
        return rng.choices(names, weights=[w for _, w in self.settings.models])[0]

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of `prompt`, estimated at the characters-per-token servers reported."""
        return max(1, math.ceil(len(prompt) / self._chars_per_token))

    def expected_out(self, model: str) -> int:
        """Reply tokens to expect from `model`: 1.5x the longest of its recent replies, or
        FIRST_REPLY_TOKENS before it has answered; never above max_tokens."""
        recent = self._recent_out.get(model)
        guess = math.ceil(1.5 * max(recent)) if recent else FIRST_REPLY_TOKENS
        return min(self.settings.max_tokens, guess)

    def estimate_cost(self, model: str, prompt: str) -> float:
        """Dollars one attempt is expected to cost: the prompt plus a reply as long as the
        model's recent ones (max_tokens before its first reply)."""
        return self.settings.cost(model, self.prompt_tokens(prompt), self.expected_out(model))

    def chat(self, prompt: str, rng: random.Random,
             budget_ok: Callable[[float], bool] = lambda c: True,
             model: str | None = None) -> ChatResult:
        """Send `prompt` to `model` (default: one drawn by weight); retry transient failures;
        never raises."""
        s = self.settings
        model = model or self.pick_model(rng)
        calls: list[LLMCallRecord] = []
        error = None
        for attempt in range(s.retries + 1):
            if self.dead:
                return ChatResult(None, tuple(calls), self.dead, model, fatal=self.dead)
            estimate = self.estimate_cost(model, prompt)
            if not budget_ok(estimate):
                error = (f"LLM dollar budget would be exceeded by a call to {model} "
                         f"(estimated ${estimate:.4f}); call refused")
                break
            record, retry_after, status = self._attempt(model, prompt)
            calls.append(record)
            fatal = self._note(record, status)
            if fatal:
                return ChatResult(None, tuple(calls), record.error, model, fatal=fatal)
            if record.response is not None:  # an answer, usable or not (record.error)
                return ChatResult(strip_reasoning(record.response), tuple(calls),
                                  record.error, model, record.finish_reason)
            error = record.error
            if retry_after is None:  # not transient
                break
            if attempt < s.retries:
                delay = min(s.backoff_max_s, s.backoff_s * 2 ** attempt)
                delay = min(s.backoff_max_s, max(retry_after, rng.uniform(0, delay)))  # jitter
                log.info("LLM call to %s failed (%s); retry %d/%d in %.2fs", model, error,
                         attempt + 1, s.retries, delay)
                self._sleep(delay)
        else:
            error = f"{error} (gave up after {s.retries + 1} attempts)"
        return ChatResult(None, tuple(calls), error, model)

    def _note(self, record: LLMCallRecord, status: int | None) -> str | None:
        """Count transport/auth failures in a row; the fatal line once the endpoint is dead."""
        s = self.settings
        with self._lock:
            if record.response is not None:  # the server answered
                self._succeeded += 1
                self._in_a_row = 0
                return None
            if status not in FATAL_FIRST and status is not None:
                return None  # 429, 5xx, a malformed body: the endpoint is there
            self._in_a_row += 1
            why = None
            if status in FATAL_FIRST and self._succeeded == 0:
                why = f"answered HTTP {status} to the first call"
            elif self._in_a_row >= s.max_consecutive_failures:
                why = f"failed {self._in_a_row} calls in a row"
            if why and self.dead is None:
                hint = ""
                if status in (401, 403) and s.key_is_placeholder():
                    hint = (f"; no API key was sent ({s.api_key_env} is not set)"
                            if s.api_key_env else "; no API key was sent (llm.api_key_env)")
                elif status == 404:
                    hint = "; check llm.base_url (it usually ends in /v1) and the model name"
                self.dead = (f"LLM endpoint {s.url()} (model {record.model}) {why}: "
                             f"{record.error}{hint}")
                log.info("%s", self.dead)  # the run reports it once, on stopping
            return self.dead

    def _attempt(self, model: str, prompt: str
                 ) -> tuple[LLMCallRecord, float | None, int | None]:
        """One HTTP call: its record, the minimum wait before a retry (None: do not retry),
        and the HTTP status of a failure (None for a transport failure or a reply)."""
        s = self.settings
        messages = [{"role": "user", "content": prompt}]
        if s.system_prompt:
            messages.insert(0, {"role": "system", "content": s.system_prompt})
        t0 = time.perf_counter()
        try:
            resp = self._client.chat.completions.create(
                model=model, messages=messages, temperature=s.temperature,
                max_tokens=s.max_tokens)
        except openai.APITimeoutError:
            return self._timed_out(model, prompt, t0), 0.0, None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            err = f"connection error to {s.url()}: {_short(str(cause) or type(cause).__name__)}"
            return self._failed(model, prompt, t0, err), 0.0, None
        except openai.APIStatusError as e:
            err = f"HTTP {e.status_code} {type(e).__name__} from {s.url()}: {_short(str(e))}"
            transient = e.status_code in RETRY_STATUSES or e.status_code >= 500
            return (self._failed(model, prompt, t0, err),
                    _retry_after(e) if transient else None, e.status_code)
        except Exception as e:  # noqa: BLE001 - malformed bodies etc.: recorded, never raised
            err = f"{type(e).__name__}: {_short(str(e))}"
            return self._failed(model, prompt, t0, err), None, 0
        return self._reply(model, prompt, resp, time.perf_counter() - t0), None, None

    def _reply(self, model: str, prompt: str, resp: Any, latency: float) -> LLMCallRecord:
        s = self.settings
        choice = resp.choices[0] if resp.choices else None
        msg = choice.message if choice is not None else None
        finish = getattr(choice, "finish_reason", None)
        raw = (msg.content if msg is not None else None) or ""
        text = strip_reasoning(raw)
        if not text.strip() and msg is not None:  # a reasoning model's answer may be here
            for name in REASONING_FIELDS:
                alt = getattr(msg, name, None) or (msg.model_extra or {}).get(name)
                if isinstance(alt, str) and alt.strip():
                    log.info("%s: no answer in the content; reading the %r field", model, name)
                    raw = text = alt
                    break
        usage = resp.usage
        if usage is not None and usage.prompt_tokens is not None:
            t_in, t_out = int(usage.prompt_tokens), int(usage.completion_tokens or 0)
            with self._lock:
                self._chars_per_token = max(1.0, len(prompt) / max(1, t_in))
        else:
            t_in, t_out = self.prompt_tokens(prompt), estimate_tokens(raw + text)
            log.warning("%s returned no token usage; cost estimated from characters", model)
        with self._lock:
            self._recent_out.setdefault(model, deque(maxlen=16)).append(t_out)
        error, hint = None, ""
        if finish == "length":
            error = f"truncated at max_tokens={s.max_tokens} (finish_reason length)"
            hint = "raise llm.max_tokens, or ask for shorter replies"
        elif finish not in (None, "stop", "eos", "end_turn"):
            error = f"reply ended with finish_reason {finish}"
        elif not text.strip():
            error = ("empty reply (no content" + (", reasoning only" if raw.strip() else "")
                     + f", finish_reason {finish})")
            hint = "check that the model is a chat model and that the server returns content"
        if error and (model, error) not in self._warned:  # once: the console is not a log
            self._warned.add((model, error))
            log.warning("%s at %s: %s; %s", model, s.url(), error,
                        hint or "such replies are rejected")
        return LLMCallRecord(model=model, prompt=prompt, response=raw, tokens_in=t_in,
                             tokens_out=t_out, cost_usd=s.cost(model, t_in, t_out),
                             latency_s=latency, error=error, finish_reason=finish)

    def _timed_out(self, model: str, prompt: str, t0: float) -> LLMCallRecord:
        """A timeout: the server may have done the work, so it is billed by an estimate."""
        s = self.settings
        t_in, t_out = self.prompt_tokens(prompt), self.expected_out(model)
        return LLMCallRecord(model=model, prompt=prompt, response=None, tokens_in=t_in,
                             tokens_out=t_out, cost_usd=s.cost(model, t_in, t_out),
                             latency_s=time.perf_counter() - t0,
                             error=(f"timeout after {s.timeout_s:g}s from {s.url()}; billed "
                                    f"by estimate ({t_in} in + {t_out} out tokens)"),
                             estimated=True)

    def _failed(self, model: str, prompt: str, t0: float, error: str) -> LLMCallRecord:
        return LLMCallRecord(model=model, prompt=prompt, response=None, tokens_in=0,
                             tokens_out=0, cost_usd=0.0,
                             latency_s=time.perf_counter() - t0, error=error)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _retry_after(e: openai.APIStatusError) -> float:
    """Seconds the server asked us to wait (Retry-After), capped so a bad header cannot hang us."""
    try:
        return min(60.0, max(0.0, float(e.response.headers.get("retry-after", 0))))
    except (TypeError, ValueError):
        return 0.0
