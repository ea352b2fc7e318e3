"""Landlock audit records (types 1423 and 1424, kernel 6.15+) as this
machine's kernel writes them: parsed, put together with the event's
SYSCALL record, attributed to a workload, counted and logged.

The record texts below were read from the audit multicast group of a
6.18 kernel while a sandboxed process was denied (see the module docstring
of enforcer/monitor/landlock.py); only the serials and pids are made up.
"""

from __future__ import annotations

import json
from pathlib import Path

from enforcer.monitor.daemon import Monitor, MonitorConfig
from enforcer.monitor.sources.audit_control import AuditStatus
from enforcer.monitor.landlock import (AUDIT_EOE, AUDIT_LANDLOCK_ACCESS, AUDIT_LANDLOCK_DOMAIN,
                                       AUDIT_SYSCALL, LandlockDenial, LandlockRecords,
                                       audit_notice, parse_access, parse_domain)
from tests.monitor_helpers import write_workload

ACCESS_FS = (b'audit(1796690501.134:21): domain=1238cddf4 blockers=fs.make_reg '
             b'path="/tmp/llx" dev="vda" ino=2204721')
ACCESS_RENAME = (b'audit(1796690793.730:22): domain=1238ce06f blockers=fs.remove_file,fs.refer '
                 b'path="/etc" dev="vda" ino=19')
ACCESS_BIND = b"audit(1796688523.998:23): domain=1238cde0e blockers=net.bind_tcp saddr=::1 src=8081"
ACCESS_CONNECT = (b"audit(1796688523.998:24): domain=1238cde0e blockers=net.connect_tcp "
                  b"daddr=127.0.0.1 dest=80")
ACCESS_SIGNAL = (b'audit(1796690820.674:25): domain=1238ce081 blockers=scope.signal opid=1 '
                 b'ocomm="process_api"')
ACCESS_ABSTRACT = (b"audit(1796690820.642:26): domain=1238ce07e blockers=scope.abstract_unix_socket "
                   b"path=00656E666F726365722D6C6C2D65787032")
ACCESS_MOUNT = (b'audit(1796690820.690:27): domain=1238ce081 blockers=fs.change_topology '
                b'path="/mnt" dev="vda" ino=1200')
DOMAIN = (b'audit(1796690501.130:21): domain=1238cddf4 status=allocated mode=enforcing pid=2177 '
          b'uid=0 exe="/usr/bin/dash" comm="sh"')
DOMAIN_GONE = b"audit(1796690501.182:30): domain=1238cddf4 status=deallocated denials=6"
SYSCALL = (b'audit(1796690501.134:21): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c '
           b'a1=565309601cc8 a2=241 a3=1b6 items=0 ppid=2126 pid=4242 auid=4294967295 uid=0 '
           b'gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 '
           b'comm="sh" exe="/usr/bin/dash" key=(null)')
EOE = b"audit(1796690501.134:21): "


def test_access_records_of_every_kind() -> None:
    fs = parse_access(ACCESS_FS)
    assert (fs.serial, fs.domain, fs.blockers, fs.path) == (21, "1238cddf4", ("fs.make_reg",),
                                                            "/tmp/llx")
    assert parse_access(ACCESS_RENAME).blockers == ("fs.remove_file", "fs.refer")
    bind = parse_access(ACCESS_BIND)
    assert (bind.blockers, bind.port, bind.address) == (("net.bind_tcp",), 8081, "::1")
    connect = parse_access(ACCESS_CONNECT)
    assert (connect.port, connect.address) == (80, "127.0.0.1")
    signal = parse_access(ACCESS_SIGNAL)
    assert (signal.blockers, signal.target_pid, signal.target_comm) == \
        (("scope.signal",), 1, "process_api")
    assert parse_access(ACCESS_ABSTRACT).path == "@enforcer-ll-exp2"
    assert parse_access(ACCESS_MOUNT).blockers == ("fs.change_topology",)
    assert parse_domain(DOMAIN) == ("1238cddf4", "allocated", 2177)
    assert parse_domain(DOMAIN_GONE) == ("1238cddf4", "deallocated", None)
    odd = parse_access(b"audit(1.0:1): domain=1 blockers=fs.x,EVIL{label}")
    assert odd.blockers == ("fs.x", "unknown")


def collect() -> tuple[LandlockRecords, list[LandlockDenial], list[str]]:
    out: list[LandlockDenial] = []
    bad: list[str] = []
    return LandlockRecords(out.append, bad.append, clock=lambda: 100.0), out, bad


