"""Fallback violation source: audit records the kernel printed to /dev/kmsg.

Only for hosts where the audit multicast socket is unavailable (no
CAP_AUDIT_READ). It is lossy by design: without an audit daemon the kernel
prints audit records through printk, which is rate-limited (a burst of
20,000 records left 10 in the log here), so the monitor says so at start,
exports enforcer_monitor_source{source="kmsg",complete="false"}, and counts
what it can tell it lost in enforcer_monitor_events_lost_total{source="kmsg"}:

  * "kauditd_printk_skb: N callbacks suppressed" -> N records not printed;
  * "audit: audit_lost=N ..." -> the kernel's own lost counter, by increase;
  * a gap in the kmsg sequence numbers, or EPIPE (our reader was overtaken
    by the ring buffer) -> the records skipped.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Callable

_SUPPRESSED = re.compile(rb"kauditd_printk_skb: (\d+) callbacks suppressed")
_AUDIT_LOST = re.compile(rb"audit_lost=(\d+)")
_SECCOMP_PREFIX = b"audit: type=1326 "

WARNING = ("enforcer monitor: WARNING: reading seccomp records from /dev/kmsg; the kernel "
           "rate-limits these, so violations WILL be missed in a burst. Run with "
           "CAP_AUDIT_READ and --source audit for complete counts.")


def parse_kmsg_line(line: bytes) -> tuple[int, bytes] | None:
    """"PRIO,SEQ,TIME,FLAGS[,..];MESSAGE" -> (seq, message); None if not that shape."""
    head, sep, message = line.partition(b";")
    if not sep:
        return None
    fields = head.split(b",")
    if len(fields) < 3:
        return None
    try:
        seq = int(fields[1])
    except ValueError:
        return None
    # Continuation lines (" KEY=VALUE") follow the message; they are not ours.
    return seq, message.split(b"\n", 1)[0]


class KmsgSource:
    name = "kmsg"
    complete = False
    mode = "kmsg"
    registered = False  # never the audit daemon

    def __init__(self, path: str = "/dev/kmsg", from_start: bool = False) -> None:
        self.path = path
        self.from_start = from_start
        self.fd: int | None = None
        self._last_seq: int | None = None
        self._audit_lost: int | None = None
        self.notes: list[str] = []

    def open(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not self.from_start:
            os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
        self.fd = fd

    def fileno(self) -> int:
        assert self.fd is not None
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def account(self, on_lost: Callable[[int], None], on_estimated: Callable[[int], None],
                final: bool = False) -> None:
        """Nothing periodic: every loss is counted as drain() sees it."""

    def detach(self, on_lost: Callable[[int], None]) -> None:
        """Nothing to unregister."""

    def abandon(self) -> bool:
        return False

    def drain(self, handle: Callable[[bytes], None], on_lost: Callable[[int], None],
              on_malformed: Callable[[str], None], limit: int = 4096) -> int:
        assert self.fd is not None
        count = 0
        while count < limit:
            try:
                chunk = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten before we read it
                    on_lost(1)
                    continue
                raise
            if not chunk:
                break
            # /dev/kmsg returns one record per read; a regular file (tests)
            # may hold many lines.
            for line in chunk.splitlines():
                count += 1
                self.feed_line(line, handle, on_lost, on_malformed)
        return count

    def feed_line(self, line: bytes, handle: Callable[[bytes], None],
                  on_lost: Callable[[int], None], on_malformed: Callable[[str], None]) -> None:
        if line.startswith(b" "):
            return  # dictionary continuation line
        parsed = parse_kmsg_line(line)
        if parsed is None:
            on_malformed("kmsg_line")
            return
        seq, message = parsed
        if self._last_seq is not None and seq > self._last_seq + 1:
            on_lost(seq - self._last_seq - 1)
        self._last_seq = seq
        m = _SUPPRESSED.search(message)
        if m:
            on_lost(int(m.group(1)))
            return
        m = _AUDIT_LOST.search(message)
        if m and message.startswith(b"audit:"):
            value = int(m.group(1))
            if self._audit_lost is not None and value > self._audit_lost:
                on_lost(value - self._audit_lost)
            self._audit_lost = value
        start = message.find(_SECCOMP_PREFIX)
        if start >= 0:
            handle(message[start + len(_SECCOMP_PREFIX):])
