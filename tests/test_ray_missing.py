"""Without Ray: local runs never import it, and asking for `evaluation.executor: ray` exits 2
with one line that says how to install it (nothing is recorded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_controller_fakes import FakeHarness, FakeOperator

from evolve.config import config_from_dict
from evolve.launch import launch

ROOT = Path(__file__).resolve().parent.parent
NO_RAY = ("import sys; sys.modules['ray'] = None; "  # an import of ray now fails as if absent
          "from evolve.cli import main; sys.exit(main(sys.argv[1:]))")


def test_local_run_never_imports_ray(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "evolve.executors.ray_tasks", raising=False)
    cfg = config_from_dict({"target": {"slots": ["scheduler"]}, "operators": {"fake": 1},
                            "evaluation": {"workloads": ["w1"], "device": "cpu"},
                            "budget": {"max_evaluations": 4}}, "local.yaml")
    out, _ = launch(cfg, name="local", db=f"sqlite:///{tmp_path}/sds.db",
                    harness=FakeHarness(delay_s=0.0), operators={"fake": FakeOperator()},
                    runs_csv=None, progress=False)
    assert out.status == "finished" and out.evaluations == 4
    assert sys.modules["ray"] is None


def test_ray_executor_without_ray_exits_2_with_the_install_line(tmp_path):
    cfg = tmp_path / "ray.yaml"
    cfg.write_text("target: {slots: [scheduler]}\noperators: {gp: 1}\n"
                   "evaluation: {stages: [static, sim], workloads: [kv-pressure-cpu], "
                   "device: cpu, executor: ray}\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path}/sds.db"
    proc = subprocess.run([sys.executable, "-c", NO_RAY, "run", str(cfg), "--db", db,
                           "--no-progress", "--runs-csv", "-"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "evaluation.executor is 'ray'" in lines[0], lines
    assert 'pip install -e ".[ray]"' in lines[0]
    from population_db import Store

    assert Store.open(db).list_runs() == []  # refused before any run was recorded
