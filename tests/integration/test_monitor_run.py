"""The monitor with real `enforcer run` workloads: violations attributed to
the run's registry record, and an OOM kill and a pids-limit hit in the
cgroup `enforcer run` made appear as limit events within 2 s — although
`enforcer run` removes that cgroup as soon as the workload exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.monitor_helpers import (FORK_UNTIL_REFUSED, MEMORY_HOG, REPO, MonitorProcess, gen_binary, monitors,  # noqa: F401
                                   needs_root, value_for, wait_for, x86_64_only)

pytestmark = [pytest.mark.root, needs_root, x86_64_only,
              pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/memory"),
                                 reason="needs the cgroup v1 memory hierarchy")]

ENFORCER = [os.path.join(REPO, ".venv", "bin", "python"), "-m", "enforcer"]
POLICY = """\
name: monitor-test
extends: default
syscalls:
  deny: [personality]
  deny_action: errno EPERM
resources:
  memory: {max: 32Mi, swap: 0}
  pids: {max: 8}
"""


def run(tmp_path: Path, runtime: str, name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = dict(os.environ, ENFORCER_RUNTIME_DIR=runtime)
    return subprocess.run([*ENFORCER, "run", "--policy", str(policy), "--name", name, "--", *cmd],
                          env=env, capture_output=True, text=True, timeout=60)


def limit_events(m: MonitorProcess, **labels: str) -> float:
    return value_for(m.samples("enforcer_limit_events_total"), **labels)


def test_violations_of_an_enforcer_run_workload(tmp_path: Path, gen_binary: str,
                                                monitors: list[MonitorProcess]) -> None:
    runtime = str(tmp_path / "rt")
    m = MonitorProcess(runtime, str(tmp_path / "ev.jsonl"))
    monitors.append(m)
    r = run(tmp_path, runtime, "mon-run-viol", gen_binary, "loop", "500", "135")  # personality
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: value_for(m.samples("enforcer_seccomp_violations_total"),
                                      workload="mon-run-viol") == 500, timeout=10)
    assert value_for(m.samples("enforcer_seccomp_violations_total"), workload="mon-run-viol",
                     policy="monitor-test", syscall="personality", action="errno") == 500


@pytest.mark.parametrize("attempt", range(3))
def test_oom_kill_and_pids_hit_under_enforcer_run(tmp_path: Path, monitors: list[MonitorProcess],
                                                  attempt: int) -> None:
    runtime = str(tmp_path / "rt")
    m = MonitorProcess(runtime, str(tmp_path / "ev.jsonl"), "--poll-interval", "1")
    monitors.append(m)

    # `enforcer run` removes the workload's cgroup as soon as it exits: the
    # event is counted only if the monitor read it on the kernel's
    # notification. (How fast: bench/monitor_bench.py, part latency.)
    r = run(tmp_path, runtime, f"mon-oom-{attempt}", sys.executable, "-c", MEMORY_HOG)
    assert r.returncode == 137, r.stderr  # 128 + SIGKILL: the OOM killer
    assert wait_for(lambda: limit_events(m, workload=f"mon-oom-{attempt}", resource="memory",
                                         event="oom_kill") == 1, timeout=30)

    r = run(tmp_path, runtime, f"mon-pids-{attempt}", sys.executable, "-c", FORK_UNTIL_REFUSED)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr  # it printed when fork was refused
    assert wait_for(lambda: limit_events(m, workload=f"mon-pids-{attempt}", resource="pids",
                                         event="max") >= 1, timeout=30)
