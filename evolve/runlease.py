"""The run lease: one controller per run, held in the database and renewed by a thread.

A controller takes its run's lease before it writes anything and renews it every third of
`LEASE_S`; a second controller started on the same run name is refused with one line
(`RunLeased`, exit code 2 from `sds run`). The first one counts as dead, and its lease is
taken over at once, when it ran on this machine and its process is gone (pid and process
start time, so a reused pid is not mistaken for it); a controller on another machine is
dead when its lease has run out, `LEASE_S` after its last renewal.

Example:
    lease = RunLease(store, run_id)
    lease.acquire()          # RunLeased if another live controller drives the run
    ...; lease.lost          # True once another controller took it over (stop!)
    lease.release()
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

from evolve.store_protocol import RunStore

log = logging.getLogger(__name__)

LEASE_S = 60.0  # how long a lease outlives its last renewal (a dead remote controller's wait)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name may hold spaces: split after it
    if fields and fields[0] in ("Z", "X"):  # a zombie or dead process is not alive
        return None
    return fields[19] if len(fields) > 19 else "?"


def owner_id() -> str:
    """This controller's owner string: host:pid:start-time:nonce."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}:{secrets.token_hex(3)}"


def owner_is_dead(owner: str) -> bool:
    """Whether `owner` was a process on this machine that no longer runs (False: unknown)."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    if pid == os.getpid():
        return False  # another controller in this very process: alive as far as we know
    now = _start_time(pid)
    return now is None or (started != "?" and now != started)


class RunLease:
    """Holds one run's lease while a controller runs it; see the module docstring."""

    def __init__(self, store: RunStore, run_id: int, lease_s: float = LEASE_S):
        self.store, self.run_id, self.lease_s = store, run_id, lease_s
        self.owner = owner_id()
        self.lost = False  # set by the renewal thread when another controller took over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Take the lease and start renewing it; returns a dead holder taken over from."""
        prev = self.store.acquire_run_lease(self.run_id, self.owner, self.lease_s,
                                            owner_is_dead)
        self._thread = threading.Thread(target=self._renew, name="sds-run-lease", daemon=True)
        self._thread.start()
        return prev

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                held = self.store.renew_run_lease(self.run_id, self.owner, self.lease_s)
            except Exception as e:  # noqa: BLE001 - a busy database: try again next period
                log.warning("run lease renewal failed (%s); retrying", e)
                continue
            if not held:
                log.error("run lease lost: another controller took the run over; stopping")
                self.lost = True
                return

    def release(self) -> None:
        """Stop renewing and give the lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.release_run_lease(self.run_id, self.owner)
        except Exception as e:  # noqa: BLE001 - it expires by itself anyway
            log.warning("could not release the run lease (%s); it expires in %.0f s",
                        e, self.lease_s)
