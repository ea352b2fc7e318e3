"""A server in a network namespace nobody can reach.

A policy with `net` under namespaces (`batch-job`) gives the workload a
network namespace of its own with only a loopback device: a port it
listens on there can be reached from nowhere but the workload itself. That
is the point for a batch job and a silent puzzle for a server ("connection
refused" from outside, although it listens). The supervisor looks at the
workload's TCP sockets (/proc/PID/net/tcp and tcp6 show the sockets of
PID's network namespace) a few times while it runs and says so once.
"""

from __future__ import annotations

TCP_LISTEN = "0A"


def listening_ports(pid: int) -> list[int]:
    """TCP ports listened on in `pid`'s network namespace, sorted."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)  # the header
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == TCP_LISTEN:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(ports)


def note_for(policy: str) -> "Callable[[int], str | None]":
    """The check the supervisor runs (enforcer/apply/watch.py)."""
    def check(pid: int) -> str | None:
        ports = listening_ports(pid)
        if not ports:
            return None
        shown = ", ".join(str(p) for p in ports[:5]) + (" ..." if len(ports) > 5 else "")
        return (f"note: the workload listens on TCP port{'s' if len(ports) > 1 else ''} {shown} "
                f"in a network namespace of its own (policy {policy!r} has `net` under "
                "namespaces): it has only loopback, so nothing outside can connect; a server "
                "needs a policy without `net` (web-server, or one extending default)")
    return check


TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable
