"""What later prompts are told about failed attempts: only what the model can fix, for
the slot it edits, with the stage, the error, the failing child's lines and duplicates'
results; never transport failures or other slots' failures; JSON never cut mid-string.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from fake_llm_server import FakeLLMServer, Reply

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_controller_fakes import FakeHarness, FakeReport

from evolve.config import config_from_dict
from evolve.launch import launch
from evolve.prompts import compact_json, format_metrics
from evolve.prompts.failures import FailureBook, pointed_lines
from fitness.result import StageResult
from population_db import Store
from runtime_modules.slots import code_hash

ROOT = Path(__file__).resolve().parents[1]
CACHE = (ROOT / "seeds" / "cache_policy" / "scored.py").read_text()
LINE = "    return hashed * (1.0 + num_hits) / (1.0 + 0.01 * idle) - 0.001 * position\n"


def diff(new_line: str, search: str = LINE) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{new_line}>>>>>>> REPLACE\n"


GOOD = diff(LINE.replace("0.001 * position", "0.002 * position"))
BOOM = diff("    boom = 1.0 / (idle - idle)  # BOOM\n" + LINE)
UNMATCHED = diff(LINE.replace("0.01", "0.05"), search=LINE.replace("0.01", "0.07"))


def test_book_keeps_notes_per_island_and_slot_with_the_failing_lines():
    book = FailureBook()
    code = CACHE.replace(LINE, "    x = 1 / 0\n" + LINE)
    n = code.splitlines().index("    x = 1 / 0") + 1
    tb = (f'Traceback (most recent call last):\n  File "/p/{code_hash(code)}.py", line {n}, '
          "in score\nZeroDivisionError: division by zero")
    book.child_failed(0, {"cache_policy": code}, f"contract: {tb}",
                      {"failed_stage": "contract", "workload": "w1"})
    (note,) = book.recent(0, "cache_policy")
    assert note.startswith("a child's code failed stage `contract` on workload `w1`: "
                           "ZeroDivisionError: division by zero")
    assert f">{n:4d}|     x = 1 / 0" in note  # the line the traceback points at, marked
    assert book.recent(0, "scheduler") == () and book.recent(1, "cache_policy") == ()
    book.child_failed(0, {"cache_policy": code}, f"contract: {tb}", {"failed_stage": "contract",
                                                                     "workload": "w1"})
    assert len(book.recent(0, "cache_policy")) == 1  # the same failure is not repeated
    assert pointed_lines(code, "static: bad", {"stage_artifacts": {"line": 3}}) == [3]


def test_json_in_prompts_is_never_cut_mid_string():
    rng = random.Random(5)
    per = {f"trace:scripts/traces/w{i}.jsonl?rate_scale={rng.randint(1, 99)}":
           {"modeled_ratio": rng.uniform(0.5, 2), "work_steps": rng.randint(1, 9999),
            "note": "x" * rng.randint(10, 90)} for i in range(15)}
    for limit in (60, 300, 2000):
        text = compact_json(per, limit)
        parsed = json.loads(text)  # valid JSON, whatever the limit
        assert len(text) <= limit + 120
        kept = [k for k in parsed if k != "..."]
        assert all(parsed[k] == per[k] or "..." in json.dumps(parsed[k]) for k in kept)
    line = format_metrics({"workloads": per}).split(": ", 1)[1]
    json.loads(line)


class BoomHarness(FakeHarness):
    """Fails a child at `contract` with a traceback into its own file when its cache policy
    says BOOM; everything else passes."""

    def __init__(self, db: str):
        super().__init__(fail_rate=0.0)
        self.db = db

    def evaluate(self, spec, stages=(), workload="", baseline=None, **kw):
        ref = spec["slots"]["cache_policy"]["program"]
        if ref.startswith("sha256:"):
            code = Store.open(self.db).get_program(ref).code
            if "BOOM" in code:
                n = next(i for i, ln in enumerate(code.splitlines(), 1) if "BOOM" in ln)
                tb = (f'Traceback (most recent call last):\n  File "/progs/{code_hash(code)}'
                      f'.py", line {n}, in score\nZeroDivisionError: float division by zero')
                return FakeReport([StageResult("static", "passed"),
                                   StageResult("contract", "failed", error=tb)], {})
        return super().evaluate(spec, stages, workload, baseline, **kw)


def test_prompts_show_this_slots_fixable_failures_and_duplicates_only(tmp_path):
    plan = {"cache_policy": [UNMATCHED, BOOM, GOOD, GOOD], "scheduler": []}

    def respond(prompt: str, i: int) -> Reply:
        slot = re.search(r"fills the\s+`(\w+)` slot", prompt).group(1)
        if slot == "scheduler":  # a server error every time: transport, not fixable
            return Reply(status=500)
        queue = plan[slot]
        return Reply(queue.pop(0) if queue else "no blocks, just talk")

    db = f"sqlite:///{tmp_path}/sds.db"
    with FakeLLMServer([], responder=respond, max_requests=80) as srv:
        raw = {"seed": 11,
               "target": {"slots": ["cache_policy", "scheduler"],
                          "runtime": {"slots": {"cache_policy": "seed:cache_policy/scored",
                                                "scheduler": "seed:scheduler/priority"}}},
               "operators": {"llm-diff": {"weight": 1, "repair_rounds": 0}},
               "llm": {"models": {"m": 1.0}, "base_url": srv.base_url, "retries": 0,
                       "prices": {"m": [0, 0]}},
               "search": {"method": "random", "bandit": False},  # every parent is the seed
               "evaluation": {"workloads": ["w1"], "device": "cpu"},
               "budget": {"max_evaluations": 4},
               "concurrency": {"max_proposals": 1, "max_evaluations": 1}}
        cfg = config_from_dict(raw, "feedback.yaml")
        out, _ = launch(cfg, name="fb", db=db, harness=BoomHarness(db), runs_csv=None,
                        progress=False)
        prompts = srv.prompts()
    cache = [p for p in prompts if re.search(r"fills the\s+`cache_policy` slot", p)]
    sched = [p for p in prompts if re.search(r"fills the\s+`scheduler` slot", p)]
    assert len(cache) >= 5 and sched, (len(cache), len(sched))
    last = cache[-1].split("## Recent failed attempts on this slot", 1)[1]
    last = last.split("## Strong programs", 1)[0]
    print(last)
    assert "was rejected: SEARCH/REPLACE block 1: the SEARCH text is not in the code" in last
    assert "failed stage `contract` on workload `w1`: ZeroDivisionError" in last
    assert re.search(r">\s*\d+\|     boom = 1.0 / \(idle - idle\)  # BOOM", last)
    # the earlier runtime's result as it stands when the prompt is built
    assert re.search(r"this change was already tried: result (passed, tok_s [\d.]+|not "
                     r"evaluated yet) \(runtime r\d+\)", last)
    assert "0.002 * position" in last  # the repeated change itself
    for p in cache + sched:  # transport failures and other slots' never reach a prompt
        failures = p.split("## Recent failed attempts on this slot", 1)[1].split("## Strong")[0]
        assert "HTTP 500" not in failures and "LLM call failed" not in failures
    for p in sched:
        assert "BOOM" not in p and "SEARCH text is not in the code" not in p
    assert out.evaluations == 3  # the seed, the BOOM child, the good child once

    # resumed, the run's first prompt for the slot still carries what failed before
    plan["cache_policy"] = ["no blocks, just talk"]
    with FakeLLMServer([], responder=respond, max_requests=30) as srv:
        cfg = config_from_dict({**raw, "llm": {**raw["llm"], "base_url": srv.base_url},
                                "budget": {"max_evaluations": 8}}, "feedback.yaml")
        launch(cfg, name="fb", db=db, harness=BoomHarness(db), runs_csv=None,
               progress=False)
        resumed = [p for p in srv.prompts() if re.search(r"fills the\s+`cache_policy`", p)]
    assert resumed
    again = resumed[0].split("## Recent failed attempts on this slot", 1)[1]
    assert "failed stage `contract` on workload `w1`: ZeroDivisionError" in again
    assert "was rejected: SEARCH/REPLACE block 1: the SEARCH text is not in the code" in again
    assert "HTTP 500" not in again.split("## Strong")[0]
