"""The building blocks of the run-config schema (evolve/config.py): typed, constrained fields
whose errors say what is expected, and the shorthands a config may use.

`rule(int, "a positive integer", lambda v: v > 0)` is an int (strict: no "3", no true) that
must satisfy the check; the text is what an error says was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Strict

from fitness.result import STAGES


@dataclasses.dataclass(frozen=True, slots=True)
class Expect:
    """Annotation marker: how a field's valid values are described in errors."""

    text: str


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """'; did you mean X?' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def rule(tp: Any, expect: str, ok: Callable[[Any], bool] | None = None) -> Any:
    """`tp` (strict: no "3" for 3, no true for 1) whose values satisfy `ok`, described as
    `expect` in errors."""
    def check(v: Any) -> Any:
        if ok is not None and v is not None and not ok(v):
            raise ValueError(expect)
        return v
    return Annotated[tp, Strict(), AfterValidator(check), Expect(expect)]


def drawn_from(options: tuple[str, ...], what: str, empty_ok: bool = False) -> Any:
    """A list of names from `options` (non-empty unless `empty_ok`), with a likely fix."""
    def check(v: list[str]) -> list[str]:
        bad = [s for s in v if s not in options]
        if bad or (not v and not empty_ok):
            hint = did_you_mean(bad[0], options) if bad else ""
            raise ValueError(f"a non-empty list drawn from {list(options)}{hint}")
        return v
    return Annotated[list[Annotated[str, Strict()]], AfterValidator(check),
                     Expect(f"a non-empty list of {what}")]


def one_of(*choices: str) -> Any:
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"one of {list(choices)}{did_you_mean(v, choices)}")
        return v
    return Annotated[str, Strict(), AfterValidator(check), Expect(f"one of {list(choices)}")]


def _section(v: Any) -> Any:
    return {} if v is None else v  # an empty YAML section (`budget:`) means the defaults


Section = BeforeValidator(_section)
PosInt = rule(int, "a positive integer", lambda v: v > 0)
NonNegInt = rule(int, "an integer >= 0", lambda v: v >= 0)
PosFloat = rule(float, "a positive number", lambda v: v > 0)
NonNegFloat = rule(float, "a number >= 0", lambda v: v >= 0)
Str = Annotated[str, Strict()]
OptStr = Annotated[str | None, Strict()]


def objective_ok(o: str) -> bool:
    name, _, sense = o.partition(":")
    return bool(name) and sense in ("max", "min")


def llm_models(v: Any) -> Any:
    """{name: weight}, or a name, or [name | {name, weight}] (all the forms LLMSettings takes)."""
    if isinstance(v, str):
        return {v: 1.0}
    if isinstance(v, list):
        out = {}
        for item in v:
            if isinstance(item, str):
                out[item] = 1.0
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                out[item["name"]] = item.get("weight", 1.0)
            else:
                raise ValueError("a mapping of model name to weight >= 0, a name, or a list of "  # noqa: TRY004  (pydantic reports ValueError)
                                 "names or {name, weight}")
        return out
    return v


def llm_prices(v: Any) -> Any:
    """{model: [in, out]} or {model: {input, output}} -> {model: [in, out]}."""
    if isinstance(v, dict):
        return {m: [p["input"], p["output"]] if isinstance(p, dict)
                and set(p) == {"input", "output"} else p for m, p in v.items()}
    return v


PRICES = ("a mapping of model name to [USD per 1M input tokens, USD per 1M output tokens] "
          "or {input, output}")


def price_pair(p: list[float]) -> list[float]:
    if len(p) != 2:
        raise ValueError("[USD per 1M input tokens, USD per 1M output tokens] or "
                         "{input, output}")
    return p


def operators_shorthand(v: Any) -> Any:
    """`{name: weight}` or `{name: {weight: w, ...options}}` -> {name: {weight, options}}."""
    if not isinstance(v, dict) or not v:
        raise ValueError("a non-empty mapping of operator name to a weight or "
                         "{weight: w, ...options}")
    out: dict[str, Any] = {}
    for name, spec in v.items():
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"weight": spec}
        if isinstance(spec, dict):
            opts = dict(spec)
            spec = {"weight": opts.pop("weight", 1.0), "options": opts}
        out[str(name)] = spec
    return out


def timeouts_ok(d: dict[str, float]) -> bool:
    return all(k in STAGES and t > 0 for k, t in d.items())


