"""A correct scheduler that, at import, wraps the engine's step and torch.Tensor.tolist
(behaviour kept, so nothing else notices) but leaves the clock alone: its contract, which
uses neither, passes; a stage that runs the engine must reject it, naming both."""
import torch

import runtime_modules.llm as _engine
from seeds.scheduler.fcfs import Scheduler  # noqa: F401

_step, _tolist = _engine.LLM.step, torch.Tensor.tolist
_engine.LLM.step = lambda self, *a, **k: _step(self, *a, **k)
torch.Tensor.tolist = lambda self: _tolist(self)
