"""Slot-level results (`static`, `contract`) cached by code hash.

The same program is never judged twice by the same harness: `static` results are kept in
memory, `contract` results in memory and, through the store, across harnesses and runs,
per device and slot parameters (a kernel that passes with one block size may fail with
another). A slot whose parent is given is checked against it (EVOLVE-BLOCKs), so its
`static` result is not cached.
"""

from __future__ import annotations

import json
from typing import Any

from fitness.result import StageResult
from fitness.static import check_static


class SlotCache:
    """Slot-level stage results by (code, stage, where); see the module docstring."""

    def __init__(self, store: Any, device: str):
        self.store = store  # population_db's Store, or None: memory only
        self.device = device
        self._results: dict[tuple[str, str, str], StageResult] = {}

    def static(self, slots: list[str], codes: dict[str, str],
               parents: dict[str, str]) -> StageResult:
        """`static` over `slots`: the first failing slot's result, else one merged pass."""
        metrics: dict[str, Any] = {}
        total = 0.0
        for slot in slots:
            key = (codes[slot], "static", "any")
            res = None if slot in parents else self._results.get(key)
            if res is None:
                res = check_static(slot, codes[slot], parents.get(slot))
                if slot not in parents:
                    self._results[key] = res
            total += res.duration_s
            if not res.ok:
                return res
            metrics[slot] = res.metrics
        return StageResult("static", "passed", metrics, None, {}, total)

    def _contract_key(self, slot: str, spec: dict[str, Any],
                      code: str) -> tuple[str, str, str]:
        params = json.dumps(spec["slots"][slot].get("params") or {}, sort_keys=True)
        return (code, "contract", f"{self.device}|{slot}|{params}")

    def cached_contract(self, slot: str, spec: dict[str, Any], code: str) -> StageResult | None:
        """The contract result of `slot`'s `code` with its params in `spec`, if known."""
        key = self._contract_key(slot, spec, code)
        if key in self._results:
            return self._results[key]
        if self.store is None:
            return None
        from runtime_modules.slots import code_hash
        rec = self.store.cached_program_evaluation(code_hash(code), "contract")
        params = dict(spec["slots"][slot].get("params") or {})
        if rec is None or rec.device != self.device or \
                (rec.artifacts or {}).get("params", {}) != params:
            return None
        res = StageResult("contract", rec.status, {**rec.metrics, "cached": True}, rec.error,
                          dict(rec.artifacts), 0.0)
        self._results[key] = res
        return res

    def all_contracts_cached(self, spec: dict[str, Any], codes: dict[str, str]) -> bool:
        """Whether every slot in `codes` has a known contract result."""
        return all(self.cached_contract(s, spec, c) is not None for s, c in codes.items())

    def merged_contract(self, spec: dict[str, Any], codes: dict[str, str]) -> StageResult:
        """The cached contract results as one stage: the first failing slot's, else a pass."""
        metrics: dict[str, Any] = {}
        for slot, code in codes.items():
            res = self.cached_contract(slot, spec, code)
            assert res is not None
            if not res.ok:
                return res
            metrics[slot] = res.metrics
        return StageResult("contract", "passed", {**metrics, "cached": True})

    def remember_contract(self, spec: dict[str, Any], codes: dict[str, str],
                          res: StageResult) -> None:
        """Cache per-slot contract outcomes: all slots on a pass, the failing slot on a fail."""
        for slot, code in codes.items():
            if res.ok:
                per = StageResult("contract", "passed", dict(res.metrics.get(slot) or {}))
            elif res.artifacts.get("slot") == slot:
                per = res
            else:
                continue
            self._results[self._contract_key(slot, spec, code)] = per


__all__ = ["SlotCache"]
