"""sds export: a wheel that installs into a bare venv and generates exactly what sds does."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.cli import main
from evolve.export import export_runtime
from population_db import Store
from runtime_modules import LLM, SamplingParams
from runtime_modules.slots import RuntimeSpec, code_hash, materialize, program_path

PKG = "fast_rt_test"

_IN_VENV = """
import json, sys
import importlib.metadata as md
for mod in ("evolve", "runtime_modules", "population_db", "fitness", "seeds"):
    try:
        __import__(mod)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"sds package {mod} is importable in the venv")
from fast_rt_test import LLM, SamplingParams
prompts = json.loads(sys.argv[1])
llm = LLM("tiny", seed=0)
outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
eps = [ep for ep in md.entry_points(group="sds.runtimes") if ep.name == "fast_rt_test"]
spec = eps[0].load()()
print(json.dumps({"tokens": [o.token_ids for o in outs],
                  "hashes": {k: v["code_hash"] for k, v in llm.loaded_slots.items()},
                  "params": {k: v["params"] for k, v in llm.loaded_slots.items()},
                  "ep_engine": dict(spec.engine), "file": __import__("fast_rt_test").__file__}))
"""


def _evolved_runtime(store: Store, rng: random.Random) -> tuple[int, dict]:
    """A run whose best runtime has an evolved (stored) scheduler and tuned parameters."""
    run, _ = store.get_or_create_run("export-test", {"budget": 3})
    seed_spec = RuntimeSpec.default("cpu")
    seed = store.add_runtime(run.id, seed_spec.to_dict(), operator="seed")
    store.add_evaluation(stage="bench", status="passed", runtime_id=seed.id, run_id=run.id,
                         metrics={"tok_s": rng.uniform(50, 80)}, workload="nanovllm-bench-cpu",
                         device="cpu")
    code = program_path("scheduler", "seed:scheduler/fcfs").read_text()
    code += f"\n# evolved variant {rng.getrandbits(32):08x}\n"
    prog = store.add_program("scheduler", code, operator="llm-diff", run_id=run.id)
    spec = (seed_spec.with_slot("scheduler", prog.ref, {"watermark_blocks": rng.randint(1, 8)})
            .with_engine(max_num_seqs=rng.choice([2, 4, 8])))
    child = store.add_runtime(run.id, spec.to_dict(), generation=1, operator="llm-diff",
                              parents=[(seed.id, "parent")])
    store.add_evaluation(stage="bench", status="passed", runtime_id=child.id, run_id=run.id,
                         metrics={"tok_s": rng.uniform(90, 120)},
                         workload="nanovllm-bench-cpu", device="cpu")
    return child.id, spec.to_dict()


@pytest.mark.timeout(240)
def test_exported_wheel_in_bare_venv_generates_like_sds(tmp_path):
    import numpy as np
    import torch
    rng = random.Random(random.getrandbits(64))
    store = Store.open(f"sqlite:///{tmp_path}/sds.db")
    rid, spec = _evolved_runtime(store, rng)
    out = export_runtime(store, "export-test", tmp_path / "pkg", name=PKG, wheel=True)
    wheel = next((out / "dist").glob("*.whl"))
    prov = json.loads((out / PKG / "PROVENANCE.json").read_text())
    assert prov["runtime"]["id"] == rid and prov["lineage"][0]["runtime_id"] == rid
    assert "| nanovllm-bench-cpu | cpu |" in (out / "README.md").read_text()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The exported package's dependencies (torch, numpy, safetensors and what they import)
    # visible through plain path entries; those dirs may be the venv's or the system's,
    # depending on where set-up found them. Entries in a .pth are not scanned for further
    # .pth files, so sds's editable-install hook does not come along.
    deps = [Path(torch.__file__).parent.parent, Path(np.__file__).parent.parent]
    deps += [Path(p) for p in sys.path if p.endswith("site-packages")]
    (site / "_deps.pth").write_text("".join(f"{d}\n" for d in dict.fromkeys(map(str, deps))))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True)
    prompts = [[rng.randrange(1, 1000) for _ in range(rng.randint(3, 20))] for _ in range(4)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SDS_PROGRAM_DIR")}
    res = subprocess.run([py, "-c", _IN_VENV, json.dumps(prompts)], check=False,
                         capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert str(venv) in got["file"]

    prog = store.program_by_hash(spec["slots"]["scheduler"]["program"][7:])
    materialize(prog.code)
    llm = LLM("tiny", runtime=spec, seed=0)
    want = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12))
    assert got["tokens"] == [o.token_ids for o in want]
    assert got["hashes"] == {k: v["code_hash"] for k, v in llm.loaded_slots.items()}
    assert got["hashes"]["scheduler"] == code_hash(prog.code)
    assert got["params"]["scheduler"] == spec["slots"]["scheduler"]["params"]
    assert got["ep_engine"] == spec["engine"]


def test_export_bad_input_one_line_exit_2_nothing_overwritten(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/sds.db"
    store = Store.open(url)
    run, _ = store.get_or_create_run("no-pass", {})
    rt = store.add_runtime(run.id, RuntimeSpec.default("cpu").to_dict())
    store.add_evaluation(stage="correctness", status="failed", runtime_id=rt.id, run_id=run.id)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("precious")
    cases = [(["export", "4242", "--out", str(tmp_path / "a")], "4242"),
             (["export", "no-such-run", "--out", str(tmp_path / "b")], "no-such-run"),
             (["export", "no-pass", "--out", str(tmp_path / "c")], "no-pass"),
             (["export", str(rt.id), "--out", str(busy)], str(busy)),
             (["export", str(rt.id), "--out", str(tmp_path / "d"), "--name", "9bad"], "9bad")]
    for argv, named in cases:
        assert main([*argv, "--db", url]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], err
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    assert (busy / "keep.txt").read_text() == "precious"
    assert not any((tmp_path / n).exists() for n in "abcd")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
