"""The kernel's audit status and the audit daemon registration (NETLINK_AUDIT
AUDIT_GET / AUDIT_SET), and the drop counter of a netlink socket.

Two facts about the kernel (kernel/audit.c, net/netlink/af_netlink.c) shape
how the monitor uses these:

* Only one process is the audit daemon. `AUDIT_SET pid=<own tgid>` makes
  the sending socket the unicast destination of every audit record; the
  kernel refuses (EEXIST) while another daemon answers, and only the
  registered process may unregister (`pid=0`). A dead daemon is noticed
  the next time the kernel sends to it, or when someone else registers.
* A netlink socket counts every message it had to drop in `sk_drops`,
  which getsockopt(SO_MEMINFO) returns (SK_MEMINFO_DROPS). SO_RXQ_OVFL,
  which reports the same counter on other sockets, gives no ancillary data
  on netlink (checked on 6.18), so SO_MEMINFO is how we read it.

Needs CAP_AUDIT_CONTROL for AUDIT_GET and AUDIT_SET; the drop counter needs
nothing. Stdlib only.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_AUDIT = 9
AUDIT_GET = 1000
AUDIT_SET = 1001
# Sent by the kernel to the registered daemon when another process asks to
# become the daemon: "are you still there?" (payload: the asker's pid, u32).
AUDIT_REPLACE = 1329
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
AUDIT_STATUS_ENABLED = 0x01
AUDIT_STATUS_PID = 0x04
AUDIT_STATUS_BACKLOG_LIMIT = 0x10

SO_MEMINFO = 55  # linux/asm-generic/socket.h; not exported by the socket module
SK_MEMINFO_VARS = 9
SK_MEMINFO_DROPS = 8

_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# struct audit_status: mask, enabled, failure, pid, rate_limit, backlog_limit,
# lost, backlog, feature_bitmap, backlog_wait_time, backlog_wait_time_actual
# (all u32; older kernels send fewer fields).
_STATUS_FIELDS = ("mask", "enabled", "failure", "pid", "rate_limit", "backlog_limit", "lost",
                  "backlog", "feature_bitmap", "backlog_wait_time", "backlog_wait_time_actual")
_MIN_STATUS_FIELDS = 7  # up to `lost`, present since the first kernels with audit


@dataclass(frozen=True)
class AuditStatus:
    """The kernel's audit settings and counters (AUDIT_GET)."""

    enabled: int
    failure: int
    pid: int  # the registered audit daemon, 0 for none
    rate_limit: int
    backlog_limit: int
    lost: int  # records the kernel dropped (u32, wraps)
    backlog: int
    backlog_wait_time: int | None  # jiffies; None on kernels that do not report it
    backlog_wait_time_actual: int | None

    def describe(self) -> str:
        return (f"pid={self.pid} enabled={self.enabled} failure={self.failure} "
                f"rate_limit={self.rate_limit} backlog_limit={self.backlog_limit} "
                f"backlog_wait_time={self.backlog_wait_time} lost={self.lost}")


def parse_status(payload: bytes) -> AuditStatus:
    """struct audit_status -> AuditStatus; ValueError if too short."""
    n = min(len(payload) // 4, len(_STATUS_FIELDS))
    if n < _MIN_STATUS_FIELDS:
        raise ValueError(f"audit status of {len(payload)} bytes is too short")
    values = dict(zip(_STATUS_FIELDS, struct.unpack_from(f"={n}I", payload)))
    return AuditStatus(
        enabled=values["enabled"], failure=values["failure"], pid=values["pid"],
        rate_limit=values["rate_limit"], backlog_limit=values["backlog_limit"],
        lost=values["lost"], backlog=values["backlog"],
        backlog_wait_time=values.get("backlog_wait_time"),
        backlog_wait_time_actual=values.get("backlog_wait_time_actual"))


def lost_since(before: int, after: int) -> int:
    """Records lost between two readings of the u32 `lost` counter."""
    return (after - before) & 0xFFFFFFFF


def open_audit_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def send_request(sock: socket.socket, mtype: int, body: bytes = b"", seq: int = 1,
                 flags: int = NLM_F_REQUEST) -> None:
    sock.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), mtype, flags, seq, 0) + body)


def read_status(timeout: float = 2.0) -> AuditStatus:
    """The kernel's audit status, over a socket of our own.

    Raises OSError: EPERM without CAP_AUDIT_CONTROL, ECONNREFUSED in a user
    namespace, ETIMEDOUT if the kernel does not answer.
    """
    sock = open_audit_socket()
    try:
        sock.settimeout(timeout)
        send_request(sock, AUDIT_GET)
        while True:
            try:
                data = sock.recv(8192)
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "no answer to AUDIT_GET") from None
            if len(data) < _NLMSG_HDR.size:
                continue
            _length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data)
            if mtype == AUDIT_GET:
                try:
                    return parse_status(data[_NLMSG_HDR.size:])
                except ValueError as e:
                    raise OSError(errno.EPROTO, str(e)) from None
            if mtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, _NLMSG_HDR.size)
                if err:
                    raise OSError(-err, os.strerror(-err))
    finally:
        sock.close()


