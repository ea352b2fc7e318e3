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
AUDIT_STATUS_PID = 0x04

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


def set_daemon_pid(sock: socket.socket, pid: int, seq: int) -> list[bytes]:
    """AUDIT_SET the audit daemon's pid (ours, or 0 to unregister) from `sock`.

    Waits for the kernel's answer on `sock`. Anything else that arrives
    first (audit records, when `sock` is already the daemon's socket) is
    returned, in order, for the caller to process. Raises OSError with the
    kernel's errno: EEXIST (another daemon answers), EACCES (only the
    registered daemon may unregister), EPERM (no CAP_AUDIT_CONTROL).
    """
    values = {"mask": AUDIT_STATUS_PID, "pid": pid}
    body = struct.pack(f"={len(_STATUS_FIELDS)}I", *(values.get(f, 0) for f in _STATUS_FIELDS))
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


def socket_drops(sock: socket.socket) -> int:
    """Messages the kernel dropped on this socket since it was opened
    (sk_drops: a full receive buffer, or a congested netlink socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
    return int(struct.unpack_from(f"={len(raw) // 4}I", raw)[SK_MEMINFO_DROPS])


def pid_alive(pid: int, proc_root: str = "/proc") -> bool:
    return os.path.exists(f"{proc_root}/{pid}")
