"""Every view of one run tells the same story: `sds status`, `sds runs`, `sds leaderboard`,
`sds compare` (table, CSV, curve and plot), results/runs.csv and the UI's run card rank by
the run's objective and count the same evaluations; per-workload figures stay side by
side; lineage labels say what a program is and how it did.

The run is built so that the old views would disagree: the objective (`modeled_ratio`)
runs against wall-clock tok/s, the two workloads' tok/s differ tenfold (a max across them
climbs for nothing), and every child also writes per-stage rows (a count of rows is not a
count of evaluations).
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator, FakeReport, spec_score

from evolve.cli import main
from evolve.compare import compare_runs
from evolve.config import config_from_dict
from evolve.launch import launch
from evolve.operators.base import Proposal
from evolve.population import FULL, run_evaluations, slot_code
from fitness.result import StageResult
from population_db import Store

WORKLOADS = {"w-small": 400.0, "w-large": 3500.0}  # tok/s scale of each workload


class ObjectiveHarness(FakeHarness):
    """modeled_ratio rises as tok/s falls; writes stage rows like the real harness does."""

    def __init__(self, db: str):
        super().__init__(fail_rate=0.15)
        self.db = db

    def evaluate(self, spec, stages=(), workload="", baseline=None, runtime_id=None,
                 run_id=None, **kw):
        rep = super().evaluate(spec, stages, workload, baseline, runtime_id, run_id, **kw)
        store = Store.open(self.db)
        for slot, choice in spec["slots"].items():  # slot stages on the program, as `eval`
            if slot in ("scheduler", "cache_policy"):
                prog = store.add_program(slot, slot_code(store, slot, choice["program"]),
                                         operator="eval", run_id=run_id)
                store.add_evaluation(stage="contract", status="passed", program_id=prog.id,
                                     run_id=run_id, metrics={})
        if rep.status != "passed":
            return rep
        r = spec_score(spec)
        seed = baseline is None or spec == baseline
        tok = WORKLOADS[workload] * (1.0 if seed else 0.5 + r)
        ratio = 1.0 if seed else 1.0 + 0.02 * (0.5 - r)
        store.add_evaluation(stage="bench", status="passed", runtime_id=runtime_id,
                             run_id=run_id, metrics={"tok_s": tok}, workload=workload)
        return FakeReport([StageResult(s, "passed") for s in stages],
                          {"tok_s": tok, "modeled_ratio": ratio})


class RepeatingOperator(FakeOperator):
    """FakeOperator, except that every other proposal on a parent it has seen before is
    exactly its earlier child of that parent: a duplicate runtime whatever the timing (the
    inspiration-based repeats of FakeOperator depended on how proposals interleaved, and a
    run on a loaded machine once made none)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[tuple[int | None, str], str] = {}
        self.n = 0

    def propose(self, ctx):
        self.n += 1
        key = (ctx.parent.runtime_id, ctx.slot)
        if key in self.made and self.n % 2:
            return Proposal("fake", ctx.slot, code=self.made[key])
        out = super().propose(ctx)
        if getattr(out, "code", None) and key not in self.made:
            self.made[key] = out.code
        return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("views")
    db = f"sqlite:///{tmp}/sds.db"
    seed = random.randrange(1000)
    print(f"config seed {seed}")
    raw = {"target": {"slots": ["scheduler", "cache_policy"],
                      "runtime": {"slots": {"scheduler": "seed:scheduler/priority",
                                            "cache_policy": "seed:cache_policy/scored"}}},
           "operators": {"fake": 1}, "selection": {"objectives": ["modeled_ratio:max"]},
           "evaluation": {"workloads": list(WORKLOADS), "device": "cpu"},
           "budget": {"max_evaluations": 14},
           "concurrency": {"max_proposals": 2, "max_evaluations": 2}, "seed": seed}
    cfg = config_from_dict(raw, "views.yaml")
    out, _summary = launch(cfg, name="views", db=db, harness=ObjectiveHarness(db),
                          operators={"fake": RepeatingOperator()}, runs_csv=tmp / "runs.csv",
                          progress=False)
    return {"db": db, "tmp": tmp, "out": out, "store": Store.open(db)}


