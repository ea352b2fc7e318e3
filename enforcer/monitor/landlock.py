"""Landlock denials from the kernel audit stream (kernels from 6.15, ABI 7).

The kernel writes, per denied access (security/landlock/audit.c):

  type 1423 AUDIT_LANDLOCK_ACCESS
    domain=1238cddf4 blockers=fs.make_reg path="/tmp/x" dev="vda" ino=2204721
    domain=... blockers=fs.remove_file,fs.refer path="/etc" dev="vda" ino=19
    domain=... blockers=net.connect_tcp daddr=127.0.0.1 dest=80
    domain=... blockers=net.bind_tcp saddr=::1 src=8081
    domain=... blockers=scope.signal opid=1 ocomm="systemd"
    domain=... blockers=scope.abstract_unix_socket path=00656E66...   (hex: a NUL first)
  type 1424 AUDIT_LANDLOCK_DOMAIN, the first time a domain denies something
    domain=1238cddf4 status=allocated mode=enforcing pid=2177 uid=0 exe="..." comm="..."
  ... and when that domain is freed
    domain=1238cddf4 status=deallocated denials=6

An access record carries no pid: the process is in the SYSCALL record (type
1300) of the same event (same audit serial), which the kernel writes when
the syscall returns, then the event ends (EOE, 1320). So an access record
waits for its event's SYSCALL record; if none comes (a denial outside a
syscall, a lost record), it is attributed by its domain: the `pid` of the
domain record is the process that called landlock_restrict_self -- for
`enforcer run` the workload's first process, for a container the helper,
which becomes the container's process.

The kernel logs these only while audit is enabled (audit_enabled; auditd
or `auditctl -e 1` do it, as does `enforcer monitor --enable-audit`), only
for denials after the workload's execve when the domain was made with
LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON (enforcer always asks), and it
drops them, counting them in its `lost` counter, when its backlog is full:
they are logged from contexts that cannot wait.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

from enforcer.monitor.sources.audit import (MalformedRecord, decode_untrusted, serial_of,
                                            split_record)
from enforcer.monitor.sources.audit_control import AuditStatus

AUDIT_SYSCALL = 1300
AUDIT_EOE = 1320
AUDIT_LANDLOCK_ACCESS = 1423
AUDIT_LANDLOCK_DOMAIN = 1424
RECORD_TYPES = frozenset({AUDIT_SYSCALL, AUDIT_EOE, AUDIT_LANDLOCK_ACCESS, AUDIT_LANDLOCK_DOMAIN})

# The kernel's blocker names (fs.write_file, net.bind_tcp, scope.signal,
# ptrace, ...); anything else is counted as "unknown" so a record cannot
# invent label values.
_BLOCKER = re.compile(r"^[a-z_]+(\.[a-z_]+)?$")
MAX_PENDING = 4096  # events waiting for their SYSCALL record
MAX_DOMAINS = 65536


@dataclass(slots=True)
class LandlockDenial:
    """One AUDIT_LANDLOCK_ACCESS record, with its process once known."""

    time: float
    serial: int
    domain: str
    blockers: tuple[str, ...]
    path: str | None = None
    port: int | None = None
    address: str | None = None
    target_pid: int | None = None  # a signal's target (scope.signal)
    target_comm: str | None = None
    # From the event's SYSCALL record:
    pid: int | None = None
    uid: int | None = None
    ses: int | None = None
    comm: str | None = None
    exe: str | None = None
    arch: int | None = None
    syscall: int | None = None
    # The process that made the domain (the domain record), when no SYSCALL
    # record says who was denied.
    domain_pid: int | None = None


def _int(value: bytes | None, base: int = 10) -> int | None:
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        raise MalformedRecord(f"bad number {value[:20]!r}") from None


def _text(value: bytes | None) -> str | None:
    return None if value is None else decode_untrusted(value)


def parse_access(payload: bytes) -> LandlockDenial:
    when, serial, f = split_record(payload)
    domain, blockers = f.get(b"domain"), f.get(b"blockers")
    if not domain or not blockers:
        raise MalformedRecord("landlock access record without domain= or blockers=")
    names = tuple(b.decode("ascii", "replace") for b in blockers.split(b","))
    denial = LandlockDenial(time=when, serial=serial, domain=domain.decode("ascii", "replace"),
                            blockers=tuple(n if _BLOCKER.match(n) else "unknown" for n in names))
    if b"path" in f:
        path = f[b"path"]
        # An abstract unix socket's name is bare hex starting with a NUL byte:
        # keep it readable as "@name", as ss(8) shows it.
        if path[:2] == b"00" and not path.startswith(b'"'):
            text = _text(path) or ""
            denial.path = "@" + text[1:]
        else:
            denial.path = _text(path)
    port = f.get(b"dest", f.get(b"src"))
    if port is not None:
        denial.port = _int(port)
        address = f.get(b"daddr", f.get(b"saddr"))
        denial.address = address.decode("ascii", "replace") if address else None
    if b"opid" in f:
        denial.target_pid = _int(f[b"opid"])
        denial.target_comm = _text(f.get(b"ocomm"))
    return denial


def parse_domain(payload: bytes) -> tuple[str, str, int | None]:
    """(domain, status, pid of its creator or None) of a 1424 record."""
    _, _, f = split_record(payload)
    domain, status = f.get(b"domain"), f.get(b"status")
    if not domain or not status:
        raise MalformedRecord("landlock domain record without domain= or status=")
    return domain.decode("ascii", "replace"), status.decode("ascii", "replace"), _int(f.get(b"pid"))


def fill_from_syscall(denial: LandlockDenial, payload: bytes) -> None:
    """The process fields of the event's SYSCALL record."""
    _, _, f = split_record(payload)
    denial.pid = _int(f.get(b"pid"))
    denial.uid = _int(f.get(b"uid"))
    ses = _int(f.get(b"ses"))
    denial.ses = None if ses == 4294967295 else ses
    denial.comm = _text(f.get(b"comm"))
    denial.exe = _text(f.get(b"exe"))
    denial.arch = _int(f.get(b"arch"), 16)
    denial.syscall = _int(f.get(b"syscall"))


