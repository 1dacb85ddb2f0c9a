"""`sds eval` prints each stage, exits 1 on a failed stage and 2 on bad input, records with --db."""

from __future__ import annotations

import json
from pathlib import Path

from evolve.cli import main
from population_db import Store

CANDIDATES = Path(__file__).parent / "candidates"


def test_eval_failing_candidate_exits_1_and_records(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'e.db'}"
    rc = main(["eval", "--slot", "scheduler", str(CANDIDATES / "starving_scheduler.py"),
               "--stages", "static,contract", "--device", "cpu", "--db", db, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["status"] == "failed" and out["failed_stage"] == "contract"
    assert [s["stage"] for s in out["stages"]] == ["static", "contract"]
    counts = Store.open(db).counts("sds-eval")
    assert counts[("contract", "failed")] == 1 and counts[("static", "passed")] == 1


def test_eval_static_rejection_prints_table(capsys):
    rc = main(["eval", "--slot", "scheduler", str(CANDIDATES / "fork_bomb.py"),
               "--stages", "static,contract", "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "rejected" in text and "os.fork" in text


def test_eval_bad_slot_exits_2(capsys):
    rc = main(["eval", "--slot", "schedular", str(CANDIDATES / "fork_bomb.py"),
               "--device", "cpu"])
    assert rc == 2
    assert "schedular" in capsys.readouterr().err
