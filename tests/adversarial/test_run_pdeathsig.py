"""Hole 8: a workload must not outlive its supervisor.

The supervisor sets PR_SET_PDEATHSIG(SIGKILL) on the workload, but the
kernel clears it when the credentials change: setresuid(), which runs for
every policy with `user:`, silently removed it. A workload killed
supervisor (kill -9: no cleanup runs) then left a workload that ran on,
outside any supervision, with its registry record and cgroup orphaned.

Here the supervisor is killed with SIGKILL while the workload sleeps; the
workload must be gone shortly after. Both shapes are tried: `restricted`
(a user change, and a pid namespace whose init must die too) and a policy
with a fixed `user:` and no pid namespace (the user change alone).

What the killed supervisor could not clean up (its cgroup, its record) is
removed by the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from typing import Iterator

import pytest

from run_helpers import (PYTHON, REPO, alive, pids_with_arg, require_root, scratch_dir,
                         v1_cgroup_dirs, wait_for)
from tests import session

pytestmark = [pytest.mark.root]


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-pdeathsig-")
    yield d
    session.remove_tree(d)


def in_pid_namespace(ns: str) -> list[int]:
    """Host pids of the processes in pid namespace `ns` (a readlink text)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns and alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def remove_orphaned_cgroup(name: str) -> None:
    for d in v1_cgroup_dirs(name):
        for pid in open(f"{d}/cgroup.procs").read().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: open(f"{d}/cgroup.procs").read() == "" or None, timeout=10,
                 what=f"{d} to empty")
        os.rmdir(d)


FIXED_USER_NO_PIDNS = """version: 1
name: fixed-user
user: {uid: 65534, gid: 65534, groups: []}
capabilities: {keep: []}
"""


@pytest.mark.parametrize("policy", ["restricted", "fixed-user"])
def test_workload_dies_with_its_supervisor(work: str, policy: str) -> None:
    if policy == "fixed-user":
        path = os.path.join(work, "fixed-user.yaml")
        with open(path, "w") as f:
            f.write(FIXED_USER_NO_PIDNS)
        policy = path
    name = session.unique("t-pdeath-")
    marker = f"600.{uuid.uuid4().int % 10**9:09d}"
    runtime = os.path.join(work, "runtime")
    env = {**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache"),
           "ENFORCER_RUNTIME_DIR": runtime}
    supervisor = subprocess.Popen(
        [PYTHON, "-m", "enforcer", "run", "--policy", policy, "--name", name, "--",
         "sleep", marker], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    workload: list[int] = []
    try:
        def running() -> list[int] | None:
            if supervisor.poll() is not None:
                raise AssertionError(f"enforcer run exited {supervisor.returncode}: "
                                     f"{supervisor.stderr.read() if supervisor.stderr else ''}")
            return pids_with_arg(marker, "sleep") or None

        workload = wait_for(running, what="the workload to start")
        record = os.path.join(runtime, "workloads", f"{name}.json")
        wait_for(lambda: os.path.exists(record), what="the registry record")
        assert json.load(open(record))["pid"] == workload[0]
        pid_ns = os.readlink(f"/proc/{workload[0]}/ns/pid")
        own_ns = pid_ns == os.readlink("/proc/self/ns/pid")
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait()
        # The kernel delivers the parent-death signal at once; allow a busy
        # machine a few seconds to tear the processes down. In a pid
        # namespace of its own, nothing may be left in it (its pid 1 too).
        wait_for(lambda: not any(alive(p) for p in workload)
                 and (own_ns or not in_pid_namespace(pid_ns)), timeout=10,
                 what="the workload to die with its supervisor")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        if supervisor.stderr:
            supervisor.stderr.close()
        for pid in workload:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        remove_orphaned_cgroup(name)