class LandlockRecords:
    """Puts an event's records together and hands each denial to `emit`.

    `handle(type, payload)` takes the four record types of RECORD_TYPES
    (the audit source passes them on); SYSCALL and EOE records cost one
    dict lookup unless their event has a Landlock denial waiting.
    """

    def __init__(self, emit: Callable[[LandlockDenial], None],
                 on_malformed: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.on_malformed = on_malformed
        self.clock = clock
        self._pending: dict[int, tuple[float, list[LandlockDenial]]] = {}
        self.domain_pids: dict[str, int] = {}  # domain -> the pid that made it

    def handle(self, mtype: int, payload: bytes) -> None:
        try:
            if mtype == AUDIT_LANDLOCK_ACCESS:
                denial = parse_access(payload)
                entry = self._pending.get(denial.serial)
                if entry is None:
                    if len(self._pending) >= MAX_PENDING:
                        self.flush(older_than=0.0)
                    entry = self._pending[denial.serial] = (self.clock(), [])
                entry[1].append(denial)
            elif mtype == AUDIT_LANDLOCK_DOMAIN:
                self._domain(payload)
            elif self._pending:  # SYSCALL or EOE
                serial = serial_of(payload)
                entry = self._pending.pop(serial, None) if serial is not None else None
                if entry is not None:
                    for denial in entry[1]:
                        if mtype == AUDIT_SYSCALL:
                            fill_from_syscall(denial, payload)
                        self._emit(denial)
        except MalformedRecord:
            self.on_malformed("landlock_record")

    def _domain(self, payload: bytes) -> None:
        domain, status, pid = parse_domain(payload)
        if status == "allocated" and pid is not None:
            if len(self.domain_pids) >= MAX_DOMAINS:
                self.domain_pids.clear()
            self.domain_pids[domain] = pid
            # The record comes right after the domain's first denial.
            for _, denials in self._pending.values():
                for denial in denials:
                    if denial.domain == domain:
                        denial.domain_pid = pid
        elif status == "deallocated":
            self.domain_pids.pop(domain, None)

    def _emit(self, denial: LandlockDenial) -> None:
        if denial.domain_pid is None:
            denial.domain_pid = self.domain_pids.get(denial.domain)
        self.emit(denial)

    def flush(self, older_than: float = 1.0) -> None:
        """Hand on denials whose SYSCALL record has not come within
        `older_than` seconds (attributed by their domain)."""
        now = self.clock()
        for serial, (seen, denials) in list(self._pending.items()):
            if now - seen >= older_than:
                del self._pending[serial]
                for denial in denials:
                    self._emit(denial)


# -- kernel audit settings ------------------------------------------------------

# A backlog large enough that a burst of Landlock denials (logged from
# contexts that cannot wait) is not dropped.
BACKLOG_FOR_LANDLOCK = 8192


def audit_notice(status: AuditStatus | None) -> str | None:
    """What an operator must know for Landlock denials to reach the monitor."""
    if status is None:
        return None
    if not status.enabled:
        return ("kernel audit is disabled, so the kernel logs no Landlock denials (enable it: "
                "auditd, `auditctl -e 1`, or `enforcer monitor --enable-audit`)")
    if 0 < status.backlog_limit < BACKLOG_FOR_LANDLOCK:
        return (f"the kernel's audit backlog limit is {status.backlog_limit}: Landlock "
                "denials are dropped when it is full (raise it: `auditctl -b 8192`, or "
                "`enforcer monitor --enable-audit`)")
    return None
