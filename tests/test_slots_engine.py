"""The engine loads what the spec says, reports it, and names the slot of a broken module."""

from __future__ import annotations

import pytest

from runtime_modules import LLM, RuntimeSpec, SamplingParams, SlotError
from runtime_modules.engine import SchedulerContractError

GOOD_POLICY = '''
from collections import deque
TUNABLES = {"reverse": [False, True]}
class CachePolicy:
    def __init__(self, num_blocks, reverse=False):
        self.free, self.reverse = deque(), reverse
    def add(self, block):
        self.free.append(block.block_id)
    def remove(self, block_id):
        self.free.remove(block_id)
    def evict(self):
        return self.free.pop() if self.reverse else self.free.popleft()
'''


def _write(tmp_path, name: str, code: str) -> str:
    p = tmp_path / f"{name}.py"
    p.write_text(code)
    return f"file:{p}"


def _llm(runtime, **kw) -> LLM:
    return LLM("tiny", runtime=runtime, device="cpu", max_model_len=64, num_kv_blocks=32, **kw)


def test_swapping_a_slot_changes_the_reported_code_hash(tmp_path):
    a = _llm(None)
    spec = RuntimeSpec.default("cpu").with_slot("cache_policy", _write(tmp_path, "p", GOOD_POLICY),
                                                {"reverse": True})
    b = _llm(spec)
    assert a.loaded_slots["cache_policy"]["code_hash"] != b.loaded_slots["cache_policy"]["code_hash"]
    assert a.loaded_slots["scheduler"]["code_hash"] == b.loaded_slots["scheduler"]["code_hash"]
    assert b.loaded_slots["cache_policy"]["params"] == {"reverse": True}
    assert b.engine.block_manager.policy.reverse is True  # params really reached the class
    c = _llm(RuntimeSpec.default("cpu").with_slot("scheduler", "seed:scheduler/chunked"))
    assert c.loaded_slots["scheduler"]["name"] == "chunked"
    assert c.loaded_slots["scheduler"]["code_hash"] != a.loaded_slots["scheduler"]["code_hash"]
    out = b.generate([[5, 6, 7, 8, 9]], SamplingParams(temperature=0, max_tokens=4))
    assert len(out[0].token_ids) >= 1


def test_engine_params_come_from_spec_and_kwargs_win():
    spec = {"engine": {"max_num_seqs": 7, "block_size": 8}}
    llm = LLM("tiny", runtime=spec, device="cpu", max_model_len=64, num_kv_blocks=16,
              block_size=4)
    assert llm.config.max_num_seqs == 7 and llm.config.block_size == 4


@pytest.mark.parametrize("spec, slot, words", [
    ({"slots": {"sampler": {"program": "seed:sampler/x"}}}, "sampler", "unknown slot"),
    ({"slots": {"scheduler": {"program": "seed:scheduler/nope"}}}, "scheduler", "not found"),
    ({"slots": {"scheduler": {"program": "seed:scheduler/chunked",
                              "params": {"chunk_size": 3}}}}, "scheduler", "outside its range"),
    ({"slots": {"scheduler": {"program": "seed:scheduler/chunked",
                              "params": {"bogus": 1}}}}, "scheduler", "not a declared tunable"),
    ({"engine": {"max_num_seq": 3}}, None, "unknown engine parameter"),
])
def test_broken_specs_name_the_slot_and_problem(spec, slot, words):
    with pytest.raises((SlotError, ValueError)) as e:
        _llm(spec)
    assert words in str(e.value)
    if slot:
        assert isinstance(e.value, SlotError) and e.value.slot == slot


@pytest.mark.parametrize("slot, code, words", [
    ("cache_policy", "class Policy:\n    pass\n", "does not define 'CachePolicy'"),
    ("cache_policy", "class CachePolicy:\n    def __init__(self, num_blocks):\n        pass\n",
     "lacks method"),
    ("rmsnorm", "def rmsnorm(x, w, eps, residual=None):\n    return x\n", "signature"),
    ("scheduler", "class Scheduler:\n    def __init__(self, config block_manager):\n", "syntax"),
    ("decode_attention", "import not_a_module_xyz\n", "import failed"),
])
def test_broken_modules_name_the_slot_and_problem(tmp_path, slot, code, words):
    spec = RuntimeSpec.default("cpu").with_slot(slot, _write(tmp_path, "bad", code))
    with pytest.raises(SlotError) as e:
        _llm(spec)
    assert e.value.slot == slot and words in str(e.value)


def test_policy_constructor_failure_names_the_slot(tmp_path):
    code = GOOD_POLICY.replace("self.free, self.reverse = deque(), reverse", "1 / 0")
    with pytest.raises(SlotError) as e:
        _llm(RuntimeSpec.default("cpu").with_slot("cache_policy", _write(tmp_path, "z", code)))
    assert e.value.slot == "cache_policy" and "ZeroDivisionError" in str(e.value)


LAZY = '''
class Scheduler:
    """Breaks the contract in a chosen way."""
    def __init__(self, config, block_manager, mode=0):
        self.bm, self.q, self.mode = block_manager, [], mode
    def add(self, seq):
        self.q.append(seq)
    def finish(self, seq):
        self.q.remove(seq)
    def has_unfinished(self):
        return bool(self.q)
    def schedule(self):
        if self.mode == 2:
            return []
        seq = self.q[0]
        seq.status = type(seq.status).RUNNING
        if self.mode == 1:
            return [(seq, seq.num_uncomputed_tokens)]   # forgot to allocate
        self.bm.allocate(seq, seq.num_uncomputed_tokens)
        return [(seq, seq.num_uncomputed_tokens), (seq, 1)]  # scheduled twice
TUNABLES = {"mode": [0, 1, 2]}
'''


@pytest.mark.parametrize("mode, words", [(0, "twice"), (1, "without allocated blocks"),
                                         (2, "stall")])
def test_scheduler_contract_violations_are_caught(tmp_path, mode, words):
    spec = RuntimeSpec.default("cpu").with_slot("scheduler", _write(tmp_path, "lazy", LAZY),
                                                {"mode": mode})
    llm = _llm(spec)
    with pytest.raises(SchedulerContractError) as e:
        llm.generate([[3, 4, 5, 6]], SamplingParams(temperature=0, max_tokens=3))
    assert "file:" in str(e.value) and words in str(e.value)
