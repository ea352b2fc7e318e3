"""The monitor against the real kernel: audit multicast, attribution,
kill-process children, SIGTERM, restart. (Exactness under a burst and
loss accounting: test_monitor_loss.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from enforcer import registry
from tests.monitor_helpers import (PERSONALITY_NR, MonitorProcess, V1Cgroup, Violator,  # noqa: F401
                                   count_event_lines, gen_binary, monitors, needs_root, v1_cgroup,
                                   value_for, violators, wait_for, write_workload, x86_64_only)

pytestmark = [pytest.mark.root, needs_root, x86_64_only]


def violations(m: MonitorProcess, **labels: str) -> float:
    return value_for(m.samples("enforcer_seccomp_violations_total"), **labels)


def test_killed_children_are_attributed_through_fork_events(
        tmp_path: Path, gen_binary: str, monitors: list[MonitorProcess],
        violators: list[Violator]) -> None:
    # No cgroup in the record: each child is killed by its first syscall and
    # is gone from /proc; only the fork events can tie it to the parent.
    rt, events = str(tmp_path / "rt"), str(tmp_path / "ev.jsonl")
    m = MonitorProcess(rt, events)
    monitors.append(m)
    v = Violator(gen_binary, "fork", 50, action="kill", syscall="personality", nr=PERSONALITY_NR)
    violators.append(v)
    write_workload(rt, "forker", pid=v.pid, policy="strict")
    assert v.go() == 0
    assert wait_for(lambda: violations(m, action="kill-process") >= 50, timeout=30)
    assert violations(m, workload="forker", syscall="personality", action="kill-process") == 50
    assert violations(m, workload="unmanaged") == 0
    m.terminate()
    pids = {json.loads(line)["pid"] for line in open(events)}
    assert len(pids) == 50 and v.pid not in pids  # 50 distinct dead children


def test_unregistered_process_counts_as_unmanaged_and_audit_mode_as_log(
        tmp_path: Path, gen_binary: str, monitors: list[MonitorProcess],
        violators: list[Violator]) -> None:
    rt, events = str(tmp_path / "rt"), str(tmp_path / "ev.jsonl")
    m = MonitorProcess(rt, events)
    monitors.append(m)
    stray = Violator(gen_binary, "loop", 7)
    violators.append(stray)
    assert stray.go() == 0
    audited = Violator(gen_binary, "loop", 5, action="log")
    violators.append(audited)
    write_workload(rt, "trial", pid=audited.pid, policy="new-policy", mode="audit")
    assert audited.go() == 0
    assert wait_for(lambda: violations(m, workload="trial") >= 5
                    and violations(m, workload="unmanaged", syscall="getppid") >= 7, timeout=30)
    assert violations(m, workload="unmanaged", policy="none", syscall="getppid") == 7
    assert violations(m, workload="trial", action="log", policy="new-policy") == 5
    m.terminate()
    modes = {json.loads(line)["mode"] for line in open(events)
             if json.loads(line)["workload"] == "trial"}
    assert modes == {"audit"}


def test_sigterm_restart_rediscovery_and_expiry(tmp_path: Path, gen_binary: str,
                                                monitors: list[MonitorProcess],
                                                violators: list[Violator]) -> None:
    rt, events = str(tmp_path / "rt"), str(tmp_path / "ev.jsonl")
    v = Violator(gen_binary, "loop", 3)
    violators.append(v)
    write_workload(rt, "early", pid=v.pid, policy="p1")
    wdir = registry.workloads_dir(rt)
    Path(wdir, "broken.json").write_text("{")
    m = MonitorProcess(rt, events, "--grace", "1")
    monitors.append(m)
    assert value_for(m.samples("enforcer_workloads"), policy="p1") == 1  # found at start
    assert value_for(m.samples("enforcer_monitor_malformed_total"), kind="registry_record") == 1
    assert v.go() == 0
    assert wait_for(lambda: violations(m, workload="early") == 3, timeout=30)
    assert m.terminate() == 0  # within its 10 s, or it would have been killed (not 0)
    assert count_event_lines(events, workload="early") == 3  # flushed on SIGTERM
    assert "Traceback" not in m.stderr()
    # A restarted monitor finds the record again, but its process is gone:
    # stale, not running (issue 19: dead workloads were counted). After the
    # record goes and the grace period passes, its series disappear.
    m2 = MonitorProcess(rt, events, "--grace", "1")
    monitors.append(m2)
    assert wait_for(lambda: value_for(m2.samples("enforcer_registry_stale_records"),
                                      policy="p1") == 1, timeout=30)
    assert value_for(m2.samples("enforcer_workloads"), policy="p1") == 0
    registry.remove_record("early", rt)
    assert wait_for(lambda: value_for(m2.samples("enforcer_registry_stale_records"),
                                      policy="p1") == 0, timeout=30)
    assert violations(m2, workload="early") == 0  # counted by the first monitor only
    # grace 1 s, poll 0.25 s: the ended workload's labels leave /metrics.
    assert wait_for(lambda: 'workload="early"' not in m2.metrics_text(), timeout=30)


def test_overflow_label_past_the_cap(tmp_path: Path, gen_binary: str,
                                     monitors: list[MonitorProcess],
                                     violators: list[Violator]) -> None:
    rt, events = str(tmp_path / "rt"), str(tmp_path / "ev.jsonl")
    vs = [Violator(gen_binary, "loop", 2) for _ in range(3)]
    violators.extend(vs)
    for i, v in enumerate(vs):
        write_workload(rt, f"w{i}", pid=v.pid)
    m = MonitorProcess(rt, events, "--max-workloads", "2")
    monitors.append(m)
    for v in vs:
        assert v.go() == 0
    assert wait_for(lambda: violations(m, policy="test") == 6, timeout=30)
    samples = m.samples("enforcer_seccomp_violations_total")
    labels = {dict(k)["workload"] for k in samples}
    assert "_overflow" in labels and len(labels) == 3
    assert value_for(samples, workload="_overflow") == 2
