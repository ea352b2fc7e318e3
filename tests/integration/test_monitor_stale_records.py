"""The monitor counts only live workloads (issue 19, point 6).

A supervisor killed with SIGKILL cannot remove its registry record; before,
`enforcer_workloads` went on counting such dead workloads forever. Here a
real `enforcer run` is killed that way, and a record names a real process
younger than the record (its pid was reused): both are reported stale and
not counted, against the real /proc and cgroups.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from typing import Iterator

import pytest

from enforcer.monitor.daemon import Monitor, MonitorConfig
from run_helpers import (PYTHON, REPO, alive, pids_with_arg, require_root, scratch_dir,
                         v1_cgroup_dirs, wait_for)
from tests import session
from tests.monitor_helpers import write_workload

pytestmark = [pytest.mark.root]


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-stale-")
    yield d
    session.remove_tree(d)


def polled(runtime: str) -> tuple[dict[str, int], dict[str, int]]:
    """(running workloads, stale records) per policy, as one monitor poll sees them."""
    monitor = Monitor(MonitorConfig(runtime_dir=runtime, fork_tracking=False), source=None)
    monitor.start()
    try:
        monitor.poll()
        return dict(monitor.metrics.workloads_by_policy), dict(monitor.metrics.stale_by_policy)
    finally:
        monitor.close()


def remove_cgroup(name: str) -> None:
    for d in v1_cgroup_dirs(name):
        wait_for(lambda: open(f"{d}/cgroup.procs").read() == "" or None, timeout=10,
                 what=f"{d} to empty")
        os.rmdir(d)


def test_a_killed_supervisors_record_is_stale_not_running(work: str) -> None:
    name = session.unique("t-stale-")
    marker = f"600.{uuid.uuid4().int % 10**9:09d}"
    runtime = os.path.join(work, "runtime")
    env = {**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache"),
           "ENFORCER_RUNTIME_DIR": runtime}
    supervisor = subprocess.Popen(
        [PYTHON, "-m", "enforcer", "run", "--policy", "restricted", "--name", name, "--",
         "sleep", marker], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    workload: list[int] = []
    try:
        workload = wait_for(lambda: pids_with_arg(marker, "sleep") or None,
                            what="the workload to start")
        record = os.path.join(runtime, "workloads", f"{name}.json")
        wait_for(lambda: os.path.exists(record), what="the registry record")
        assert polled(runtime) == ({"restricted": 1}, {})
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        wait_for(lambda: not any(alive(p) for p in workload), timeout=10,
                 what="the workload to die with its supervisor")
        assert os.path.exists(record)  # nobody removed it: the case at hand
        assert polled(runtime) == ({}, {"restricted": 1})
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        for pid in workload:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        remove_cgroup(name)


def test_a_pid_taken_by_a_younger_process_is_stale(work: str) -> None:
    """The record was written (its mtime) a minute before the process that
    now has its pid started: that pid was reused, the workload is gone."""
    runtime = os.path.join(work, "runtime")
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        path = write_workload(runtime, "reused", pid=sleeper.pid, policy="restricted")
        assert polled(runtime) == ({"restricted": 1}, {})
        an_hour_ago = time.time() - 3600
        os.utime(path, (an_hour_ago, an_hour_ago))
        assert polled(runtime) == ({}, {"restricted": 1})
        assert json.load(open(path))["pid"] == sleeper.pid  # left for its owner to remove
    finally:
        sleeper.kill()
        sleeper.wait()
