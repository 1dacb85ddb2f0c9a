"""The sds inference engine: a nano-vLLM-class engine built from pluggable slots."""

from runtime_modules.config import EngineConfig, ModelConfig
from runtime_modules.llm import LLM, RequestOutput
from runtime_modules.sequence import SamplingParams
from runtime_modules.slots import RuntimeSpec, SlotError

__all__ = ["LLM", "EngineConfig", "ModelConfig", "RequestOutput", "RuntimeSpec",
           "SamplingParams", "SlotError"]
