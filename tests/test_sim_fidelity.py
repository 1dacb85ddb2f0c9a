"""The `sim` fidelity counts the same work as the real engine, sees no realized lengths, and
prices latency on its modeled clock."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from fitness.sim import simulate
from fitness.workloads import Request, get_workload

CPU_WORKLOADS = ["shared-prefix-cpu", "kv-pressure-cpu", "nanovllm-bench-cpu", "arrivals-cpu"]


def _variant(tmp: Path, seed: str, old: str, new: str, name: str) -> str:
    src = Path(seed).read_text()
    assert old in src, f"{seed} no longer contains {old!r}"
    path = tmp / f"{name}.py"
    path.write_text(src.replace(old, new))
    return f"file:{path}"


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The seed policies and three others that schedule and evict differently."""
    tmp = tmp_path_factory.mktemp("policies")
    longest_first = _variant(tmp, "seeds/scheduler/priority.py",
                             "return wait_steps + 4.0 * num_preemptions - 0.01 * prompt_len",
                             "return prompt_len", "longest_first")
    mru = _variant(tmp, "seeds/cache_policy/scored.py",
                   "return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position",
                   "return idle", "mru")
    s = lambda p, **kw: {"program": p, "params": kw} if kw else {"program": p}
    return {
        "fcfs+lru": {"slots": {"scheduler": s("seed:scheduler/fcfs")}},
        "chunked+fifo": {"slots": {"scheduler": s("seed:scheduler/chunked"),
                                   "cache_policy": s("seed:cache_policy/fifo")}},
        "priority+scored": {"slots": {"scheduler": s("seed:scheduler/priority"),
                                      "cache_policy": s("seed:cache_policy/scored",
                                                        window=64)}},
        "longest_first": {"slots": {"scheduler": s(longest_first, chunk_size=64)}},
        "fcfs_watermark+mru": {"slots": {"scheduler": s("seed:scheduler/fcfs",
                                                        watermark_blocks=24),
                                         "cache_policy": s(mru, window=64)}},
        "priority_small_chunks": {"slots": {"scheduler": s("seed:scheduler/priority",
                                                           chunk_size=48)}},
    }


@pytest.mark.parametrize("workload", CPU_WORKLOADS)
def test_sim_counters_equal_the_real_engine(workload: str, policies: dict[str, dict]) -> None:
    wl = get_workload(workload)
    seen = set()
    for name, spec in policies.items():
        sim = simulate(spec, wl)
        real = simulate(spec, wl, real=True)  # the tiny model, run for real, same clock
        work = {k: v for k, v in sim.items() if k.startswith("work_")}
        assert work == {k: v for k, v in real.items() if k.startswith("work_")}, name
        assert work["work_steps"] > 0 and work["work_scheduled_tokens"] > 0
        assert sim["modeled_tok_s"] == pytest.approx(real["modeled_tok_s"], rel=1e-12), name
        seen.add((work["work_steps"], work["work_scheduled_tokens"]))
    if workload != "nanovllm-bench-cpu":  # everything fits there: policies tie, as expected
        assert len(seen) >= 3, f"the policies did not schedule {workload} differently: {seen}"


def _spy_scheduler(tmp: Path, log: Path) -> str:
    """The fcfs seed, logging what it can see of every request it is given."""
    src = Path("seeds/scheduler/fcfs.py").read_text()
    spy = textwrap.dedent(f"""
        _LOG = {str(log)!r}

        class Spy(Scheduler):
            def add(self, seq):
                with open(_LOG, "a") as f:
                    sp = seq.sampling_params
                    f.write(repr((len(seq.token_ids), seq.num_prompt_tokens, sp.max_tokens,
                                  sp.ignore_eos, sorted(n for n in dir(seq)
                                                        if not n.startswith("__"))))
                            + "\\n")
                super().add(seq)

        Scheduler = Spy
        """)
    path = tmp / "spy.py"
    path.write_text(src + spy)
    return f"file:{path}"


def test_candidates_see_the_cap_not_the_realized_length(tmp_path: Path) -> None:
    base = get_workload("kv-pressure-cpu")
    short = dataclasses.replace(base, requests=tuple(
        dataclasses.replace(r, max_tokens=64, output_len=3 + i % 5)
        for i, r in enumerate(base.requests)))
    long = dataclasses.replace(short, requests=tuple(
        dataclasses.replace(r, output_len=40 + i % 7) for i, r in enumerate(short.requests)))
    views = []
    for wl in (short, long):
        log = tmp_path / f"{len(views)}.log"
        spec = {"slots": {"scheduler": {"program": _spy_scheduler(tmp_path, log)}}}
        m = simulate(spec, wl)
        assert m["output_tokens"] == sum(r.output_len for r in wl.requests)  # stopped there
        views.append(log.read_text())
    assert views[0] == views[1]  # what the scheduler saw did not depend on realized lengths
    assert "64, False" in views[0]  # it saw the cap, and that the request may stop early


def test_latency_moves_with_load_and_policy() -> None:
    wl = get_workload("arrivals")  # full size: 512 requests at 24/s

    def at(scale: float) -> object:
        return dataclasses.replace(wl, requests=tuple(
            dataclasses.replace(r, arrival_s=r.arrival_s / scale) for r in wl.requests))

    fcfs = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}}
    light = simulate(fcfs, at(1.0))
    heavy = simulate(fcfs, at(16.0))  # the same requests 16x as fast
    assert heavy["modeled_ttft_p99_s"] > 10 * light["modeled_ttft_p99_s"]
    assert heavy["modeled_tpot_p99_s"] > light["modeled_tpot_p99_s"]
    assert heavy["modeled_ttft_p50_s"] <= heavy["modeled_ttft_p90_s"] <= \
        heavy["modeled_ttft_p99_s"]
    assert light["slo_attainment"] > heavy["slo_attainment"]
    # at its own rate the trace bounds the makespan (so tok/s), not the engine
    assert light["modeled_time_s"] >= max(r.arrival_s for r in wl.requests)
    # a policy that prefills in chunks between decodes changes the latencies under load
    chunked = {"slots": {"scheduler": {"program": "seed:scheduler/priority",
                                       "params": {"chunk_size": 256}}}}
    other = simulate(chunked, at(16.0))
    assert other["modeled_tpot_p99_s"] < heavy["modeled_tpot_p99_s"]
    assert other["modeled_ttft_p99_s"] != heavy["modeled_ttft_p99_s"]


