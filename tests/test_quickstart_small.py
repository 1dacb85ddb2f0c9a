"""The quickstart config, scaled down, through the real harness and the offline operators:
programs, runtimes, keyed evaluations with the harness's stage rows, lineage and a
runs.csv row all land in the database (CPU, `tiny` preset, a few evaluations)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from evolve.config import load_config
from evolve.launch import launch
from evolve.population import FULL, run_evaluations, run_runtimes
from population_db import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_quickstart_scaled_down_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("SDS_PROGRAM_DIR", str(tmp_path / "programs"))
    cfg = load_config(ROOT / "scripts" / "quickstart.yaml", overrides=[
        "budget.max_evaluations=3", "budget.max_wall_seconds=null", "islands.count=1",
        "evaluation.workloads=[kv-pressure-cpu]", "stagnation.window=null",
        "evaluation.confirm={when: always, workloads: [kv-pressure-cpu]}",
        "evaluation.options={bench_requests: 6, bench_repeats: 1, bench_max_tokens: 8, cpu_threads: 1}"])
    db = f"sqlite:///{tmp_path}/sds.db"
    out, summary = launch(cfg, name="qs-small", db=db, runs_csv=tmp_path / "runs.csv",
                          progress=False)
    assert out.status == "finished" and out.reason == "max_evaluations", out
    store = Store.open(db)
    runtimes = run_runtimes(store, out.run_id)
    full = run_evaluations(store, out.run_id, FULL)
    assert len(full) == 3 and len(runtimes) == 3
    assert full[0].status == "passed", full[0].error  # the seed passes every stage
    children = [r for r in runtimes if r.operator != "seed"]
    assert children and all(r.parents and r.parents[0][1] == "parent" for r in children)
    assert {r.operator for r in children} <= {"gp", "literal", "assemble"}
    # the harness recorded its own per-stage rows for every evaluated runtime
    staged = {(r.runtime_id, r.stage) for r in run_evaluations(store, out.run_id)}
    for r in full:
        if r.status == "passed":
            assert (r.runtime_id, "correctness") in staged and (r.runtime_id, "bench") in staged
            assert (r.runtime_id, "sim") in staged
            # selected in sim, confirmed on the real engine: both fidelities recorded
            assert r.metrics["fidelity"] == "sim" and r.metrics["confirmed"] == 1
            assert r.metrics["modeled_ratio"] > 0 and r.metrics["work_steps"] > 0
            assert r.metrics["confirm_tok_s"] > 0 and r.metrics["confirm_ratio"] > 0
    for child in children:
        assert any(e.node.operator == "seed" for e in store.ancestors(child.id))
        for ref in (c["program"] for c in child.spec["slots"].values()):
            if ref.startswith("sha256:"):
                assert store.get_program(ref).parent_id is not None
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert rows[0]["tags.run"] == "qs-small" and rows[0]["metrics.evaluations"] == "3"
    assert rows[0]["tags.device"] == "cpu" and rows[0]["params.operators"]
    assert summary["seed_tok_s"] and summary["seed_tok_s"] > 0
