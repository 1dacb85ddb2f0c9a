"""Run `python -m fitness.worker` in a sandbox and collect what it reports, stage by stage.

The harness side of the sandbox: a fresh process in its own session (process group) and
temporary working directory, an allow-listed environment (no keys or tokens), its own
Triton cache, a pids cgroup and a per-evaluation marker so that every descendant can be
found and killed, and a wall-clock deadline per stage. The worker applies the rest to
itself before it reads its job (see `fitness.worker.isolate`): a network namespace, a
read-only view of the filesystem outside its working directory, rlimits, no capabilities,
and a parent-death signal. Results come back over a dedicated pipe (not stdout), each
message carrying a nonce that candidate code never sees in its environment; reading and
checking them is fitness/channel.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitness.channel import Judge, SandboxRun, pump
from fitness.jobs import WorkerJob
from fitness.proctrack import MARKER_VAR, ProcessTracker

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "SDS_PROGRAM_DIR", "TRITON_INTERPRET",
             "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL|AUTH", re.IGNORECASE)
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one evaluation."""

    cpu_s: int = 1800                          # RLIMIT_CPU, per process
    max_procs: int = 256                       # tasks (threads count) in the cgroup
    max_open_files: int = 1024                 # RLIMIT_NOFILE
    max_file_bytes: int = 1 << 30              # RLIMIT_FSIZE
    max_address_space: int | None = 24 << 30   # RLIMIT_AS; only applied on CPU-only runs
    grace_s: float = 1.0                       # between SIGTERM and SIGKILL


