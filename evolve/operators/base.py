"""What flows between the controller and the mutation operators.

Operators never touch the database: they get a frozen `MutationContext` and return a
`Proposal` (new code for one slot, or a new runtime spec) or a `Rejected` (with the reason),
plus the LLM calls they made, which the controller records.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Candidate:
    """A program (one slot's code) inside a runtime, with what is known of it."""

    runtime_id: int | None
    program_id: int | None
    slot: str
    code: str
    spec: dict[str, Any]  # the RuntimeSpec dict of the runtime it belongs to
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Objective:
    """What the run selects on, so a prompt can say what is optimized and how it is measured."""

    metrics: tuple[tuple[str, str], ...] = ()  # (metric, "max" or "min"); the first ranks
    workloads: tuple[str, ...] = ()  # the workloads each child is scored on
    fidelity: str = "engine"  # "sim": the cost model prices the engine's counted work


@dataclass(frozen=True, slots=True)
class MutationContext:
    """Everything an operator may use to propose a child of `parent`."""

    slot: str
    contract: str  # the slot's contract docstring
    parent: Candidate
    second_parent: Candidate | None = None  # for crossover operators
    inspirations: tuple[Candidate, ...] = ()
    recent_failures: tuple[str, ...] = ()  # "stage: error" lines of recent failed children
    rng: random.Random = field(default_factory=random.Random)
    budget_ok: Callable[[float], bool] = lambda est_cost: True  # checked before each LLM call
    objective: Objective | None = None  # None: the prompt says nothing of the objective
    seed_metrics: dict[str, Any] = field(default_factory=dict)  # the seed runtime's, same shape
    parent_params: dict[str, Any] = field(default_factory=dict)  # `slot`'s params in the spec
    engine_params: dict[str, Any] = field(default_factory=dict)  # the parent spec's engine params
    focus: str | None = None  # the function of `slot` to change (operators that can aim)
    # the kind of change to make, for an operator with several (gp: `add_term`, `uniform`,
    # ..., `crossover`); None: the operator draws one by its own weights
    variation: str | None = None


@dataclass(frozen=True, slots=True)
class LLMCallRecord:
    """One call to an LLM endpoint, successful or not."""

    model: str
    prompt: str
    response: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    error: str | None = None  # also set for a reply that cannot be used (truncated, empty)
    finish_reason: str | None = None  # the server's: stop, length, ...
    estimated: bool = False  # tokens and cost estimated (a timeout), not reported


@dataclass(frozen=True, slots=True)
class Proposal:
    """A child: new code for `slot` (code) and/or new slot choices/params (spec)."""

    operator: str
    slot: str
    code: str | None = None
    spec: dict[str, Any] | None = None
    llm_calls: tuple[LLMCallRecord, ...] = ()
    note: str = ""
    variation: str | None = None  # the kind of change made (gp: `add_term`, `crossover`, ...)
    # the opposite change to the same parent (a term with its sign flipped, constants moved
    # the other way), which the search tries when this child does much worse than its
    # parent: a change that hurts a lot found something that matters (`search.reflect`)
    reverse: str | None = None
    reverse_note: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An attempt that produced no valid child, with the reason shown to later prompts."""

    operator: str
    slot: str
    reason: str
    llm_calls: tuple[LLMCallRecord, ...] = ()
    fatal: str | None = None  # the LLM endpoint cannot work: the run must stop (one line)
    fixable: bool = False  # a reply problem the model can fix (shown to later prompts)


class Operator(Protocol):
    """A mutation operator: `propose(ctx)` returns a Proposal or a Rejected, never raises."""

    name: str

    def propose(self, ctx: MutationContext) -> Proposal | Rejected: ...
