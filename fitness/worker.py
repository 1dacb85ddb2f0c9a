"""The sandboxed side of an evaluation: `python -m fitness.worker`, started by fitness.sandbox.

It first locks itself down (`isolate`), then reads its job file (and deletes it), captures
the clock functions before any candidate code is imported, and runs the requested stages
in order, reporting each over the result pipe with the job's nonce. It stops at the first
stage that does not pass and leaves with os._exit, so candidate threads or atexit hooks
cannot keep it alive.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

# Imported first, at the worker's start, before any candidate code can run: the harness
# measures with these clocks, and a candidate that replaces one is rejected.
from fitness.clock import clocks_replaced, perf_counter
from fitness.jobs import StageRun, WorkerJob


def isolate(config: dict[str, Any]) -> None:
    """Apply the in-process part of the sandbox (see fitness.sandbox); never raises.

    Joins the cgroup, enters new network, mount and PID namespaces, then forks: the child is
    pid 1 of its own PID namespace (with its own /proc, so the harness and every other
    process on the machine are invisible to it, and when it dies the kernel kills every
    process it left behind). The parent only waits and mirrors the child's exit. The child
    goes on to a read-only filesystem outside its work dir, rlimits, no capabilities and a
    parent-death signal, then returns to run the job.
    """
    from fitness import _linux

    if config.get("cgroup_procs"):
        try:
            fd = os.open(config["cgroup_procs"], os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        except OSError:
            pass
    _linux.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != config.get("ppid"):
        os._exit(3)  # the harness died before the death signal was armed
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _linux.unshare_net()
    mounts = _linux.private_mounts()
    if _linux.unshare_pid():
        _fork_into_namespace()
        if mounts:
            _linux.mount_proc()
    if mounts:
        _linux.readonly_except(config["workdir"])
        os.chdir(config["workdir"])  # the old cwd still points below the new writable mount
    limits = [(resource.RLIMIT_CPU, config.get("cpu_s")),
              (resource.RLIMIT_NOFILE, config.get("nofile")),
              (resource.RLIMIT_FSIZE, config.get("fsize")),
              (resource.RLIMIT_NPROC, config.get("nproc")),
              (resource.RLIMIT_CORE, 0),
              (resource.RLIMIT_AS, config.get("as"))]
    for which, value in limits:
        if value is not None:
            try:
                resource.setrlimit(which, (int(value), int(value)))
            except (ValueError, OSError):
                pass
    _linux.drop_capabilities()
    _linux.set_pdeathsig(signal.SIGKILL)


def _fork_into_namespace() -> None:
    """Fork; the child returns (as pid 1 of the new namespace), the parent mirrors its end."""
    from fitness import _linux

    pid = os.fork()
    if pid == 0:
        _linux.set_pdeathsig(signal.SIGKILL)
        return
    os.closerange(3, 65536)  # the std streams stay; the result channel is the child's alone
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)  # die the same way, so the harness sees the signal
    os._exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128)


def make_sender(fd: int, nonce: str) -> Callable[[dict[str, Any]], None]:
    """A function sending messages to the harness over the dedicated pipe, with the nonce.

    A closure over functions captured now, not a class: candidate code cannot rewrite its
    results by patching a method, `os.write` or `json.dumps` after it was made.
    """
    write, dumps = os.write, json.dumps

    def send(msg: dict[str, Any]) -> None:
        data = (dumps({**msg, "nonce": nonce}, default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[write(fd, view):]
    return send


def _classify(run: StageRun, e: BaseException) -> dict[str, Any]:
    """The result message of a run whose stage raised: `crashed` if out of memory, else `failed`."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    text = f"{type(e).__name__}: {e}"
    oom = isinstance(e, MemoryError) or "out of memory" in str(e).lower() or \
        "can't allocate memory" in str(e).lower()
    return {"type": "result", **run.to_dict(), "status": "crashed" if oom else "failed",
            "error": ("out of memory: " if oom else "") + f"{run.label} raised {text}"[:2000],
            "metrics": {}, "artifacts": {"traceback": tb[-4000:]}}


