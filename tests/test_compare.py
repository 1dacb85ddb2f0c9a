"""sds compare: two finished runs give a grouped CSV, a best-so-far PNG and a table."""

from __future__ import annotations

import csv
import random

import pytest

from evolve.cli import main
from evolve.compare import compare_runs, config_differences, plot_runs, write_csv
from population_db import Store

SPEC = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}, "engine": {}}


def _make_run(store: Store, name: str, rng: random.Random, n: int, operator: str) -> list[float]:
    """A finished run: a seed runtime and n children with stage results; returns bench scores."""
    run, _ = store.get_or_create_run(name, {"operators": {operator: 1.0},
                                            "budget": {"max_evaluations": n}, "seed": 0})
    seed = store.add_runtime(run.id, SPEC, operator="seed")
    scores = [rng.uniform(50, 100)]
    store.add_evaluation(stage="bench", status="passed", runtime_id=seed.id, run_id=run.id,
                         metrics={"tok_s": scores[0]}, workload="nanovllm-bench-cpu",
                         device="cpu", duration_s=1.0)
    for i in range(n):
        child = store.add_runtime(run.id, {**SPEC, "engine": {"max_num_seqs": 8 + i}},
                                  generation=i + 1, operator=operator,
                                  parents=[(seed.id, "parent")])
        if rng.random() < 0.3:
            store.add_evaluation(stage="correctness", status="failed", runtime_id=child.id,
                                 run_id=run.id, error="token 3 differs", device="cpu")
            continue
        scores.append(rng.uniform(40, 160))
        store.add_evaluation(stage="bench", status="passed", runtime_id=child.id,
                             run_id=run.id, metrics={"tok_s": scores[-1]},
                             workload="nanovllm-bench-cpu", device="cpu", duration_s=2.0)
    store.add_llm_call(run.id, "m", "p", "r", 10, 20, rng.uniform(0.01, 0.5), 0.1)
    store.set_run_status(run.id, "finished")
    return scores


def test_compare_two_runs_writes_grouped_csv_and_plot(tmp_path):
    rng = random.Random(random.getrandbits(64))
    url = f"sqlite:///{tmp_path}/sds.db"
    store = Store.open(url)
    a = _make_run(store, "run-a", rng, 6, "literal")
    b = _make_run(store, "run-b", rng, 5, "gp")
    rows, curves = compare_runs(store, ["run-a", "run-b"])
    assert [r["tags.run"] for r in rows] == ["run-a", "run-b"]
    for row, scores in zip(rows, (a, b)):
        assert row["metrics.best_tok_s"] == pytest.approx(max(scores))
        assert row["metrics.seed_tok_s"] == pytest.approx(scores[0])
        assert row["metrics.speedup"] == pytest.approx(max(scores) / scores[0])
        assert row["metrics.evals_passed"] == len(scores)
    # best-so-far is monotone and ends at the best score
    for c, scores in zip(curves, (a, b)):
        assert c.best == sorted(c.best) and c.best[-1] == pytest.approx(max(scores))
        assert c.n == sorted(c.n) and c.t == sorted(c.t)
    assert "params.operators.literal" in config_differences(rows)
    path = write_csv(rows, tmp_path / "cmp.csv")
    with path.open() as f:
        got = list(csv.DictReader(f))
    assert len(got) == 2 and float(got[1]["metrics.best_tok_s"]) == pytest.approx(max(b))
    groups = {k.split(".")[0] for k in got[0]}
    assert groups == {"params", "metrics", "tags"}
    png = plot_runs(curves, tmp_path / "cmp.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_compare_cli_bad_input_exit_2_nothing_overwritten(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/sds.db"
    store = Store.open(url)
    _make_run(store, "run-a", random.Random(random.getrandbits(64)), 3, "literal")
    assert main(["compare", "run-a", "no-such-run", "--db", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-run" in err[0]
    existing = tmp_path / "keep.csv"
    existing.write_text("precious\n")
    assert main(["compare", "run-a", "--db", url, "--csv", str(existing)]) == 2
    assert existing.read_text() == "precious\n"
    empty, _ = store.get_or_create_run("run-empty", {"seed": 0})
    seed = store.add_runtime(empty.id, SPEC, operator="seed")
    store.add_evaluation(stage="correctness", status="failed", runtime_id=seed.id,
                         run_id=empty.id, error="token 2 differs", device="cpu")
    capsys.readouterr()
    assert main(["compare", "run-a", "run-empty", "--db", url, "--csv", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run-empty" in err[0] and "no successful evaluation" in err[0]
    assert not (tmp_path / "x.csv").exists()
    out_csv = tmp_path / "new.csv"
    assert main(["compare", "run-a", "--db", url, "--csv", str(out_csv), "--json"]) == 0
    assert out_csv.read_text().startswith("tags.run,")
