"""`enforcer diff`: every difference between two effective policies, no more,
read like a code review: grouped, one marked line per change, wrapped."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(__file__)
OLD = os.path.join(HERE, "diff_policies", "old.yaml")
NEW = os.path.join(HERE, "diff_policies", "new.yaml")

# Written by hand from reading old.yaml and new.yaml, not from the tool's output.
EXPECTED = [
    "syscalls: allowed 23 -> 24, under argument checks 1 -> 1, denied 361 -> 360 (of 385, x86_64)",
    "  + allowed by NEW only (1): ptrace",
    "  ~ rules for socket: allow if arg0 == 2 -> allow if arg0 == 0xa",
    "capabilities",
    "  + held by NEW only (1): CAP_SYS_PTRACE",
    "  - held by OLD only (1): CAP_CHOWN",
    "  ~ no_new_privileges: true -> false",
    "filesystem",
    "  ~ read_only_root: true -> false",
    "  - hidden_paths only in OLD (1): /root",
    "  ~ tmpfs /tmp: size 16Mi mode 1777 nosuid,nodev -> size 32Mi mode 1777 nosuid,nodev",
    "limits",
    "  ~ memory_max: 256Mi -> 512Mi",
    "  ~ pids_max: 64 -> unset",
    "  ~ rlimit NOFILE: soft 1024 hard 1024 -> soft 1024 hard 4096",
    "namespaces",
    "  + only in NEW (1): net",
    "  - only in OLD (1): ipc",
    "13 changes: syscalls 2, capabilities 3, filesystem 3, limits 3, namespaces 2",
]


def run_diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enforcer", "diff", *args],
                          capture_output=True, text=True, timeout=60)


def x86_64_only() -> None:
    import platform

    if platform.machine() != "x86_64":
        import pytest

        pytest.skip("the expectation counts the syscalls of x86_64")


def test_diff_lists_every_difference_and_nothing_else() -> None:
    x86_64_only()
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
    assert "  - allowed by OLD only (1): ptrace" in lines
    assert "  ~ no_new_privileges: false -> true" in lines
    assert "  + held by NEW only (1): CAP_CHOWN" in lines
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
    "syscalls: allowed 303 -> 288, under argument checks 2 -> 2, denied 80 -> 95 (of 385, x86_64)",
    "  - allowed by OLD only (15): capset, chown, chroot, fchown, fchownat, lchown, setfsgid, "
    "setfsuid, setgid, setgroups, setregid, setresgid, setresuid, setreuid, setuid",
    "capabilities",
    "  - held by OLD only (13): CAP_AUDIT_WRITE, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, "
    "CAP_FSETID, CAP_KILL, CAP_MKNOD, CAP_NET_RAW, CAP_SETFCAP, CAP_SETGID, CAP_SETPCAP, "
    "CAP_SETUID, CAP_SYS_CHROOT",
    "  ~ ambient: (none) -> CAP_NET_BIND_SERVICE",
    "user",
    "  ~ identity: unchanged (launcher's) -> dynamic groups []",
    "filesystem",
    "  ~ read_only_root: false -> true",
    "  + hidden_paths only in NEW (1): /root",
    "  + tmpfs only in NEW (2): /dev/shm, /tmp",
    "limits",
    "  ~ memory_max: unset -> 1Gi",
    "  ~ memory_swap_max: unset -> 0",
    "  ~ pids_max: unset -> 512",
    "  ~ cpu_quota_us: unset -> 200000",
    "  ~ rlimit CORE: unset -> soft 0 hard 0",
    "  ~ rlimit NOFILE: unset -> soft 16384 hard 16384",
    "landlock",
    "  + only in NEW (nothing restricted without it): read /; write /tmp, /dev/shm, /dev/null; "
    "execute /; bind any; connect any; scope signal, abstract-unix-socket",
    "namespaces",
    "  + only in NEW (1): pid",
    "scope",
    "  ~ container -> host",
    "16 changes: syscalls 1, capabilities 2, user 1, filesystem 3, limits 6, landlock 1, "
    "namespaces 1, scope 1",
]


def test_diff_of_two_shipped_policies() -> None:
    import platform

    if platform.machine() != "x86_64":
        import pytest

        pytest.skip("the expectation lists the syscalls as they exist on x86_64")
    result = run_diff("default", "web-server", "--width", "1000")  # wrapping: tested below
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
    lines = run_diff("default", child, "--width", "1000").stdout.splitlines()[2:]
    assert lines == [
        "capabilities",
        f"  - held by OLD only (14): {DEFAULT_14}",
        f"  ~ kept but not held (bounding set only): (none) -> {DEFAULT_14}",
        "user",
        "  ~ identity: unchanged (launcher's) -> uid 999 gid 999 groups []",
        # scope is never inherited: a child of `default` is a host policy
        "scope",
        "  ~ container -> host",
        "4 changes: capabilities 2, user 1, scope 1",
    ]


def test_diff_wraps_to_the_width_and_keeps_rule_conditions_whole() -> None:
    for width in (60, 100):
        result = run_diff("default", "restricted", "--width", str(width))
        assert result.returncode == 1
        body = result.stdout.splitlines()[3:]  # the headings name the policies in full
        assert all(len(line) <= width for line in body), [x for x in body if len(x) > width]
        ioctl = [line for line in body if "ioctl" in line or line.startswith("      allow if")]
        # A condition never breaks: "arg1 & 0x4000 == 0x0" stays on one line.
        assert all(not line.rstrip().endswith(("&", "==", "arg1")) for line in ioctl), ioctl
    joined = run_diff("default", "restricted", "--width", "100").stdout
    assert "allow if arg1 & 0x4000 == 0x0;" in joined


def test_diff_json_for_tools() -> None:
    import json

    result = run_diff(OLD, NEW, "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["same"] is False
    assert doc["summary"] == {"syscalls": 2, "capabilities": 3, "filesystem": 3, "limits": 3,
                              "namespaces": 2}
    first = doc["differences"][0]
    assert first == {"group": "syscalls", "change": "added", "section": "syscalls",
                     "item": "allowed by NEW only", "old": "", "new": "ptrace"}
    assert {d["change"] for d in doc["differences"]} == {"added", "removed", "changed"}
    assert doc["old"]["syscalls"]["allowed"] + 1 == doc["new"]["syscalls"]["allowed"]
    same = json.loads(run_diff(OLD, OLD, "--json").stdout)
    assert same["same"] is True and same["differences"] == []


def test_diff_exit_codes_are_those_of_diff(tmp_path: object) -> None:
    """0 the same, 1 different, 2 trouble (as diff(1)): docs/diff.md."""
    assert run_diff(OLD, OLD).returncode == 0
    assert run_diff(OLD, NEW).returncode == 1
    missing = run_diff(OLD, os.path.join(str(tmp_path), "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    bad = os.path.join(str(tmp_path), "bad.yaml")
    with open(bad, "w") as f:
        f.write("name: bad\nsyscalls: {default: sometimes}\n")
    invalid = run_diff(bad, OLD)
    assert invalid.returncode == 2 and "bad.yaml:2" in invalid.stderr
    assert run_diff(OLD).returncode == 2  # usage
