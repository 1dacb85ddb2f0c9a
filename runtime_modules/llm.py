"""The user API: `LLM(model, runtime, **engine_params).generate(prompts, sampling_params)`.

Example:
    llm = LLM("tiny", max_num_seqs=8)
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=8))
    out[0].token_ids, llm.loaded_slots["scheduler"]["code_hash"], llm.stats
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime_modules.config import EngineConfig
from runtime_modules.engine import Engine
from runtime_modules.model_runner import ModelRunner
from runtime_modules.models import load_tokenizer, model_config
from runtime_modules.runtime import as_spec, instantiate, kernels_of, load_runtime
from runtime_modules.sequence import SamplingParams, Sequence
from runtime_modules.slots import RuntimeSpec

Prompt = str | list[int]
_UNFREEZE: list[bool] = []


def _unfreeze_at_exit() -> None:
    """Hand frozen objects back to the collector at exit (native bindings check for leaks)."""
    if not _UNFREEZE:
        _UNFREEZE.append(True)
        atexit.register(gc.unfreeze)


@dataclass(slots=True)
class RequestOutput:
    """A finished request: generated token ids, text (with a tokenizer), why it ended."""

    request_id: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str | None
    finish_reason: str
    metrics: dict[str, float] = field(default_factory=dict)


class LLM:
    """An inference engine built from the slots of a RuntimeSpec."""

    def __init__(self, model: str | Path, runtime: RuntimeSpec | dict | str | None = None,
                 runner_factory: Callable[..., Any] | None = None, **engine_params: Any):
        spec = as_spec(runtime)
        params = dict(spec.engine)
        params.update(engine_params)  # explicit keyword arguments win over spec.engine
        self.config = EngineConfig.build(params, where="LLM(...) / runtime spec 'engine'")
        self.runtime = spec.resolved(self.config.device)
        self.model_config = model_config(model)
        limit = self.model_config.max_position_embeddings
        if "max_model_len" not in params:  # as in vLLM: the model's own limit by default
            self.config.max_model_len = limit
        elif self.config.max_model_len > limit:  # only a length the user asked for is refused
            raise ValueError(f"max_model_len={self.config.max_model_len} exceeds the model's "
                             f"max_position_embeddings={limit}")
        self._loaded = load_runtime(self.runtime, self.config.device)
        factory = runner_factory or ModelRunner
        runner = factory(model, self.model_config, self.config, kernels_of(self._loaded))
        self.engine = Engine(self.config, self.model_config, self._loaded, runner, instantiate)
        self.tokenizer = load_tokenizer(model)
        self._outputs: dict[int, RequestOutput] = {}
        if self.config.freeze_gc:
            # a full collection walks every object alive (~170k after start-up: 150 ms on a
            # 2-core CPU, mid-run); objects that outlive start-up are moved out of its reach
            gc.collect()
            gc.freeze()
            _unfreeze_at_exit()

    @property
    def loaded_slots(self) -> dict[str, dict[str, Any]]:
        """{slot: {"name", "code_hash", "path", "params"}}: what really runs."""
        return {s: ls.info() for s, ls in self._loaded.items()}

    @property
    def slot_modules(self) -> dict[str, Any]:
        """{slot: the module its program was loaded as} (e.g. to read or probe its functions)."""
        return {s: ls.module for s, ls in self._loaded.items()}

    @property
    def stats(self) -> dict[str, int]:
        """Engine counters (steps, preemptions, prefix-cache hit tokens, ...)."""
        return self.engine.stats

    def _tokens(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer (tokenizer.json in the model "
                                 "folder); pass token ids instead")
            ids = self.tokenizer.encode(prompt).ids
        else:
            ids = list(prompt)
        vocab = self.model_config.vocab_size
        if not ids:
            raise ValueError("prompt is empty; expected at least one token")
        bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            raise ValueError(f"prompt has token ids {bad[:3]} outside [0, {vocab})")
        if len(ids) >= self.config.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit max_model_len="
                             f"{self.config.max_model_len} (needs room for one output token)")
        return ids

    def _request(self, prompt: Prompt, sampling_params: SamplingParams | None,
                 ) -> tuple[list[int], SamplingParams]:
        """Validated (token ids, sampling params) of one request."""
        sp = sampling_params or SamplingParams()
        if not isinstance(sp, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(sp).__name__}")
        ids = self._tokens(prompt)
        # KV is recomputed after preemption, so a sequence must fit the cache on its own:
        # at its longest it holds KV for every token but the last one sampled
        bs, blocks = self.config.block_size, self.engine.num_kv_blocks
        kv = min(len(ids) + sp.max_tokens, self.config.max_model_len) - 1
        if -(-kv // bs) > blocks:
            raise ValueError(f"request needs KV for {kv} tokens ({len(ids)} prompt + "
                             f"max_tokens={sp.max_tokens}, capped by max_model_len="
                             f"{self.config.max_model_len}) but the KV cache holds {blocks} "
                             f"blocks of {bs} = {blocks * bs} tokens; lower max_tokens or "
                             "max_model_len, or raise num_kv_blocks")
        return ids, sp

    def add_request(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> int:
        """Queue one request; returns its id (see `step`)."""
        return self._add(*self._request(prompt, sampling_params))

    def _add(self, ids: list[int], sp: SamplingParams) -> int:
        seq = Sequence(ids, sp, arrival_time=self.engine.clock())
        self.engine.add_sequence(seq)
        return seq.request_id

    def step(self) -> list[RequestOutput]:
        """Run one engine step; the requests that finished in it."""
        return [self._output(s) for s in self.engine.step_sequences()]

    def has_unfinished(self) -> bool:
        """Whether requests are still waiting or running."""
        return self.engine.has_unfinished()

    def _output(self, seq: Sequence) -> RequestOutput:
        ids = seq.completion_token_ids
        text = self.tokenizer.decode(ids) if self.tokenizer is not None else None
        return RequestOutput(seq.request_id, seq.token_ids[:seq.num_prompt_tokens], ids, text,
                             seq.finish_reason or "length",
                             {"arrival": seq.arrival_time, "first_token": seq.first_token_time,
                              "finish": seq.finish_time, "num_preemptions": seq.num_preemptions,
                              "num_cached_tokens": seq.num_cached_tokens})

    def generate(self, prompts: Prompt | list[Prompt],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Run prompts to completion; outputs in prompt order."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts
                                        and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if isinstance(sampling_params, list):
            if len(sampling_params) != len(prompts):
                raise ValueError(f"{len(sampling_params)} sampling params for {len(prompts)} "
                                 "prompts; pass one, or one per prompt")
            sps = sampling_params
        else:
            sps = [sampling_params or SamplingParams()] * len(prompts)
        # validate every request before queueing any: a bad one leaves no orphans behind
        reqs = [self._request(p, sp) for p, sp in zip(prompts, sps)]
        ids = [self._add(*r) for r in reqs]
        done: dict[int, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm import tqdm
            bar = tqdm(total=len(ids), desc="generate")
        want = set(ids)
        while want - done.keys():
            for out in self.step():
                done[out.request_id] = out
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return [done[i] for i in ids]
