"""A correct scheduler that, at import, wraps the engine's step, torch.Tensor.tolist and
time.monotonic_ns (behaviour kept, so nothing else notices): must be `rejected`."""
import time

import torch

import runtime_modules.llm as _engine
from seeds.scheduler.fcfs import Scheduler  # noqa: F401

_step, _tolist, _mono = _engine.LLM.step, torch.Tensor.tolist, time.monotonic_ns
_engine.LLM.step = lambda self, *a, **k: _step(self, *a, **k)
torch.Tensor.tolist = lambda self: _tolist(self)
time.monotonic_ns = lambda: _mono()
