"""Monitor.handle_record end to end without a socket: parse, attribute,
count, and the exact JSON event line."""

from __future__ import annotations

import json
from pathlib import Path

from enforcer.monitor.daemon import Monitor, MonitorConfig
from tests.monitor_helpers import fake_process, write_workload


def record(pid: int, nr: int = 101, code: str = "0x50000", comm: bytes = b'"app"',
           serial: int = 9) -> bytes:
    return (b"audit(1700000000.250:%d): auid=4294967295 uid=1000 gid=0 ses=4294967295 "
            b"subj=unconfined pid=%d comm=%s exe=\"/usr/bin/app\" sig=0 arch=c000003e "
            b"syscall=%d compat=0 ip=0x1 code=%s") % (serial, pid, comm, nr, code.encode())


def make_monitor(tmp_path: Path) -> Monitor:
    config = MonitorConfig(runtime_dir=str(tmp_path / "rt"), proc_root=str(tmp_path / "proc"),
                           events_path=str(tmp_path / "ev.jsonl"), fork_tracking=False)
    monitor = Monitor(config, source=None)
    monitor.start()
    return monitor


def test_records_are_counted_and_logged(tmp_path: Path) -> None:
    write_workload(str(tmp_path / "rt"), "w1", pid=4242, policy="web", container_id="c0ffee")
    monitor = make_monitor(tmp_path)
    before = monitor.metrics.render_text()
    try:
        weird = '"my app" é\\'.encode()
        monitor.handle_record(record(4242))
        monitor.handle_record(record(4242, nr=101, code="0x80000000", serial=10,
                                     comm=weird.hex().encode()))
        monitor.handle_record(record(5555, nr=99999, serial=11))
        monitor.handle_record(b"audit(garbage")
        monitor.flush_batch()
    finally:
        monitor.close()
    m = monitor.metrics
    assert m.violations == {("w1", "web", "ptrace", "errno"): 1,
                            ("w1", "web", "ptrace", "kill-process"): 1,
                            ("unmanaged", "none", "unknown", "errno"): 1}
    assert m.events["audit"] == 3
    # The cached /metrics body follows the batch merge.
    text = m.render_text().decode()
    assert text != before.decode() and 'workload="w1"' in text
    assert m.malformed == {"audit_record": 1}
    lines = (tmp_path / "ev.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert events[0] == {
        "time": "2023-11-14T22:13:20.250Z", "workload": "w1", "policy": "web", "mode": "enforce",
        "container_id": "c0ffee", "pid": 4242, "uid": 1000, "comm": "app", "exe": "/usr/bin/app",
        "syscall": "ptrace", "syscall_nr": 101, "arch": "x86_64", "action": "errno", "serial": 9}
    assert events[1]["comm"] == '"my app" é\\' and events[1]["action"] == "kill-process"
    assert events[2]["workload"] == "unmanaged" and events[2]["syscall"] is None
    assert events[2]["syscall_nr"] == 99999 and events[2]["mode"] is None


def test_a_changed_record_changes_the_logged_policy(tmp_path: Path) -> None:
    rt = str(tmp_path / "rt")
    write_workload(rt, "w1", pid=4242, policy="old")
    monitor = make_monitor(tmp_path)
    try:
        monitor.handle_record(record(4242))
        write_workload(rt, "w1", pid=4242, policy="new", mode="audit")
        monitor.index.refresh(force=True)
        monitor.handle_record(record(4242, serial=10))
    finally:
        monitor.close()
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [(e["policy"], e["mode"]) for e in events] == [("old", "enforce"), ("new", "audit")]


