"""Start-up stays light: `sds --help`, a database verb and a static rejection never import
torch (timings live in scripts/bench_cli.py; this checks the cause, which cannot flake)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import contextlib, io, json, sys
from evolve.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "numpy", "triton", "transformers", "optuna", "sqlalchemy")
               if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(*argv: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy(tmp_path) -> None:
    assert _probe("--help", cwd=tmp_path) == {"code": 0, "heavy": []}


def test_a_database_verb_needs_sqlalchemy_only(tmp_path) -> None:
    from population_db import Store

    url = f"sqlite:///{tmp_path / 'x.db'}"
    st = Store.open(url)
    run, _ = st.get_or_create_run("r")  # a run to summarise: the summary code path loads too
    st.add_runtime(run.id, {"slots": {"scheduler": {"program": "seed:scheduler/fcfs"}}})
    st.close()
    out = _probe("runs", "--db", url, cwd=tmp_path)
    assert out == {"code": 0, "heavy": ["sqlalchemy"]}  # no deap/numpy, torch or optuna


@pytest.mark.skipif(any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia")),
                    reason="a GPU driver is present: --device auto asks torch")
def test_a_static_rejection_does_not_import_torch(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    os.fork()\n")
    out = _probe("eval", "--slot", "scheduler", str(bad), cwd=tmp_path)
    assert out == {"code": 1, "heavy": []}
