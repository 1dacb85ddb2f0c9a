"""A request as the engine tracks it: tokens, KV progress, block table, sampling params."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass


class SequenceStatus(enum.Enum):
    """Where a sequence is in its life."""

    WAITING = 0
    RUNNING = 1
    FINISHED = 2


@dataclass(slots=True)
class SamplingParams:
    """How to pick tokens: temperature 0 is greedy; top_p < 1 samples from the nucleus."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 64
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        t, p, m = self.temperature, self.top_p, self.max_tokens
        if not isinstance(t, (int, float)) or t < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {t!r}")
        if not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {p!r}")
        if not isinstance(m, int) or isinstance(m, bool) or m < 1:
            raise ValueError(f"SamplingParams.max_tokens must be a positive integer, got {m!r}")


_ids = itertools.count()


class Sequence:
    """One request: prompt + generated token ids and its KV-cache progress."""

    __slots__ = (
        "arrival_time",
        "block_hashes",
        "block_table",
        "finish_reason",
        "finish_time",
        "first_token_time",
        "kv_epoch",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_hashed_blocks",
        "num_preemptions",
        "num_prompt_tokens",
        "request_id",
        "sampling_params",
        "seq_id",
        "status",
        "token_ids",
    )

    def __init__(self, token_ids: list[int], sampling_params: SamplingParams,
                 arrival_time: float = 0.0):
        self.seq_id = next(_ids)
        self.request_id = self.seq_id
        self.status = SequenceStatus.WAITING
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(self.token_ids)
        self.num_computed_tokens = 0   # tokens whose KV is in the cache
        self.num_cached_tokens = 0     # of those, taken from the prefix cache
        self.block_table: list[int] = []
        self.arrival_time = arrival_time
        self.sampling_params = sampling_params
        self.num_preemptions = 0
        self.block_hashes: list[int] = []  # chained hashes of full blocks (engine-owned cache)
        self.num_hashed_blocks = 0         # leading blocks of block_table registered as cached
        self.kv_epoch = 0                  # bumped whenever block_table is dropped
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.finish_reason: str | None = None

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, {self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        """Generated tokens."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens whose KV is not yet in the cache."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        """Whether the sequence has finished."""
        return self.status is SequenceStatus.FINISHED

    @property
    def completion_token_ids(self) -> list[int]:
        """The generated tokens."""
        return self.token_ids[self.num_prompt_tokens:]
