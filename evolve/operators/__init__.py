"""Mutation operators: each turns a `MutationContext` into a `Proposal` or a `Rejected`.

| name        | needs an LLM | makes                                                      |
|-------------|--------------|------------------------------------------------------------|
| llm-diff    | yes          | code: SEARCH/REPLACE blocks applied to the parent          |
| llm-rewrite | yes          | code: a whole new module                                   |
| gp          | no           | code: DEAP GP over the seed's GP_TARGET expression          |
| literal     | no           | code: numeric constants inside EVOLVE-BLOCKs perturbed      |
| assemble    | no           | spec: crossover of slot choices/params of two runtimes      |

Example:
    op = make_operator("llm-diff", {"llm": {"models": {"m": 1}, "base_url": url,
                                            "prices": {"m": [0.1, 0.4]}}, "repair_rounds": 1})
    result = op.propose(ctx)   # never raises
"""

from __future__ import annotations

import importlib
from typing import Any

from evolve.operators.base import (
    Candidate,
    LLMCallRecord,
    MutationContext,
    Operator,
    Proposal,
    Rejected,
)

# name -> "module:Class"; imported on first use so evolve.llm can import base without a cycle
REGISTRY: dict[str, str] = {
    "llm-diff": "evolve.operators.llm_ops:LLMDiff",
    "llm-rewrite": "evolve.operators.llm_ops:LLMRewrite",
    "gp": "evolve.operators.gp:GPOperator",
    "literal": "evolve.operators.literal:LiteralOperator",
    "assemble": "evolve.operators.assemble:AssembleOperator",
}
OFFLINE = ("gp", "literal", "assemble")


def operator_class(name: str) -> type:
    """The class registered under `name`."""
    if name not in REGISTRY:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_operator(name: str, config: dict[str, Any] | None = None) -> Operator:
    """Build operator `name` from its options (LLM operators also take `llm`: settings).

    A `weight` key is accepted and ignored (sampling operators is the controller's job);
    any other unknown key is an error naming it.
    """
    return operator_class(name)(dict(config or {}))


__all__ = [
    "OFFLINE",
    "REGISTRY",
    "Candidate",
    "LLMCallRecord",
    "MutationContext",
    "Operator",
    "Proposal",
    "Rejected",
    "make_operator",
    "operator_class",
]
