"""`enforcer diff`: every difference between two effective policies, no more."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(__file__)
OLD = os.path.join(HERE, "diff_policies", "old.yaml")
NEW = os.path.join(HERE, "diff_policies", "new.yaml")

# Written by hand from reading old.yaml and new.yaml, not from the tool's output.
EXPECTED = [
    "syscalls: allowed by NEW only: ptrace",
    "syscalls: rules for socket: allow if arg0 == 2 -> allow if arg0 == 0xa",
    "capabilities: held by NEW only: CAP_SYS_PTRACE",
    "capabilities: held by OLD only: CAP_CHOWN",
    "privileges: no_new_privileges: true -> false",
    "filesystem: read_only_root: true -> false",
    "filesystem: hidden_paths only in OLD: /root",
    "filesystem: tmpfs /tmp: size 16Mi mode 1777 nosuid,nodev -> size 32Mi mode 1777 nosuid,nodev",
    "resources: memory_max: 256Mi -> 512Mi",
    "resources: pids_max: 64 -> unset",
    "rlimits: NOFILE: soft 1024 hard 1024 -> soft 1024 hard 4096",
    "namespaces: namespaces only in NEW: net",
    "namespaces: namespaces only in OLD: ipc",
]


def run_diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enforcer", "diff", *args],
                          capture_output=True, text=True, timeout=60)


def test_diff_lists_every_difference_and_nothing_else() -> None:
    result = run_diff(OLD, NEW)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"--- OLD {OLD} (old): exposure ")
    assert lines[1].startswith(f"+++ NEW {NEW} (new): exposure ")
    assert lines[2:] == EXPECTED


def test_diff_shows_both_lint_scores_and_new_is_looser() -> None:
    lines = run_diff(OLD, NEW).stdout.splitlines()
    score_old = float(lines[0].rsplit("exposure ", 1)[1].split("/")[0])
    score_new = float(lines[1].rsplit("exposure ", 1)[1].split("/")[0])
    assert score_new > score_old  # ptrace, SYS_PTRACE, writable root, nnp off


def test_diff_reversed_swaps_sides() -> None:
    lines = run_diff(NEW, OLD).stdout.splitlines()[2:]
    assert "syscalls: allowed by OLD only: ptrace" in lines
    assert "privileges: no_new_privileges: false -> true" in lines
    assert len(lines) == len(EXPECTED)


def test_diff_of_a_policy_with_itself_is_empty() -> None:
    result = run_diff(OLD, OLD)
    assert result.returncode == 0
    assert result.stdout.splitlines()[2:] == ["no differences in effect"]


def test_diff_of_group_and_its_members_is_empty(tmp_path: object) -> None:
    """Meaning, not spelling: @basic-io versus its members compare equal."""
    from enforcer.policy.groups import expand
    from enforcer.policy.syscalls import exists_on, native_arch

    members = [m for m in expand("basic-io") if exists_on(m, native_arch())]
    a = os.path.join(str(tmp_path), "a.yaml")
    b = os.path.join(str(tmp_path), "b.yaml")
    with open(a, "w") as f:
        f.write('name: a\nsyscalls:\n  default: errno EPERM\n  allow: ["@basic-io"]\n')
    with open(b, "w") as f:
        f.write("name: b\nsyscalls:\n  default: errno EPERM\n  allow: [" + ", ".join(members) + "]\n")
    result = run_diff(a, b)
    assert result.returncode == 0, result.stdout


# Two shipped policies: web-server extends default. Written by hand from
# reading policies/default.yaml, policies/web-server.yaml and the groups
# web-server denies (enforcer/policy/groups.py: @file-ownership and @setuid,
# as they exist on x86_64), not from the tool's output.
SHIPPED_EXPECTED = [
    "syscalls: allowed by OLD only: capset, chown, chroot, fchown, fchownat, lchown, setfsgid, "
    "setfsuid, setgid, setgroups, setregid, setresgid, setresuid, setreuid, setuid",
    "capabilities: held by OLD only: CAP_AUDIT_WRITE, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, "
    "CAP_FSETID, CAP_KILL, CAP_MKNOD, CAP_NET_RAW, CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, "
    "CAP_SETUID, CAP_SYS_CHROOT",
    "capabilities: ambient: (none) -> CAP_NET_BIND_SERVICE",
    "filesystem: read_only_root: false -> true",
    "filesystem: hidden_paths only in NEW: /root",
    "filesystem: tmpfs only in NEW: /dev/shm, /tmp",
    "resources: memory_max: unset -> 1Gi",
    "resources: memory_swap_max: unset -> 0",
    "resources: pids_max: unset -> 512",
    "resources: cpu_quota_us: unset -> 200000",
    "rlimits: CORE: unset -> soft 0 hard 0",
    "rlimits: NOFILE: unset -> soft 16384 hard 16384",
    "user: identity: unchanged (launcher's) -> dynamic groups []",
    "namespaces: namespaces only in NEW: pid",
    "scope: scope: container -> host",
    "landlock: only in NEW (nothing restricted without it): read /; write /tmp, /dev/shm, "
    "/dev/null; execute /; bind any; connect any; scope signal, abstract-unix-socket",
]


def test_diff_of_two_shipped_policies() -> None:
    import platform

    if platform.machine() != "x86_64":
        import pytest

        pytest.skip("the expectation lists the syscalls as they exist on x86_64")
    result = run_diff("default", "web-server")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("--- OLD default (default): exposure ")
    assert lines[1].startswith("+++ NEW web-server (web-server): exposure ")
    assert lines[2:] == SHIPPED_EXPECTED


# Hole 14: a `user:` alone changes what is held. Written by hand: default
# keeps Docker's 14 capabilities (policies/default.yaml) and lists none as
# ambient, so a non-root user holds none of them and keeps all 14 in its
# bounding set only.
DEFAULT_14 = ("CAP_AUDIT_WRITE, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, "
              "CAP_MKNOD, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SETFCAP, CAP_SETGID, "
              "CAP_SETPCAP, CAP_SETUID, CAP_SYS_CHROOT")


def test_diff_shows_what_a_user_switch_does_to_capabilities(tmp_path: object) -> None:
    child = os.path.join(str(tmp_path), "server.yaml")
    with open(child, "w") as f:
        f.write("name: server\nextends: default\nuser: {uid: 999, gid: 999}\n")
    lines = run_diff("default", child).stdout.splitlines()[2:]
    assert lines == [
        f"capabilities: held by OLD only: {DEFAULT_14}",
        f"capabilities: kept but not held (bounding set only): (none) -> {DEFAULT_14}",
        "user: identity: unchanged (launcher's) -> uid 999 gid 999 groups []",
        # scope is never inherited: a child of `default` is a host policy
        "scope: scope: container -> host",
    ]
