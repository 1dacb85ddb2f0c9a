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

import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from evolve.llm_settings import LLMConfigError, LLMSettings
from evolve.operators.base import LLMCallRecord

__all__ = ["ChatResult", "LLMClient", "LLMConfigError", "LLMSettings", "strip_reasoning"]

log = logging.getLogger(__name__)

# 408 and 409 are retried by the openai client itself too: transient on every server we know.
RETRY_STATUSES = frozenset({408, 409, 429})
FATAL_FIRST = frozenset({401, 403, 404})  # wrong key or URL: fatal when nothing worked yet
# Reply tokens reserved for a model's first call, before any reply of its was seen: a diff
# reply is a few hundred tokens, a whole-module rewrite one to two thousand. Reserving
# max_tokens instead (4096 by default) at the output price refused first calls, and so
# stopped runs, whose budget was nearly all left.
FIRST_REPLY_TOKENS = 2048


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
        """Dollars one attempt is expected to cost: the prompt plus `expected_out` reply
        tokens."""
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
