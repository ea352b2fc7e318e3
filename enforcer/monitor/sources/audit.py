"""Seccomp violations from the kernel audit stream (NETLINK_AUDIT multicast).

The kernel multicasts every audit record to the read-only group
AUDIT_NLGRP_READLOG. Joining it needs CAP_AUDIT_READ but no audit daemon and
no change to the host's audit settings, and it coexists with auditd. Unlike
/dev/kmsg it is not rate-limited by printk: when the kernel's audit backlog
fills it slows the logging process down instead of dropping records, so the
only place we can lose records is our own socket buffer (ENOBUFS), which we
count and size generously.

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
from dataclasses import dataclass
from typing import Callable, Iterator

NETLINK_AUDIT = 9
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


def parse_seccomp_record(text: bytes) -> SeccompRecord:
    """Parse the body of one type-1326 record (starting at "audit(").

    Raises MalformedRecord for anything that does not carry the fields we
    need (pid, arch, syscall, code) in the kernel's format. This is the
    monitor's hot path (one call per record): one regex pass, no helpers.
    """
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


class AuditSocketError(OSError):
    pass


class AuditSource:
    """The audit multicast socket: yields raw type-1326 payloads.

    `on_lost(n)` is called with the number of records we know or estimate we
    lost: the kernel does not say how many, so one is counted at ENOBUFS and
    the rest when the gap in the audit serial numbers appears (serials count
    every audit record of the host, so this is an upper estimate).
    """

    name = "audit"
    complete = True

    def __init__(self, rcvbuf: int = 32 << 20, max_rcvbuf: int = 256 << 20) -> None:
        self.rcvbuf = rcvbuf
        self.max_rcvbuf = max_rcvbuf
        self.sock: socket.socket | None = None
        self._last_serial: int | None = None
        self._overrun = False
        # Other record types and who wants them (Landlock: monitor/landlock.py).
        self._handlers: dict[int, Callable[[int, bytes], None]] = {}

    def add_handler(self, types: frozenset[int], handler: Callable[[int, bytes], None]) -> None:
        """Pass records of `types` to handler(type, payload) as they arrive."""
        for mtype in types:
            self._handlers[mtype] = handler

    def open(self) -> None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        except OSError as e:
            raise AuditSocketError(e.errno, f"cannot open a NETLINK_AUDIT socket: {e.strerror}") from None
        self.sock = sock
        self._set_rcvbuf(self.rcvbuf)
        try:
            sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        except OSError as e:
            sock.close()
            self.sock = None
            hint = " (needs CAP_AUDIT_READ)" if e.errno in (errno.EPERM, errno.EACCES) else ""
            raise AuditSocketError(
                e.errno, f"cannot join the audit multicast group: {e.strerror}{hint}"
            ) from None
        sock.setblocking(False)

    def _set_rcvbuf(self, size: int) -> None:
        assert self.sock is not None
        try:
            # As root, FORCE ignores net.core.rmem_max: a burst of 100,000
            # records must fit while we parse.
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        self.rcvbuf = size

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def drain(self, handle: Callable[[bytes], None], on_lost: Callable[[int], None],
              on_malformed: Callable[[str], None], limit: int = 4096) -> int:
        """Read up to `limit` datagrams without blocking; returns how many."""
        sock = self.sock
        assert sock is not None
        recv = sock.recv
        count = 0
        while count < limit:
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # Our buffer overflowed: the socket stays usable. Count
                    # one now, the rest when the gap in serials shows up;
                    # grow the buffer.
                    on_lost(1)
                    self._overrun = True
                    if self.rcvbuf < self.max_rcvbuf:
                        self._set_rcvbuf(min(self.rcvbuf * 2, self.max_rcvbuf))
                    continue
                raise
            count += 1
            # Fast path: one record per datagram, as the kernel sends them.
            if len(data) >= NLMSG_HDRLEN:
                mtype = data[4] | (data[5] << 8)
                length = int.from_bytes(data[0:4], "little")
                if NLMSG_HDRLEN <= length == len(data) or length + NLMSG_HDRLEN == len(data):
                    payload = data[NLMSG_HDRLEN:]
                    self._account(payload, on_lost)
                    if mtype == AUDIT_SECCOMP:
                        handle(payload)
                    elif mtype in self._handlers:
                        self._handlers[mtype](mtype, payload)
                    continue
            try:
                for mtype, payload in iter_netlink_messages(data):
                    self._account(payload, on_lost)
                    if mtype == AUDIT_SECCOMP:
                        handle(payload)
                    elif mtype in self._handlers:
                        self._handlers[mtype](mtype, payload)
            except MalformedRecord:
                on_malformed("netlink_message")
        return count

    def _account(self, payload: bytes, on_lost: Callable[[int], None]) -> None:
        serial = serial_of(payload)
        if serial is None:
            return
        last = self._last_serial
        if self._overrun and last is not None and serial > last + 1:
            # The first jump in serial numbers after an overrun is where the
            # kernel dropped records (it keeps the oldest queued ones and
            # drops new ones). One was counted when ENOBUFS came.
            on_lost(serial - last - 2)
            self._overrun = False
        self._last_serial = serial if last is None else max(serial, last)


def native_audit_arch() -> int:
    """AUDIT_ARCH of this kernel (only x86_64 and aarch64 hosts are expected)."""
    machine = os.uname().machine
    return {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(machine, 0)


# -- the kernel's audit settings (AUDIT_GET / AUDIT_SET) ---------------------------

AUDIT_GET = 1000  # netlink request: struct audit_status
AUDIT_SET = 1001
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
# struct audit_status (linux/audit.h): the u32 fields we read, in order.
_STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                  "backlog")
_STATUS = struct.Struct("=8I")


def _audit_request(mtype: int, body: bytes) -> bytes | None:
    """Send one request on a fresh NETLINK_AUDIT socket; the reply's payload
    (AUDIT_GET) or b"" (an ACK). OSError for a refusal (an NLMSG_ERROR)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
    try:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        flags = NLM_F_REQUEST | (NLM_F_ACK if mtype == AUDIT_SET else 0)
        sock.send(_NLMSG_HDR.pack(NLMSG_HDRLEN + len(body), mtype, flags, 1, 0) + body)
        for _ in range(8):
            data = sock.recv(8192)
            _length, reply, _f, _seq, _pid = _NLMSG_HDR.unpack_from(data)
            if reply == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, NLMSG_HDRLEN)
                if err != 0:
                    raise OSError(-err, os.strerror(-err))
                if mtype == AUDIT_SET:
                    return b""
            elif reply == mtype:
                return data[NLMSG_HDRLEN:]
        return None
    finally:
        sock.close()


def audit_status() -> dict[str, int] | None:
    """The kernel's audit status (enabled, backlog_limit, lost, ...); None
    where it cannot be asked (AUDIT_GET needs CAP_AUDIT_CONTROL)."""
    try:
        payload = _audit_request(AUDIT_GET, b"")
    except OSError:
        return None
    if payload is None or len(payload) < _STATUS.size:
        return None
    return dict(zip(_STATUS_FIELDS, _STATUS.unpack_from(payload)))


def set_audit_status(mask: int, enabled: int = 0, backlog_limit: int = 0) -> None:
    """AUDIT_SET the fields named by `mask` (AUDIT_STATUS_*); raises OSError."""
    body = struct.pack("=9I", mask, enabled, 0, 0, 0, backlog_limit, 0, 0, 0) + bytes(8)
    _audit_request(AUDIT_SET, body)
