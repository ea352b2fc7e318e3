"""The workload's pid namespace and its pid 1 (enforcer/apply/pidns.py), for
real: the workload is pid 2 and gets signals like any process, orphans are
reaped, pid 1 holds nothing and cannot be taken over or killed from
inside, and nothing of the namespace outlives the run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from typing import Iterator

import pytest

from enforcer.plan import CapabilityPlan, UserPlan, replace
from run_helpers import (PYTHON, REPO, enforcer_run, make_plan, pids_with_arg, require_root,
                         scratch_dir, wait_for, write_plan)
from tests import session

pytestmark = [pytest.mark.root]


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-pidns-")
    yield d
    session.remove_tree(d)


def run(work: str, policy: str, script: str) -> subprocess.CompletedProcess[str]:
    return enforcer_run(["--policy", policy, "--", "sh", "-c", script],
                        env={"ENFORCER_CACHE_DIR": os.path.join(work, "cache")})


def test_pid_1_holds_nothing_and_cannot_be_killed_from_inside(work: str) -> None:
    # sandbox: a root workload (no capabilities), the strongest attacker here.
    r = run(work, "sandbox", "grep -E '^(Uid|CapPrm|CapEff|CapAmb|NoNewPrivs):' /proc/1/status; "
                             "cat /proc/1/environ >/dev/null 2>&1 && echo ENVIRON; "
                             "echo fds $(ls /proc/1/fd | wc -l); "
                             "kill -KILL 1; kill -TERM 1; kill -INT 1; sleep 0.2; "
                             "test -d /proc/1 && echo PID1-ALIVE; echo $$")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Uid:\t65534\t65534\t65534\t65534" in out
    for cap in ("CapPrm", "CapEff", "CapAmb"):
        assert f"{cap}:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert "ENVIRON" not in out  # not dumpable: root without CAP_SYS_PTRACE may not read it
    assert "fds 0" in out  # it holds no file at all
    assert "PID1-ALIVE" in out and out.split()[-1] == "2"


def test_orphans_are_reaped(work: str) -> None:
    r = run(work, "restricted", "sh -c 'sleep 0.2 & exit 0'; sleep 1; "
                                "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "0"


def test_sigterm_reaches_the_workload(work: str) -> None:
    """As pid 1 the workload would never see it (no handler: the kernel
    drops it); as pid 2 it dies of it like anywhere else."""
    marker = f"600.{uuid.uuid4().int % 10**9:09d}"
    p = subprocess.Popen([PYTHON, "-m", "enforcer", "run", "--policy", "restricted", "--",
                          "sleep", marker], cwd=REPO, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache")})
    try:
        wait_for(lambda: pids_with_arg(marker, "sleep"), what="the workload")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()


def test_nothing_of_the_namespace_outlives_the_run(work: str) -> None:
    marker = f"600.{uuid.uuid4().int % 10**9:09d}"
    r = run(work, "sandbox", f"setsid sleep {marker} </dev/null >/dev/null 2>&1 & exit 0")
    assert r.returncode == 0, r.stderr
    time.sleep(0.2)
    assert pids_with_arg(marker, "sleep") == []


def test_exec_as_pid_1_of_a_container(work: str) -> None:
    """--exec cannot make a pid namespace, but as a container's entrypoint
    (pid 1 of one) it is already in its own: the policy applies, and a
    dynamic user runs as its fallback (the runtime keeps containers apart)."""
    plan = make_plan(policy_name="exec-pid1", user=UserPlan(65534, 65534, dynamic=True),
                     capabilities=CapabilityPlan(0, 0, 0, 0, 0), namespaces=("mount", "pid"))
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "enforcer",
                        "run", "--exec", "--plan", write_plan(plan, work), "--", "sh", "-c",
                        "echo $$; id -u"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "65534"]
    # Outside a pid namespace of its own, --exec refuses either.
    r = enforcer_run(["--exec", "--plan", write_plan(replace(plan, namespaces=("mount",)), work),
                      "--", "true"])
    assert r.returncode == 125 and "dynamic user" in r.stderr
