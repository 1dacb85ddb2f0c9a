"""The sds inference engine: a nano-vLLM-class engine built from pluggable slots."""

from runtime_modules.slots import RuntimeSpec, SlotError

__all__ = ["RuntimeSpec", "SlotError"]
