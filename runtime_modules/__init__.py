"""The sds inference engine: a nano-vLLM-class engine built from pluggable slots.

The engine's names load on first use, so that reading a runtime spec or a slot contract
(`runtime_modules.slots`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from runtime_modules.slots import RuntimeSpec, SlotError

__all__ = ["LLM", "EngineConfig", "ModelConfig", "RequestOutput", "RuntimeSpec",
           "SamplingParams", "SlotError"]
# name -> submodule; relative, so an exported copy of the package (sds export) loads its own
_LAZY = {"EngineConfig": "config", "ModelConfig": "config", "LLM": "llm",
         "RequestOutput": "llm", "SamplingParams": "sequence"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'runtime_modules' has no attribute {name!r}")
