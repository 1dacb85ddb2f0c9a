"""scripts/profile_step.py splits decode steps by the engine's named ranges as well as by op."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "profile_step.py"


def test_profile_step_reports_every_engine_range(tmp_path):
    spec = importlib.util.spec_from_file_location("profile_step_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.profile_steps(None, None, num_requests=4, prompt_cap=24, out_cap=6, eager=True,
                            out_dir=tmp_path)
    assert res["decode_steps"] >= 4
    ranges = res["ranges_ms_per_step"]
    assert set(ranges) == {"attention", "qkv_o_proj", "mlp", "lm_head", "sampler"}
    assert all(v > 0 for v in ranges.values()), ranges
    # the ranges are nested in the step: together no more than the step's wall time
    assert sum(ranges.values()) <= res["wall_ms_per_step"] * 1.05
    saved = json.loads((tmp_path / "profile_step_cpu.json").read_text())
    assert saved["ranges_ms_per_step"] == ranges
