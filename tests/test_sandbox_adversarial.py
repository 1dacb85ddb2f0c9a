"""Adversarial candidates end with the right status, within their stage timeout, and leave
no process behind; the harness process is unharmed and keeps working."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

import pytest

from fitness.harness import Harness
from fitness.proctrack import marker_pids
from fitness.sandbox import SandboxLimits

CANDIDATES = Path(__file__).parent / "candidates"
TIMEOUT = 4.0


def _harness(**kw) -> Harness:
    return Harness(device="cpu", timeouts={"contract": kw.pop("timeout", TIMEOUT)},
                   limits=SandboxLimits(max_procs=64, max_address_space=8 << 30),
                   startup_timeout_s=60, **kw)


def _candidate(tmp_path: Path, name: str, **subs: str) -> Path:
    code = (CANDIDATES / name).read_text()
    for key, value in subs.items():
        code = code.replace(f"__{key}__", value)
    path = tmp_path / name
    path.write_text(code)
    return path


def _run(path: Path, slot: str = "scheduler", **kw):
    h = _harness(**kw)
    t0 = time.monotonic()
    report = h.evaluate({"slots": {slot: {"program": f"file:{path}"}}}, stages=("contract",))
    wall = time.monotonic() - t0
    assert h.last_run is not None
    assert marker_pids(h.last_run.marker) == set(), "a candidate process survived"
    return report, wall, h


def _procs_with_arg(tag: str) -> list[int]:
    found = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                cmd = Path(e.path, "cmdline").read_bytes()
                stat = Path(e.path, "stat").read_text()
            except OSError:
                continue
            if tag.encode() in cmd and stat.rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(e.name))
    return found


@pytest.mark.parametrize("name", ["infinite_loop.py", "sleep_forever.py"])
def test_hanging_candidate_times_out_and_is_killed(tmp_path, name):
    report, wall, _ = _run(_candidate(tmp_path, name))
    assert report.status == "timeout", report.to_dict()
    assert report.failed_stage == "contract"
    assert "wall-clock limit" in report.error
    assert wall < TIMEOUT + 20  # the stage limit plus process start and the kill


def test_50gb_allocation_crashes_cleanly(tmp_path):
    report, _, _ = _run(_candidate(tmp_path, "huge_alloc.py"), timeout=30)
    assert report.status == "crashed", report.to_dict()
    assert "out of memory" in report.error


def test_fork_bomb_is_stopped_by_the_process_limit(tmp_path):
    report, wall, _ = _run(_candidate(tmp_path, "fork_bomb.py"), timeout=20)
    assert report.status == "rejected", report.to_dict()
    assert "process limit" in report.error
    assert wall < 20


def test_detached_grandchildren_do_not_survive(tmp_path):
    tag = f"{3000 + secrets.randbelow(600)}.{secrets.randbelow(10**6)}"
    report, _, _ = _run(_candidate(tmp_path, "detached_grandchild.py", TAG=tag), timeout=20)
    assert report.status == "failed", report.to_dict()
    deadline = time.monotonic() + 2
    while _procs_with_arg(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _procs_with_arg(tag) == []


def test_segfault_is_a_crash(tmp_path):
    report, _, _ = _run(_candidate(tmp_path, "segfault.py"), timeout=20)
    assert report.status == "crashed", report.to_dict()
    assert "SIGSEGV" in report.error


def test_loopback_connection_never_arrives(tmp_path):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        srv.settimeout(0.5)
        port = srv.getsockname()[1]
        report, _, h = _run(_candidate(tmp_path, "socket_escape.py", PORT=str(port)),
                            timeout=20)
        with pytest.raises(socket.timeout):
            srv.accept()
    assert report.status == "failed"
    assert "reached=False" in report.error
    if not h.last_run.isolation.get("network_isolated"):
        pytest.skip("network namespaces unavailable here: the connection could not be blocked")


def test_secret_in_harness_environment_is_invisible(tmp_path, monkeypatch):
    secret = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    report, _, h = _run(_candidate(tmp_path, "read_secret.py"), timeout=20)
    assert report.status == "failed"
    assert "seen=[None]" in report.error, report.error  # it ran, and saw nothing
    assert secret not in json.dumps(report.to_dict())
    assert secret not in h.last_run.stdout_tail + h.last_run.stderr_tail


def test_write_outside_workdir_does_not_land(tmp_path):
    target = tmp_path / "outside" / "escaped.txt"
    target.parent.mkdir()
    tag = "sds-escape-" + secrets.token_hex(6)
    report, _, h = _run(_candidate(tmp_path, "write_outside.py", TARGET=str(target), TAG=tag),
                        timeout=20)
    assert report.status == "failed"
    assert "done writing" in report.error  # it got past its writes and ran to the end
    assert not target.exists()
    assert not Path(f"/tmp/{tag}.txt").exists()
    assert "write failed" in h.last_run.stdout_tail


def test_garbage_output_cannot_forge_results(tmp_path):
    report, _, h = _run(_candidate(tmp_path, "print_garbage.py"), timeout=60)
    assert report.status == "passed", report.to_dict()  # the real result, from the pipe
    assert "no newline at the end" in h.last_run.stdout_tail
    assert report.stages[0].metrics["scheduler"]["kv_pressure"]["steps"] > 0


def test_patching_the_timer_is_rejected(tmp_path):
    report, _, _ = _run(_candidate(tmp_path, "patch_timer.py"), timeout=60)
    assert report.status == "rejected", report.to_dict()
    assert "perf_counter" in report.error
