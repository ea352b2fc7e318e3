"""`enforcer run` as an unprivileged user (nobody): a user namespace makes
the mount rules possible, as bubblewrap does; cgroup limits without a
delegated cgroup fail closed with a message that says so.

The venv's interpreter may live where nobody cannot read it, so these runs
use the system python3 with the source tree on PYTHONPATH and --plan files
compiled by root (the start path needs nothing but the standard library).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Iterator

import pytest

from tests import session

from enforcer.plan import MountOp, UserPlan, replace
from run_helpers import (REPO, alive, make_plan, pids_with_arg, require_root, scratch_dir,
                         seccomp_plan, wait_for, write_plan)

pytestmark = pytest.mark.root  # root is needed to become nobody

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def home() -> Iterator[str]:
    require_root()
    if shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs setpriv and /usr/bin/python3")
    d = scratch_dir("enforcer-nobody-")
    os.chown(d, 65534, 65534)
    yield d
    session.remove_tree(d)


def as_nobody(home: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "PYTHONPATH": REPO,
           "ENFORCER_CACHE_DIR": os.path.join(home, "cache"),
           "ENFORCER_RUNTIME_DIR": os.path.join(home, "run")}
    return subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                           SYSTEM_PYTHON, "-m", "enforcer", "run", *args],
                          capture_output=True, text=True, env=env, cwd=home, timeout=60)


def shipped_plan(home: str, policy: str) -> str:
    from enforcer.compile.cache import load_or_compile

    plan = load_or_compile(policy, cache_dir=os.path.join(home, "root-cache"))
    path = os.path.join(home, f"{policy}.plan.json")
    with open(path, "w") as f:
        f.write(plan.to_json())
    os.chmod(path, 0o644)
    return path


def test_default_policy_as_nobody(home: str) -> None:
    plan = shipped_plan(home, "default")
    r = as_nobody(home, ["--plan", plan, "--", "sh", "-c",
                         "id -u; cat /proc/self/uid_map; "
                         "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "65534"
    assert lines[1].split() == ["65534", "65534", "1"]  # our own user namespace
    assert "CapEff:\t0000000000000000" in r.stdout
    assert "NoNewPrivs:\t1" in r.stdout and "Seccomp:\t2" in r.stdout


def test_mount_rules_and_pid_namespace_as_nobody(home: str) -> None:
    plan = make_plan(policy_name="nobody-mounts", seccomp=seccomp_plan(kill=["ptrace"]),
                     mounts=(MountOp("make_private", "/"), MountOp("readonly", "/"),
                             MountOp("tmpfs", "/tmp", size=1 << 20, mode=0o1777,
                                     options=("nosuid", "nodev"))),
                     namespaces=("mount", "pid", "ipc", "uts"))
    path = write_plan(plan, home)
    os.chmod(path, 0o644)
    r = as_nobody(home, ["--plan", path, "--", "sh", "-c",
                         f"echo $$; ls -A /tmp | wc -l; touch {home}/x 2>/dev/null || echo RO; "
                         "touch /tmp/ok && echo TMP-WRITABLE"])
    assert r.returncode == 0, r.stderr
    # $$ is 2: pid 1 of the namespace is its init (enforcer/apply/pidns.py).
    assert r.stdout.split() == ["2", "0", "RO", "TMP-WRITABLE"]
    assert not os.path.exists(os.path.join(home, "x"))


def test_cgroup_limits_without_delegation_fail_closed(home: str) -> None:
    plan = shipped_plan(home, "restricted")
    marker = os.path.join(home, "marker")
    r = as_nobody(home, ["--plan", plan, "--", "sh", "-c", f"touch {marker}"])
    assert r.returncode == 125
    assert not os.path.exists(marker)
    assert r.stderr.startswith("enforcer run: cgroup: /sys/fs/cgroup/")
    assert "no delegated writable cgroup" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_filter_kill_as_nobody(home: str) -> None:
    plan = replace(make_plan(policy_name="nobody-kill"), seccomp=seccomp_plan(kill=["ptrace"]))
    path = write_plan(plan, home)
    os.chmod(path, 0o644)
    r = as_nobody(home, ["--plan", path, "--", SYSTEM_PYTHON, "-c",
                         "import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)"])
    assert r.returncode == 128 + 31
    # Without CAP_AUDIT_READ the syscall cannot be named; the message says so.
    assert "SIGSYS" in r.stderr and "CAP_AUDIT_READ" in r.stderr


# -- a host sandbox without root -------------------------------------------------
#
# Without root `enforcer run` cannot pick host uids (only the caller's own
# uid can be mapped into a user namespace), so a dynamic user runs as its
# fallback id (nobody) inside the workload's user namespace, mapped onto the
# caller. What keeps two of one user's workloads apart is then the rest of
# the sandbox: each has a user and a pid namespace of its own, so neither
# can name (nor, across user namespaces, ptrace) the other's processes.


def test_default_sandbox_as_nobody(home: str) -> None:
    plan = shipped_plan(home, "sandbox")  # what `enforcer run` applies with no --policy
    r = as_nobody(home, ["--plan", plan, "--", "sh", "-c",
                         f"id -u; echo $$; ls /dev; touch {home}/x 2>/dev/null || echo RO; "
                         "ls /proc | grep -c '^[0-9]'"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[:2] == ["65534", "2"]  # the caller's uid; pid 1 is the namespace's init
    assert {"null", "zero", "urandom", "tty", "pts"} <= set(lines)
    assert not any(d.startswith(("vd", "sd", "loop", "nvme")) for d in lines)
    assert "RO" in lines and not os.path.exists(os.path.join(home, "x"))
    assert int(lines[-1]) <= 4


def test_dynamic_user_as_nobody_runs_as_the_fallback(home: str) -> None:
    plan = make_plan(policy_name="nobody-dynamic", seccomp=seccomp_plan(kill=["ptrace"]),
                     user=UserPlan(uid=65534, gid=65534, dynamic=True),
                     namespaces=("mount", "pid"))
    path = write_plan(plan, home)
    os.chmod(path, 0o644)
    r = as_nobody(home, ["--plan", path, "--", "sh", "-c", "id -u; cat /proc/self/uid_map"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["65534", "65534", "65534", "1"]


def test_two_unprivileged_workloads_cannot_reach_each_other(home: str) -> None:
    plan = shipped_plan(home, "sandbox")
    marker = f"600.{uuid.uuid4().int % 10**9:09d}"
    victim = subprocess.Popen(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", SYSTEM_PYTHON,
         "-m", "enforcer", "run", "--plan", plan, "--", "sleep", marker],
        env={"PATH": "/usr/bin:/bin", "HOME": home, "PYTHONPATH": REPO}, cwd=home,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = wait_for(lambda: (pids_with_arg(marker, "sleep") or [None])[0], what="the victim")
        r = as_nobody(home, ["--plan", plan, "--", "sh", "-c",
                             f"cat /proc/{pid}/environ >/dev/null 2>&1 && echo READ; "
                             f"kill -9 {pid} 2>/dev/null && echo KILLED; true"])
        assert r.returncode == 0, r.stderr
        assert "READ" not in r.stdout and "KILLED" not in r.stdout
        assert alive(pid)
    finally:
        victim.terminate()
        victim.wait(timeout=20)
