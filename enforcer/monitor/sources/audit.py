"""Seccomp violations from the kernel audit stream (NETLINK_AUDIT).

AuditSource reads the stream either as a member of the read-only multicast
group AUDIT_NLGRP_READLOG (CAP_AUDIT_READ; coexists with auditd; a full
buffer drops records, and the socket's drop counter says exactly how many)
or as the kernel's registered audit daemon (CAP_AUDIT_CONTROL, no other
daemon; a full buffer makes the logging process wait instead). Unlike
/dev/kmsg neither is rate-limited by printk. docs/metrics.md compares them.

A seccomp record (type 1326, AUDIT_SECCOMP) looks like:

    audit(1700000000.123:456): auid=4294967295 uid=0 gid=0 ses=4294967295
    subj=unconfined pid=1234 comm="x" exe="/usr/bin/x" sig=0 arch=c000003e
    syscall=101 compat=0 ip=0x7f00 code=0x50000
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from enforcer.kernel.arch import BY_NAME, MACHINE_ARCH
from enforcer.monitor.sources import audit_control
from enforcer.monitor.sources.audit_control import AUDIT_REPLACE, NETLINK_AUDIT

AUDIT_NLGRP_READLOG = 1
AUDIT_SECCOMP = 1326
SO_RCVBUFFORCE = 33  # not exported by the socket module; linux/asm-generic/socket.h

_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSG_HDRLEN = _NLMSG_HDR.size
# MAX_AUDIT_MESSAGE_LENGTH (8970) plus the netlink header, rounded up.
RECV_SIZE = 9 * 1024

# seccomp return actions (SECCOMP_RET_ACTION_FULL bits of `code`), named as
# the policy format names them.
_ACTIONS: dict[int, str] = {
    0x80000000: "kill-process",
    0x00000000: "kill-thread",
    0x00030000: "trap",
    0x00050000: "errno",
    0x7FC00000: "user-notif",
    0x7FF00000: "trace",
    0x7FFC0000: "log",
    0x7FFF0000: "allow",
}
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_DATA = 0x0000FFFF

AUDIT_UNSET = 4294967295  # auid / ses of a process outside any login session


class MalformedRecord(ValueError):
    """An audit record we cannot read; counted by the caller, never fatal."""


@dataclass(slots=True)
class SeccompRecord:
    """One AUDIT_SECCOMP record, decoded."""

    time: float  # kernel timestamp of the event (seconds since the epoch)
    serial: int  # audit serial number (shared by the records of one event)
    pid: int
    uid: int | None
    auid: int | None
    ses: int | None
    comm: str | None
    exe: str | None
    sig: int
    arch: int  # AUDIT_ARCH_* value
    syscall: int
    compat: int
    ip: int | None
    # The filter's SECCOMP_RET_* action; the kernel logs the action bits
    # only (no errno number), see seccomp_log() in kernel/seccomp.c.
    code: int

    @property
    def action(self) -> str:
        return action_name(self.code)


def action_name(code: int) -> str:
    return _ACTIONS.get(code & SECCOMP_RET_ACTION_FULL, "unknown")


def decode_untrusted(value: bytes) -> str | None:
    """Undo the kernel's audit_log_untrustedstring encoding.

    A value the kernel considered safe is written in double quotes; one with
    a space, quote or control byte is written as bare hex; an absent one is
    "(null)". Bytes that are not UTF-8 are kept visible as \\xNN escapes.
    """
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        raw = value[1:-1]
    elif value == b"(null)":
        return None
    else:
        try:
            raw = bytes.fromhex(value.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise MalformedRecord(f"neither quoted nor hex: {value[:40]!r}") from None
    return raw.decode("utf-8", "backslashreplace")


_FIELD = re.compile(rb"([a-z_]+)=(\S*)")
_REQUIRED = ((b"pid", 10), (b"arch", 16), (b"syscall", 10), (b"code", 16))


def _explain(fields: dict[bytes, bytes]) -> str:
    """Why the required fields did not parse (only on the error path)."""
    for key, base in _REQUIRED:
        value = fields.get(key)
        if value is None:
            return f"missing field {key.decode()}"
        try:
            int(value, base)
        except ValueError:
            return f"bad {key.decode()}={value[:40]!r}"
    return "bad numeric field"


def _opt_int(value: bytes | None, base: int = 10) -> int | None:
    return None if value is None else int(value, base)


# The exact layout audit_seccomp() writes (kernel/auditsc.c: audit_log_task
# then " sig=%ld arch=%x syscall=%ld compat=%d ip=0x%lx code=0x%x"), with the
# LSM's subj field(s) optional (AppArmor adds a " (enforce)" to its label).
# One match() reads a record in about half the time of the general parser
# below, which stays for anything laid out otherwise.
_KERNEL_LAYOUT = re.compile(
    rb"audit\((\d+\.\d+):(\d+)\): auid=(\d+) uid=(\d+) gid=\d+ ses=(\d+)"
    rb"(?: subj[a-z_]*=\S+(?: \([a-z]+\))?)* pid=(\d+) comm=(\S+) exe=(\S+) "
    rb"sig=(-?\d+) arch=([0-9a-f]+) syscall=(\d+) compat=(\d+) ip=0x([0-9a-f]+) "
    rb"code=0x([0-9a-f]+)")
_match_kernel_layout = _KERNEL_LAYOUT.match
# comm and exe as decoded before: a workload repeats the same few.
_decoded: dict[bytes, str | None] = {}


def _decode_cached(value: bytes) -> str | None:
    text = _decoded.get(value, _decoded)
    if text is _decoded:
        if len(_decoded) > 4096:
            _decoded.clear()
        text = _decoded[value] = decode_untrusted(value)
    return text  # type: ignore[return-value]


def parse_seccomp_record(text: bytes) -> SeccompRecord:
    """Parse the body of one type-1326 record (starting at "audit(").

    Raises MalformedRecord for anything that does not carry the fields we
    need (pid, arch, syscall, code) in the kernel's format. This is the
    monitor's hot path (one call per record): the kernel's own layout in
    one regex match, else the general parser.
    """
    m = _match_kernel_layout(text)
    if m is not None:
        (when, serial, auid, uid, ses, pid, comm, exe, sig, arch, syscall, compat, ip,
         code) = m.groups()
        return SeccompRecord(
            time=float(when), serial=int(serial), pid=int(pid), uid=int(uid), auid=int(auid),
            ses=int(ses), comm=_decode_cached(comm), exe=_decode_cached(exe), sig=int(sig),
            arch=int(arch, 16), syscall=int(syscall), compat=int(compat), ip=int(ip, 16),
            code=int(code, 16))
    return parse_seccomp_record_generally(text)


def parse_seccomp_record_generally(text: bytes) -> SeccompRecord:
    """parse_seccomp_record for any field order: one pass over KEY=VALUE
    tokens (public so that the tests can compare the two)."""
    if not text.startswith(b"audit("):
        raise MalformedRecord("does not start with audit(")
    close = text.find(b"): ", 6)
    if close < 0:
        raise MalformedRecord("no end of the audit(...) stamp")
    stamp, sep, serial = text[6:close].partition(b":")
    if not sep:
        raise MalformedRecord("stamp has no serial")
    try:
        when = float(stamp)
        serial_no = int(serial)
    except ValueError:
        raise MalformedRecord(f"bad stamp {text[6:close][:40]!r}") from None
    # Values never contain spaces (the kernel hex-encodes such strings); a
    # token without "=" (e.g. the "(enforce)" of an AppArmor subj) is skipped.
    fields = dict(_FIELD.findall(text, close + 3))
    get = fields.get
    try:
        pid = int(fields[b"pid"])
        arch = int(fields[b"arch"], 16)
        syscall = int(fields[b"syscall"])
        code = int(fields[b"code"], 16)
    except (KeyError, ValueError):
        raise MalformedRecord(_explain(fields)) from None
    try:
        uid = _opt_int(get(b"uid"))
        auid = _opt_int(get(b"auid"))
        ses = _opt_int(get(b"ses"))
        sig = int(get(b"sig", b"0"))
        compat = int(get(b"compat", b"0"))
        ip = _opt_int(get(b"ip"), 16)
    except ValueError:
        raise MalformedRecord("bad optional numeric field") from None
    comm = get(b"comm")
    exe = get(b"exe")
    return SeccompRecord(
        time=when, serial=serial_no, pid=pid, uid=uid, auid=auid, ses=ses,
        comm=decode_untrusted(comm) if comm is not None else None,
        exe=decode_untrusted(exe) if exe is not None else None,
        sig=sig, arch=arch, syscall=syscall, compat=compat, ip=ip, code=code)


# Field names of any record type: SYSCALL records have a0..a3, PATH records
# cap_fp, ...
_ANY_FIELD = re.compile(rb"([a-z][a-z0-9_]*)=(\S*)")


def split_record(payload: bytes) -> tuple[float, int, dict[bytes, bytes]]:
    """Any audit record "audit(T:S): k=v ..." -> (T, S, fields); raises
    MalformedRecord. Values are as the kernel wrote them (strings quoted or
    hex: decode_untrusted)."""
    if not payload.startswith(b"audit("):
        raise MalformedRecord("does not start with audit(")
    close = payload.find(b"): ", 6)
    stamp, sep, serial = payload[6:close].partition(b":")
    if close < 0 or not sep:
        raise MalformedRecord("no audit(TIME:SERIAL) stamp")
    try:
        return float(stamp), int(serial), dict(_ANY_FIELD.findall(payload, close + 3))
    except ValueError:
        raise MalformedRecord(f"bad stamp {payload[6:close][:40]!r}") from None


def iter_netlink_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Split a datagram into (type, payload) pairs; raises MalformedRecord."""
    offset = 0
    end = len(data)
    while offset + NLMSG_HDRLEN <= end:
        length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        # The audit multicast path historically sets nlmsg_len to the payload
        # length only; accept both that and the standard header+payload.
        if length < NLMSG_HDRLEN or offset + length > end:
            if offset == 0 and length <= end - NLMSG_HDRLEN:
                yield mtype, data[NLMSG_HDRLEN : NLMSG_HDRLEN + length]
                return
            raise MalformedRecord(f"netlink length {length} does not fit {end - offset} bytes")
        yield mtype, data[offset + NLMSG_HDRLEN : offset + length]
        offset += (length + 3) & ~3
    if offset < end and offset != 0 and end - offset >= NLMSG_HDRLEN:
        raise MalformedRecord("trailing bytes after netlink messages")


