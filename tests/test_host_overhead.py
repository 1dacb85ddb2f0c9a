"""Host-overhead benchmark: the stub-runner engine is timed and every phase is found."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "host_overhead.py"


@pytest.fixture(scope="module")
def ho():
    spec = importlib.util.spec_from_file_location("host_overhead_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_engine_phase_is_instrumented(ho):
    llm = ho.build(4, 10)
    wrapped = ho.instrument(llm, ho.PhaseTimer())
    for name in ("Scheduler.schedule", "BlockManager.allocate", "InputBuilder.prepare",
                 "StubRunner.run", "Engine._postprocess", "Engine._check"):
        assert name in wrapped


def test_measure_reports_decode_steps_with_a_breakdown(ho, tmp_path):
    row = ho.measure(16, 20)
    assert row["batch"] == 16 and 0 < row["ms_per_step"] < 100
    named = [row[f"{p}_ms"] for p in ho.PHASES if p != "other"]
    assert all(v >= 0 for v in named) and row["batch_preparation_ms"] > 0
    # block management: median 0 now that decode steps inside a block skip it
    assert row["scheduling_ms"] > 0 and row["block_management_ms"] >= 0
    csv_path = tmp_path / "ho.csv"
    assert ho.main(["--batches", "2", "--steps", "5", "--repeats", "1", "--csv", str(csv_path)]) == 0
    assert csv_path.read_text().count("\n") == 2   # header + one row
