"""Find and kill every process of one evaluation, including ones that left its session.

Two trackers, used together: a pids cgroup where the kernel lets us make one (it caps the
number of tasks, which is what really stops a fork bomb when we run as root and
RLIMIT_NPROC does not bind, and it lists members that called setsid), and a per-evaluation
marker variable in the environment, found by scanning /proc (the fallback where no cgroup
can be made). Killing is repeated until nothing is left: a process being killed cannot fork.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

MARKER_VAR = "SDS_EVAL_MARKER"
_CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))
_warned_no_cgroup = False


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def marker_pids(marker: str) -> set[int]:
    """Live processes whose initial environment carries `MARKER_VAR=marker`."""
    needle = f"{MARKER_VAR}={marker}".encode() + b"\0"
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if needle in env and _alive(int(entry.name)):
            found.add(int(entry.name))
    return found


class ProcessTracker:
    """The processes of one evaluation: limit their number, list them, kill them all."""

    def __init__(self, marker: str, max_procs: int):
        self.marker = marker
        self.max_procs = max_procs
        self.cgroup: Path | None = self._make_cgroup()

    def _make_cgroup(self) -> Path | None:
        global _warned_no_cgroup
        for root in _CGROUP_ROOTS:
            if root.name != "pids":
                try:  # cgroup v2: only usable where the pids controller is delegated
                    if "pids" not in (root / "cgroup.subtree_control").read_text().split():
                        continue
                except OSError:
                    continue
            path = root / f"sds-eval-{self.marker}"
            try:
                path.mkdir()
                (path / "pids.max").write_text(str(self.max_procs))
                return path
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass
        if not _warned_no_cgroup:
            _warned_no_cgroup = True
            log.warning("no writable pids cgroup: process limits fall back to RLIMIT_NPROC "
                        "and a /proc watchdog (RLIMIT_NPROC does not bind for root)")
        return None

    @property
    def join_path(self) -> str | None:
        """The cgroup.procs file the child writes its pid into before exec."""
        return str(self.cgroup / "cgroup.procs") if self.cgroup else None

    def pids(self) -> set[int]:
        """Every live process of the evaluation that either tracker sees."""
        found = marker_pids(self.marker)
        if self.cgroup:
            try:
                text = (self.cgroup / "cgroup.procs").read_text()
                found |= {int(p) for p in text.split() if _alive(int(p))}
            except OSError:
                pass
        return found

    def limit_hit(self) -> bool:
        """Whether the evaluation tried to exceed its process limit."""
        if self.cgroup:
            try:
                events = (self.cgroup / "pids.events").read_text().split()
                return int(events[events.index("max") + 1]) > 0
            except (OSError, ValueError, IndexError):
                return False
        return len(marker_pids(self.marker)) > self.max_procs

    def kill_all(self, pgid: int | None, grace_s: float = 1.0, give_up_s: float = 10.0) -> int:
        """TERM the process group, wait `grace_s`, then KILL everything until none is left.

        Returns how many processes still lived after the grace period.
        """
        if pgid is not None:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self.pids():
                time.sleep(0.02)
        stragglers = 0
        deadline = time.monotonic() + give_up_s
        first = True
        while True:
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            left = self.pids()
            if first:
                stragglers, first = len(left), False
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() > deadline:
                log.error("evaluation %s: %d processes survive SIGKILL: %s", self.marker,
                          len(left), sorted(left)[:20])
                break
            time.sleep(0.02)
        return stragglers

    def close(self) -> None:
        """Remove the cgroup (it must be empty: call `kill_all` first)."""
        if self.cgroup:
            for _ in range(50):
                try:
                    self.cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
            self.cgroup = None
