"""Loss accounting without a kernel: the serial-gap estimate, the audit
status structure, the socket drop counter, the kernel-layout parser against
the general one, and AuditSource's reading of datagrams (a socketpair in
place of the netlink socket)."""

from __future__ import annotations

import dataclasses
import socket
import struct
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.monitor.sources import audit_control
from enforcer.monitor.sources.audit import (AuditSource, SerialGaps, parse_seccomp_record,
                                            parse_seccomp_record_generally)
from enforcer.monitor.sources.audit_control import AUDIT_REPLACE, lost_since, parse_status


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_serial_gaps_counts_what_never_arrives_and_forgives_late_records() -> None:
    clock = Clock()
    gaps = SerialGaps(settle_after=2.0, clock=clock)
    for serial in (10, 11, 12, 15, 14, 16, 16, 20):  # 13 never comes, 14 is late, 16 twice
        gaps.see(serial)
    assert gaps.settle() == 0  # too early to tell
    clock.now += 2.5
    assert gaps.settle() == 4  # 13, 17, 18, 19
    assert gaps.settle() == 0  # counted once
    gaps.see(13)  # later than any kernel would deliver it: already counted, not un-counted
    assert gaps.settle() == 0


def test_serial_gaps_bounds_what_it_tracks() -> None:
    clock = Clock()
    gaps = SerialGaps(window=100, clock=clock)
    gaps.see(1)
    gaps.see(1_000_002)  # a million missing: 100 tracked, the rest counted at once
    assert len(gaps.missing) == 100
    assert gaps.settle() == 1_000_000 - 100
    assert gaps.settle(final=True) == 100


def test_serial_gaps_survive_the_counter_wrapping() -> None:
    gaps = SerialGaps()
    gaps.see(2**32 - 2)
    gaps.see(2**32 - 1)
    gaps.see(0)
    gaps.see(1)
    assert gaps.settle(final=True) == 0


def test_audit_status_fields_and_short_answers() -> None:
    values = [0, 1, 1, 4242, 0, 8192, 17, 3, 0x7F, 15000, 48]
    status = parse_status(struct.pack("=11I", *values))
    assert (status.enabled, status.failure, status.pid, status.backlog_limit, status.lost,
            status.backlog_wait_time, status.backlog_wait_time_actual) == (1, 1, 4242, 8192, 17,
                                                                           15000, 48)
    old = parse_status(struct.pack("=8I", *values[:8]))  # an older kernel
    assert old.lost == 17 and old.backlog_wait_time is None
    with pytest.raises(ValueError):
        parse_status(b"\0" * 12)
    assert lost_since(2**32 - 2, 3) == 5


def test_socket_drops_reads_the_kernel_counter() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        assert audit_control.socket_drops(a) == 0
    finally:
        a.close()
        b.close()


SAMPLES = [
    b'audit(1700000000.123:456): auid=1000 uid=0 gid=0 ses=3 pid=1234 comm="x" exe="/usr/bin/x" '
    b"sig=0 arch=c000003e syscall=101 compat=0 ip=0x7f0012345678 code=0x50000",
    b'audit(1.5:7): auid=4294967295 uid=0 gid=0 ses=4294967295 subj=unconfined pid=1 comm="a" '
    b"exe=(null) sig=31 arch=40000003 syscall=11 compat=1 ip=0x1 code=0x80000000",
    b'audit(1.5:7): auid=0 uid=0 gid=0 ses=1 subj=/usr/bin/foo (enforce) pid=2 comm=6D7920617070 '
    b'exe="/x" sig=0 arch=c000003e syscall=1 compat=0 ip=0x2 code=0x7ffc0000',
    b"audit(1.5:7): auid=0 uid=0 gid=0 ses=1 subj_apparmor=unconfined subj_selinux=u:r:t:s0 "
    b'pid=2 comm="c" exe="/x" sig=0 arch=c000003e syscall=1 compat=0 ip=0x2 code=0x7ffc0000',
    # Not the kernel's layout: the general parser reads it all the same.
    b'audit(1.5:8): pid=9 arch=c000003e syscall=2 code=0x50000 comm="z"',
]


@pytest.mark.parametrize("text", SAMPLES)
def test_the_kernel_layout_reads_as_the_general_parser_does(text: bytes) -> None:
    assert dataclasses.asdict(parse_seccomp_record(text)) == \
        dataclasses.asdict(parse_seccomp_record_generally(text))


