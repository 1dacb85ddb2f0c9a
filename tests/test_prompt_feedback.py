"""The feedback a mutation prompt carries: the objective and how it is computed, the
parent's per-workload counters next to the seed's, and the parameters really in effect."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeOperator

from evolve.config import config_from_dict
from evolve.launch import launch
from evolve.operators.base import Candidate, MutationContext, Objective
from evolve.prompts import build_prompt
from evolve.prompts.feedback import MAX_TABLE_ROWS, code_defaults, format_workload_table
from runtime_modules.slots import SLOTS

SCHEDULER = (Path(__file__).resolve().parents[1] / "seeds" / "scheduler" / "chunked.py").read_text()
WORKLOADS = ("shared-prefix", "chat-trace")


def _workload(rng: random.Random) -> dict[str, float | int]:
    return {"modeled_ratio": rng.uniform(0.5, 2.0), "modeled_tok_s": rng.uniform(1e3, 9e3),
            "work_steps": rng.randint(100, 9000), "work_prefill_steps": rng.randint(10, 99),
            "work_decode_steps": rng.randint(100, 999),
            "work_scheduled_tokens": rng.randint(10_000, 99_999),
            "work_prefix_cache_hit_tokens": rng.randint(1000, 9999),
            "work_preemptions": rng.randint(1, 500), "modeled_ttft_p99_s": rng.uniform(0.1, 3)}


def _metrics(rng: random.Random, names: tuple[str, ...] = WORKLOADS) -> dict:
    per = {w: _workload(rng) for w in names}
    return {"modeled_ratio": rng.uniform(0.5, 2.0), "fidelity": "sim", "confirmed": 0,
            "workloads": per}


def _ctx(parent_metrics: dict, seed_metrics: dict, params: dict | None = None,
         objective: Objective | None = None, code: str = SCHEDULER, **kw) -> MutationContext:
    spec = {"slots": {"scheduler": {"program": "seed:scheduler/chunked",
                                    "params": dict(params or {})}},
            "engine": {"max_num_seqs": 48}}
    parent = Candidate(5, 2, "scheduler", code, spec, parent_metrics, {})
    return MutationContext(
        slot="scheduler", contract=SLOTS["scheduler"].contract.__doc__ or "", parent=parent,
        objective=objective or Objective((("modeled_ratio", "max"),), WORKLOADS, "sim"),
        seed_metrics=seed_metrics, parent_params=dict(params or {}),
        engine_params=dict(spec["engine"]), **kw)


def _row(prompt: str, workload: str) -> list[str]:
    rows = [ln for ln in prompt.splitlines() if ln.startswith(f"| {workload} |")]
    assert len(rows) == 1, f"expected one table row for {workload}, got {rows}"
    return [c.strip() for c in rows[0].strip("|").split("|")]


@pytest.mark.parametrize("kind", ["diff", "rewrite"])
def test_prompt_states_objective_workloads_and_cost_model(kind):
    rng = random.Random(random.getrandbits(64))
    parent, seed = _metrics(rng), _metrics(rng)
    prompt = build_prompt(kind, _ctx(parent, seed))
    objective = prompt.split("## Objective", 1)[1].split("##", 1)[0]
    assert "maximize `modeled_ratio`" in objective
    assert all(f"`{w}`" in objective for w in WORKLOADS)
    assert "`sim`" in objective and "geometric mean" in objective
    assert re.search(r"roofline.*max\(\(weights \+ KV read and written\) / memory bandwidth, "
                     r"\(GEMM \+ attention FLOPs\) / compute\)\s+plus a fixed per-step overhead",
                     objective, re.DOTALL)
    assert "prefix-cache hits" in objective and "preemptions" in objective
    assert f"parent {parent['modeled_ratio']:.4g}, seed {seed['modeled_ratio']:.4g}" in objective


def test_table_has_a_row_per_workload_with_parent_and_seed_counters():
    rng = random.Random(random.getrandbits(64))
    parent, seed = _metrics(rng), _metrics(rng)
    prompt = build_prompt("diff", _ctx(parent, seed))
    header = next(ln for ln in prompt.splitlines() if ln.startswith("| workload |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    for w in WORKLOADS:
        cells = dict(zip(cols, _row(prompt, w)))
        p, s = parent["workloads"][w], seed["workloads"][w]
        assert cells["steps"] == f"{p['work_steps']} / {s['work_steps']}"
        assert cells["preemptions"] == f"{p['work_preemptions']} / {s['work_preemptions']}"
        assert cells["tokens computed"] == (f"{p['work_scheduled_tokens']} / "
                                            f"{s['work_scheduled_tokens']}")
        assert cells["prefix-hit tokens"] == (f"{p['work_prefix_cache_hit_tokens']} / "
                                              f"{s['work_prefix_cache_hit_tokens']}")
        assert cells["modeled_ratio"] == f"{p['modeled_ratio']:.4g} / {s['modeled_ratio']:.4g}"
        assert cells["modeled tok/s"] == f"{p['modeled_tok_s']:.4g} / {s['modeled_tok_s']:.4g}"
    # nobody reported KV reads: no empty column; the raw per-workload JSON is not repeated
    assert "KV tokens read" not in header and '"work_steps"' not in prompt


def test_missing_values_show_as_dashes_not_errors():
    rng = random.Random(random.getrandbits(64))
    parent, seed = _metrics(rng), _metrics(rng, ("shared-prefix",))
    del parent["workloads"]["chat-trace"]["work_preemptions"]
    prompt = build_prompt("diff", _ctx(parent, seed))
    p = parent["workloads"]["chat-trace"]
    row = _row(prompt, "chat-trace")
    assert f"{p['work_steps']} / -" in row and "- / -" in row


def test_long_tables_are_cut():
    rng = random.Random(random.getrandbits(64))
    names = tuple(f"wl-{i:02d}" for i in range(MAX_TABLE_ROWS + 5))
    text = format_workload_table(_metrics(rng, names), {}, Objective((("x", "max"),), names))
    assert sum(ln.startswith("| wl-") for ln in text.splitlines()) == MAX_TABLE_ROWS
    assert "5 more workloads not shown" in text


def test_parameters_in_effect_are_the_specs_not_the_codes():
    assert code_defaults(SCHEDULER)["chunk_size"] == 2048  # what the code alone would say
    rng = random.Random(random.getrandbits(64))
    prompt = build_prompt("diff", _ctx(_metrics(rng), _metrics(rng), params={"chunk_size": 64}))
    section = prompt.split("## Parameters in effect", 1)[1].split("##", 1)[0]
    assert re.search(r"chunk_size: 64 \(set by the runtime; the code's default 2048 is not used\)",
                     section)
    assert "watermark_blocks: 0 (the code's default)" in section
    assert "max_num_seqs: 48" in section


@pytest.mark.parametrize("kind", ["diff", "rewrite"])
@pytest.mark.parametrize("case", ["seed", "failed_parent", "no_objective", "bad_code"])
def test_prompt_builds_without_metrics(kind, case):
    rng = random.Random(random.getrandbits(64))
    code = "def broken(:\n" if case == "bad_code" else SCHEDULER
    parent = {} if case != "seed" else _metrics(rng)
    seed = {} if case in ("seed", "bad_code") else _metrics(rng)
    c = _ctx(parent, seed, code=code)
    if case == "no_objective":
        c = MutationContext(slot=c.slot, contract=c.contract, parent=c.parent)
    prompt = build_prompt(kind, c)
    assert "## Objective" in prompt and "## Parameters in effect" in prompt
    if case == "failed_parent":  # the seed's column is still there to aim at
        steps = seed["workloads"]["shared-prefix"]["work_steps"]
        assert f"- / {steps}" in _row(prompt, "shared-prefix")
    if case == "no_objective":
        assert "(no per-workload measurements yet)" in prompt and "(none: the engine's" in prompt


def test_controller_fills_the_context_from_config_seed_and_spec(tmp_path):
    seen: list[MutationContext] = []

    class Recording(FakeOperator):
        def propose(self, ctx: MutationContext):
            seen.append(ctx)
            return super().propose(ctx)

    cfg = config_from_dict({
        "target": {"slots": ["scheduler"], "runtime": {"slots": {"scheduler": {
            "program": "seed:scheduler/priority", "params": {"chunk_size": 64}}},
            "engine": {"max_num_seqs": 24}}},
        "operators": {"fake": 1}, "selection": {"objectives": ["tok_s:max"]},
        "evaluation": {"workloads": ["w1", "w2"], "device": "cpu"},
        "budget": {"max_evaluations": 3}, "seed": random.randrange(1000)}, "test.yaml")
    launch(cfg, name="fb", db=f"sqlite:///{tmp_path}/sds.db", harness=FakeHarness(fail_rate=0),
           operators={"fake": Recording()}, runs_csv=tmp_path / "runs.csv", progress=False)
    assert seen
    ctx = seen[0]
    assert ctx.objective == Objective((("tok_s", "max"),), ("w1", "w2"), "engine")
    assert set(ctx.seed_metrics["workloads"]) == {"w1", "w2"}
    assert ctx.parent_params == {"chunk_size": 64} and ctx.engine_params == {"max_num_seqs": 24}
    prompt = build_prompt("diff", ctx)
    assert "chunk_size: 64 (set by the runtime; the code's default 2048 is not used)" in prompt
    assert _row(prompt, "w1")[1] == "100 / 100"  # tok_s: the first proposal's parent is the seed
