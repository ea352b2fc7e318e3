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
from typing import Iterator

import pytest

from tests import session

from enforcer.plan import replace
from enforcer.plan import MountOp
from run_helpers import REPO, make_plan, require_root, scratch_dir, seccomp_plan, write_plan

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
    assert r.stdout.split() == ["1", "0", "RO", "TMP-WRITABLE"]
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
