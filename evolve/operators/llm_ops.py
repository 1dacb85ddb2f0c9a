"""`llm-diff` and `llm-rewrite`: ask an LLM for a child of the parent program.

Both build a prompt from the context, send it through `evolve.llm.LLMClient`, turn the reply
into code (SEARCH/REPLACE blocks or a whole module) and check it (parses, EVOLVE-BLOCKs
respected, not identical to the parent). A reply that fails gets up to `repair_rounds`
follow-up prompts showing the error; what still fails is a `Rejected` with the reason.
Every attempt, failed ones included, travels back in `llm_calls`.
"""

from __future__ import annotations

import logging
from typing import Any

from evolve.llm import LLMClient, LLMConfigError, LLMSettings
from evolve.operators.base import LLMCallRecord, MutationContext, Proposal, Rejected
from evolve.operators.edits import EditError, apply_diff, check_child, extract_module, parse_diff
from evolve.prompts import build_prompt, build_repair_prompt

log = logging.getLogger(__name__)

CONFIG_KEYS = frozenset({"llm", "repair_rounds", "max_inspirations", "weight"})


class LLMOperator:
    """Shared machinery of the LLM operators; subclasses say how a reply becomes code."""

    name = "llm"
    kind = "diff"

    def __init__(self, config: dict[str, Any], client: LLMClient | None = None):
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise LLMConfigError(f"operators.{self.name}: unknown key(s) {sorted(unknown)}; "
                                 f"expected some of {sorted(CONFIG_KEYS)}")
        self.repair_rounds = _int(config.get("repair_rounds", 1), f"{self.name}.repair_rounds")
        self.max_inspirations = _int(config.get("max_inspirations", 3),
                                     f"{self.name}.max_inspirations")
        if client is None:
            if "llm" not in config:
                raise LLMConfigError(f"operators.{self.name} needs LLM settings under 'llm' "
                                     "(models, base_url, prices, ...)")
            client = LLMClient(LLMSettings.from_dict(config["llm"], where="llm"))
        self.client = client

    def child_code(self, parent_code: str, reply: str) -> str:
        """The child module a reply describes, or an EditError."""
        raise NotImplementedError

    def propose(self, ctx: MutationContext) -> Proposal | Rejected:
        """One child from the LLM, or the reason there is none; never raises."""
        calls: list[LLMCallRecord] = []
        try:
            return self._propose(ctx, calls)
        except Exception as e:  # a bug must become a recorded rejection, not a dead controller
            log.exception("%s failed unexpectedly", self.name)
            return Rejected(self.name, ctx.slot, f"internal error: {type(e).__name__}: {e}",
                            tuple(calls))

    def _propose(self, ctx: MutationContext, calls: list[LLMCallRecord]) -> Proposal | Rejected:
        first = prompt = build_prompt(self.kind, ctx, self.max_inspirations)
        reasons: list[str] = []
        for round_ in range(self.repair_rounds + 1):
            result = self.client.chat(prompt, ctx.rng, ctx.budget_ok)
            calls.extend(result.calls)
            if result.text is None:  # transport failure or budget: no point repairing
                reasons.append(f"LLM call failed: {result.error}")
                break
            try:
                code = self.child_code(ctx.parent.code, result.text)
                check_child(ctx.parent.code, code)
            except EditError as e:
                reasons.append(str(e))
                prompt = build_repair_prompt(first, result.text, str(e))
                continue
            note = "after a repair round" if round_ else ""
            return Proposal(self.name, ctx.slot, code=code, llm_calls=tuple(calls), note=note)
        reason = reasons[-1] if len(reasons) == 1 else "; ".join(
            f"round {i + 1}: {r}" for i, r in enumerate(reasons))
        return Rejected(self.name, ctx.slot, reason, tuple(calls))


class LLMDiff(LLMOperator):
    """`llm-diff`: SEARCH/REPLACE blocks applied to the parent."""

    name = "llm-diff"
    kind = "diff"

    def child_code(self, parent_code: str, reply: str) -> str:
        """Apply the reply's SEARCH/REPLACE blocks to the parent."""
        return apply_diff(parent_code, parse_diff(reply))


class LLMRewrite(LLMOperator):
    """`llm-rewrite`: a whole new module in one fenced python block."""

    name = "llm-rewrite"
    kind = "rewrite"

    def child_code(self, parent_code: str, reply: str) -> str:
        """The module in the reply's python block."""
        code = extract_module(reply)
        return code if code.endswith("\n") else code + "\n"


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LLMConfigError(f"operators.{where} must be an integer >= 0, got {value!r}")
    return value
