"""Named profiler ranges around the model's parts, free when no profiler is running.

`prof_range("attention")` wraps a region in `torch.profiler.record_function("sds::attention")`
only while a profiler is active (a `record_function` costs ~10 us even when off: 84 of them
per 28-layer step). `range_totals(prof)` sums each range's time from a finished profile, so a
breakdown need not guess categories from kernel names. The ranges do not overlap: their
sum is the covered part of a step; norms, rotary, embeddings and copies stay uncovered.
Inside a CUDA-graph replay no range exists (the graph runs as one launch): profile with
`enforce_eager=True` to split the decode forward; the LM head and sampler run outside it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

RANGES = ("attention", "qkv_o_proj", "mlp", "lm_head", "sampler")
PREFIX = "sds::"
_OFF = nullcontext()
_enabled = torch.autograd._profiler_enabled


def prof_range(name: str) -> Any:
    """A context manager: a `record_function` range while profiling, else a no-op."""
    if _enabled():
        return torch.profiler.record_function(PREFIX + name)
    return _OFF


def range_totals(prof: Any, device: bool | None = None) -> dict[str, float]:
    """Seconds per range in a finished `torch.profiler.profile` (device time if `device`)."""
    if device is None:
        device = torch.cuda.is_available()
    out = dict.fromkeys(RANGES, 0.0)
    for ev in prof.key_averages():
        if ev.key.startswith(PREFIX) and ev.key[len(PREFIX):] in out:
            t = ev.device_time_total if device else ev.cpu_time_total
            out[ev.key[len(PREFIX):]] += t / 1e6
    return out
