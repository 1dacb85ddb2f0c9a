"""The engine step loop: schedule, check the scheduler's contract, run, postprocess.

The scheduler and cache policy are loaded slots; the engine checks cheaply at run time
that the scheduler kept its contract (each sequence once, budgets, token counts, blocks
allocated, max_model_len) and raises `SchedulerContractError` naming it otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runtime_modules.block_manager import BlockManager
from runtime_modules.config import EngineConfig, ModelConfig, SchedulerConfig
from runtime_modules.sequence import Sequence, SequenceStatus
from runtime_modules.slots import LoadedSlot

__all__ = ["Engine", "SchedulerConfig", "SchedulerContractError"]

STALL_STEPS = 100  # empty batches in a row while work remains: the scheduler is stuck
RUNNING, FINISHED = SequenceStatus.RUNNING, SequenceStatus.FINISHED


class SchedulerContractError(RuntimeError):
    """The scheduler slot broke its contract (or raised)."""


class Engine:
    """Scheduler + block manager + runner; `step()` advances every scheduled sequence."""

    def __init__(self, config: EngineConfig, model_config: ModelConfig,
                 loaded: dict[str, LoadedSlot], runner: Any,
                 instantiate: Callable[..., Any]):
        self.config, self.model_config, self.runner = config, model_config, runner
        self.num_kv_blocks = runner.num_kv_blocks
        self.sched_name = loaded["scheduler"].name
        policy = instantiate(loaded["cache_policy"], self.num_kv_blocks)
        self.block_manager = BlockManager(self.num_kv_blocks, config.block_size, policy,
                                          config.enable_prefix_caching,
                                          loaded["cache_policy"].name)
        self.scheduler_config = SchedulerConfig(config.max_num_seqs,
                                                config.max_num_batched_tokens,
                                                config.max_model_len, config.block_size,
                                                self.num_kv_blocks)
        self.scheduler = instantiate(loaded["scheduler"], self.scheduler_config,
                                     self.block_manager)
        self.eos = model_config.eos_ids
        self.steps = self.prefill_steps = self.decode_steps = self.empty_steps = 0
        self.scheduled_tokens = self.generated_tokens = 0
        # sum over steps and scheduled sequences of the KV length after the step: the KV
        # tokens attention reads (the bench's cost model; counted here, not by any slot)
        self.kv_tokens_attended = 0
        # sum over steps and scheduled sequences of (query token, context token) pairs:
        # attention's compute (k new tokens after c cached ones: k*c + k*(k+1)/2)
        self.attn_pairs = 0
        self._empty_run = 0
        # The clock that stamps first-token and finish times (a simulation's modeled clock
        # replaces it), and an optional observer told each non-empty step's work before the
        # clock is read: observer(num_seqs, tokens, kv_tokens, attn_pairs). Both belong to
        # whoever drives the engine (the harness), never to a slot.
        self.clock: Callable[[], float] = time.perf_counter
        self.step_observer: Callable[[int, int, int, int], Any] | None = None
        self.live: dict[int, Sequence] = {}

    def add_sequence(self, seq: Sequence) -> None:
        """Queue a new sequence."""
        self.live[seq.seq_id] = seq
        self.block_manager.track_waiting(seq)  # read-only features for policies
        self._call("add", seq)

    def has_unfinished(self) -> bool:
        """Whether any sequence is still waiting or running."""
        return bool(self.live)

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.scheduler, method)(*args)
        except Exception as e:
            raise SchedulerContractError(f"scheduler {self.sched_name!r}: {method}() raised "
                                         f"{type(e).__name__}: {e}") from e

    def _bad(self, problem: str) -> SchedulerContractError:
        return SchedulerContractError(f"scheduler {self.sched_name!r} broke its contract: "
                                      f"{problem}")

    def _check(self, batch: list[tuple[Sequence, int]]) -> None:
        c = self.config
        if not isinstance(batch, list):
            raise self._bad(f"schedule() must return a list, got {type(batch).__name__}")
        if len(batch) > c.max_num_seqs:
            raise self._bad(f"{len(batch)} sequences > max_num_seqs={c.max_num_seqs}")
        bs, max_len, total = c.block_size, c.max_model_len, 0
        try:
            for seq, n in batch:  # the cheap test first; the precise message only on failure
                end = seq.num_computed_tokens + n
                if (n < 1 or end > len(seq.token_ids) or end > max_len
                        or len(seq.block_table) * bs < end or seq.status is not RUNNING):
                    self._explain(seq, n)
                total += n
            ids = {seq.seq_id for seq, _ in batch}
        except (TypeError, ValueError, AttributeError) as e:
            raise self._bad(f"schedule() must return (Sequence, int) pairs: {e}") from None
        if len(ids) != len(batch):
            raise self._bad("a sequence is scheduled twice in one step")
        if not ids <= self.live.keys():
            raise self._bad(f"sequences {sorted(ids - self.live.keys())[:5]} are not live")
        if total > c.max_num_batched_tokens:
            raise self._bad(f"{total} tokens > max_num_batched_tokens="
                            f"{c.max_num_batched_tokens}")

    def _explain(self, seq: Sequence, n: int) -> None:
        c = self.config
        end = seq.num_computed_tokens + n
        if not (isinstance(n, int) and 1 <= n and end <= len(seq.token_ids)):
            raise self._bad(f"{seq} given n={n!r}; expected 1 <= n <= "
                            f"{seq.num_uncomputed_tokens}")
        if end > c.max_model_len:
            raise self._bad(f"{seq} would hold {end} KV tokens > max_model_len="
                            f"{c.max_model_len}")
        if len(seq.block_table) * c.block_size < end:
            raise self._bad(f"{seq} given n={n} without allocated blocks for them "
                            "(call block_manager.allocate)")
        raise self._bad(f"{seq} scheduled with status {seq.status.name}, not RUNNING")

    def step_sequences(self) -> list[Sequence]:
        """One engine step; the sequences that finished in it."""
        self.block_manager.now = self.steps
        batch = self._call("schedule")
        self.steps += 1
        if not batch:
            self.empty_steps += 1
            if self.live:
                self._empty_run += 1
                if self._empty_run >= STALL_STEPS:
                    raise self._bad(f"{STALL_STEPS} empty batches in a row while "
                                    f"{len(self.live)} sequences are unfinished (stall)")
            return []
        self._empty_run = 0
        self._check(batch)
        tokens = self.runner.run(batch)
        return self._postprocess(batch, tokens)

    def _postprocess(self, batch: list[tuple[Sequence, int]], tokens: list[int]) -> list[Sequence]:
        bm, eos, max_len = self.block_manager, self.eos, self.config.max_model_len
        commit = bm.commit if bm.enable_prefix_caching else None
        bs = self.config.block_size
        finished: list[Sequence] = []
        first: list[Sequence] = []
        ti = 0
        scheduled = kv = pairs = 0
        for seq, n in batch:
            scheduled += n
            start = seq.num_computed_tokens
            nc = start + n
            kv += nc
            pairs += n * start + n * (n + 1) // 2
            seq.num_computed_tokens = nc
            if commit is not None and nc >= (seq.num_hashed_blocks + 1) * bs:
                commit(seq)
            if nc != len(seq.token_ids):
                continue
            tok = tokens[ti]
            ti += 1
            toks = seq.token_ids
            toks.append(tok)
            if seq.first_token_time is None:
                first.append(seq)
            sp = seq.sampling_params
            if tok in eos and not sp.ignore_eos:
                seq.finish_reason = "stop"
            elif len(toks) - seq.num_prompt_tokens >= sp.max_tokens or len(toks) >= max_len:
                seq.finish_reason = "length"
            else:
                continue
            finished.append(seq)
        if ti != len(tokens):
            raise RuntimeError(f"runner returned {len(tokens)} tokens for {ti} sampled "
                               "sequences")
        self.scheduled_tokens += scheduled
        self.kv_tokens_attended += kv
        self.attn_pairs += pairs
        self.generated_tokens += ti
        if scheduled == len(batch):
            self.decode_steps += 1
        else:
            self.prefill_steps += 1
        if self.step_observer is not None:
            self.step_observer(len(batch), scheduled, kv, pairs)
        now = self.clock()  # after the observer: a modeled clock has advanced by this step
        for seq in first:
            seq.first_token_time = now
        for seq in finished:
            seq.finish_time = now
            bm.free(seq)
            bm.forget(seq)
            seq.status = FINISHED
            del self.live[seq.seq_id]
            self.runner.release(seq)
            self._call("finish", seq)
        return finished

    @property
    def stats(self) -> dict[str, int]:
        """Counters: steps, prefill/decode steps, preemptions, prefix-cache hits, KV read, ..."""
        bm = self.block_manager
        return {"steps": self.steps, "prefill_steps": self.prefill_steps,
                "decode_steps": self.decode_steps, "empty_steps": self.empty_steps,
                "preemptions": bm.num_preemptions,
                "prefix_cache_hit_tokens": bm.prefix_hit_tokens,
                "scheduled_tokens": self.scheduled_tokens,
                "generated_tokens": self.generated_tokens,
                "kv_tokens_attended": self.kv_tokens_attended,
                "attn_pairs": self.attn_pairs,
                "num_kv_blocks": self.num_kv_blocks,
                "free_kv_blocks": bm.num_free_blocks,
                "unfinished": len(self.live)}