def test_an_event_is_put_together_from_its_records() -> None:
    records, out, bad = collect()
    records.handle(AUDIT_LANDLOCK_ACCESS, ACCESS_FS)
    records.handle(AUDIT_LANDLOCK_DOMAIN, DOMAIN)
    assert out == []  # waits for the SYSCALL record of its event
    records.handle(AUDIT_SYSCALL, SYSCALL.replace(b":21)", b":99)"))  # another event's
    assert out == []
    records.handle(AUDIT_SYSCALL, SYSCALL)
    records.handle(AUDIT_EOE, EOE)
    assert len(out) == 1 and bad == []
    d = out[0]
    assert (d.pid, d.uid, d.ses, d.comm, d.exe, d.arch, d.syscall, d.domain_pid) == \
        (4242, 0, None, "sh", "/usr/bin/dash", 0xC000003E, 257, 2177)


def test_without_a_syscall_record_the_domain_attributes() -> None:
    records, out, _ = collect()
    records.handle(AUDIT_LANDLOCK_DOMAIN, DOMAIN)  # an earlier event made it known
    records.handle(AUDIT_LANDLOCK_ACCESS, ACCESS_FS.replace(b":21)", b":31)"))
    records.handle(AUDIT_EOE, EOE.replace(b":21)", b":31)"))
    records.handle(AUDIT_LANDLOCK_ACCESS, ACCESS_FS.replace(b":21)", b":32)"))
    assert [d.serial for d in out] == [31]
    records.flush(older_than=0.0)  # the second one's event never ended
    assert [(d.serial, d.pid, d.domain_pid) for d in out] == [(31, None, 2177), (32, None, 2177)]
    records.handle(AUDIT_LANDLOCK_DOMAIN, DOMAIN_GONE)
    assert records.domain_pids == {}


def test_malformed_records_are_counted_never_fatal() -> None:
    records, out, bad = collect()
    for payload in (b"audit(garbage", b"audit(1.0:2): domain=1", b"audit(1.0:3): blockers=fs.x",
                    b"audit(1.0:4): domain=1 blockers=net.bind_tcp src=http"):
        records.handle(AUDIT_LANDLOCK_ACCESS, payload)
    records.handle(AUDIT_LANDLOCK_DOMAIN, b"audit(1.0:5): domain=1 status=allocated pid=x")
    assert out == [] and bad == ["landlock_record"] * 5


def test_monitor_counts_and_logs_a_denial_for_its_workload(tmp_path: Path) -> None:
    write_workload(str(tmp_path / "rt"), "w1", pid=4242, policy="web", container_id="c0ffee")
    config = MonitorConfig(runtime_dir=str(tmp_path / "rt"), proc_root=str(tmp_path / "proc"),
                           events_path=str(tmp_path / "ev.jsonl"), fork_tracking=False)
    monitor = Monitor(config, source=None)
    monitor.start()
    try:
        for mtype, payload in ((AUDIT_LANDLOCK_ACCESS, ACCESS_RENAME.replace(b":22)", b":21)")),
                               (AUDIT_LANDLOCK_ACCESS, ACCESS_FS),
                               (AUDIT_LANDLOCK_DOMAIN, DOMAIN), (AUDIT_SYSCALL, SYSCALL),
                               (AUDIT_EOE, EOE)):
            monitor.landlock.handle(mtype, payload)
        monitor.flush_batch()
        text = monitor.metrics.render_text().decode()
    finally:
        monitor.close()
    assert monitor.metrics.landlock_denials == {("w1", "web", "fs.remove_file"): 1,
                                                ("w1", "web", "fs.refer"): 1,
                                                ("w1", "web", "fs.make_reg"): 1}
    assert ('enforcer_landlock_denials_total{workload="w1",policy="web",access="fs.make_reg"} 1.0'
            in text)
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert events[1] == {
        "time": "2026-12-08T00:41:41.134Z", "workload": "w1", "policy": "web",
        "mode": "enforce", "container_id": "c0ffee", "pid": 4242, "uid": 0, "comm": "sh",
        "exe": "/usr/bin/dash", "syscall": "openat",
        "landlock": {"access": ["fs.make_reg"], "domain": "1238cddf4", "path": "/tmp/llx",
                     "domain_pid": 2177},
        "serial": 21}
    monitor.metrics.forget_workload("w1")
    assert monitor.metrics.landlock_denials == {}


def test_the_notice_says_what_keeps_denials_out_of_the_stream() -> None:
    assert audit_notice(None) is None

    def status(enabled: int, backlog_limit: int) -> AuditStatus:
        return AuditStatus(enabled=enabled, failure=1, pid=0, rate_limit=0,
                           backlog_limit=backlog_limit, lost=0, backlog=0,
                           backlog_wait_time=None, backlog_wait_time_actual=None)

    assert "audit is disabled" in (audit_notice(status(0, 64)) or "")
    assert "backlog limit is 64" in (audit_notice(status(1, 64)) or "")
    assert audit_notice(status(1, 8192)) is None
