"""What the evolvable functions see in a run: the typical magnitude of each argument and result.

A slot module that names `GP_TARGET` functions (see evolve/operators/gp_tree.py) gets them
wrapped for the length of one simulation: every `every`-th call's arguments and result are
kept (at most `cap` per function), and `scales()` gives the mean absolute value of each
(the mean, not the median: a feature that is mostly 0, like `num_preemptions`, still has a
scale),
as flat metrics `feat:<function>:<argument>` and `feat:<function>:return`.

Why: a mutation that brings a new feature into an expression needs a weight of the right
size. `cached` runs to thousands of tokens while `wait_steps` is tens of steps, so a weight
drawn without knowing the scales is, most of the time, either too small to change any
decision or so large that it drowns every other term. With the scales measured on the
parent's own run, `gp`'s `add_term` draws the new term's weight around
`scale(result) / scale(feature)`: a term that moves decisions without always dominating.

It also records, per argument, the share of sampled calls where it differed from the
previous call's (`featvar:<function>:<argument>`). A ranking function is called once per
candidate in a row (every waiting request in one step), so an argument that rarely changes
between consecutive calls (`free`, `running`, `queue` for `priority`) is the same for every
candidate it ranks: a term in it alone cannot change the order. `add_term` prefers the
arguments that do vary.

And per argument, the share of those sampled calls whose result changes when that argument
alone takes the previous call's value (`featuse:<function>:<argument>`): whether the
expression actually uses it. Written in the code is not the same as used:
`wait_steps + cached * num_preemptions` names `cached`, but with `num_preemptions` mostly 0
the result almost never depends on it, so `add_term` may still bring `cached` in as a term
of its own. (A one-at-a-time sensitivity over sampled inputs; each sampled call is re-run
once per argument after the simulation, at most `cap` per function.)

Cost: one extra Python call per evolved-function call (~0.1 us of work on top of the call
itself); measured on full-size shared-prefix, see scripts/bench_fidelity.py's notes. The
re-runs behind `featuse` took 0.023 s per simulation there (the policy seeds, 2 cores).
Nothing here changes what the functions return.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from types import ModuleType
from typing import Any

PREFIX = "feat:"
VARIES = "featvar:"
USES = "featuse:"


class FeatureProbe:
    """Samples the arguments and results of the GP_TARGET functions of loaded slot modules."""

    def __init__(self, every: int = 16, cap: int = 2048):
        self.every, self.cap = max(1, every), cap
        self.samples: dict[str, list[tuple[tuple[float, ...], float]]] = {}
        self.args: dict[str, tuple[str, ...]] = {}
        # per function: (the previous call's arguments, a sampled call's arguments, result)
        self.previous: dict[str, list[tuple[tuple[Any, ...] | None, tuple[Any, ...], Any]]] = {}
        self.fns: dict[str, Callable[..., Any]] = {}  # the unwrapped functions
        self._restore: list[tuple[ModuleType, str, Callable[..., Any]]] = []

    def attach(self, modules: list[ModuleType]) -> None:
        """Wrap every GP_TARGET function of `modules` (a module without one is skipped)."""
        for mod in modules:
            names = getattr(mod, "GP_TARGET", None)
            if isinstance(names, str):
                names = (names,)
            if not isinstance(names, (tuple, list)):
                continue
            for name in names:
                fn = getattr(mod, str(name), None)
                code = getattr(fn, "__code__", None)
                if code is None or str(name) in self.samples:
                    continue
                self.args[name] = code.co_varnames[: code.co_argcount]
                self.samples[name] = []
                self.fns[name] = fn
                setattr(mod, name, self._wrap(name, fn))
                self._restore.append((mod, name, fn))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        kept = self.samples[name]
        pairs = self.previous[name] = []
        every, cap = self.every, self.cap
        state: list[Any] = [0, None]  # calls so far, the previous call's arguments

        def probed(*args: Any) -> Any:
            out = fn(*args)
            state[0] += 1
            if state[0] % every == 0 and len(kept) < cap:
                kept.append((args, out))
                pairs.append((state[1], args, out))
            state[1] = args
            return out

        probed.__wrapped__ = fn  # type: ignore[attr-defined]
        return probed

    def detach(self) -> None:
        """Put the original functions back."""
        for mod, name, fn in self._restore:
            setattr(mod, name, fn)
        self._restore.clear()

    def scales(self) -> dict[str, float]:
        """`feat:<function>:<arg>` and `feat:<function>:return`: mean |value| of the samples
        (functions never sampled, or called with keywords, are left out)."""
        out: dict[str, float] = {}
        for name, kept in self.samples.items():
            names = self.args[name]
            rows = [(a, r) for a, r in kept if len(a) == len(names)]
            if not rows:
                continue
            for i, arg in enumerate(names):
                vals = [abs(float(a[i])) for a, _ in rows if _number(a[i])]
                if vals:
                    out[f"{PREFIX}{name}:{arg}"] = statistics.fmean(vals)
            res = [abs(float(r)) for _, r in rows if _number(r)]
            if res:
                out[f"{PREFIX}{name}:return"] = statistics.fmean(res)
            pairs = [(a, b, r) for a, b, r in self.previous.get(name, ())
                     if a is not None and len(a) == len(b) == len(names)]
            for i, arg in enumerate(names):
                if pairs:
                    out[f"{VARIES}{name}:{arg}"] = sum(a[i] != b[i] for a, b, _ in pairs) / len(pairs)
                    out[f"{USES}{name}:{arg}"] = _use(self.fns[name], pairs, i)
        return out


def _use(fn: Callable[..., Any], pairs: list[tuple[tuple[Any, ...], tuple[Any, ...], Any]],
         i: int) -> float:
    """Share of sampled calls whose result changes when argument `i` alone takes the previous
    call's value (a call that raises then counts as changed)."""
    changed = 0
    for prev, args, res in pairs:
        if prev[i] == args[i]:
            continue
        swapped = list(args)
        swapped[i] = prev[i]
        try:
            changed += bool(fn(*swapped) != res)
        except Exception:  # noqa: BLE001 - evolved code: failing on other inputs is a use
            changed += 1
    return changed / len(pairs)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scales_of(metrics: dict[str, Any] | None, function: str) -> dict[str, float]:
    """{argument or "return": scale} of one function from a runtime's metrics."""
    return _of(metrics, f"{PREFIX}{function}:")


def variation_of(metrics: dict[str, Any] | None, function: str) -> dict[str, float]:
    """{argument: share of calls where it differed from the previous call's}."""
    return _of(metrics, f"{VARIES}{function}:")


def use_of(metrics: dict[str, Any] | None, function: str) -> dict[str, float]:
    """{argument: share of calls whose result depends on it} (see `FeatureProbe`)."""
    return _of(metrics, f"{USES}{function}:")


def _of(metrics: dict[str, Any] | None, head: str) -> dict[str, float]:
    return {k[len(head):]: float(v) for k, v in (metrics or {}).items()
            if k.startswith(head) and isinstance(v, (int, float))}
