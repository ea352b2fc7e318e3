"""Whom enforcer-shimd acts for, and what it takes from them.

The server runs as root with the capabilities of its unit and does, for a
front end, what the shim would do in the front end's own process: read
Plans, rewrite config.json, write registry records, run `runc state` and
`runc features`. So it must never lend a client more than the client has:

- same uid (SO_PEERCRED), checked by the server first;
- every capability the server holds, the client holds too (its CapEff,
  read through a pidfd of the peer so that a pid reused after the client
  exited cannot answer in its place): a root process that dropped
  capabilities, such as a root workload under a confining policy, is
  declined;
- the server's configuration only: a request that names a shim config, a
  runc, a policy file, a registry or a Plan cache of its own (flags or
  environment) is declined. Declined means: the front end runs the Python
  shim in its own process, with its own rights (the `P` answer), which
  makes the same decisions and can do no more than the client could.
"""

from __future__ import annotations

import os
import socket
import struct

from enforcer.shim.cmdline import parse
from enforcer.shim.errors import ShimError

# SO_PEERCRED's struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")
# SO_PEERPIDFD (Linux 6.5, asm-generic/socket.h): a pidfd of the peer as it
# was at connect(); older kernels: pidfd_open on SO_PEERCRED's pid.
SO_PEERPIDFD = 77
# What a request may set in its environment only to the server's own value.
CONFIG_VARIABLES = ("ENFORCER_SHIM_CONFIG", "ENFORCER_RUNTIME_DIR", "ENFORCER_CACHE_DIR")


def credentials(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the peer, as the kernel recorded them at connect()."""
    pid, uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   _UCRED.size))
    return pid, uid


def status_capabilities(pid: int | str) -> int:
    """CapEff of /proc/PID/status ("self" for this process)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapEff:"):
                return int(line.split()[1], 16)
    raise OSError(f"no CapEff in /proc/{pid}/status")


def _pidfd_pid(pidfd: int) -> int:
    """The pid a pidfd refers to; -1 once that process has exited."""
    with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    return -1


def peer_capabilities(conn: socket.socket, pid: int) -> int | None:
    """The peer's effective capabilities, or None if it cannot be told (gone,
    or not visible from here)."""
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
    try:
        # The pidfd pins the process's identity: if the pid it names now is
        # still the same after /proc/PID/status was read, the status is that
        # process's, not that of a process that got its pid afterwards.
        target = _pidfd_pid(pidfd)
        if target <= 0:
            return None
        caps = status_capabilities(target)
        return caps if _pidfd_pid(pidfd) == target else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(pidfd)


def missing_capabilities(conn: socket.socket, pid: int, own: int) -> str | None:
    """Why the peer may not be served with capabilities `own`, or None."""
    caps = peer_capabilities(conn, pid)
    if caps is None:
        return "the shim server cannot read this process's capabilities"
    missing = own & ~caps
    if missing:
        return (f"this process lacks capabilities the shim server holds ({missing:#x}); "
                "it runs the Python shim with its own rights")
    return None


def own_configuration(argv: list[str], environ: dict[str, str]) -> str | None:
    """Why a request must be done with the client's own rights because it
    names its own configuration, or None.

    A name (`--policy NAME`) is resolved in the server's own, root-owned
    places; a path would be a file the client names."""
    from enforcer.shim.plans import is_policy_name

    for key in CONFIG_VARIABLES:
        if key in environ and environ[key] != os.environ.get(key):
            return f"the request sets {key}; the shim server uses its own configuration"
    try:
        line = parse(argv)
    except ShimError:
        return None  # the shim says what is wrong with it
    for flag in ("config", "runc"):
        if flag in line.shim:
            return f"the request names its own --{flag}; the shim server uses its own"
    policy = line.shim.get("policy")
    if policy is not None and not is_policy_name(policy):
        return "the request names a policy file; the shim server resolves policy names only"
    return None
