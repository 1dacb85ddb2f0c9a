"""`SchedulerConfig`, in a module of its own that imports no torch.

The `contract` stage of the scheduler and cache-policy slots builds one for each synthetic
scenario; keeping it apart from `runtime_modules.config` (which needs torch for dtypes)
lets a sandboxed worker that only checks contracts start without importing torch.
`runtime_modules.config.SchedulerConfig` is this same class.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SchedulerConfig:
    """The limits a scheduler must respect (what the scheduler slot's constructor gets)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    block_size: int
    num_kv_blocks: int
