"""A fresh kernel audit session per workload, for exact attribution.

Every audit record the kernel writes for a seccomp action (type 1326)
carries `ses=`, the audit session id of the process. Writing
/proc/self/loginuid gives the writer a new, never-reused session id, and
every descendant inherits it across fork and execve. So if the process that
becomes the workload (or, for the shim, runc itself, whose container init
descends from it) starts a session first, the monitor can attribute every
record to its workload by `ses` alone — even for a process the filter killed
before anyone could read its /proc/PID/cgroup.

This needs CAP_AUDIT_CONTROL and a loginuid that is not locked
(audit_loginuid_immutable). Where it cannot be had, attribution falls back
to pid and cgroup lookups, so failure here is reported, never fatal.
Stdlib only: this runs on the start path.
"""

from __future__ import annotations

import os

UNSET = 4294967295  # (u32)-1: no login uid / no session


def _read_int(path: str) -> int | None:
    # os.open/os.read, not open(): a text file object costs ~0.5 ms on its
    # first use in a process, and this runs on every `enforcer run` start.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.read(fd, 64).strip())
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None


def current_session() -> int | None:
    value = _read_int("/proc/self/sessionid")
    return None if value in (None, UNSET) else value


def start_new_session() -> int | None:
    """Start a new audit session for this process; return its id or None.

    The login uid written is the one already set, or else our real uid: the
    audit trail keeps saying who launched the workload.
    """
    loginuid = _read_int("/proc/self/loginuid")
    if loginuid in (None, UNSET):
        loginuid = os.getuid()
    try:
        fd = os.open("/proc/self/loginuid", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        os.write(fd, str(loginuid).encode())
    except OSError:
        return None
    finally:
        os.close(fd)
    return current_session()