def test_fuzz_every_input_is_either_counted_as_an_event_or_as_malformed(tmp_path: Path) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    monitor = make_monitor(tmp_path)
    good = record(4242)
    mutations = st.one_of(
        st.binary(max_size=300),
        # A real record with a slice cut out, or random bytes spliced in.
        st.tuples(st.integers(0, len(good)), st.integers(0, 40)).map(
            lambda t: good[:t[0]] + good[t[0] + t[1]:]),
        st.tuples(st.integers(0, len(good)), st.binary(min_size=1, max_size=12)).map(
            lambda t: good[:t[0]] + t[1] + good[t[0]:]))
    seen = {"n": 0}

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutations)
    def feed(data: bytes) -> None:
        monitor.handle_record(data)
        seen["n"] += 1

    try:
        feed()
        monitor.flush_batch()
        m = monitor.metrics
        assert m.events["audit"] + m.malformed.get("audit_record", 0) == seen["n"]
        assert m.malformed.get("audit_record", 0) > 0 and m.events["audit"] > 0
        assert sum(m.violations.values()) == m.events["audit"]
    finally:
        monitor.close()
    lines = (tmp_path / "ev.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == monitor.metrics.events["audit"]
    for line in lines:
        json.loads(line)  # every logged line is valid JSON, whatever came in


def session_record(pid: int, ses: int, serial: int, nr: int = 0, code: str = "0x7ffc0000") -> bytes:
    return (b'audit(1700000000.250:%d): auid=0 uid=0 gid=0 ses=%d pid=%d comm="app" '
            b'exe="/usr/bin/app" sig=0 arch=c000003e syscall=%d compat=0 ip=0x1 code=%s') % (
        serial, ses, pid, nr, code.encode())


def test_a_recording_is_counted_apart_and_never_logged(tmp_path: Path) -> None:
    """`enforcer record` registers its session; the `enforcer run` it starts
    registers the same session. Every record of that session is the
    recording's: counted in `recorded`, never a violation or an event line,
    whether it arrives before or after the monitor's next registry poll."""
    rt = str(tmp_path / "rt")
    write_workload(rt, "run-1-aa", pid=300, policy="web.record", audit_session=77)
    write_workload(rt, "record-9-bb", pid=299, policy="web", audit_session=77, kind="recording",
                   mode="record")
    write_workload(rt, "w1", pid=4242, policy="web", audit_session=78)
    for pid in (299, 300, 4242):
        fake_process(str(tmp_path / "proc"), pid)
    monitor = make_monitor(tmp_path)
    try:
        monitor.handle_record(session_record(300, 77, 1))  # before any poll: the slow path
        monitor.poll()  # learns the recording's session: the cheap path
        for serial in range(2, 6):
            monitor.handle_record(session_record(301, 77, serial))
        monitor.handle_record(session_record(4242, 78, 6, nr=101, code="0x50000"))
        monitor.flush_batch()
    finally:
        monitor.close()
    m = monitor.metrics
    assert m.recorded == {("record-9-bb", "web"): 5}
    assert m.violations == {("w1", "web", "ptrace", "errno"): 1}
    assert m.events["audit"] == 6
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [e["workload"] for e in events] == ["w1"]
    assert m.workloads_by_policy == {"web.record": 1, "web": 1}  # the recording is no workload
    text = m.render_text().decode()
    assert 'enforcer_recorded_syscalls_total{workload="record-9-bb",policy="web"} 5.0' in text


def test_recordings_can_be_ignored(tmp_path: Path) -> None:
    rt = str(tmp_path / "rt")
    write_workload(rt, "record-9-bb", pid=299, policy="web", audit_session=77, kind="recording")
    config = MonitorConfig(runtime_dir=rt, proc_root=str(tmp_path / "proc"),
                           events_path=str(tmp_path / "ev.jsonl"), fork_tracking=False,
                           recordings="ignore")
    monitor = Monitor(config, source=None)
    monitor.start()
    try:
        monitor.handle_record(session_record(300, 77, 1))
        monitor.flush_batch()
    finally:
        monitor.close()
    assert monitor.metrics.recorded == {} and monitor.metrics.violations == {}
    assert (tmp_path / "ev.jsonl").read_text() == ""
