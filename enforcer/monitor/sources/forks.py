"""Fork tracking through the kernel's process-events connector.

Why: a process a kill-process filter kills on its first denied syscall may
be gone from /proc before its audit record reaches us, so neither
/proc/PID/cgroup nor a cgroup.procs snapshot can tell whose it was. The
fork event, though, was queued before the child ran a single instruction:
draining this socket before giving up on a pid yields child -> parent, and
the parent (or an ancestor) is one we know.

The audit session id (`ses`) is no substitute: it is per login session and
shared by everything a user starts, managed or not, so it cannot tell two
workloads (or a workload and an unmanaged process) apart.

Needs CAP_NET_ADMIN and CONFIG_PROC_EVENTS; without them the monitor still
attributes every process it can see in /proc and says fork tracking is off.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXIT = 0x80000000
NLMSG_DONE = 3

_NLMSG = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
# proc_event: what, cpu, timestamp_ns, then the event union.
_EVENT_HEAD = struct.Struct("=IIQ")
_FORK = struct.Struct("=iiii")  # parent_pid, parent_tgid, child_pid, child_tgid
_EVENT_OFFSET = _NLMSG.size + _CN_MSG.size


class ForkTracker:
    """Keeps child tgid -> parent tgid for the most recent forks (bounded)."""

    def __init__(self, capacity: int = 1 << 17) -> None:
        self.capacity = capacity
        self.parents: OrderedDict[int, int] = OrderedDict()
        self.sock: socket.socket | None = None
        self.lost = 0
        # Processes (not threads) that exited since the last take_exits():
        # the monitor reads a workload's cgroup counters the moment its main
        # process exits, before the launcher removes the cgroup.
        self.exits: list[int] = []

    def open(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             NETLINK_CONNECTOR)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except PermissionError:
            pass
        try:
            sock.bind((0, CN_IDX_PROC))
            op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(_NLMSG.pack(_NLMSG.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def drain(self) -> int:
        """Read every queued event; returns how many forks were recorded."""
        sock = self.sock
        if sock is None:
            return 0
        forks = 0
        parents = self.parents
        while True:
            try:
                data = sock.recv(256)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == 105:  # ENOBUFS: some forks missed; keep going
                    self.lost += 1
                    continue
                raise
            if len(data) < _EVENT_OFFSET + _EVENT_HEAD.size + _FORK.size:
                continue
            what = _EVENT_HEAD.unpack_from(data, _EVENT_OFFSET)[0]
            if what == PROC_EVENT_EXIT:
                pid, tgid = struct.unpack_from("=ii", data, _EVENT_OFFSET + _EVENT_HEAD.size)
                if pid == tgid and len(self.exits) < 65536:
                    self.exits.append(tgid)
                continue
            if what != PROC_EVENT_FORK:
                continue
            _ppid, ptgid, _cpid, ctgid = _FORK.unpack_from(data, _EVENT_OFFSET + _EVENT_HEAD.size)
            if ctgid == ptgid:
                continue  # a new thread, not a new process
            parents[ctgid] = ptgid
            parents.move_to_end(ctgid)
            forks += 1
        while len(parents) > self.capacity:
            parents.popitem(last=False)
        return forks

    def take_exits(self) -> list[int]:
        exits, self.exits = self.exits, []
        return exits

    def ancestors(self, pid: int, depth: int = 64) -> list[int]:
        """Known ancestors of `pid`, nearest first (from recorded forks only)."""
        chain: list[int] = []
        seen = {pid}
        parent = self.parents.get(pid)
        while parent is not None and parent not in seen and len(chain) < depth:
            chain.append(parent)
            seen.add(parent)
            parent = self.parents.get(parent)
        return chain
