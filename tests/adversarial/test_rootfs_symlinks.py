"""A policy's `filesystem.rootfs` belongs to whoever built the tree (an
image author): its symlinks must be resolved inside it, never by the host.

The image makes a mount target a symlink -- `tmp -> /etc`, `dev -> <a host
directory>`, `proc -> <a host directory>` -- hoping that enforcer mounts
(and creates mount points and device files) where the link points on the
host. Resolved inside the root (openat2 RESOLVE_IN_ROOT, enforcer/inroot.py),
an absolute link restarts at the top of the rootfs, so every mount and
every mkdir stays inside it; a link that leads nowhere inside the root
fails closed.

Before the fix, the first test failed: the policy's tmpfs for /tmp was
mounted on the host's /etc (in the workload's mount namespace), so the
workload's writes to /tmp reached the rootfs's /etc on disk; the second
failed because /dev and /proc stayed empty (the devices and /proc went to
the host directories the links named).
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs

from run_helpers import enforcer_run, require_root, scratch_dir

pytestmark = pytest.mark.root


@pytest.fixture
def scratch() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-rootfs-attack-")
    yield d
    session.remove_tree(d)


def write_policy(directory: str, name: str, body: str) -> str:
    path = os.path.join(directory, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"version: 1\nname: {name}\n{body}")
    return path


def test_tmpfs_target_symlink_is_resolved_inside_the_rootfs(scratch: str) -> None:
    root = build_busybox_rootfs(os.path.join(scratch, "rootfs"))
    os.rmdir(os.path.join(root, "tmp"))
    os.symlink("/etc", os.path.join(root, "tmp"))
    policy = write_policy(scratch, "tmp-link", (
        f"filesystem:\n  rootfs: {root}\n  tmpfs: [/tmp]\nnamespaces: [mount]\n"))
    r = enforcer_run(["--policy", policy, "--", "/bin/sh", "-c", "echo x > /tmp/probe"],
                     env={"PATH": "/bin"})
    assert r.returncode == 0, r.stderr
    # The write went to the policy's tmpfs (on the rootfs's /etc, where the
    # image's link leads inside the root), not to the rootfs on disk.
    assert not os.path.exists(os.path.join(root, "etc", "probe"))


def test_dev_and_proc_symlinks_create_nothing_on_the_host(scratch: str) -> None:
    root = build_busybox_rootfs(os.path.join(scratch, "rootfs"))
    outside = {name: os.path.join(scratch, f"host-{name}") for name in ("dev", "proc", "data")}
    for name, host_dir in outside.items():
        os.mkdir(host_dir)
        # The same path exists inside the rootfs: that is where the link leads there.
        os.makedirs(root + host_dir)
        target = os.path.join(root, name)
        if os.path.isdir(target):
            os.rmdir(target)
        os.symlink(host_dir, target)
    policy = write_policy(scratch, "dev-link", (
        f"filesystem:\n  rootfs: {root}\n  private_devices: true\n"
        "  tmpfs: [/dev/shm, /data/scratch]\nnamespaces: [mount, pid]\n"))
    r = enforcer_run(["--policy", policy, "--", "/bin/sh", "-c",
                      "echo ok > /dev/null && test -c /dev/null && echo DEV-OK; "
                      "test -r /proc/self/status && echo PROC-OK; "
                      "touch /data/scratch/f && echo DATA-OK"],
                     env={"PATH": "/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["DEV-OK", "PROC-OK", "DATA-OK"]
    for host_dir in outside.values():
        assert os.listdir(host_dir) == [], f"{host_dir} was written through the rootfs's symlink"
    assert os.listdir(root + outside["data"]) == ["scratch"]  # the mount point, in the root


def test_dangling_link_fails_closed(scratch: str) -> None:
    root = build_busybox_rootfs(os.path.join(scratch, "rootfs"))
    host_dir = os.path.join(scratch, "host-tmp")
    os.mkdir(host_dir)
    os.rmdir(os.path.join(root, "tmp"))
    os.symlink(host_dir, os.path.join(root, "tmp"))  # nothing there inside the root
    policy = write_policy(scratch, "dangling", (
        f"filesystem:\n  rootfs: {root}\n  tmpfs: [/tmp]\nnamespaces: [mount]\n"))
    r = enforcer_run(["--policy", policy, "--", "/bin/true"], env={"PATH": "/bin"})
    assert r.returncode == 125
    assert r.stderr.strip() == (
        f"enforcer run: mounts: tmpfs /tmp in the rootfs {root}: ENOENT (No such file or "
        "directory): the rootfs's symlink leads nowhere inside it; enforcer creates no mount "
        "point through it")
    assert os.listdir(host_dir) == []
