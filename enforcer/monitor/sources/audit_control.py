"""The kernel's audit status and the audit daemon registration (NETLINK_AUDIT
AUDIT_GET / AUDIT_SET), audit rules (AUDIT_ADD_RULE / AUDIT_DEL_RULE /
AUDIT_LIST_RULES, what `auditctl -a/-d/-l` sends), and the drop counter of
a netlink socket.

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

Needs CAP_AUDIT_CONTROL for AUDIT_GET, AUDIT_SET and the rule messages; the
drop counter needs nothing. Stdlib only.
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
AUDIT_LIST_RULES = 1013
AUDIT_ADD_RULE = 1011
AUDIT_DEL_RULE = 1012
NLMSG_ERROR = 2
NLMSG_DONE = 3
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
    return request_with_ack(sock, AUDIT_SET, body, seq)


def request_with_ack(sock: socket.socket, mtype: int, body: bytes, seq: int) -> list[bytes]:
    """Send one request asking for an acknowledgement and wait for it;
    returns what arrived before it, raises OSError with the kernel's errno."""
    send_request(sock, mtype, body, seq=seq, flags=NLM_F_REQUEST | NLM_F_ACK)
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


# -- audit rules ---------------------------------------------------------------

# struct audit_rule_data (linux/audit.h): flags, action, field_count,
# mask[AUDIT_BITMASK_SIZE], fields/values/fieldflags[AUDIT_MAX_FIELDS],
# buflen, then the strings of string-valued fields.
AUDIT_BITMASK_SIZE = 64
AUDIT_MAX_FIELDS = 64
_RULE_HEAD = struct.Struct(f"=3I{AUDIT_BITMASK_SIZE}I{3 * AUDIT_MAX_FIELDS}II")
AUDIT_FILTER_EXIT = 0x04  # the syscall-exit list (`auditctl -a always,exit`)
AUDIT_ALWAYS = 2
AUDIT_EQUAL = 0x40000000
AUDIT_ARCH = 11
AUDIT_SESSIONID = 25
AUDIT_FILTERKEY = 210
_STRING_FIELDS = frozenset({AUDIT_FILTERKEY})


