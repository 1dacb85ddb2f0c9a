"""The `trace:PATH?key=value&...` spec of a trace workload: its options, checked.

docs/TRACES.md documents every option. A bad spec is a `TraceError` whose one-line message
names the spec, the option and what it must be; fitness/traces.py loads the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from fitness.workloads import TINY_VOCAB

VOCAB = {"qwen3-0.6b": 151936, "tiny": TINY_VOCAB}          # token ids drawn in [0, vocab)
DEFAULT_MAX_MODEL_LEN = {"qwen3-0.6b": 4096, "tiny": 512}    # as the built-in workloads


class TraceError(ValueError):
    """A bad trace file or spec; the message is one line naming the file and line."""


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """The options of a `trace:PATH?...` spec (defaults as documented in docs/TRACES.md)."""

    start: int = 0                 # first row (after sorting by time) to use
    count: int | None = None       # rows to use; None: all from `start`
    time_scale: float = 1.0        # multiplies inter-arrival times (rate_scale=k: 1/k)
    length_scale: float = 1.0      # multiplies input, output and hash-block lengths
    cap: int | None = None         # max_tokens: None = realized rounded up to 2**k, else N
    max_model_len: int = 4096
    model: str = "qwen3-0.6b"
    skip_bad: bool = False         # skip malformed rows (counted) instead of failing
    block: int = 512               # tokens per Mooncake hash block
    # the deployment it is replayed on (engine overrides): KV blocks and batch size; None
    # leaves them to the engine (in `sim`: sized from the stated device memory)
    num_kv_blocks: int | None = None
    max_num_seqs: int | None = None


def _number(spec: str, key: str, value: str, lo: int | None) -> int | float:
    # lo None: a scale (a number > 0, fractions like 1/16 allowed); else an integer >= lo
    try:
        x: int | float = int(value) if lo is not None else float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        x = math.nan
    if lo is not None and not (isinstance(x, int) and x >= lo):
        raise TraceError(f"trace spec {spec!r}: option {key}={value!r} must be an integer "
                         f">= {lo}")
    if lo is None and not (math.isfinite(x) and x > 0):
        raise TraceError(f"trace spec {spec!r}: option {key}={value!r} must be a number > 0 "
                         "(e.g. 0.5 or 1/16)")
    return x


_INT_OPTIONS = {"start": 0, "count": 1, "max_model_len": 2, "block": 1, "num_kv_blocks": 1,
                "max_num_seqs": 1}
_SCALE_OPTIONS = ("time_scale", "rate_scale", "length_scale")
_OPTIONS = (*_INT_OPTIONS, *_SCALE_OPTIONS, "cap", "model", "skip_bad")


def parse_spec(spec: str) -> tuple[str, TraceOptions]:
    """Split `trace:PATH?k=v&...` into the path as written and its validated options."""
    if not isinstance(spec, str) or not spec.startswith("trace:"):
        raise TraceError(f"trace spec {spec!r}: expected 'trace:PATH[?key=value&...]'")
    path, _, query = spec[len("trace:"):].partition("?")
    if not path:
        raise TraceError(f"trace spec {spec!r}: no file path after 'trace:'")
    given: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise TraceError(f"trace spec {spec!r}: option {part!r} is not key=value")
        if key not in _OPTIONS:
            raise TraceError(f"trace spec {spec!r}: unknown option {key!r}; expected one of "
                             f"{', '.join(_OPTIONS)}")
        if key in given:
            raise TraceError(f"trace spec {spec!r}: option {key!r} given twice")
        given[key] = value
    if "time_scale" in given and "rate_scale" in given:
        raise TraceError(f"trace spec {spec!r}: give time_scale or rate_scale, not both")
    num = {k: _number(spec, k, v, _INT_OPTIONS.get(k)) for k, v in given.items()
           if k in _INT_OPTIONS or k in _SCALE_OPTIONS}
    model = given.get("model", "qwen3-0.6b")
    if model not in VOCAB:
        raise TraceError(f"trace spec {spec!r}: option model={model!r} must be one of "
                         f"{', '.join(VOCAB)}")
    if given.get("skip_bad", "0") not in ("0", "1"):
        raise TraceError(f"trace spec {spec!r}: option skip_bad={given['skip_bad']!r} must "
                         "be 0 or 1")
    cap = given.get("cap", "pow2")
    return path, TraceOptions(
        start=int(num.get("start", 0)), count=num.get("count"),
        time_scale=num.get("time_scale", 1 / num.get("rate_scale", 1.0)),
        length_scale=num.get("length_scale", 1.0),
        cap=None if cap == "pow2" else int(_number(spec, "cap", cap, 1)),
        max_model_len=int(num.get("max_model_len", DEFAULT_MAX_MODEL_LEN[model])),
        model=model, skip_bad=given.get("skip_bad") == "1", block=int(num.get("block", 512)),
        num_kv_blocks=_opt_int(num.get("num_kv_blocks")),
        max_num_seqs=_opt_int(num.get("max_num_seqs")))


def _opt_int(v: float | None) -> int | None:
    return None if v is None else int(v)


__all__ = ["DEFAULT_MAX_MODEL_LEN", "VOCAB", "TraceError", "TraceOptions", "parse_spec"]
