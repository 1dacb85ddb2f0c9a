"""`llm-diff` and `llm-rewrite`: ask an LLM for a child of the parent program.

Both build a prompt from the context, send it through `evolve.llm.LLMClient`, turn the reply
into code (SEARCH/REPLACE blocks or a whole module) and check it (`edits.check_child`:
compiles, EVOLVE-BLOCKs respected, not identical to the parent, the slot's static checks).
A reply that fails (truncated, empty, unmatched SEARCH lines, ...) gets up to
`repair_rounds` follow-up prompts to the same model, showing the error and the exact lines
involved; what still fails is a `Rejected` with the reason, marked `fixable` (later prompts
for the slot show it). A transport failure is not repaired and not fed back; an endpoint
that cannot work at all comes back as a Rejected with `fatal` set, which stops the run.
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
        model = None  # a repair round goes to the model that wrote the reply
        for round_ in range(self.repair_rounds + 1):
            result = self.client.chat(prompt, ctx.rng, ctx.budget_ok, model=model)
            calls.extend(result.calls)
            model = result.model or model
            if result.fatal:
                return Rejected(self.name, ctx.slot, f"LLM endpoint unusable: {result.fatal}",
                                tuple(calls), fatal=result.fatal)
            if result.text is None:  # transport failure or budget: no point repairing
                reasons.append(f"LLM call failed: {result.error}")
                return self._rejected(ctx, reasons, calls, fixable=False)
            try:
                if result.error:  # truncated, empty, filtered: the reply is not usable
                    raise EditError(result.error, _reply_hint(result.error))
                code = self.child_code(ctx.parent.code, result.text)
                check_child(ctx.parent.code, code, ctx.slot)
            except EditError as e:
                reasons.append(str(e))
                prompt = build_repair_prompt(first, result.text, e.full())
                continue
            note = f"after {round_} repair round(s)" if round_ else ""
            return Proposal(self.name, ctx.slot, code=code, llm_calls=tuple(calls), note=note)
        return self._rejected(ctx, reasons, calls, fixable=True)

    def _rejected(self, ctx: MutationContext, reasons: list[str],
                  calls: list[LLMCallRecord], fixable: bool) -> Rejected:
        reason = reasons[-1] if len(reasons) == 1 else "; ".join(
            f"round {i + 1}: {r}" for i, r in enumerate(reasons))
        return Rejected(self.name, ctx.slot, reason, tuple(calls), fixable=fixable)


def _reply_hint(error: str) -> str:
    if error.startswith("truncated"):
        return ("The reply was cut off before it ended. Answer again with a shorter reply: "
                "fewer and smaller blocks, no explanation before them.")
    return ""


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