def serial_of(payload: bytes) -> int | None:
    """The audit serial of any record (for estimating records lost)."""
    if not payload.startswith(b"audit("):
        return None
    close = payload.find(b")", 6)
    colon = payload.find(b":", 6, close)
    if close < 0 or colon < 0:
        return None
    try:
        return int(payload[colon + 1 : close])
    except ValueError:
        return None


class SerialGaps:
    """Audit serial numbers that never arrived: an estimate of records lost.

    The kernel numbers every audit event (all records of one event share
    the number), so a number we never see is an event that did not reach
    us. Records can arrive slightly out of order (two CPUs logging at once),
    so a missing number is only counted once it has stayed missing for
    `settle_after` seconds; at most `window` of them are tracked, a larger
    jump is counted at once beyond that. An estimate, not the count: a
    number can also go missing before any reader could have had it (a rate
    limit), and in multicast mode it counts records of every type. The
    exact count comes from the kernel's own counters (AuditSource).
    """

    def __init__(self, settle_after: float = 2.0, window: int = 1 << 16,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_after = settle_after
        self.window = window
        self.clock = clock
        self.highest: int | None = None
        self.missing: dict[int, float] = {}  # serial -> when its absence was noticed
        self._confirmed = 0  # counted but not yet reported by settle()

    def see(self, serial: int) -> None:
        top = self.highest
        if top is None or serial == top + 1:
            self.highest = serial
        elif serial > top:
            gap = serial - top - 1
            if gap > 1 << 31:  # the u32 counter wrapped backwards: start again
                self.highest = serial
                return
            tracked = max(0, min(gap, self.window - len(self.missing)))
            self._confirmed += gap - tracked
            now = self.clock()
            for missing in range(serial - tracked, serial):
                self.missing[missing] = now
            self.highest = serial
        elif serial < top:
            if top - serial > 1 << 31:  # wrapped forwards (2**32 events later)
                self.highest = serial
            elif self.missing:
                self.missing.pop(serial, None)  # a late arrival fills its gap

    def settle(self, final: bool = False) -> int:
        """Numbers missing for long enough (all, if `final`): how many more
        are counted lost since the last call."""
        counted, self._confirmed = self._confirmed, 0
        if self.missing:
            limit = self.clock() - self.settle_after
            gone = [s for s, when in self.missing.items() if final or when <= limit]
            for serial in gone:
                del self.missing[serial]
            counted += len(gone)
        return counted


class AuditSocketError(OSError):
    pass


class AuditDaemonUnavailable(AuditSocketError):
    """The monitor cannot be the audit daemon (another one is registered, or
    no CAP_AUDIT_CONTROL); in --audit-mode auto it reads multicast instead."""


AUDIT_MODES = ("auto", "daemon", "multicast")
# The kernel audit backlog while the monitor is the audit daemon (the
# kernel's default is 64; see audit_control.BacklogLimit).
DAEMON_BACKLOG_LIMIT = 8192


class AuditSource:
    """The kernel audit stream: yields raw type-1326 payloads.

    Two ways to read it (`mode`):

    * multicast: a socket in the read-only group AUDIT_NLGRP_READLOG. Needs
      CAP_AUDIT_READ only and coexists with auditd, but the kernel never
      waits for a multicast reader: when our buffer is full it drops. Every
      drop is counted exactly, from the socket's own drop counter
      (audit_control.socket_drops).
    * daemon: the monitor registers itself as the kernel's audit daemon
      (AUDIT_SET pid; needs CAP_AUDIT_CONTROL and no other daemon). Then
      the kernel delivers to us by unicast and, while our buffer is full,
      queues records in its backlog and makes the processes that log wait
      (audit_backlog_wait_time) instead of dropping: nothing is lost while
      the monitor keeps reading. What the kernel still drops (backlog wait
      exhausted, queues full) it counts in its `lost` counter, read here
      every poll. On AUDIT_REPLACE (another daemon, e.g. auditd, wants the
      place) the monitor yields: it unregisters and goes on multicast.
    * auto: daemon where possible, else multicast.

    A gap in the audit serial numbers (SerialGaps) is kept as a cross-check
    of the exact counts (`on_estimated` in account()).
    """

    name = "audit"
    complete = True

    def __init__(self, rcvbuf: int = 32 << 20, max_rcvbuf: int = 256 << 20,
                 mode: str = "multicast", proc_root: str = "/proc",
                 backlog_limit: int = DAEMON_BACKLOG_LIMIT, state_path: str | None = None) -> None:
        if mode not in AUDIT_MODES:
            raise ValueError(f"audit mode {mode!r}: expected one of {', '.join(AUDIT_MODES)}")
        self.requested_mode = mode
        self.mode = "multicast"  # in effect once open() returned
        self.registered = False  # the kernel's audit daemon now (daemon mode, not yet detached)
        self.rcvbuf = rcvbuf
        self.max_rcvbuf = max_rcvbuf
        self.proc_root = proc_root
        self.sock: socket.socket | None = None
        self.gaps = SerialGaps()
        self.notes: list[str] = []  # what open() decided and why, for the log
        self._drops_reported = 0  # our socket's drop counter, as already reported
        self._kernel_lost_base: int | None = None  # kernel `lost` when we registered
        self._pending: list[bytes] = []  # datagrams read while waiting for an answer
        self._replace_requested_by: int | None = None
        self._retired: socket.socket | None = None  # the daemon socket after a yield
        self._abandoned = False  # unregistered by abandon(), from another thread
        self._standby: socket.socket | None = None  # its multicast socket, not yet read
        self._seq = 0
        # Records already counted from the daemon socket before a yield:
        # the multicast socket may deliver them again.
        self._duplicate_below: int | None = None
        # Daemon mode raises the kernel's backlog limit (0: leave it) and
        # gives it back; `state_path` remembers the host's value meanwhile.
        self.backlog = audit_control.BacklogLimit(backlog_limit, state_path)
        # Other record types and who wants them (Landlock: monitor/landlock.py).
        self._handlers: dict[int, Callable[[int, bytes], None]] = {}

    def add_handler(self, types: frozenset[int], handler: Callable[[int, bytes], None]) -> None:
        """Pass records of `types` to handler(type, payload) as they arrive."""
        for mtype in types:
            self._handlers[mtype] = handler

    # -- opening and closing ------------------------------------------------------

    def open(self) -> None:
        recovered = self.backlog.recover()  # after a monitor that was killed
        if recovered:
            self.notes.append(recovered)
        if self.requested_mode in ("auto", "daemon"):
            try:
                self._open_daemon()
                return
            except AuditDaemonUnavailable as e:
                if self.requested_mode == "daemon":
                    raise
                self.notes.append(f"not the audit daemon ({e.strerror}); reading the multicast "
                                  "group, where a full buffer loses records (counted)")
        self._open_multicast()

    def _new_socket(self) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_AUDIT)
        except OSError as e:
            raise AuditSocketError(e.errno, f"cannot open a NETLINK_AUDIT socket: {e.strerror}") from None
        self._set_rcvbuf(sock, self.rcvbuf)
        return sock

    def _open_multicast(self) -> None:
        self.sock, self.mode, self._drops_reported = self._join_multicast(), "multicast", 0

    def _join_multicast(self) -> socket.socket:
        sock = self._new_socket()
        try:
            sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        except OSError as e:
            sock.close()
            hint = " (needs CAP_AUDIT_READ)" if e.errno in (errno.EPERM, errno.EACCES) else ""
            raise AuditSocketError(
                e.errno, f"cannot join the audit multicast group: {e.strerror}{hint}"
            ) from None
        sock.setblocking(False)
        return sock

    def _open_daemon(self) -> None:
        try:
            status = audit_control.read_status()
        except OSError as e:
            hint = " (needs CAP_AUDIT_CONTROL)" if e.errno in (errno.EPERM, errno.EACCES) else ""
            raise AuditDaemonUnavailable(
                e.errno, f"cannot read the audit status: {e.strerror}{hint}") from None
        if status.pid and audit_control.pid_alive(status.pid, self.proc_root):
            # Never poke a running daemon (auditd): registering would only
            # make the kernel ask it whether it is still there.
            raise AuditDaemonUnavailable(errno.EEXIST, f"audit daemon pid {status.pid} is registered")
        sock = self._new_socket()
        try:
            sock.bind((0, 0))
            sock.settimeout(2.0)
            self._pending = audit_control.set_daemon_pid(sock, os.getpid(), self._next_seq())
        except OSError as e:
            # (A registration whose answer timed out dies with the socket:
            # the kernel drops a daemon it cannot send to.)
            sock.close()
            why = {errno.EEXIST: "another audit daemon answers",
                   errno.EPERM: "needs CAP_AUDIT_CONTROL"}.get(e.errno or 0, e.strerror)
            raise AuditDaemonUnavailable(e.errno, f"cannot register as the audit daemon: {why}") from None
        sock.setblocking(False)
        self.sock, self.mode, self.registered = sock, "daemon", True
        limit = status.backlog_limit
        if self.backlog.wanted:
            try:
                if self.backlog.raise_from(limit):
                    limit = self.backlog.wanted
            except OSError as e:
                self.notes.append(f"WARNING: cannot raise the audit backlog_limit from {limit} "
                                  f"({e.strerror}): many loggers at once will wait")
        try:
            # Its `lost` from now on is what we lose (read after registering:
            # nothing before was ours).
            self._kernel_lost_base = audit_control.read_status().lost
        except OSError as e:
            self.notes.append(f"WARNING: cannot read the kernel's lost counter ({e.strerror}); "
                              "only the serial-gap estimate will show losses")
        wait = status.backlog_wait_time
        raised = f" (the host's {status.backlog_limit} until we stop)" \
            if limit != status.backlog_limit else ""
        self.notes.append(
            f"registered as the kernel's audit daemon (pid {os.getpid()}): a full buffer makes "
            f"logging processes wait (backlog_limit {limit}{raised}, backlog_wait_time "
            f"{'unknown' if wait is None else wait} jiffies) instead of losing records")
        if wait == 0:
            self.notes.append("WARNING: backlog_wait_time is 0: the kernel drops instead of "
                              "waiting when its backlog is full (counted as lost)")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _set_rcvbuf(self, sock: socket.socket, size: int) -> None:
        try:
            # As root, FORCE ignores net.core.rmem_max: a burst of 100,000
            # records must fit while we parse.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self.rcvbuf = size

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def close(self) -> None:
        """Unregister (daemon mode) and close. Drain what is queued first
        (Monitor.close does): records already delivered are ours to count."""
        for spare in (self._retired, self._standby):
            if spare is not None:
                spare.close()
        self._retired = self._standby = None
        if self.sock is None:
            return
        if self.registered:
            self._unregister(self.sock)
        self.sock.close()
        self.sock = None

    def detach(self, on_lost: Callable[[int], None]) -> None:
        """Stop the kernel delivering to us (daemon mode: unregister, after
        a last look at its lost counter); what is queued can still be drained."""
        if self.registered and self.sock is not None:
            self.account_kernel_lost(on_lost)
            self._unregister(self.sock)

    def _unregister(self, sock: socket.socket) -> None:
        sock.settimeout(2.0)
        try:
            self._pending += audit_control.set_daemon_pid(sock, 0, self._next_seq())
        except OSError:
            # EACCES: we are no longer the daemon (the kernel dropped the
            # registration after a failed send, or someone replaced it).
            pass
        finally:
            sock.setblocking(False)
        self._kernel_lost_base = None
        self.registered = False
        self.backlog.restore()

    def abandon(self) -> bool:
        """Stop being the audit daemon at once, from any thread (the
        monitor's watchdog, when its main loop stalls): a daemon that does
        not read makes every process that logs wait. Uses a socket of its
        own, so the reader is not disturbed; the reader goes on multicast at
        its next drain(). True if it unregistered."""
        if not self.registered or self._abandoned:
            return False
        try:
            # Join multicast first: what the kernel sends from the moment
            # we unregister reaches this socket, read at the next drain().
            standby = self._join_multicast()
        except OSError:
            standby = None
        try:
            sock = audit_control.open_audit_socket()
            try:
                sock.settimeout(2.0)
                audit_control.set_daemon_pid(sock, 0, 1)
            finally:
                sock.close()
        except OSError:
            if standby is not None:
                standby.close()
            return False
        self._standby = standby
        self._abandoned = True
        self.backlog.restore()
        return True

    def yield_to_another_daemon(self, on_lost: Callable[[int], None], why: str) -> None:
        """Give the daemon's place up and read the multicast group from now on.

        The multicast socket is joined before we unregister, so no record
        falls between the two; a record both sockets deliver is counted
        once (drain skips multicast serials below what the daemon socket
        delivered).
        """
        assert self.sock is not None and self.registered
        self.account_kernel_lost(on_lost)
        daemon_sock = self.sock
        if self._standby is not None:  # joined by abandon()
            self.sock, self.mode, self._drops_reported = self._standby, "multicast", 0
            self._standby = None
        else:
            self._open_multicast()  # the new self.sock; mode multicast
        self._unregister(daemon_sock)
        self._retired = daemon_sock
        self.notes.append(f"{why}; reading the multicast group from now on")

    # -- reading ----------------------------------------------------------------------

    def drain(self, handle: Callable[[bytes], None], on_lost: Callable[[int], None],
              on_malformed: Callable[[str], None], limit: int = 4096) -> int:
        """Read up to `limit` datagrams without blocking; returns how many."""
        count = 0
        if self._pending:
            pending, self._pending = self._pending, []
            for data in pending:
                self._feed(data, handle, on_malformed)
            count += len(pending)
        retired = self._retired
        if retired is not None:
            # After a yield: what the old daemon socket still holds comes
            # first; from there on, lower serials on multicast are repeats.
            self._retired = None
            count += self._drain_socket(retired, handle, on_malformed, 1 << 30)
            retired.close()
            if self.gaps.highest is not None:
                self._duplicate_below = self.gaps.highest + 1
        sock = self.sock
        assert sock is not None
        count += self._drain_socket(sock, handle, on_malformed, limit)
        if self.registered and self._replace_requested_by is not None:
            # The caller sees a new fileno().
            self.yield_to_another_daemon(
                on_lost, f"yielded the audit daemon's place to pid {self._replace_requested_by}")
            self._replace_requested_by = None
        elif self.registered and self._abandoned:
            self.yield_to_another_daemon(
                on_lost, "gave up the audit daemon's place: the monitor had stopped reading")
        elif self.mode == "multicast":
            drops = audit_control.socket_drops(sock)
            if drops != self._drops_reported:
                on_lost(drops - self._drops_reported)
                self._drops_reported = drops
        return count

    def _drain_socket(self, sock: socket.socket, handle: Callable[[bytes], None],
                      on_malformed: Callable[[str], None], limit: int) -> int:
        recv = sock.recv
        see = self.gaps.see
        duplicate_below = self._duplicate_below
        handlers = self._handlers
        header = NLMSG_HDRLEN
        count = 0
        while count < limit:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # The buffer overflowed (the drop counter says by how
                    # much); the socket stays usable. Grow the buffer.
                    if self.rcvbuf < self.max_rcvbuf:
                        self._set_rcvbuf(sock, min(self.rcvbuf * 2, self.max_rcvbuf))
                    continue
                raise
            count += 1
            # Fast path: one record per datagram, as the kernel sends them
            # (the multicast copy historically has nlmsg_len = payload only).
            size = len(data)
            if size > header + 6 and data[header:header + 6] == b"audit(":
                length = int.from_bytes(data[0:4], "little")
                if length == size or length + header == size:
                    close = data.find(b")", header + 6)
                    colon = data.find(b":", header + 6, close)
                    try:
                        serial = int(data[colon + 1:close]) if colon > 0 else -1
                    except ValueError:
                        serial = -1
                    if serial >= 0:
                        if duplicate_below is not None and serial < duplicate_below:
                            continue  # counted from the daemon socket already
                        see(serial)
                    mtype = data[4] | (data[5] << 8)
                    if mtype == AUDIT_SECCOMP:
                        handle(data[header:])
                    elif mtype in handlers:
                        handlers[mtype](mtype, data[header:])
                    continue
            self._feed(data, handle, on_malformed)
        return count

    def _feed(self, data: bytes, handle: Callable[[bytes], None],
              on_malformed: Callable[[str], None]) -> None:
        """The slow path: any framing, several messages per datagram."""
        try:
            for mtype, payload in iter_netlink_messages(data):
                serial = serial_of(payload)
                if serial is not None:
                    if self._duplicate_below is not None and serial < self._duplicate_below:
                        continue
                    self.gaps.see(serial)
                if mtype == AUDIT_SECCOMP:
                    handle(payload)
                elif mtype in self._handlers:
                    self._handlers[mtype](mtype, payload)
                elif mtype == AUDIT_REPLACE and self.registered:
                    self._note_replace(payload)
        except MalformedRecord:
            on_malformed("netlink_message")

    def _note_replace(self, payload: bytes) -> None:
        pid = int.from_bytes(payload[:4], "little") if len(payload) >= 4 else 0
        self._replace_requested_by = pid

    # -- accounting ---------------------------------------------------------------------

    def account(self, on_lost: Callable[[int], None], on_estimated: Callable[[int], None],
                final: bool = False) -> None:
        """Periodic loss accounting: the kernel's `lost` (daemon mode) and the
        serial-gap estimate."""
        if self.registered:
            self.account_kernel_lost(on_lost)
        estimated = self.gaps.settle(final)
        if estimated:
            on_estimated(estimated)

    def account_kernel_lost(self, on_lost: Callable[[int], None]) -> None:
        if self._kernel_lost_base is None:
            return
        try:
            lost = audit_control.read_status().lost
        except OSError:
            return  # counted at the next poll
        n = audit_control.lost_since(self._kernel_lost_base, lost)
        if n:
            on_lost(n)
            self._kernel_lost_base = lost


def native_audit_arch() -> int:
    """AUDIT_ARCH of this kernel; 0 for a machine not in enforcer/kernel/arch.py."""
    machine = os.uname().machine
    arch = BY_NAME.get(MACHINE_ARCH.get(machine, ""))
    return arch.audit if arch is not None else 0
