"""`sds eval --workload trace:PATH` with a bad trace: exit 2 and one line naming file and line."""

from __future__ import annotations

from pathlib import Path

from evolve.cli import main


def test_a_bad_trace_is_bad_input_with_its_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'
                   '{"timestamp": 5, "input_length": -3, "output_length": 2, "hash_ids": [2]}\n')
    rc = main(["eval", "--slot", "scheduler", "seeds/scheduler/fcfs.py", "--stages", "sim",
               "--workload", f"trace:{bad}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{bad}:2" in err[0], err
    rc = main(["eval", "--slot", "scheduler", "seeds/scheduler/fcfs.py", "--stages", "sim",
               "--workload", f"trace:{tmp_path / 'missing.jsonl'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing.jsonl" in err[0], err