def set_status(sock: socket.socket, seq: int, mask: int, **values: int) -> list[bytes]:
    """AUDIT_SET the fields in `mask` (AUDIT_STATUS_*) from `sock`.

    Waits for the kernel's answer on `sock`. Anything else that arrives
    first (audit records, when `sock` is the daemon's socket) is returned,
    in order, for the caller to process. Raises OSError with the kernel's
    errno: for the pid, EEXIST (another daemon answers) and EACCES (only
    the registered daemon may unregister); EPERM without CAP_AUDIT_CONTROL.
    """
    fields = {"mask": mask, **values}
    body = struct.pack(f"={len(_STATUS_FIELDS)}I", *(fields.get(f, 0) for f in _STATUS_FIELDS))
    send_request(sock, AUDIT_SET, body, seq=seq, flags=NLM_F_REQUEST | NLM_F_ACK)
    others: list[bytes] = []
    while True:
        data = sock.recv(1 << 16)
        if len(data) >= _NLMSG_HDR.size + 4:
            _length, mtype, _flags, reply_seq, _pid = _NLMSG_HDR.unpack_from(data)
            if mtype == NLMSG_ERROR and reply_seq == seq:
                (err,) = struct.unpack_from("=i", data, _NLMSG_HDR.size)
                if err:
                    raise OSError(-err, os.strerror(-err))
                return others
        others.append(data)


def set_daemon_pid(sock: socket.socket, pid: int, seq: int) -> list[bytes]:
    """Register `sock` as the audit daemon's (pid: ours) or unregister (0)."""
    return set_status(sock, seq, AUDIT_STATUS_PID, pid=pid)


def set_fields(mask: int, **values: int) -> None:
    """AUDIT_SET the fields in `mask`, over a socket of our own."""
    sock = open_audit_socket()
    try:
        sock.settimeout(2.0)
        set_status(sock, 1, mask, **values)
    finally:
        sock.close()


def set_backlog_limit(limit: int) -> None:
    """AUDIT_SET backlog_limit, over a socket of our own."""
    set_fields(AUDIT_STATUS_BACKLOG_LIMIT, backlog_limit=limit)


class BacklogLimit:
    """A larger kernel audit backlog while the monitor is the audit daemon,
    and the host's own value back afterwards, even after a crash.

    The kernel's default backlog (64 records) is small for a daemon that
    makes loggers wait: a thousand workloads that each log a record at
    once would make most of them wait, and a record that cannot wait (an
    atomic context) is dropped while it is full. auditd deployments raise
    it for the same reason (`-b 8192`). The host's value is written to
    `state_path` before it is changed, so that a monitor that was killed
    has its successor put it back; it is restored only if nobody changed it
    since (an administrator's later choice wins).
    """

    def __init__(self, wanted: int, state_path: str | None) -> None:
        self.wanted = wanted
        self.state_path = state_path
        self.original: int | None = None  # the host's value, while we hold ours

    def raise_from(self, current: int) -> bool:
        """Raise the limit if it is lower (0 means unlimited). True if changed."""
        if current == 0 or current >= self.wanted:
            return False
        if self.state_path is not None:
            from enforcer.atomicfile import write_atomic

            os.makedirs(os.path.dirname(self.state_path) or ".", mode=0o755, exist_ok=True)
            state = {"backlog_limit": current, "set_to": self.wanted, "pid": os.getpid()}
            write_atomic(self.state_path, json.dumps(state).encode(), mode=0o600,
                         tag="audit-state")
        try:
            set_backlog_limit(self.wanted)
        except OSError:
            self._forget_state()
            raise
        self.original = current
        return True

    def restore(self) -> None:
        """Put the host's value back, if the limit is still ours."""
        if self.original is None:
            return
        try:
            if read_status().backlog_limit == self.wanted:
                set_backlog_limit(self.original)
        except OSError:
            return  # the state file stays: the next monitor tries again
        self.original = None
        self._forget_state()

    def recover(self) -> str | None:
        """A monitor that died holding the limit left its state: restore the
        host's value (if the limit is still what it set). Returns a note."""
        if self.state_path is None:
            return None
        try:
            with open(self.state_path, "rb") as f:
                state = json.loads(f.read(4096))
            pid, original, set_to = int(state["pid"]), int(state["backlog_limit"]), int(state["set_to"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self._forget_state()
            return f"ignored an unreadable audit state file {self.state_path}"
        if pid_alive(pid) and pid != os.getpid():
            return None  # its monitor still runs
        try:
            if read_status().backlog_limit == set_to:
                set_backlog_limit(original)
        except OSError as e:
            return f"could not restore the audit backlog_limit {original} ({e.strerror})"
        self._forget_state()
        return f"restored the audit backlog_limit {original} that a stopped monitor had raised"

    def _forget_state(self) -> None:
        if self.state_path is not None:
            try:
                os.unlink(self.state_path)
            except FileNotFoundError:
                pass


def socket_drops(sock: socket.socket) -> int:
    """Messages the kernel dropped on this socket since it was opened
    (sk_drops: a full receive buffer, or a congested netlink socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
    return int(struct.unpack_from(f"={len(raw) // 4}I", raw)[SK_MEMINFO_DROPS])


def pid_alive(pid: int, proc_root: str = "/proc") -> bool:
    return os.path.exists(f"{proc_root}/{pid}")
