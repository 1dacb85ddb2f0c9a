"""`sds status` on a run in progress and on a finished one (every figure from the database),
and bad input to `sds run` / `sds status` as one line with exit code 2."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator
from test_resume_crash_points import Killed, KillingStore

from evolve.cli import main
from evolve.config import config_from_dict
from evolve.controller import Controller
from evolve.population import FULL, run_evaluations
from population_db import Store


def _cfg(budget: int):
    return config_from_dict({
        "target": {"slots": ["scheduler", "cache_policy"]}, "operators": {"fake": 1},
        "evaluation": {"workloads": ["w1"], "device": "cpu"},
        "budget": {"max_evaluations": budget},
        "concurrency": {"max_proposals": 2, "max_evaluations": 2},
        "seed": random.randrange(1000)}, "status.yaml")


def _session(store, budget: int, kill_at: int | None = None) -> None:
    ctl = Controller(_cfg(budget), KillingStore(store, kill_at), FakeHarness(delay_s=0.0),
                     name="st", operators={"fake": FakeOperator()})
    try:
        ctl.run()
    except Killed:
        pass


def _status(capsys, db: str) -> dict:
    assert main(["status", "st", "--db", db, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_in_progress_then_finished(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/sds.db"
    store = Store.open(db)
    first = random.randint(2, 4)
    _session(store, first)  # a finished session (stopped by its budget) ...
    _session(store, 12, kill_at=random.randint(14, 24))  # ... then a resumed one, killed
    full = run_evaluations(store, store.get_run("st").id, FULL)
    final = [r for r in full if r.status not in ("pending", "running")]
    s = _status(capsys, db)
    assert s["status"] == "running" and s["evaluations"] == len(final) >= first
    assert s["in_flight_or_queued"] == len(full) - len(final)
    assert s["stop_reason"] is None  # the earlier session's stop is not this one's
    assert s["budget"] == 12  # the budget the session in progress runs under

    _session(store, 12)
    s = _status(capsys, db)
    full = run_evaluations(store, store.get_run("st").id, FULL)
    passed = [r for r in full if r.status == "passed"]
    best = max(passed, key=lambda r: r.metrics["tok_s"])
    seed = min(passed, key=lambda r: r.runtime_id)
    assert s["status"] == "finished" and s["stop_reason"] == "max_evaluations"
    assert s["evaluations"] == 12 and s["in_flight_or_queued"] == 0
    assert s["by_status"] == {st: sum(r.status == st for r in full) for st in
                              {r.status for r in full}}
    assert s["best_runtime"] == best.runtime_id and s["best_tok_s"] == best.metrics["tok_s"]
    assert abs(s["speedup"] - best.metrics["tok_s"] / seed.metrics["tok_s"]) < 1e-12
    assert s["events"]["resume"] == 2 and s["events"]["start"] == 1
    assert main(["status", "st", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and f"r{best.runtime_id}" in out


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/sds.db"
    _session(Store.open(db), 2)
    capsys.readouterr()
    for argv, words in ((["status", "no-such-run", "--db", db], ["no-such-run"]),
                        (["status", "--db", f"sqlite:///{tmp_path}/none.db"], ["none.db"]),
                        (["run", str(tmp_path / "nope.yaml"), "--db", db], ["nope.yaml"]),
                        (["run", "scripts/quickstart.yaml", "--db", db,
                          "--set", "budget.max_evaluations=-3"], ["max_evaluations", "-3"])):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), (argv, err)
