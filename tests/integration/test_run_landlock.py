"""Landlock in `enforcer run`, on the real kernel, as root and as an
ordinary user (nobody, without any user namespace): reads, writes,
executions, TCP binds and connects, signals and abstract unix sockets
outside what the policy grants fail, the granted ones succeed; a policy
asking for a newer ABI than the kernel's refuses to start; best effort
reports what it drops; paths are checked.

The workload is the system python3 running tests/landlock_helpers.py's
probe script; the same script run without the policy succeeds everywhere,
so each denial below is Landlock's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Callable, Iterator

import pytest

from tests import session
from tests.landlock_helpers import (EXPECTED, PROBE_SCRIPT, UNCONFINED, Outside, free_port,
                                    make_tree, parse_results, policy_yaml)

from run_helpers import PYTHON, REPO, require_root, scratch_dir

pytestmark = pytest.mark.root

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _landlock_abi() -> int:
    from enforcer.apply.landlock import kernel_abi

    return kernel_abi()


@pytest.fixture(scope="module")
def tree() -> Iterator[str]:
    require_root()
    if not os.path.exists(SYSTEM_PYTHON) or shutil.which("setpriv") is None:
        pytest.skip("needs /usr/bin/python3 and setpriv")
    if _landlock_abi() < 6:
        pytest.skip("needs Landlock ABI 6 (network rules and scopes)")
    d = scratch_dir("enforcer-landlock-")
    make_tree(d, owner=NOBODY)
    try:
        yield d
    finally:
        session.remove_tree(_trusted_dir(d))
        session.remove_tree(d)


def _trusted_dir(tree: str) -> str:
    """Where the policies and Plans of `tree` are kept: the tree itself is
    writable by everyone (nobody's probes write there), and a privileged
    enforcer refuses a policy or Plan others could have written."""
    return tree + ".policies"


def compile_plan(policy_path: str, directory: str) -> str:
    """Compile as root (the start path of an unprivileged run reads only the Plan).
    The policy is compiled from a copy in a root-owned directory."""
    from enforcer.compile.cache import load_or_compile

    trusted = _trusted_dir(directory)
    os.makedirs(trusted, mode=0o755, exist_ok=True)
    copy = os.path.join(trusted, os.path.basename(policy_path))
    shutil.copyfile(policy_path, copy)
    os.chmod(copy, 0o644)
    plan = load_or_compile(copy, cache_dir=os.path.join(trusted, "cache"))
    out = copy + ".plan.json"
    with open(out, "w") as f:
        f.write(plan.to_json())
    os.chmod(out, 0o644)
    return out


def run_as(uid: int, plan: str, argv: list[str], env: dict[str, str], cwd: str,
           pre: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`enforcer run --plan PLAN -- ARGV` as `uid` (root: the test's
    interpreter; nobody: the system python3 with the source tree on
    PYTHONPATH, since the venv may be unreadable to nobody)."""
    base = {"PATH": "/usr/bin:/bin", "HOME": cwd, "ENFORCER_RUNTIME_DIR": os.path.join(cwd, "run"),
            "ENFORCER_CACHE_DIR": os.path.join(cwd, "cache-run")}
    # The workload's environment is reset (env.clear): its settings go in
    # through env(1), as the workload's own.
    workload = ["/usr/bin/env", *(f"{k}={v}" for k, v in env.items()), *argv]
    if uid == 0:
        cmd = [PYTHON, "-m", "enforcer", "run", "--plan", plan, "--", *workload]
        full = {**os.environ, **base}
    else:
        cmd = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
               SYSTEM_PYTHON, "-m", "enforcer", "run", "--plan", plan, "--", *workload]
        full = {**base, "PYTHONPATH": REPO}
    return subprocess.run((pre or []) + cmd, capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("uid", [0, NOBODY], ids=["root", "nobody"])
def test_denied_outside_the_grants_allowed_inside(tree: str, uid: int) -> None:
    outside = Outside(session.unique("enf-ll-"), uid)
    try:
        bind_ok, bind_denied = free_port(), free_port()
        name = f"ll-probe-{'root' if uid == 0 else 'nobody'}"
        policy = os.path.join(tree, f"{name}.yaml")
        with open(policy, "w") as f:
            f.write(policy_yaml(name, tree, bind_ok, outside.connect_ok, SYSTEM_PYTHON))
        plan = compile_plan(policy, tree)
        env = outside.env(tree, bind_ok, bind_denied)
        forget_writes(tree)
        # The same probes without the policy: every attempt succeeds, so
        # each denial under the policy is Landlock's doing.
        bare = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid),
                               "--clear-groups", SYSTEM_PYTHON, "-c", PROBE_SCRIPT],
                              capture_output=True, text=True, env={**env, "PATH": "/usr/bin"},
                              cwd=tree, timeout=60)
        assert parse_results(bare.stdout) == UNCONFINED, bare.stdout + bare.stderr
        forget_writes(tree)
        r = run_as(uid, plan, [SYSTEM_PYTHON, "-c", PROBE_SCRIPT + _NO_USERNS_CHECK], env, tree)
        assert r.returncode == 0, r.stderr
        assert parse_results(r.stdout) == EXPECTED, r.stdout
        # No user namespace was needed, even for nobody: the full identity map.
        assert "uid_map 0 0 4294967295" in r.stdout
        assert "NoNewPrivs 1" in r.stdout
        assert r.stderr == "", r.stderr  # this kernel has everything: nothing dropped
    finally:
        outside.close()


def forget_writes(tree: str) -> None:
    """Remove what a probe run wrote (the next run may be another user)."""
    for path in ("rw/new", "other/new"):
        try:
            os.unlink(os.path.join(tree, path))
        except FileNotFoundError:
            pass
    with open(os.path.join(tree, "ro", "file"), "w") as f:
        f.write("data\n")


