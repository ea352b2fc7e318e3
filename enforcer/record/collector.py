"""Collect every seccomp audit record of one audit session, losing none.

A recording is only as good as its completeness: a learned policy missing a
syscall breaks the workload the first time that path runs. So this reader
fails closed: it counts every way a record can go missing and the recording
is refused when any count is non-zero.

* Our socket buffer overflowing: the kernel counts every record it drops
  on our socket (sk_drops, read with SO_MEMINFO; ENOBUFS on recv only says
  that it happened, not how often). The buffer is made large
  (SO_RCVBUFFORCE, --rcvbuf) and read by a thread while the workload runs.
* The kernel dropping records before they reach any reader (its audit
  backlog full for longer than backlog_wait_time, or a rate limit): the
  kernel's own `lost` counter (AUDIT_GET) is read before and after. The
  counter is host-wide, so a rise is held against the recording only when
  it could be the recording's (records_could_be_lost): a drop of another
  process's record that could not wait, while an audit daemon keeps the
  backlog full, is reported as a note.
* Records still in flight when the workload has exited (kauditd delivers
  asynchronously): after the workload ends, a short-lived *sentinel* child
  loads a log-everything filter and makes one syscall. The kernel queues
  audit records in order, so once the sentinel's record has arrived, every
  record of the workload has too.

The records of the recording's own audit rules (SYSCALL, PATH, CWD,
SOCKADDR, EOE: what files and ports the workload used) go to an
EventAssembler (enforcer/record/access.py); they come in the same stream,
so the same loss checks and the same sentinel cover them.

Attribution is by audit session (`ses=`), which the recorder starts fresh
for the workload (enforcer/audit_session.py), so short-lived children count
too. The netlink framing and the record parser are the monitor's
(enforcer/monitor/sources/audit.py): one parser for the format.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from enforcer.monitor.sources import audit_control
from enforcer.monitor.sources.audit_control import NETLINK_AUDIT
from enforcer.record.access import RECORD_TYPES as ACCESS_RECORD_TYPES, EventAssembler
from enforcer.monitor.sources.audit import (
    AUDIT_NLGRP_READLOG,
    AUDIT_SECCOMP,
    SO_RCVBUFFORCE,
    MalformedRecord,
    iter_netlink_messages,
    parse_seccomp_record,
)

# Large enough for a burst of ~300,000 records while the thread is busy.
DEFAULT_RCVBUF = 256 << 20
SECCOMP_RET_LOG = 0x7FFC0000
ACTIONS_LOGGED = "/proc/sys/kernel/seccomp/actions_logged"


class CollectorError(Exception):
    """The audit stream cannot be read, or the recording is incomplete."""


@dataclass
class SessionRecords:
    """What one audit session did, as seen in the audit stream."""

    # (AUDIT_ARCH value, syscall number) -> records
    calls: Counter[tuple[int, int]] = field(default_factory=Counter)
    # Records whose filter action was not `log` (kills of a bad arch, or a
    # blocking rule of the recording filter): (arch, nr, action) -> records
    other_actions: Counter[tuple[int, int, str]] = field(default_factory=Counter)
    pids: set[int] = field(default_factory=set)
    records: int = 0


def check_log_action_enabled(path: str = ACTIONS_LOGGED) -> None:
    """SECCOMP_RET_LOG only writes a record when the sysctl lists `log`."""
    try:
        with open(path) as f:
            actions = f.read().split()
    except OSError as e:
        raise CollectorError(f"cannot read {path}: {e.strerror} (seccomp logging unavailable)") from None
    if "log" not in actions:
        raise CollectorError(
            f"{path} does not list `log` ({' '.join(actions) or 'empty'}); the kernel would not "
            "report the syscalls a recording filter logs. Add it (as root: echo "
            f"'{' '.join(actions + ['log'])}' > {path}) and record again")


def kernel_status() -> audit_control.AuditStatus | None:
    """The kernel's audit status (AUDIT_GET: its `lost` counter and the
    backlog settings); None where it cannot be asked (needs CAP_AUDIT_CONTROL)."""
    try:
        return audit_control.read_status()
    except OSError:
        return None


def records_could_be_lost(before: audit_control.AuditStatus,
                          after: audit_control.AuditStatus) -> bool:
    """Could the records the kernel dropped between the two readings include
    a seccomp record of a recorded process?

    A seccomp record is logged in the process's own context, which may
    sleep (GFP_KERNEL), so the kernel drops it before delivery only through
    a rate limit, or after the process waited out the whole
    backlog_wait_time for room in the backlog (kernel/audit.c,
    audit_log_start); what the kernel drops later, from its retry and hold
    queues, had been sent to the multicast readers already. The waits are
    summed in backlog_wait_time_actual: if it grew by less than one full
    backlog_wait_time, no process waited that long, and the records lost
    were ones that could not wait (logged from atomic contexts), i.e. not
    the recording's.
    """
    if before.rate_limit or after.rate_limit:
        return True
    wait = after.backlog_wait_time
    if not wait or before.backlog_wait_time_actual is None \
            or after.backlog_wait_time_actual is None:
        return True
    waited = audit_control.lost_since(before.backlog_wait_time_actual,
                                      after.backlog_wait_time_actual)
    return waited >= wait


class SessionCollector:
    """Reads the audit multicast group in a thread; keeps the records of
    the sessions it is told about (records of unknown sessions are kept per
    session until then, as counters, so the session may be named late)."""

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None
        self.by_session: dict[int, SessionRecords] = {}
        # Records the kernel dropped on our socket (its sk_drops counter),
        # read when the socket closes.
        self.dropped = 0
        self.received = 0  # audit records of any type and session read
        self.malformed = 0
        self.kernel_before: audit_control.AuditStatus | None = None
        self.notes: list[str] = []  # said with the result (losses that were not ours)
        self._sentinel_pid: int | None = None
        # The events of the recording's audit rules (files, ports, arguments),
        # set by the recorder once the session is known.
        self.assembler: EventAssembler | None = None
        # Called with the sentinel's pid before it logs anything (the
        # recorder names it in the recording's registry record, so that a
        # monitor counts its records with the recording's).
        self.announce_sentinel: Callable[[int], None] | None = None
        self._sentinel_seen = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        check_log_action_enabled()
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 NETLINK_AUDIT)
        except OSError as e:
            raise CollectorError(f"cannot open a NETLINK_AUDIT socket: {e.strerror}") from None
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        except OSError as e:
            sock.close()
            hint = " (recording needs root: CAP_AUDIT_READ)" if e.errno in (errno.EPERM, errno.EACCES) else ""
            raise CollectorError(f"cannot join the audit multicast group: {e.strerror}{hint}") from None
        self.sock = sock
        self.kernel_before = kernel_status()

    def start(self) -> None:
        assert self.sock is not None
        self._thread = threading.Thread(target=self._run, name="enforcer-record-audit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.sock is not None:
            try:
                self.dropped = audit_control.socket_drops(self.sock)
            except OSError as e:  # cannot tell: treat as incomplete
                self._error = self._error or e
            self.sock.close()
            self.sock = None

    # -- reading -------------------------------------------------------------

    def _run(self) -> None:
        assert self.sock is not None
        sock = self.sock
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([sock], [], [], 0.1)
                if ready:
                    self._drain(sock)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self._error = e

    def _drain(self, sock: socket.socket, limit: int = 4096) -> None:
        # Bounded, so that a host flooding the stream cannot keep us from
        # seeing the stop flag.
        for _ in range(limit):
            try:
                data = sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    continue  # the socket stays usable; its drop counter has the count
                raise
            self.feed(data)

    def feed(self, data: bytes) -> None:
        """Account one netlink datagram (public for tests)."""
        try:
            messages = list(iter_netlink_messages(data))
        except MalformedRecord:
            self.malformed += 1
            return
        self.received += len(messages)
        for mtype, payload in messages:
            if mtype != AUDIT_SECCOMP:
                if self.assembler is not None and mtype in ACCESS_RECORD_TYPES:
                    self.assembler.feed(mtype, payload.split(b"\0", 1)[0].rstrip(b"\n"))
                continue
            try:
                rec = parse_seccomp_record(payload.split(b"\0", 1)[0].rstrip(b"\n"))
            except MalformedRecord:
                self.malformed += 1
                continue
            if self._sentinel_pid is not None and rec.pid == self._sentinel_pid:
                self._sentinel_seen.set()
                continue
            if rec.ses is None:
                continue
            sess = self.by_session.get(rec.ses)
            if sess is None:
                sess = self.by_session[rec.ses] = SessionRecords()
            sess.records += 1
            sess.pids.add(rec.pid)
            if rec.code & 0xFFFF0000 == SECCOMP_RET_LOG:
                sess.calls[(rec.arch, rec.syscall)] += 1
            else:
                sess.other_actions[(rec.arch, rec.syscall, rec.action)] += 1

    # -- the end ---------------------------------------------------------------

    def finish(self, timeout: float = 10.0, session: int | None = None) -> None:
        """Wait until every record written so far has been read, then stop.

        Raises CollectorError if anything was lost on the way, or if that
        cannot be shown (sentinel missing). `session`: the recording's, for
        the message.
        """
        if self._thread is None:
            raise CollectorError("collector was not started")
        pid = _spawn_sentinel(self)
        # `timeout` is how long the stream may stay silent: a long recording
        # can leave kauditd a backlog to deliver, and that is progress.
        deadline = time.monotonic() + timeout
        progress = self.total_records()
        while not self._sentinel_seen.wait(0.05):
            if self._error is not None:
                break
            now_total = self.total_records()
            if now_total != progress:
                progress, deadline = now_total, time.monotonic() + timeout
            elif time.monotonic() > deadline:
                break
        self.close()
        if self._error is not None:
            raise CollectorError(f"reading the audit stream failed: {self._error}")
        # Losses first: they also explain a marker that never came.
        self.check_complete(session)
        if pid is None or not self._sentinel_seen.is_set():
            raise CollectorError(
                f"the audit stream delivered nothing for {timeout:.0f} s and no end-of-recording marker; "
                "records of the workload may still be missing, so no policy was written")

    def check_complete(self, session: int | None = None) -> None:
        if self.assembler is not None and self.assembler.overflow:
            raise CollectorError(
                f"{self.assembler.overflow} audited call(s) of the workload could not be "
                "followed (too many unfinished audit events at once): the files and ports "
                "learned could be incomplete, so no policy was written")
        if self.dropped:
            read = (f"{self.session(session).records} of the recording's records were read"
                    if session is not None else f"{self.received} records were read")
            raise CollectorError(
                f"the kernel dropped {self.dropped} audit record(s) on the recording's socket "
                f"(its own count; {read}): a policy learned from the rest could miss syscalls, "
                "so none was written. Record again with a larger --rcvbuf, or with fewer other "
                "processes logging at the same time")
        before, after = self.kernel_before, kernel_status()
        if before is None or after is None:
            return
        lost = audit_control.lost_since(before.lost, after.lost)
        if not lost:
            return
        if records_could_be_lost(before, after):
            raise CollectorError(
                f"the kernel dropped {lost} audit record(s) during the recording (audit backlog "
                "or rate limit; see `auditctl -s`); record again with a larger audit "
                "backlog_limit or no rate_limit")
        self.notes.append(
            f"the kernel dropped {lost} audit record(s) of other processes during the recording "
            "(ones that could not wait for room in a full audit backlog); none of them can "
            "have been the recording's")

    def total_records(self) -> int:
        return sum(s.records for s in list(self.by_session.values()))

    def session(self, ses: int) -> SessionRecords:
        return self.by_session.get(ses, SessionRecords())


def _spawn_sentinel(collector: SessionCollector) -> int | None:
    """Fork a child that logs its own syscalls, then exits at once.

    Its records enter the kernel's audit queue after every record of the
    (already finished) workload, so seeing one proves we have them all.
    The child runs only async-signal-safe work: prctl, seccomp, _exit.
    """
    from enforcer.apply import _sys

    # One instruction: return SECCOMP_RET_LOG for every syscall.
    bpf = struct.pack("=HBBI", 0x06, 0, 0, SECCOMP_RET_LOG)
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(w)
            # Wait until the reader knows our pid, or our record could be
            # read before it is recognised.
            if os.read(r, 1) == b"G":
                _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1, step="record", what="prctl")
                _sys.seccomp_set_filter(bpf, 0)
                os.getppid()
            os._exit(0)
        except BaseException:  # noqa: BLE001 - a forked child never returns
            os._exit(1)
    os.close(r)
    collector._sentinel_pid = pid
    if collector.announce_sentinel is not None:
        collector.announce_sentinel(pid)
    os.write(w, b"G")
    os.close(w)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    return pid
