"""RuntimeSpec round trips, program references, TUNABLES checks and EVOLVE-BLOCK rules."""

from __future__ import annotations

import json
import random

import pytest

from evolve.cli import main
from runtime_modules.slots import (
    SLOTS,
    RuntimeSpec,
    SlotError,
    check_evolve_blocks,
    code_hash,
    load_slot,
    materialize,
    program_path,
    seed_names,
)


def _random_spec(rng: random.Random) -> RuntimeSpec:
    slots = {}
    for slot in rng.sample(sorted(SLOTS), k=rng.randint(1, len(SLOTS))):
        slots[slot] = {"program": rng.choice(seed_names(slot)),
                       "params": {} if rng.random() < 0.5 else {"x": rng.randint(1, 9)}}
    return RuntimeSpec.from_dict({"slots": slots, "engine": {"max_num_seqs": rng.randint(1, 512)}})


def test_spec_json_round_trip_and_fingerprint_is_canonical():
    rng = random.Random(random.getrandbits(64))
    for _ in range(20):
        spec = _random_spec(rng)
        again = RuntimeSpec.from_json(spec.to_json())
        assert again == spec
        assert again.fingerprint() == spec.fingerprint()
        # Key order in the input must not change the identity.
        d = spec.to_dict()
        shuffled = {"engine": d["engine"], "slots": dict(reversed(list(d["slots"].items())))}
        assert RuntimeSpec.from_dict(shuffled).fingerprint() == spec.fingerprint()


def test_resolved_fills_every_slot_with_device_defaults():
    spec = RuntimeSpec.from_dict({"slots": {"scheduler": "seed:scheduler/chunked"}})
    cpu, cuda = spec.resolved("cpu"), spec.resolved("cuda")
    assert set(cpu.slots) == set(SLOTS) == set(cuda.slots)
    assert cpu.slots["scheduler"].program == "seed:scheduler/chunked"
    assert cpu.slots["decode_attention"].program != cuda.slots["decode_attention"].program
    assert "triton" in cuda.slots["decode_attention"].program


@pytest.mark.parametrize("bad, words", [
    ({"slots": {"sched": "seed:scheduler/fcfs"}}, "unknown slot"),
    ({"slots": {"scheduler": "http://x"}}, "bad program reference"),
    ({"slots": {"scheduler": {"program": "seed:scheduler/fcfs", "params": 3}}}, "params"),
    ({"slotz": {}}, "unknown keys"),
    ([1, 2], "JSON object"),
])
def test_bad_specs_fail_with_the_problem_named(bad, words):
    with pytest.raises(SlotError, match=words):
        RuntimeSpec.from_dict(bad)


def test_materialized_program_loads_by_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("SDS_PROGRAM_DIR", str(tmp_path))
    code = program_path("cache_policy", "seed:cache_policy/fifo").read_text()
    code += f"\n# variant {random.random()}\n"
    path = materialize(code)
    assert path.name == f"{code_hash(code)}.py"
    loaded = load_slot("cache_policy", f"sha256:{code_hash(code)}")
    assert loaded.code_hash == code_hash(code)
    with pytest.raises(SlotError, match="not found"):
        load_slot("cache_policy", "sha256:" + "0" * 64)


def test_tunable_ranges_and_choices_are_enforced(tmp_path):
    lo, hi = sorted(random.sample(range(1, 100), 2))
    f = tmp_path / "policy.py"
    f.write_text(
        f"TUNABLES = {{'k': ({lo}, {hi}), 'mode': ['a', 'b']}}\n"
        "class CachePolicy:\n"
        "    def __init__(self, num_blocks, k=1, mode='a'): pass\n"
        "    def add(self, block): pass\n"
        "    def remove(self, block_id): pass\n"
        "    def evict(self): return 0\n")
    ok = load_slot("cache_policy", f"file:{f}", {"k": hi, "mode": "b"})
    assert dict(ok.params) == {"k": hi, "mode": "b"}
    for params, words in (({"k": hi + 1}, "outside its range"), ({"mode": "c"}, "choices"),
                          ({"zzz": 1}, "not a declared tunable")):
        with pytest.raises(SlotError, match=words):
            load_slot("cache_policy", f"file:{f}", params)


PARENT = """import math
# EVOLVE-BLOCK-START
def score(x):
    return x * 2
# EVOLVE-BLOCK-END
TAIL = 1
"""


def test_edits_inside_evolve_blocks_pass_and_outside_are_refused():
    k = random.randint(3, 9)
    inside = PARENT.replace("x * 2", f"x * {k} + 1\n    # more lines are fine")
    assert check_evolve_blocks(PARENT, inside) is None
    assert "outside" in check_evolve_blocks(PARENT, PARENT.replace("TAIL = 1", f"TAIL = {k}"))
    assert "outside" in check_evolve_blocks(PARENT, PARENT.replace("import math", "import os"))
    dropped = PARENT.replace("# EVOLVE-BLOCK-END\n", "")
    assert "malformed" in check_evolve_blocks(PARENT, dropped)
    # A module without markers may change anywhere.
    assert check_evolve_blocks("a = 1\n", "b = 2\n") is None


def test_sds_seeds_lists_every_slot_with_its_defaults(capsys):
    assert main(["seeds", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["slot"] for r in rows} == set(SLOTS)
    for slot, info in SLOTS.items():
        defaults = {r["program"] for r in rows if r["slot"] == slot and r["default_on"]}
        assert {info.default_cpu, info.default_cuda} == defaults
