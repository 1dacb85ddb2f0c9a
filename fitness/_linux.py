"""Linux isolation primitives for the sandbox child, through ctypes (no third-party code).

Everything here runs in the forked child between fork and exec (subprocess `preexec_fn`),
so it must not log, allocate much or take locks: each step returns a bool and never raises.
What actually held is reported by the worker itself (see `isolation_facts`), because the
child cannot talk to the harness before exec.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MOUNT_ATTR_RDONLY = 0x1
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and aarch64 (unified syscall table)
CAP_VERSION_3 = 0x20080522


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def set_pdeathsig(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent thread dies."""
    return _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def unshare_net() -> bool:
    """Move into a fresh network namespace (only a down loopback: no network at all)."""
    return _libc.unshare(CLONE_NEWNET) == 0


def private_mounts() -> bool:
    """Move into a private mount namespace (changes there are invisible outside)."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        return False
    return _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0


def unshare_pid() -> bool:
    """Make the next child pid 1 of a new PID namespace; all its processes die with it."""
    return _libc.unshare(CLONE_NEWPID) == 0


def mount_proc() -> bool:
    """Mount a /proc that shows only this PID namespace (the harness becomes invisible)."""
    return _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) == 0


def readonly_except(writable: str) -> bool:
    """Make every mount read-only except `writable` (call after `private_mounts`).

    Uses mount_setattr (Linux >= 5.12) so submounts (/tmp, /dev/shm, /sys, ...) are covered
    too. Device nodes stay usable (/dev/null, GPU devices): read-only mounts do not stop
    writes to character devices.
    """
    w = writable.encode()
    if _libc.mount(w, w, None, MS_BIND | MS_REC, None) != 0:
        return False
    ro = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(ro),
                     ctypes.sizeof(ro)) != 0:
        return False
    rw = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    return _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, w, 0, ctypes.byref(rw),
                         ctypes.sizeof(rw)) == 0


def drop_capabilities() -> bool:
    """Drop every capability (bounding, effective, permitted, inheritable) and forbid regaining.

    A candidate running as uid 0 without capabilities cannot remount, leave its cgroup
    through a read-only /sys, change namespaces, or load kernel modules.
    """
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last cap: ignored
    hdr = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    ok = _libc.capset(ctypes.byref(hdr), data) == 0
    return _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 and ok


def isolation_facts(workdir: str) -> dict[str, bool]:
    """What isolation really holds for the calling process (run inside the worker)."""
    try:
        with open("/proc/self/net/dev") as f:
            ifaces = [ln.split(":")[0].strip() for ln in f.readlines()[2:]]
        net = all(i == "lo" for i in ifaces)
    except OSError:
        net = False
    try:
        fs = bool(os.statvfs("/").f_flag & os.ST_RDONLY) and not (
            os.statvfs(workdir).f_flag & os.ST_RDONLY)
    except OSError:
        fs = False
    caps = False
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("CapEff:"):
                    caps = int(ln.split()[1], 16) == 0
    except OSError:
        pass
    return {"network_isolated": net, "filesystem_readonly": fs, "capabilities_dropped": caps,
            "pid_namespace": os.getpid() == 1}
