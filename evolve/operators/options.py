"""Reading operator options from the run config, with errors naming the key and the value."""

from __future__ import annotations

import math
from typing import Any


def check_keys(name: str, config: dict[str, Any], allowed: frozenset[str]) -> None:
    """Raise ValueError naming any option `name` does not take."""
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"operators.{name}: unknown option(s) {sorted(unknown)}; expected "
                         f"some of {sorted(allowed)}")


def number(name: str, config: dict[str, Any], key: str, default: float, typ: type = float,
           lo: float = -math.inf, hi: float = math.inf) -> Any:
    """Option `key` as `typ` within [lo, hi]; ValueError naming operators.<name>.<key>."""
    value = config.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and lo <= value <= hi
    if typ is int:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "an integer" if typ is int else "a number"
        raise ValueError(f"operators.{name}.{key} must be {kind} in [{lo}, {hi}], "
                         f"got {value!r}")
    return typ(value)