def test_sim_is_deterministic_and_sizes_the_cache_from_device_memory() -> None:
    wl = get_workload("nanovllm-bench")
    spec = {"slots": {}}
    a = simulate(spec, wl, device="h100")
    b = simulate(spec, wl, device="h100")
    assert a == b
    h200 = simulate(spec, wl, device="h200")
    assert h200["modeled_tok_s"] > a["modeled_tok_s"]  # more bandwidth, same work
    measured = simulate(spec, wl, device="h100", bandwidth=2.0e12)  # a slower measured copy
    assert measured["modeled_tok_s"] < a["modeled_tok_s"]
    assert measured["work_steps"] == a["work_steps"]  # same work, priced differently
    small = simulate(spec, wl, device="h100", memory_gb=4)
    assert small["num_kv_blocks"] < a["num_kv_blocks"]
    assert small["work_preemptions"] > a["work_preemptions"] == 0


def test_sim_stage_in_the_harness_reports_a_ratio_against_the_cached_seed() -> None:
    from fitness import Harness

    h = Harness(device="cpu")
    calls = []
    real_run = h._run_worker
    h._run_worker = lambda job: calls.append(job.spec) or real_run(job)
    seed = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}}
    other = {"slots": {"scheduler": {"program": "seed:scheduler/chunked"}}}
    rep = h.evaluate(seed, stages=("sim",), workload="shared-prefix-cpu", baseline=seed)
    assert rep.status == "passed", rep.error
    assert rep.metrics["modeled_ratio"] == 1.0 and rep.metrics["fidelity"] == "sim"
    assert len(calls) == 1  # the seed is its own baseline: no second simulation
    rep = h.evaluate(other, stages=("sim",), workload="shared-prefix-cpu", baseline=seed)
    assert rep.status == "passed", rep.error
    assert len(calls) == 2  # the baseline came from the cache
    m = rep.metrics
    assert m["modeled_ratio"] == pytest.approx(m["modeled_tok_s"] / m["modeled_tok_s_baseline"])
    assert m["modeled_ratio"] != 1.0
    assert m["work_steps"] > 0 and "modeled_ttft_p99_s" in m


def test_sim_stage_reports_a_scheduler_that_breaks_its_contract() -> None:
    from fitness import Harness

    bad = {"slots": {"scheduler": {"program": "file:tests/candidates/starving_scheduler.py"}}}
    rep = Harness(device="cpu").evaluate(bad, stages=("sim",), workload="shared-prefix-cpu")
    assert rep.status == "failed" and rep.failed_stage == "sim"
    assert "scheduler" in (rep.error or "")


def test_a_request_with_a_realized_length_is_counted_by_it() -> None:
    r = Request((1, 2, 3), max_tokens=64, output_len=5)
    assert r.num_output_tokens == 5 and "output_len" in r.to_dict()
    assert "output_len" not in Request((1, 2, 3)).to_dict()  # built-in hashes unchanged


def test_a_candidate_far_slower_than_the_seed_is_cut_off_on_the_modeled_clock() -> None:
    from fitness import Harness

    seed = {"slots": {"scheduler": {"program": "seed:scheduler/priority"}}}
    slower = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}}  # 0.71x here
    h = Harness(device="cpu", options={"sim_max_slowdown": 1.2})
    assert h.evaluate(seed, stages=("sim",), workload="shared-prefix-cpu",
                      baseline=seed).status == "passed"
    rep = h.evaluate(slower, stages=("sim",), workload="shared-prefix-cpu", baseline=seed)
    assert rep.status == "rejected" and "far slower than the baseline" in (rep.error or "")
    loose = Harness(device="cpu", options={"sim_max_slowdown": 2.0})
    rep = loose.evaluate(slower, stages=("sim",), workload="shared-prefix-cpu", baseline=seed)
    assert rep.status == "passed" and rep.metrics["modeled_ratio"] < 1 / 1.2


def test_a_policy_that_serializes_everything_is_cut_off_by_steps(tmp_path: Path) -> None:
    from fitness import Harness

    src = Path("seeds/scheduler/policy.py").read_text()
    i = src.index("def defer(")
    r = src.index("    return ", i)
    path = tmp_path / "always_defer.py"  # admits only when nothing runs: one at a time
    path.write_text(src[:r] + "    return 1.0" + src[src.index("\n", r):])
    seed = {"slots": {"scheduler": {"program": "seed:scheduler/policy"}}}
    h = Harness(device="cpu")
    rep = h.evaluate({"slots": {"scheduler": {"program": f"file:{path}"}}}, stages=("sim",),
                     workload="kv-pressure-cpu", baseline=seed)
    assert rep.status == "rejected" and "far slower" in (rep.error or ""), rep.error
    from fitness.sim import SimTooSlow
    with pytest.raises(SimTooSlow, match="engine steps"):
        simulate({"slots": {"scheduler": {"program": f"file:{path}"}}},
                 get_workload("kv-pressure-cpu"), max_steps=4 * 171)