def cli_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_view_ranks_by_the_objective_and_counts_alike(run, capsys):
    store, db, tmp = run["store"], run["db"], run["tmp"]
    full = [r for r in run_evaluations(store, run["out"].run_id, FULL)
            if r.status not in ("pending", "running")]
    passed = [r for r in full if r.status == "passed"]
    best_row = max(passed, key=lambda r: (r.metrics["modeled_ratio"], -r.runtime_id))
    fastest = max(passed, key=lambda r: r.metrics["tok_s"])
    assert fastest.runtime_id != best_row.runtime_id  # tok/s would pick another runtime
    n, best, rt = len(full), best_row.metrics["modeled_ratio"], best_row.runtime_id
    rows_all = len(store.evaluations(run="views"))
    assert rows_all > n  # stage and proposal rows: not evaluations

    status = cli_json(capsys, "status", "views", "--db", db)
    assert (status["evaluations"], status["best_runtime"], status["best"]) == (n, rt, best)
    assert status["objective"] == "modeled_ratio:max" and status["fidelity"] == "engine"
    assert status["gain"] == pytest.approx(best / 1.0)

    (runs,) = cli_json(capsys, "runs", "--db", db)
    assert (runs["evaluations"], runs["best_runtime"], runs["best"]) == (n, f"r{rt}", best)
    assert runs["objective"] == "modeled_ratio:max"

    board = cli_json(capsys, "leaderboard", "views", "--db", db)
    assert board[0]["runtime"] == f"r{rt}" and board[0]["modeled_ratio"] == best
    assert board[0]["fidelity"] == "engine"

    out = cli_json(capsys, "compare", "views", "--db", db, "--csv", str(tmp / "cmp.csv"),
                   "--plot", str(tmp / "cmp.png"))
    (row,) = out["runs"]
    assert (row["metrics.evaluations"], row["metrics.best_runtime"], row["metrics.best"]) == \
        (n, rt, best)
    assert row["tags.objective"] == "modeled_ratio:max"
    # the best's objective per workload, side by side, not one max over workloads
    assert {k for k in row if k.startswith("metrics.best_modeled_ratio.")} == \
        {f"metrics.best_modeled_ratio.{w}" for w in WORKLOADS}
    with (tmp / "cmp.csv").open() as f:
        (cmp_csv,) = list(csv.DictReader(f))
    assert int(cmp_csv["metrics.evaluations"]) == n and int(cmp_csv["metrics.best_runtime"]) == rt
    assert (tmp / "cmp.png").read_bytes()[:4] == b"\x89PNG"

    _, (curve,) = compare_runs(store, ["views"])
    assert curve.n[-1] == n and curve.best[-1] == best and curve.best == sorted(curve.best)
    assert curve.objective == "modeled_ratio:max"
    assert max(curve.best) < 1.1  # objective values, not tok/s of some workload

    with (tmp / "runs.csv").open() as f:
        (runs_csv,) = list(csv.DictReader(f))
    assert int(runs_csv["metrics.evaluations"]) == n
    assert int(runs_csv["metrics.best_runtime"]) == rt
    assert float(runs_csv["metrics.best"]) == pytest.approx(best, rel=1e-5)

    from evolve.ui.runs import run_card

    card = run_card(store, store.get_run("views"))
    assert (card["evaluations"], card["best_runtime"], card["best"]) == (n, rt, best)
    print(f"{n} evaluations ({rows_all} rows); best r{rt} modeled_ratio {best:.5f}; "
          f"fastest r{fastest.runtime_id} tok_s {fastest.metrics['tok_s']:.0f}")


def test_lineage_labels_seed_programs_and_skips_duplicate_rows(run, capsys):
    store, db = run["store"], run["db"]
    dups = [e for e in store.evaluations(run="views", stage="propose")
            if e.status == "duplicate" and e.program_id is not None]
    assert dups, "the fake operator repeats children: some must be recorded as duplicates"
    pid = dups[-1].program_id
    nodes = cli_json(capsys, "lineage", f"p{pid}", "--db", db)
    assert all((n["stage"], n["status"]) != ("propose", "duplicate") for n in nodes)
    assert nodes[0]["stage"] == "contract" and nodes[0]["status"] == "passed"
    root = nodes[-1]
    assert root["operator"] == "seed", nodes  # a seed program, not `[eval]`
    assert main(["lineage", f"p{pid}", "--db", db]) == 0
    tree = capsys.readouterr().out
    assert "[seed]" in tree and "propose duplicate" not in tree and "[eval]" not in tree


def test_a_lower_is_better_objective_reads_the_same_everywhere(tmp_path, capsys):
    rng = random.Random(random.getrandbits(64))  # replays with the printed SDS_TEST_SEED
    db = f"sqlite:///{tmp_path}/min.db"
    store = Store.open(db)
    run, _ = store.get_or_create_run("min", {"selection": {"objectives": ["peak_mem:min"]},
                                             "operators": {"literal": 1},
                                             "budget": {"max_evaluations": 6}})
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}, "engine": {}}
    mems = {}
    for i in range(6):
        rt = store.add_runtime(run.id, {**spec, "engine": {"max_num_seqs": 8 + i}},
                               operator="seed" if i == 0 else "literal")
        if i == 3:
            store.add_evaluation(stage="full", status="failed", runtime_id=rt.id,
                                 run_id=run.id, error="contract: budget exceeded")
            continue
        mems[rt.id] = rng.uniform(1e6, 9e6)
        store.add_evaluation(stage="full", status="passed", runtime_id=rt.id, run_id=run.id,
                             metrics={"peak_mem": mems[rt.id], "tok_s": rng.uniform(1, 9)})
    seed = min(mems)  # the first runtime
    best_rt = min(mems, key=mems.get)
    status = cli_json(capsys, "status", "min", "--db", db)
    assert status["best_runtime"] == best_rt and status["evaluations"] == 6
    assert status["gain"] == pytest.approx(mems[seed] / mems[best_rt])  # >= 1: better
    (runs,) = cli_json(capsys, "runs", "--db", db)
    assert runs["best_runtime"] == f"r{best_rt}" and runs["objective"] == "peak_mem:min"
    board = cli_json(capsys, "leaderboard", "min", "--db", db)
    assert board[0]["runtime"] == f"r{best_rt}"
    _, (curve,) = compare_runs(store, ["min"])
    assert curve.best[-1] == mems[best_rt] and curve.best == sorted(curve.best, reverse=True)
    assert curve.n[-1] == 6
