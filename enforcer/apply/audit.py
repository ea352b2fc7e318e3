"""A reader of the kernel audit stream for one workload's run: the
syscalls its seccomp filter refused (enforcer/apply/refusals.py counts
them) and the one it was killed for.

The supervisor opens a NETLINK_AUDIT socket bound to the read-only
multicast group (AUDIT_NLGRP_READLOG) before the workload gets its go, so
no record of it can be missed, reads the type=1326 (AUDIT_SECCOMP) records
while it runs (enforcer/apply/watch.py) and the rest after it died. Multicast readers coexist with auditd and
are not rate-limited like /dev/kmsg. Needs CAP_AUDIT_READ: unprivileged
callers get no listener and a message that says the syscall is unknown.
"""

from __future__ import annotations

import _socket  # the C module: `socket` would pull in selectors, enum, ... (~7 ms)
import select
import struct
from errno import ENOBUFS
import time

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
AUDIT_SECCOMP = 1326
_NLMSGHDR = struct.Struct("=IHHII")
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 4 << 20


class SeccompRecord:
    """One seccomp audit record (type 1326): who, which syscall, which arch."""

    __slots__ = ("pid", "syscall", "arch", "sig", "code", "ses")

    def __init__(self, pid: int, syscall: int, arch: int, sig: int, code: int,
                 ses: int = -1) -> None:
        self.pid = pid
        self.syscall = syscall
        self.arch = arch
        self.sig = sig
        self.code = code
        self.ses = ses  # audit session id; -1 when the record has none

    def _key(self) -> tuple[int, int, int, int, int]:
        return (self.pid, self.syscall, self.arch, self.sig, self.code)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeccompRecord):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return ("SeccompRecord(pid={}, syscall={}, arch={:#x}, sig={}, code={:#x})"
                .format(*self._key()))


def parse_record(text: str) -> SeccompRecord | None:
    fields: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    try:
        return SeccompRecord(pid=int(fields["pid"]), syscall=int(fields["syscall"]),
                             arch=int(fields.get("arch", "0"), 16),
                             sig=int(fields.get("sig", "0")),
                             code=int(fields.get("code", "0"), 16),
                             ses=_session(fields.get("ses")))
    except (KeyError, ValueError):
        return None


def _session(text: str | None) -> int:
    """ses= as a number; 4294967295 ((u32)-1) and absent mean none."""
    if text is None or not text.isdigit() or int(text) >= 0xFFFFFFFF:
        return -1
    return int(text)


def parse_messages(data: bytes) -> list[SeccompRecord]:
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if mtype == AUDIT_SECCOMP:
            body = data[offset + _NLMSGHDR.size: offset + length].split(b"\0", 1)[0]
            rec = parse_record(body.decode(errors="replace"))
            if rec:
                out.append(rec)
        offset += (length + 3) & ~3
    return out


class AuditListener:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.lost = False  # the kernel dropped records for us (a full buffer)

    @classmethod
    def open(cls) -> "AuditListener | None":
        try:
            sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                  NETLINK_AUDIT)
        except OSError:
            return None
        try:
            sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
            sock.setblocking(False)
            try:
                # Room for a burst of refusals between two reads (multicast
                # records that do not fit are dropped for this reader only).
                sock.setsockopt(_socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except OSError:
                pass
        except OSError:
            sock.close()
            return None
        return cls(sock)

    def read_ready(self) -> list[SeccompRecord]:
        """Every seccomp record waiting on the socket, without blocking.
        Records the kernel could not queue for us (ENOBUFS) set `lost`."""
        out: list[SeccompRecord] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as e:
                if e.errno == ENOBUFS:
                    self.lost = True
                    continue
                return out
            out.extend(parse_messages(data))

    def find(self, pids: set[int], timeout: float) -> SeccompRecord | None:
        """The first kill record of one of `pids`, waiting up to `timeout`
        (kauditd delivers asynchronously, possibly after we reaped)."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return None
                for rec in parse_messages(data):
                    if rec.pid in pids and rec.sig:
                        return rec
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([self.sock], [], [], left)

    def close(self) -> None:
        self.sock.close()
