"""Real limit hits in real cgroup v1 hierarchies appear as limit events: an
OOM kill and a pids-limit refusal. (How soon after the hit is measured in
bench/monitor_bench.py, part latency: a test on a busy machine cannot
promise a time.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.monitor_helpers import (FORK_UNTIL_REFUSED, MEMORY_HOG, MonitorProcess, V1Cgroup, monitors, needs_root,  # noqa: F401
                                   v1_cgroup, value_for, wait_for, write_workload)

pytestmark = [pytest.mark.root, needs_root]




def limit_events(m: MonitorProcess, **labels: str) -> float:
    return value_for(m.samples("enforcer_limit_events_total"), **labels)


def join(cg: V1Cgroup):  # type: ignore[no-untyped-def]
    def preexec() -> None:
        import os

        for d in cg.dirs.values():
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
    return preexec


def test_oom_kill_and_pids_max_are_limit_events(
        tmp_path: Path, monitors: list[MonitorProcess], v1_cgroup: V1Cgroup) -> None:
    rt = str(tmp_path / "rt")
    v1_cgroup.write("memory", "memory.limit_in_bytes", str(32 << 20))
    v1_cgroup.write("pids", "pids.max", "4")
    holder = subprocess.Popen(["sleep", "60"], preexec_fn=join(v1_cgroup))
    try:
        write_workload(rt, "limited", pid=holder.pid, policy="tight",
                       cgroups=v1_cgroup.record_cgroups)
        m = MonitorProcess(rt, str(tmp_path / "ev.jsonl"), "--poll-interval", "0.5")
        monitors.append(m)
        assert limit_events(m, workload="limited") == 0

        # pids: fork until the kernel refuses (pids.max=4), then reap and exit.
        forker = subprocess.run([sys.executable, "-c", FORK_UNTIL_REFUSED], preexec_fn=join(v1_cgroup),
                                capture_output=True, text=True, timeout=30)
        assert forker.returncode == 0 and forker.stdout.strip(), forker.stderr  # it was refused
        assert wait_for(lambda: limit_events(m, workload="limited", resource="pids", event="max") > 0,
                        timeout=30)

        # memory: a process that allocates past 32 MiB is OOM-killed.
        hog = subprocess.run([sys.executable, "-c", MEMORY_HOG],
                             preexec_fn=join(v1_cgroup), capture_output=True)
        assert hog.returncode == -9  # SIGKILL from the OOM killer
        assert wait_for(lambda: limit_events(m, workload="limited", resource="memory",
                                             event="oom_kill") == 1, timeout=30)
        assert limit_events(m, workload="limited", resource="memory", event="max") > 0
        assert limit_events(m, workload="limited", policy="tight") >= 2
    finally:
        holder.kill()
        holder.wait()
