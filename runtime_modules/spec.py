"""RuntimeSpec: one program per slot plus parameters, the individual evolution breeds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from runtime_modules.contracts import SLOTS, SlotError, slot_info
from runtime_modules.programs import parse_ref


@dataclass(frozen=True, slots=True)
class SlotChoice:
    """One slot's program reference and the tunable values passed to it."""

    program: str
    params: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"program": self.program}
        if self.params:
            d["params"] = dict(self.params)
        return d


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """A runtime: one program per slot plus slot parameters and engine parameters.

    Example: `RuntimeSpec.from_dict({"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}},
    "engine": {"max_num_seqs": 64}})`. Slots left out take the device's defaults when loaded.
    """

    slots: MappingProxyType
    engine: MappingProxyType

    @staticmethod
    def from_dict(d: dict[str, Any] | RuntimeSpec) -> RuntimeSpec:
        """Validate and build a spec from its JSON form."""
        if isinstance(d, RuntimeSpec):
            return d
        if not isinstance(d, dict):
            raise SlotError("*", f"a runtime spec must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"slots", "engine"}
        if unknown:
            raise SlotError("*", f"runtime spec has unknown keys {sorted(unknown)}; "
                                 "expected 'slots' and 'engine'")
        slots: dict[str, SlotChoice] = {}
        for name, choice in (d.get("slots") or {}).items():
            slot_info(name)
            if isinstance(choice, str):
                choice = {"program": choice}
            if not isinstance(choice, dict) or not isinstance(choice.get("program"), str):
                raise SlotError(name, f"expected {{'program': REF, 'params': {{...}}}}, got {choice!r}")
            params = choice.get("params") or {}
            if not isinstance(params, dict):
                raise SlotError(name, f"params must be an object, got {params!r}")
            parse_ref(name, choice["program"])
            slots[name] = SlotChoice(choice["program"], MappingProxyType(dict(params)))
        engine = d.get("engine") or {}
        if not isinstance(engine, dict):
            raise SlotError("engine", f"engine parameters must be an object, got {engine!r}")
        return RuntimeSpec(MappingProxyType(dict(sorted(slots.items()))),
                           MappingProxyType(dict(sorted(engine.items()))))

    @staticmethod
    def from_json(text: str) -> RuntimeSpec:
        """Parse the JSON form (see `to_json`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SlotError("*", f"runtime spec is not valid JSON: {e}") from None
        return RuntimeSpec.from_dict(data)

    @staticmethod
    def default(device: str = "cpu") -> RuntimeSpec:
        """The seed runtime: torch kernels on CPU, Triton kernels on CUDA."""
        attr = "default_cuda" if str(device).startswith("cuda") else "default_cpu"
        return RuntimeSpec.from_dict(
            {"slots": {n: {"program": getattr(s, attr)} for n, s in SLOTS.items()}})

    def resolved(self, device: str = "cpu") -> RuntimeSpec:
        """This spec with every missing slot filled with the device's default."""
        d = RuntimeSpec.default(device).to_dict()
        d["slots"].update(self.to_dict()["slots"])
        d["engine"] = dict(self.engine)
        return RuntimeSpec.from_dict(d)

    def with_slot(self, slot: str, program: str, params: dict[str, Any] | None = None) -> RuntimeSpec:
        """A copy with `slot` set to `program` (and `params`)."""
        d = self.to_dict()
        d["slots"][slot] = {"program": program, "params": dict(params or {})}
        return RuntimeSpec.from_dict(d)

    def with_engine(self, **params: Any) -> RuntimeSpec:
        """A copy with engine parameters updated."""
        d = self.to_dict()
        d["engine"].update(params)
        return RuntimeSpec.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: {"slots": {slot: {"program", "params"?}}, "engine": {...}}."""
        return {"slots": {k: v.to_dict() for k, v in self.slots.items()},
                "engine": dict(self.engine)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), stable across processes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

