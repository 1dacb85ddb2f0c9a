"""`assemble`: crossover of two runtimes' slot choices and parameters, no LLM needed.

Uniform crossover over genes: each slot's choice comes whole from one parent (a program
with its own params, since params are only valid for the program that declares them);
where both parents run the same program, each of its params is drawn from either; each
engine parameter is drawn from either. A slot or engine key only one parent sets is kept
or left to the default with even odds. The child must differ from the first parent.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from evolve.operators.base import MutationContext, Proposal, Rejected
from evolve.operators.options import check_keys, number
from runtime_modules.slots import RuntimeSpec, SlotError

log = logging.getLogger(__name__)

CONFIG_KEYS = frozenset({"weight", "attempts"})
_ABSENT = object()


def _pick(rng: random.Random, a: Any, b: Any) -> Any:
    return a if rng.random() < 0.5 else b


def _mix_mapping(rng: random.Random, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Each key from a or b; a key only one side has is kept with probability 1/2."""
    out = {}
    for key in sorted(set(a) | set(b)):
        value = _pick(rng, a.get(key, _ABSENT), b.get(key, _ABSENT))
        if value is not _ABSENT:
            out[key] = value
    return out


def crossover(a: dict[str, Any], b: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One uniform-crossover child of two RuntimeSpec dicts."""
    sa, sb = a.get("slots", {}), b.get("slots", {})
    slots = {}
    for slot in sorted(set(sa) | set(sb)):
        ca, cb = sa.get(slot, _ABSENT), sb.get(slot, _ABSENT)
        if ca is not _ABSENT and cb is not _ABSENT and ca["program"] == cb["program"]:
            params = _mix_mapping(rng, ca.get("params") or {}, cb.get("params") or {})
            choice: Any = {"program": ca["program"], "params": params}
        else:
            choice = _pick(rng, ca, cb)
        if choice is not _ABSENT:
            slots[slot] = choice
    engine = _mix_mapping(rng, a.get("engine") or {}, b.get("engine") or {})
    return RuntimeSpec.from_dict({"slots": slots, "engine": engine}).to_dict()


class AssembleOperator:
    """Crossover of slot choices and parameters between ctx.parent and ctx.second_parent."""

    name = "assemble"

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        check_keys(self.name, config, CONFIG_KEYS)
        self.attempts = number(self.name, config, "attempts", 20, int, 1)

    def propose(self, ctx: MutationContext) -> Proposal | Rejected:
        """A child spec mixing both parents; never raises."""
        if ctx.second_parent is None:
            return Rejected(self.name, ctx.slot, "assemble needs a second parent; got none")
        try:
            a = RuntimeSpec.from_dict(ctx.parent.spec).to_dict()
            b = RuntimeSpec.from_dict(ctx.second_parent.spec).to_dict()
        except SlotError as e:
            return Rejected(self.name, ctx.slot, f"assemble: a parent's spec is invalid: {e}")
        if a == b:
            return Rejected(self.name, ctx.slot, "no change: both parents have the same spec")
        rng = random.Random(ctx.rng.getrandbits(64))
        try:
            for _ in range(self.attempts):
                child = crossover(a, b, rng)
                if child != a:
                    return Proposal(self.name, ctx.slot, spec=child,
                                    note="genes from the second parent: "
                                         + ", ".join(_differences(a, child)))
        except Exception as e:
            log.exception("assemble failed unexpectedly")
            return Rejected(self.name, ctx.slot, f"assemble internal error: "
                                                 f"{type(e).__name__}: {e}")
        return Rejected(self.name, ctx.slot, f"no change: {self.attempts} crossovers all "
                                             "reproduced the first parent")


def _differences(a: dict[str, Any], child: dict[str, Any]) -> list[str]:
    """Which slots / engine keys of the child differ from the first parent."""
    out = [f"slots.{s}" for s in sorted(set(a["slots"]) | set(child["slots"]))
           if a["slots"].get(s) != child["slots"].get(s)]
    out += [f"engine.{k}" for k in sorted(set(a["engine"]) | set(child["engine"]))
            if a["engine"].get(k) != child["engine"].get(k)]
    return out
