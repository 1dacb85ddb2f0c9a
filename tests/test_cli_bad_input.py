"""Every verb answers bad input the same way: exit code 2, one line on stderr, no traceback,
nothing created or changed (files and database alike)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.cli import main
from population_db import Store

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = Path(__file__).parent / "candidates"
ENTRY = "import sys; from evolve.cli import main; sys.exit(main())"  # what `sds` runs
GOOD_CONFIG = "operators: {gp: 1}\nevaluation: {stages: [static, contract, sim]}\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A database with one run and a runtime, a config file, a regular file, a binary .py."""
    d = tmp_path_factory.mktemp("bad")
    url = f"sqlite:///{d / 'pop.db'}"
    st = Store.open(url)
    run, _ = st.get_or_create_run("demo")
    rt = st.add_runtime(run.id, {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}})
    st.add_evaluation(stage="bench", status="passed", runtime_id=rt.id, metrics={"tok_s": 1.0})
    st.close()
    (d / "good.yaml").write_text(GOOD_CONFIG)
    (d / "bad_workload.yaml").write_text(GOOD_CONFIG.replace(
        "sim]}", "sim], workloads: [nanovllm-bench-cpuu]}"))
    (d / "unknown_key.yaml").write_text(GOOD_CONFIG + "budgte: {max_evaluations: 3}\n")
    (d / "binary.py").write_bytes(b"\xff\xfe\x00import os\n\x89PNG")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00\x89")
    (d / "afile").write_text("not a folder\n")
    return {"dir": d, "url": url, "rt": rt.id}


def _cases(w: dict) -> list[list[str]]:
    d, db, r = w["dir"], ["--db", w["url"]], f"r{w['rt']}"
    missing = ["--db", f"sqlite:///{d / 'typo.db'}"]
    return [
        # files that cannot be written or read
        ["export", r, "--out", "/proc/exp", *db],
        ["export", r, "--out", str(d / "afile" / "pkg"), *db],
        ["compare", "demo", "--csv", "/proc/x.csv", *db],
        ["compare", "demo", "--plot", str(d / "afile" / "p.png"), *db],
        # databases: unwritable, malformed, missing (never created by a reading verb)
        ["run", str(d / "good.yaml"), "--db", "sqlite:////proc/x/y.db", "--no-progress",
         "--runs-csv", "-"],
        ["tune", r, "--db", "sqlite:////proc/x/y.db"],
        ["eval", "--slot", "scheduler", str(CANDIDATES / "fork_bomb.py"), "--db", "notaurl"],
        ["runs", "--db", "nosuch://x"], ["status", *missing], ["compare", "demo", *missing],
        ["tune", r, *missing], ["export", r, "--out", str(d / "o1"), *missing],
        ["leaderboard", "demo", *missing], ["bench", "--runtime", r, *missing],
        # ids: the same grammar everywhere
        ["tune", "r999", *db], ["tune", "p3", *db], ["tune", "abc", *db],
        ["export", "r999", "--out", str(d / "o2"), *db], ["show", "1", *db],
        ["show", "e999", *db], ["lineage", "r999", *db], ["diff", r, "p1", *db],
        ["leaderboard", "nope", *db], ["status", "nope", *db],
        # values
        ["bench", "--model", "nope", "--no-csv"], ["bench", "--workload", "nope"],
        ["bench", "--device", "tpu"], ["tune", r, "--trials", "0", *db],
        ["tune", r, "--timeout", "-1", *db], ["tune", r, "--stages", "static", *db],
        ["eval", "--slot", "scheduler", str(CANDIDATES / "fork_bomb.py"), "--timeout", "-1"],
        ["eval", "--slot", "scheduler", str(CANDIDATES / "fork_bomb.py"), "--timeout", "0"],
        ["eval", "--slot", "schedular", str(CANDIDATES / "fork_bomb.py")],
        ["eval", "--slot", "scheduler", str(d / "binary.py")],
        ["eval", "--slot", "scheduler", str(d / "nofile.py")],
        ["eval", "--slot", "scheduler", str(CANDIDATES / "fork_bomb.py"), "--stages", "stattic"],
        ["eval", "--slot", "scheduler", str(CANDIDATES / "fork_bomb.py"), "--workload", "nope"],
        ["workloads", "nope"], ["seeds", "--bogus"], ["frobnicate"],
        # run configs: every mistake before a run exists
        ["run", str(d / "bad_workload.yaml"), "--no-progress", "--runs-csv", "-", *db],
        ["run", str(d / "unknown_key.yaml"), "--no-progress", "--runs-csv", "-", *db],
        ["run", str(d / "binary.yaml"), "--no-progress", *db],
        ["run", str(d / "nofile.yaml"), *db],
        ["run", str(d / "good.yaml"), "--set", "llm.models={a: [", "--runs-csv", "-", *db],
        ["run", str(d / "good.yaml"), "--set", "budget.max_evaluations=-1", *db],
        ["run", str(d / "good.yaml"), "--set", "evaluation.model=nope", "--runs-csv", "-", *db],
    ]


def _snapshot(d: Path) -> dict[str, str]:
    """Every file under `d` with its content hash (SQLite's -wal/-shm side files aside)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()
            and not p.name.endswith(("-wal", "-shm"))}


def test_every_verb_answers_bad_input_with_one_line_and_exit_2(world, capsys) -> None:
    cases = _cases(world)
    before = _snapshot(world["dir"])
    failures = []
    for argv in cases:
        code = main(argv)
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        if code != 2 or len(lines) != 1 or "Traceback" in out.err:
            failures.append((argv, code, out.err[-300:]))
    assert not failures, failures
    assert _snapshot(world["dir"]) == before  # nothing created, nothing changed
    assert len(Store.open(world["url"], create=False).list_runs()) == 1  # no run recorded


def test_the_console_script_too(world) -> None:
    """The installed entry point, in a fresh process: same contract (a sample of cases)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv in (["tune", "r999", "--db", world["url"]], ["eval", "--slot", "scheduler",
                                                          str(world["dir"] / "binary.py")],
                 ["run", str(world["dir"] / "good.yaml"), "--set", "x={", "--db",
                  world["url"]]):
        p = subprocess.run([sys.executable, "-c", ENTRY, *argv], capture_output=True, check=False,
                           text=True, env=env, timeout=120, cwd=world["dir"])
        assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