@dataclass(frozen=True)
class AuditRule:
    """One rule of the kernel's audit filter lists, as AUDIT_ADD_RULE takes
    it: a syscall set and `field == value` conditions (the ones used here;
    other operators round-trip through `ops`)."""

    syscalls: frozenset[int]  # empty: every syscall
    fields: tuple[tuple[int, int | str], ...]  # (AUDIT_* field, number or string)
    flags: int = AUDIT_FILTER_EXIT
    action: int = AUDIT_ALWAYS
    ops: tuple[int, ...] = ()  # per field; AUDIT_EQUAL when empty

    def key(self) -> str | None:
        return next((v for f, v in self.fields if f == AUDIT_FILTERKEY and isinstance(v, str)),
                    None)

    def pack(self) -> bytes:
        if len(self.fields) > AUDIT_MAX_FIELDS:
            raise ValueError(f"an audit rule has at most {AUDIT_MAX_FIELDS} fields")
        mask = [0] * AUDIT_BITMASK_SIZE
        if not self.syscalls:
            mask = [0xFFFFFFFF] * AUDIT_BITMASK_SIZE
        for nr in self.syscalls:
            if not 0 <= nr < 32 * AUDIT_BITMASK_SIZE:
                raise ValueError(f"syscall number {nr} does not fit an audit rule")
            mask[nr // 32] |= 1 << (nr % 32)
        fields, values, ops = [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS
        buf = b""
        for i, (field, value) in enumerate(self.fields):
            fields[i] = field
            ops[i] = self.ops[i] if self.ops else AUDIT_EQUAL
            if isinstance(value, str):
                data = value.encode()
                values[i] = len(data)
                buf += data
            else:
                values[i] = value & 0xFFFFFFFF
        return _RULE_HEAD.pack(self.flags, self.action, len(self.fields), *mask, *fields,
                               *values, *ops, len(buf)) + buf

    @classmethod
    def unpack(cls, data: bytes) -> "AuditRule":
        """The kernel's description of a rule (AUDIT_LIST_RULES); ValueError
        if it is cut short."""
        if len(data) < _RULE_HEAD.size:
            raise ValueError(f"audit rule of {len(data)} bytes is too short")
        head = _RULE_HEAD.unpack_from(data)
        flags, action, count = head[0], head[1], min(head[2], AUDIT_MAX_FIELDS)
        mask = head[3:3 + AUDIT_BITMASK_SIZE]
        rest = head[3 + AUDIT_BITMASK_SIZE:]
        fields_, values = rest[:AUDIT_MAX_FIELDS], rest[AUDIT_MAX_FIELDS:2 * AUDIT_MAX_FIELDS]
        ops = rest[2 * AUDIT_MAX_FIELDS:3 * AUDIT_MAX_FIELDS]
        buf = data[_RULE_HEAD.size:]
        offset = 0
        out: list[tuple[int, int | str]] = []
        for i in range(count):
            if fields_[i] in _STRING_FIELDS:
                raw = buf[offset:offset + values[i]]
                if len(raw) != values[i]:
                    raise ValueError("audit rule string field runs past its buffer")
                offset += values[i]
                out.append((fields_[i], raw.decode("utf-8", "replace")))
            else:
                out.append((fields_[i], values[i]))
        everything = all(m == 0xFFFFFFFF for m in mask)
        syscalls = frozenset() if everything else frozenset(
            32 * w + b for w, m in enumerate(mask) for b in range(32) if m >> b & 1)
        return cls(syscalls=syscalls, fields=tuple(out), flags=flags, action=action,
                   ops=tuple(ops[:count]))


def add_rule(rule: AuditRule) -> None:
    """AUDIT_ADD_RULE (EEXIST: the same rule is there already)."""
    _rule_request(AUDIT_ADD_RULE, rule)


def delete_rule(rule: AuditRule) -> None:
    """AUDIT_DEL_RULE: the kernel removes the rule equal to this one
    (ENOENT: there is none)."""
    _rule_request(AUDIT_DEL_RULE, rule)


def _rule_request(mtype: int, rule: AuditRule) -> None:
    sock = open_audit_socket()
    try:
        sock.settimeout(2.0)
        request_with_ack(sock, mtype, rule.pack(), seq=1)
    finally:
        sock.close()


def list_rules(timeout: float = 2.0) -> list[AuditRule]:
    """Every rule of the kernel's filter lists (AUDIT_LIST_RULES)."""
    sock = open_audit_socket()
    rules: list[AuditRule] = []
    try:
        sock.settimeout(timeout)
        send_request(sock, AUDIT_LIST_RULES, seq=1, flags=NLM_F_REQUEST | NLM_F_ACK)
        while True:
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                raise OSError(errno.ETIMEDOUT, "no end to AUDIT_LIST_RULES") from None
            offset = 0
            while offset + _NLMSG_HDR.size <= len(data):
                length, mtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
                if length < _NLMSG_HDR.size:
                    break
                payload = data[offset + _NLMSG_HDR.size:offset + length]
                if mtype == NLMSG_DONE:
                    return rules
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                elif mtype == AUDIT_LIST_RULES:
                    try:
                        rules.append(AuditRule.unpack(payload))
                    except ValueError as e:
                        raise OSError(errno.EPROTO, str(e)) from None
                offset += (length + 3) & ~3
    finally:
        sock.close()


def socket_drops(sock: socket.socket) -> int:
    """Messages the kernel dropped on this socket since it was opened
    (sk_drops: a full receive buffer, or a congested netlink socket)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
    return int(struct.unpack_from(f"={len(raw) // 4}I", raw)[SK_MEMINFO_DROPS])


def pid_alive(pid: int, proc_root: str = "/proc") -> bool:
    return os.path.exists(f"{proc_root}/{pid}")
