"""LLM endpoint settings: the `llm:` section of a run config, validated.

Which endpoint (`base_url`, `api_key_env`), which models with which sampling weights and
prices, and how calls behave (temperature, max_tokens, timeout, retries and back-off, the
number of transport or auth failures in a row after which a run stops). `evolve/llm.py`
makes the calls.

Example:
    settings = LLMSettings.from_dict({"models": {"gpt-4o-mini": 1.0},
                                      "prices": {"gpt-4o-mini": [0.15, 0.60]}})
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

NO_KEY = "sds-no-key"  # local servers want any non-empty key
OPENAI_URL = "https://api.openai.com/v1"
SETTINGS_KEYS = frozenset({"models", "base_url", "api_key_env", "temperature", "max_tokens",
                           "timeout_s", "retries", "backoff_s", "backoff_max_s", "prices",
                           "system_prompt", "max_consecutive_failures"})


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
    from evolve.config_fields import llm_models  # the same forms the run config accepts

    try:
        value = llm_models(value)
    except ValueError:
        raise LLMConfigError(f"{where}: each entry must be a name or {{name, weight}}, "
                             f"got {value!r}") from None
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
