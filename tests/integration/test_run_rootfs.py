"""A policy's `filesystem.rootfs` is a usable root under every shipped
policy: a busybox tree gets a minimal /dev of its own, a /proc and a
read-only /sys; a shell runs, /dev/null works, and writes outside the
policy's writable paths fail. Real kernel, real mounts (in the workload's
own mount namespace; the host's mount table is checked by conftest)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs

from run_helpers import enforcer_run, require_root, scratch_dir

pytestmark = pytest.mark.root

SHIPPED = ("sandbox", "default", "restricted", "web-server", "batch-job")
# Policies whose root is read-only: only their tmpfs paths are writable.
READ_ONLY_ROOT = {"sandbox", "restricted", "web-server", "batch-job"}

SCRIPT = "; ".join([
    "echo x > /dev/null && echo NULL-OK",
    "head -c 4 /dev/urandom | wc -c",
    "test -c /dev/zero && test -c /dev/full && test -c /dev/tty && test -c /dev/random && echo NODES",
    "test -d /dev/pts && test -L /dev/ptmx && test -d /dev/shm && echo PTS-SHM",
    "test -r /proc/self/status && echo PROC",
    "touch /tmp/f && echo TMP-WRITABLE",
    "(echo x > /etc/probe) 2>/dev/null && echo ETC-WRITABLE || echo ETC-REFUSED",
    "(echo x > /proc/sys/kernel/hostname) 2>/dev/null && echo PROCSYS-WRITABLE || echo PROCSYS-REFUSED",
    "ls /dev | tr '\\n' ' '; echo",
])


@pytest.fixture(scope="module")
def rootfs() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-rootfs-")
    build_busybox_rootfs(os.path.join(d, "rootfs"))
    yield d
    session.remove_tree(d)


@pytest.mark.parametrize("base", SHIPPED)
def test_busybox_rootfs_under_every_shipped_policy(rootfs: str, base: str) -> None:
    root = os.path.join(rootfs, "rootfs")
    policy = os.path.join(rootfs, f"on-{base}.yaml")
    with open(policy, "w") as f:
        f.write(f"version: 1\nname: busybox-{base}\nextends: {base}\n"
                f"filesystem:\n  rootfs: {root}\n")
    r = enforcer_run(["--policy", policy, "--", "/bin/sh", "-c", SCRIPT],
                     env={"PATH": "/bin"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    etc = "ETC-REFUSED" if base in READ_ONLY_ROOT else "ETC-WRITABLE"
    assert lines[:8] == ["NULL-OK", "4", "NODES", "PTS-SHM", "PROC", "TMP-WRITABLE", etc,
                         "PROCSYS-REFUSED"], r.stdout + r.stderr
    # Only the pseudo-devices: none of the host's disks or terminals.
    assert lines[8].split() == ["fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
                                "stderr", "stdin", "stdout", "tty", "urandom", "zero"]
    assert not os.path.exists(os.path.join(root, "etc", "probe")) or base not in READ_ONLY_ROOT
    if os.path.exists(os.path.join(root, "etc", "probe")):
        os.unlink(os.path.join(root, "etc", "probe"))
    # The rootfs on disk has no device nodes and nothing in /dev from us.
    assert os.listdir(os.path.join(root, "dev")) == []


def test_rootfs_proc_is_the_pid_namespaces_own(rootfs: str) -> None:
    root = os.path.join(rootfs, "rootfs")
    policy = os.path.join(rootfs, "pidns.yaml")
    with open(policy, "w") as f:
        f.write(f"version: 1\nname: busybox-pidns\nextends: sandbox\n"
                f"filesystem:\n  rootfs: {root}\n")
    r = enforcer_run(["--policy", policy, "--", "/bin/sh", "-c",
                      "echo $$; ls /proc | grep -c '^[0-9]'"], env={"PATH": "/bin"})
    assert r.returncode == 0, r.stderr
    pid, count = r.stdout.split()
    assert pid == "2" and int(count) <= 4
