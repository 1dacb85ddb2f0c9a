"""`static` rejects forbidden code fast and by line; `contract` catches a starving scheduler,
a stale output buffer and an off-by-one causal mask; seeds pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fitness.harness import Harness
from fitness.static import check_static
from runtime_modules.slots import SLOTS, program_path, seed_names

CANDIDATES = Path(__file__).parent / "candidates"


@pytest.mark.parametrize("name,slot,needle", [
    ("fork_bomb.py", "scheduler", "os.fork"),
    ("segfault.py", "scheduler", "ctypes"),
    ("socket_escape.py", "scheduler", "socket"),
    ("detached_grandchild.py", "scheduler", "subprocess"),
    ("patch_timer.py", "scheduler", "time.perf_counter"),
])
def test_static_rejects_forbidden_constructs_with_line(name, slot, needle):
    code = (CANDIDATES / name).read_text()
    res = check_static(slot, code)  # its speed: scripts/bench_cli.py (timings flake here)
    assert res.status == "rejected", res
    assert needle in res.error and "line" in res.error
    assert needle.split(".")[-1] in code.splitlines()[res.artifacts["line"] - 1]


def test_static_passes_every_seed():
    for slot in SLOTS:
        for ref in seed_names(slot):
            res = check_static(slot, program_path(slot, ref).read_text())
            assert res.ok, (ref, res.error)


def test_static_enforces_evolve_blocks_and_signatures():
    parent = program_path("scheduler", "seed:scheduler/fcfs").read_text()
    inside = parent.replace("if tokens + n > cfg.max_num_batched_tokens:",
                            "if tokens + n >= cfg.max_num_batched_tokens:")
    outside = parent.replace("self.waiting.append(seq)", "self.waiting.insert(0, seq)")
    assert inside != parent and outside != parent
    assert check_static("scheduler", inside, parent).ok
    res = check_static("scheduler", outside, parent)
    assert res.status == "rejected" and "EVOLVE-BLOCK" in res.error
    bad_sig = "def rmsnorm(x, w, eps, residual=None):\n    return x\n"
    res = check_static("rmsnorm", bad_sig)
    assert res.status == "failed" and "weight" in res.error


def test_starving_scheduler_fails_contract_in_seconds():
    t0 = time.monotonic()
    report = Harness(device="cpu").evaluate(
        {"slots": {"scheduler": f"file:{CANDIDATES / 'starving_scheduler.py'}"}},
        stages=("static", "contract"))
    elapsed = time.monotonic() - t0
    assert report.failed_stage == "contract" and report.status == "failed", report.to_dict()
    assert "stall" in report.error or "starvation" in report.error
    assert report.stages[-1].artifacts["scenario"]
    print(f"scheduler contract rejection incl. process start: {elapsed:.2f} s")
    assert elapsed < 30


@pytest.mark.parametrize("name,slot,needle", [
    ("offbyone_prefill.py", "prefill_attention", "prefill_attention"),
    ("stale_decode.py", "decode_attention", "decode_attention"),
])
def test_wrong_kernels_fail_contract_with_the_mismatch(name, slot, needle):
    report = Harness(device="cpu").evaluate(
        {"slots": {slot: f"file:{CANDIDATES / name}"}}, stages=("static", "contract"))
    assert report.failed_stage == "contract", report.to_dict()
    res = report.stages[-1]
    assert needle in res.error
    assert res.artifacts["slot"] == slot and res.artifacts["shapes"]
    if name.startswith("offbyone"):
        assert "values off" in res.artifacts["mismatch"] and "expected" in res.artifacts["mismatch"]
    else:
        assert "stale" in res.error or "buffer" in res.error


def test_seed_slots_pass_contract_and_are_cached():
    spec = {"slots": {s: SLOTS[s].default_cpu for s in SLOTS}}
    h = Harness(device="cpu")
    first = h.evaluate(spec, stages=("static", "contract"))
    assert first.status == "passed", first.to_dict()
    assert set(first.stage("contract").metrics) >= set(SLOTS)
    again = h.evaluate(spec, stages=("static", "contract"))  # from the cache: no worker
    assert again.status == "passed" and again.stage("contract").metrics.get("cached")
