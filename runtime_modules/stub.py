"""A model stub for measuring host overhead: real input preparation, no model forward.

`LLM(..., runner_factory=StubRunner)` runs the whole engine (scheduler, block manager,
batch preparation, postprocessing) with a runner that builds exactly the inputs the real
runner builds and then returns random tokens at once, so host milliseconds per step can
be measured on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime_modules.config import EngineConfig, ModelConfig
from runtime_modules.inputs import InputBuilder
from runtime_modules.model_runner import CPU_KV_BYTES, kv_block_bytes
from runtime_modules.sequence import Sequence


class StubRunner:
    """Runner with the real host-side preparation and random tokens instead of a model."""

    def __init__(self, model: str | Path, model_config: ModelConfig, config: EngineConfig,
                 kernels: Any = None):
        self.cfg, self.mcfg = config, model_config
        self.builder = InputBuilder(config.block_size, config.max_model_len, config.device)
        # no cache is allocated, so the default may cover every sequence at full length
        want = config.max_num_seqs * -(-config.max_model_len // config.block_size)
        per_block = kv_block_bytes(model_config, config.block_size, config.dtype)
        self.num_kv_blocks = config.num_kv_blocks or max(1, min(want, 64 * CPU_KV_BYTES
                                                                // per_block))
        self.rng = np.random.default_rng(config.seed)
        self.last_inputs = None

    def run(self, batch: list[tuple[Sequence, int]]) -> list[int]:
        """Prepare the step's inputs as the real runner does; random tokens for samplers."""
        x = self.builder.prepare(batch)
        self.last_inputs = x
        if x.num_sampled == 0:
            return []
        return self.rng.integers(0, self.mcfg.vocab_size, x.num_sampled).tolist()

    def release(self, seq: Sequence) -> None:
        """A sequence finished: drop its host-side state."""
        self.builder.release(seq)