_token = st.binary(min_size=1, max_size=10).filter(lambda b: b" " not in b and b"\n" not in b)


@settings(max_examples=300, deadline=None)
@given(comm=_token, exe=_token, numbers=st.lists(st.integers(0, 2**32), min_size=6, max_size=6))
def test_fuzz_kernel_layout_agrees_with_the_general_parser(comm: bytes, exe: bytes,
                                                           numbers: list[int]) -> None:
    pid, ses, uid, sig, nr, code = numbers
    text = (b"audit(1.25:%d): auid=1 uid=%d gid=0 ses=%d pid=%d comm=%s exe=%s sig=%d "
            b"arch=c000003e syscall=%d compat=0 ip=0x10 code=0x%x") % (
        nr, uid, ses, pid, comm, exe, sig, nr, code)
    results = []
    for parse in (parse_seccomp_record, parse_seccomp_record_generally):
        try:
            results.append(dataclasses.asdict(parse(text)))
        except ValueError as e:  # MalformedRecord: the same for both
            results.append(type(e).__name__)
    assert results[0] == results[1]


# -- AuditSource reading datagrams -------------------------------------------------------


def datagram(serial: int, mtype: int = 1326, pid: int = 7) -> bytes:
    body = (b'audit(1.0:%d): auid=0 uid=0 gid=0 ses=1 pid=%d comm="c" exe="/c" sig=0 '
            b"arch=c000003e syscall=1 compat=0 ip=0x1 code=0x50000") % (serial, pid)
    return struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body


@pytest.fixture
def fed() -> Iterator[tuple[AuditSource, socket.socket]]:
    """A source reading the other end of a socketpair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    source = AuditSource()
    source.sock = ours
    yield source, theirs
    theirs.close()
    source.close()


def test_source_hands_on_seccomp_records_and_tracks_every_serial(
        fed: tuple[AuditSource, socket.socket]) -> None:
    source, kernel = fed
    for serial, mtype in ((1, 1326), (2, 1300), (3, 1326), (5, 1326)):
        kernel.send(datagram(serial, mtype))
    got: list[bytes] = []
    lost: list[int] = []
    assert source.drain(got.append, lost.append, lambda kind: None) == 4
    assert [g[:10] for g in got] == [b"audit(1.0:"] * 3  # type 1300 is not a seccomp record
    assert lost == []  # nothing dropped on the socket
    estimated: list[int] = []
    source.account(lost.append, estimated.append, final=True)
    assert estimated == [1]  # serial 4


def test_source_notices_a_request_to_replace_the_daemon(
        fed: tuple[AuditSource, socket.socket]) -> None:
    source, kernel = fed
    source.registered = True  # as if registered (no kernel to ask)
    kernel.send(struct.pack("=IHHII", 20, AUDIT_REPLACE, 0, 0, 0) + struct.pack("=I", 4321))
    source.yield_to_another_daemon = lambda on_lost, why: setattr(  # type: ignore[method-assign]
        source, "yielded", why)
    source.drain(lambda p: None, lambda n: None, lambda k: None)
    assert "4321" in getattr(source, "yielded")
    source.registered = False


# -- enforcer record: whose records can the kernel's drops be? ----------------------


def status(lost: int, waited: int | None, rate_limit: int = 0, wait: int | None = 15000):
    from enforcer.monitor.sources.audit_control import AuditStatus

    return AuditStatus(enabled=0, failure=1, pid=0, rate_limit=rate_limit, backlog_limit=8192,
                       lost=lost, backlog=0, backlog_wait_time=wait,
                       backlog_wait_time_actual=waited)


def test_drops_that_cannot_be_the_recordings_are_not_held_against_it() -> None:
    from enforcer.record.collector import records_could_be_lost

    # Nobody waited a whole backlog_wait_time, no rate limit: the records
    # dropped could not wait, and a seccomp record always can.
    assert not records_could_be_lost(status(5, 100), status(9, 100 + 14999))
    # Someone may have waited it out: a seccomp record may be among them.
    assert records_could_be_lost(status(5, 100), status(9, 100 + 15000))
    # A rate limit drops any record; no wait at all drops at once.
    assert records_could_be_lost(status(5, 100, rate_limit=50), status(9, 100, rate_limit=50))
    assert records_could_be_lost(status(5, 100, wait=0), status(9, 100, wait=0))
    # An older kernel that does not say how long processes waited.
    assert records_could_be_lost(status(5, None), status(9, None))
