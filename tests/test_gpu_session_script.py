"""scripts/gpu_session.sh (run on a GPU machine only) stays runnable: valid bash, every file
it names exists, its embedded Python compiles, and an unknown phase is refused."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_session.sh"


def test_script_is_valid_and_names_existing_files(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    named = set(re.findall(r"\b((?:tests|scripts)/[\w/]+\.py)\b", text))
    assert {"scripts/bench.py", "scripts/profile_step.py", "tests/test_kernels_triton.py"} <= named
    missing = [p for p in named if not (ROOT / p).is_file()]
    assert not missing, missing
    code = re.search(r"<<'PYEOF'[^\n]*\n(.*?)\nPYEOF", text, re.DOTALL).group(1)
    compile(code, "gpu_session.sh:eval", "exec")
    res = subprocess.run(["bash", str(SCRIPT), "nonsense", str(tmp_path)],
                         check=False, capture_output=True, text=True)
    assert res.returncode == 2 and "unknown phase" in res.stderr


BLOCK = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("sqlalchemy", "optuna", "deap", "openai"):
            raise ImportError("not on the GPU machine: " + name)
sys.meta_path.insert(0, Block())
import fitness.harness, fitness.oracle  # the harness, for the eval phase
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_scripts_run_without_the_database_packages():
    for script in ("scripts/bench.py", "scripts/profile_step.py", "scripts/kernel_variants.py"):
        res = subprocess.run([sys.executable, "-c", BLOCK,
                              str(ROOT / script)], check=False, capture_output=True,
                             text=True, cwd=ROOT)
        assert res.returncode == 0 and "usage" in res.stdout, (script, res.stderr[-800:])
