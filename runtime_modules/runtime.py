"""Loading a RuntimeSpec: every slot through `slots.load_slot`, kernels bound to params."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from runtime_modules.models.qwen3 import Kernels
from runtime_modules.slots import SLOTS, LoadedSlot, RuntimeSpec, SlotError, load_slot


def as_spec(runtime: RuntimeSpec | dict | str | Path | None) -> RuntimeSpec:
    """A RuntimeSpec from None (defaults), a spec, its dict form, or a JSON file path."""
    if runtime is None:
        return RuntimeSpec.from_dict({})
    if isinstance(runtime, RuntimeSpec):
        return runtime
    if isinstance(runtime, dict):
        return RuntimeSpec.from_dict(runtime)
    if isinstance(runtime, (str, Path)):
        p = Path(runtime)
        if not p.is_file():
            raise SlotError("*", f"runtime spec file {str(p)!r} does not exist")
        try:
            return RuntimeSpec.from_dict(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise SlotError("*", f"{p}: runtime spec is not valid JSON: {e}") from None
    raise SlotError("*", f"runtime must be a RuntimeSpec, dict, JSON path or None, got "
                         f"{type(runtime).__name__}")


def load_runtime(spec: RuntimeSpec, device: str) -> dict[str, LoadedSlot]:
    """Load every slot of `spec` (missing ones take the device's defaults)."""
    full = spec.resolved(device)
    return {name: load_slot(name, choice.program, dict(choice.params))
            for name, choice in full.slots.items()}


def bind(loaded: LoadedSlot) -> Any:
    """The slot's function with its tunable params bound as keyword arguments."""
    return functools.partial(loaded.obj, **loaded.params) if loaded.params else loaded.obj


def kernels_of(loaded: dict[str, LoadedSlot]) -> Kernels:
    """The model's kernel table from loaded slots."""
    return Kernels(**{s: bind(loaded[s]) for s in
                      ("store_kvcache", "decode_attention", "prefill_attention", "rmsnorm")})


def instantiate(loaded: LoadedSlot, *args: Any) -> Any:
    """Construct a class slot (scheduler, cache policy) with its params, naming failures."""
    try:
        return loaded.obj(*args, **loaded.params)
    except Exception as e:
        raise SlotError(loaded.slot, f"{loaded.name}: {SLOTS[loaded.slot].symbol}(...) raised "
                                     f"{type(e).__name__}: {e}") from e
