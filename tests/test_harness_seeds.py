"""The seed runtime passes every stage on CPU, and every stage is recorded in the store."""

from __future__ import annotations

from fitness import STAGES
from fitness.harness import Harness
from population_db import Store
from runtime_modules.slots import RuntimeSpec

SMALL = {"quick_bench_requests": 2, "bench_requests": 2, "bench_max_tokens": 6,
         "quick_bench_repeats": 2, "bench_repeats": 2, "quick_bench_min_ratio": 0.2}


def test_seed_runtime_passes_every_stage_and_is_recorded(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'sds.db'}")
    run, _ = store.get_or_create_run("harness-test", {})
    spec = RuntimeSpec.default("cpu").to_dict()
    rt = store.add_runtime(run.id, spec)
    h = Harness(store=store, device="cpu", options=SMALL)
    report = h.evaluate(spec, runtime_id=rt.id, run_id=run.id)
    assert [s.stage for s in report.stages] == list(STAGES)
    assert report.status == "passed", [(s.stage, s.status, s.error) for s in report.stages]
    m = report.stage("bench").metrics
    assert m["tok_s"] > 0 and m["tok_s"] < m["floor_tok_s"]
    assert m["ratio_min"] <= m["ratio"] <= m["ratio_max"]
    assert report.stage("correctness").metrics["tokens_compared"] > 50
    counts = store.counts(run.name)
    assert counts[("bench", "passed")] == 1 and counts[("correctness", "passed")] == 1
    assert counts[("contract", "passed")] == 6  # one per slot program
    rec = store.cached_program_evaluation(_hash("scheduler"), "contract")
    assert rec is not None and rec.status == "passed" and rec.device == "cpu"
    # a fresh harness on the same store reuses the slot-level results
    h2 = Harness(store=store, device="cpu")
    d = h2._resolve(spec)
    missing = [s for s, c in d["slots"].items()
               if h2.slot_cache.cached_contract(s, d, h2._code(s, c["program"])) is None]
    assert missing == []
    again = h2.evaluate(spec, stages=("static", "contract"))
    assert again.stage("contract").metrics.get("cached")


def _hash(slot: str) -> str:
    from runtime_modules.slots import code_hash, program_path
    ref = RuntimeSpec.default("cpu").to_dict()["slots"][slot]["program"]
    return code_hash(program_path(slot, ref).read_text())