def _preload(job: WorkerJob) -> None:
    """Import the harness, the engine and every seed program of the job before candidates run."""
    from fitness import integrity

    integrity.preimport(job.stage_names, list(job.slots))
    # a contract-only job judges its own slots alone: other slots' seeds (kernels: torch,
    # triton) would only slow its start
    only = set(job.slots) if set(job.stage_names) <= {"static", "contract"} else None
    try:
        from runtime_modules.slots import load_slot
        for spec in (job.spec, job.baseline):
            for slot, choice in ((spec or {}).get("slots") or {}).items():
                if only is not None and slot not in only:
                    continue
                if str(choice.get("program", "")).startswith("seed:"):
                    load_slot(slot, choice["program"], dict(choice.get("params") or {}))
    except Exception:  # noqa: BLE001, S110 - the stage that needs it reports the real error
        pass


def run_stages(job: WorkerJob, send: Callable[[dict[str, Any]], None],
               changed: Callable[[], list[str]] = list) -> None:
    """Run the job's stages in order, stopping at the first that does not pass.

    `changed` lists what candidate code patched (see fitness.integrity); anything there
    turns the stage into `rejected`, whatever it reported.
    """
    from fitness.stages import WORKER_STAGES, WorkerContext

    for run in job.runs:
        ctx = WorkerContext.from_job(job, run)
        send({"type": "start", **run.to_dict()})
        t0 = perf_counter()
        fn = WORKER_STAGES.get(run.name)
        try:
            if fn is None:
                raise ValueError(f"unknown stage {run.name!r}; worker stages: "
                                 f"{sorted(WORKER_STAGES)}")
            res = fn(ctx)
            msg = {"type": "result", **res.to_dict(), **run.to_dict()}
        except BaseException as e:  # noqa: BLE001 - SystemExit etc. from candidates too
            msg = _classify(run, e)
        replaced = clocks_replaced()
        patched = changed()
        if replaced:
            msg.update(status="rejected", error=f"candidate code replaced time.{replaced[0]} "
                       f"(the harness owns the clock); replaced: {replaced}"
                       + (f"; also patched: {patched}" if patched else ""))
        elif patched:
            msg.update(status="rejected", error=f"candidate code patched {patched[0]} (the "
                       "harness, the engine, torch and the clock are off limits); patched: "
                       f"{patched}")
        msg["duration_s"] = perf_counter() - t0
        send(msg)
        if msg["status"] != "passed":
            break


def _read_line(fd: int) -> str:
    """Bytes from `fd` up to the first newline (one byte at a time: the rest is the job)."""
    out = bytearray()
    while True:
        b = os.read(fd, 1)
        if not b or b == b"\n":
            return out.decode()
        out += b


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def main() -> None:
    """Entry point: isolate, read the job, run the stages, exit without cleanup."""
    from fitness import _linux

    config = json.loads(os.environ.pop("SDS_SANDBOX"))
    isolate(config)
    fd = int(os.environ.pop("SDS_RESULT_FD"))
    job_fd = int(os.environ.pop("SDS_JOB_FD"))
    # the job pipe: the nonce line at once, the job itself (then EOF) when one is run
    nonce = _read_line(job_fd)
    send = make_sender(fd, nonce)
    del nonce
    send({"type": "hello", "pid": os.getpid(),
          "isolation": _linux.isolation_facts(config["workdir"])})
    try:
        from fitness import integrity
        if config.get("preimport"):  # a worker started ahead: before the job comes
            integrity.preimport(config["preimport"])
        job = WorkerJob.from_dict(json.loads(_read_all(job_fd)))
        os.close(job_fd)
        if job.stage_names != ["static"]:
            _preload(job)
            integrity.CURRENT = integrity.Snapshot()
        changed = integrity.CURRENT.changed if integrity.CURRENT else (list)
        run_stages(job, send, changed)
        send({"type": "done"})
    except BaseException as e:  # noqa: BLE001 - a broken channel or a bug: say so
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