_NO_USERNS_CHECK = r"""
print("uid_map", " ".join(open("/proc/self/uid_map").read().split()))
print("NoNewPrivs", [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0])
"""


def write_policy(directory: str, name: str, body: str) -> str:
    path = os.path.join(directory, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"name: {name}\n{body}")
    return path


@pytest.mark.parametrize("uid", [0, NOBODY], ids=["root", "nobody"])
def test_abi_above_the_kernel_refuses_to_start(tree: str, uid: int) -> None:
    abi = _landlock_abi()
    policy = write_policy(tree, "ll-abi", f"landlock:\n  abi: {abi + 1}\n"
                          "  filesystem: {read: [/]}\n")
    marker = os.path.join(tree, "rw", f"ran-{uid}")
    r = run_as(uid, compile_plan(policy, tree), ["/usr/bin/touch", marker], {}, tree)
    assert r.returncode == 125
    assert not os.path.exists(marker)
    assert r.stderr.splitlines() == [
        f"enforcer run: landlock: the policy requires Landlock ABI {abi + 1} (landlock.abi): "
        f"this kernel has ABI {abi}"]


def test_best_effort_reports_what_it_drops(tree: str) -> None:
    """A kernel without Landlock, as the workload's launcher sees it: an
    outer seccomp filter answers landlock_create_ruleset with ENOSYS. With
    no `abi`, the workload runs and one line says nothing was enforced;
    with `abi`, it refuses."""
    loose = write_policy(tree, "ll-best-effort", "landlock:\n  filesystem: {read: [/]}\n")
    strict = write_policy(tree, "ll-strict", "landlock:\n  abi: 1\n  filesystem: {read: [/]}\n")
    pre = [PYTHON, "-c", _WITHOUT_LANDLOCK]
    marker = os.path.join(tree, "rw", "best-effort")
    r = run_as(0, compile_plan(loose, tree), ["/usr/bin/touch", marker], {}, tree, pre=pre)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(marker)  # unconfined: nothing could be enforced
    assert r.stderr.splitlines() == [
        "enforcer run: landlock: best effort: this kernel has no Landlock; not enforced: "
        "everything (no Landlock on this kernel)"]
    os.unlink(marker)
    r = run_as(0, compile_plan(strict, tree), ["/usr/bin/touch", marker], {}, tree, pre=pre)
    assert r.returncode == 125 and not os.path.exists(marker)
    assert r.stderr.splitlines() == [
        "enforcer run: landlock: the policy requires Landlock ABI 1 (landlock.abi): "
        "this kernel has no Landlock"]


# Runs argv[1:] under a seccomp filter that makes landlock_create_ruleset
# fail with ENOSYS, as on a kernel built without Landlock.
_WITHOUT_LANDLOCK = r"""
import errno, os, sys
import pyseccomp as sc
f = sc.SyscallFilter(sc.ALLOW)
f.add_rule(sc.ERRNO(errno.ENOSYS), "landlock_create_ruleset")
f.load()
os.execvp(sys.argv[1], sys.argv[1:])
"""


def test_missing_path_is_an_error_unless_optional(tree: str) -> None:
    missing = os.path.join(tree, "does-not-exist")
    required = write_policy(tree, "ll-missing",
                            f"landlock:\n  filesystem:\n    read: [/, {missing}]\n"
                            "    execute: [/]\n")
    optional = write_policy(tree, "ll-optional",
                            f"landlock:\n  filesystem:\n    read: [/, {{path: {missing}, "
                            "optional: true}]\n    execute: [/]\n")
    r = run_as(0, compile_plan(required, tree), ["/usr/bin/true"], {}, tree)
    assert r.returncode == 125
    assert r.stderr.splitlines() == [
        f"enforcer run: landlock: {missing}: ENOENT (No such file or directory): path does not "
        "exist (write {path: ..., optional: true} if it may be missing)"]
    r = run_as(0, compile_plan(optional, tree), ["/usr/bin/true"], {}, tree)
    assert r.returncode == 0 and r.stderr == ""


def test_symlink_to_root_does_not_widen_a_grant(tree: str) -> None:
    """A grant for one directory that is a symlink to / would grant the
    whole tree: refused. (Against code without the check, the write below
    outside rw/ succeeds.)"""
    link = os.path.join(tree, "data")
    os.symlink("/", link)
    try:
        policy = write_policy(tree, "ll-symlink",
                              f"landlock:\n  filesystem:\n    read: [/]\n    write: [{link}]\n"
                              "    execute: [/]\n")
        victim = os.path.join(tree, "other", "widened")
        r = run_as(0, compile_plan(policy, tree), ["/usr/bin/touch", victim], {}, tree)
        assert r.returncode == 125 and not os.path.exists(victim)
        assert r.stderr.splitlines() == [
            f"enforcer run: landlock: {link}: resolves to / (through a symlink); write / if "
            "the whole tree is meant"]
    finally:
        os.unlink(link)


def test_grant_names_the_mount_the_workload_sees(tree: str) -> None:
    """Paths are opened after the mounts: a write grant for /tmp is a grant
    for the policy's tmpfs there (opened before the mount, it would name the
    directory beneath it, and the write would fail)."""
    policy = write_policy(tree, "ll-tmpfs", "filesystem:\n  tmpfs: [/tmp]\nnamespaces: [mount]\n"
                          "landlock:\n  filesystem:\n    read: [/]\n    write: [/tmp]\n"
                          "    execute: [/]\n")
    r = run_as(0, compile_plan(policy, tree), ["/bin/sh", "-c",
               "echo x > /tmp/inside && ls /tmp && touch /var/tmp/x-$$ || echo denied"], {}, tree)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["inside", "denied"]