def sandbox_env(workdir: Path, marker: str, result_fd: int, config: dict[str, Any],
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: allow-listed variables only, never anything secret-looking."""
    env = {k: os.environ[k] for k in ENV_ALLOW if k in os.environ}
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(PYTHONPATH=os.pathsep.join(dict.fromkeys(paths)), HOME=str(workdir),
               TMPDIR=str(workdir), TRITON_CACHE_DIR=str(workdir / "triton-cache"),
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
               SDS_RESULT_FD=str(result_fd), SDS_SANDBOX=json.dumps(config))
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(extra or {})
    env = {k: v for k, v in env.items() if not _SECRET.search(k)}
    env[MARKER_VAR] = marker
    return env


def _user_procs() -> int:
    uid, n = os.getuid(), 0
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                n += os.stat(e.path).st_uid == uid
            except OSError:
                pass
    return n


@dataclass
class Worker:
    """A started worker: sandboxed, importing, waiting on its job pipe for the job."""

    proc: subprocess.Popen
    marker: str
    nonce: str
    workdir: Path
    tracker: ProcessTracker
    r_fd: int  # the result channel's read end
    job_fd: int  # the job pipe's write end (the nonce line is already written)
    limits: SandboxLimits
    key: tuple  # what it was started with: a spare serves only a job with the same
    started_at: float = 0.0


def _worker_key(limits: SandboxLimits, cpu_only: bool,
                env_extra: dict[str, str] | None) -> tuple:
    """What a worker is started with: a spare serves only a job asking for the same."""
    return (limits, cpu_only, tuple(sorted((env_extra or {}).items())))


def spawn_worker(limits: SandboxLimits = SandboxLimits(), cpu_only: bool = True,
                 env_extra: dict[str, str] | None = None,
                 preimport: list[str] | None = None) -> Worker:
    """Start a sandboxed worker that isolates itself, imports what the stages `preimport`
    need (a worker started ahead: all of them), and then waits for its job
    (`run_worker(..., worker=w)`); see `discard_worker`.

    The nonce that signs its messages goes down the job pipe, never through the
    environment; the job follows it when it is run.
    """
    marker = secrets.token_hex(8)
    nonce = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix=f"sds-eval-{marker}-"))
    tracker = ProcessTracker(marker, limits.max_procs)
    r_fd, w_fd = os.pipe()
    job_r, job_w = os.pipe()
    try:
        (workdir / "triton-cache").mkdir()
        config = {"workdir": str(workdir), "cgroup_procs": tracker.join_path,
                  "cpu_s": limits.cpu_s, "nofile": limits.max_open_files,
                  "fsize": limits.max_file_bytes, "ppid": os.getpid(),
                  "nproc": _user_procs() + limits.max_procs,
                  "as": limits.max_address_space if cpu_only else None,
                  "preimport": list(preimport or [])}
        env = sandbox_env(workdir, marker, w_fd, config, env_extra)
        env["SDS_JOB_FD"] = str(job_r)
        proc = subprocess.Popen([sys.executable, "-m", "fitness.worker"], cwd=workdir,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(w_fd, job_r),
                                start_new_session=True)
    except BaseException:
        for fd in (r_fd, w_fd, job_r, job_w):
            os.close(fd)
        tracker.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    os.close(w_fd)
    os.close(job_r)
    os.write(job_w, (nonce + "\n").encode())
    return Worker(proc, marker, nonce, workdir, tracker, r_fd, job_w, limits,
                  _worker_key(limits, cpu_only, env_extra),
                  time.monotonic())


def discard_worker(w: Worker) -> None:
    """Kill an unused worker and everything of it; idempotent."""
    if w.r_fd < 0:
        return
    for fd in (w.job_fd, w.r_fd):
        if fd >= 0:
            os.close(fd)
    w.job_fd = w.r_fd = -1
    w.tracker.kill_all(w.proc.pid, w.limits.grace_s)
    try:
        w.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.error("worker %d did not exit after SIGKILL", w.proc.pid)
    for pipe in (w.proc.stdout, w.proc.stderr):
        if pipe:
            pipe.close()
    w.tracker.close()
    shutil.rmtree(w.workdir, ignore_errors=True)


def _send_job(w: Worker, job: WorkerJob, timeout_s: float) -> bool:
    """Write the job down the worker's pipe and close it; False if the worker is gone or
    did not read it within `timeout_s` (a job over the pipe's buffer waits for the reader)."""
    if w.proc.poll() is not None:
        os.close(w.job_fd)
        w.job_fd = -1
        return False
    data = memoryview(json.dumps(job.to_dict()).encode())
    deadline = time.monotonic() + timeout_s
    os.set_blocking(w.job_fd, False)
    try:
        while data:
            left = deadline - time.monotonic()
            if left <= 0 or w.proc.poll() is not None:
                return False
            if select.select([], [w.job_fd], [], min(left, 0.5))[1]:
                try:
                    data = data[os.write(w.job_fd, data):]
                except BlockingIOError:
                    continue
    except OSError:  # BrokenPipeError: the worker is gone
        return False
    finally:
        os.close(w.job_fd)
        w.job_fd = -1
    return True


def run_worker(job: WorkerJob, stage_timeouts: dict[str, float], *,
               startup_timeout_s: float = 60.0, limits: SandboxLimits = SandboxLimits(),
               cpu_only: bool = True, env_extra: dict[str, str] | None = None,
               keep_workdir: bool = False,
               judge: Judge | None = None, worker: Worker | None = None) -> SandboxRun:
    """Run the worker on `job` in a sandbox; each stage gets its own wall-clock deadline.

    The worker announces `{"type": "start", **run.to_dict()}` before each of the job's
    runs; from then on the run has `stage_timeouts[run.name]` seconds. Afterwards every process of the evaluation
    (process group, cgroup, marker) is killed, even if the worker exited cleanly.
    `judge`, if given, sees each stage result as it arrives and returns it with the
    harness's verdict (fitness/oracle.py), given the run it is about; a result it turns from passed to anything else
    ends the run there (the worker is killed, the later stages never count). `worker`: one
    from `spawn_worker` with the same limits, `cpu_only` and `env_extra`, already past its
    start-up (used once; a dead or mismatched one is discarded and a fresh one started).
    """
    t0 = time.monotonic()
    key = _worker_key(limits, cpu_only, env_extra)
    if worker is not None and (worker.key != key
                               or not _send_job(worker, job, startup_timeout_s)):
        if worker.key == key:
            log.warning("a started worker died before its job came; starting another")
        discard_worker(worker)
        worker = None
    if worker is None:
        worker = spawn_worker(limits, cpu_only, env_extra)
        if not _send_job(worker, job, startup_timeout_s):
            log.warning("a new worker did not take its job (it died or hung at start-up)")
    run = SandboxRun(marker=worker.marker)
    proc, tracker = worker.proc, worker.tracker
    try:
        pump(proc, worker.r_fd, worker.nonce, stage_timeouts, startup_timeout_s, tracker, run,
             job.runs, judge)
    finally:
        os.close(worker.r_fd)
        worker.r_fd = -1
        run.stragglers = tracker.kill_all(proc.pid, limits.grace_s)
        try:
            run.returncode = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("worker %d did not exit after SIGKILL", proc.pid)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        run.limit_hit = run.limit_hit or tracker.limit_hit()
        tracker.close()
        if not keep_workdir:
            shutil.rmtree(worker.workdir, ignore_errors=True)
        run.wall_s = time.monotonic() - t0
    _warn_isolation(run.isolation)
    return run


def _warn_isolation(facts: dict[str, Any]) -> None:
    """Say once per process which isolation the kernel did not allow."""
    for key, what in (("network_isolated", "network isolation (new network namespace)"),
                      ("filesystem_readonly", "read-only filesystem outside the work dir"),
                      ("capabilities_dropped", "dropping capabilities")):
        if facts and not facts.get(key) and key not in _warned:
            _warned.add(key)
            log.warning("sandbox: %s is unavailable on this machine; candidates run without it",
                        what)
