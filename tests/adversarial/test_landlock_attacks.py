"""Attacks on the shim's Landlock helper by an image author and by a root
process in the container, with the real runc: the image cannot widen a
grant with a symlink or provide its own "helper", and a process of the
container cannot overwrite the helper so that the next `runc exec` runs
unconfined. Each was run against the code without its defence and failed
there (noted in each test). The `enforcer run` case of the symlink attack
is tests/integration/test_run_landlock.py::test_symlink_to_root_does_not_widen_a_grant.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.landlock_containers import (  # noqa: F401 (fixtures)
    WRITES, _needs_root_runc_and_landlock, bundle_for, container_id, env, helper, plans,
    rootfs_src, wait_running)
from tests.shim_helpers import run_shim, run_shim_files

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.usefixtures("shim_front_end")]


def test_helper_cannot_be_overwritten_where_the_policy_allows_writes(
        tmp_path: Any, rootfs_src: str, env: dict[str, str], container_id: str) -> None:
    """Root in the container may write everywhere under this policy, but the
    helper is a read-only bind mount: the next exec still runs the real
    helper. (With a read-write bind, `replaced` and then `ran-unconfined`.)"""
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sleep", "60"])
    rc, _, err = run_shim_files(["--policy", "ll-wide", "run", "-d", "--bundle", bundle,
                                 container_id], env, str(tmp_path))
    assert rc == 0, err
    wait_running(container_id)
    r = run_shim(["exec", container_id, "/bin/sh", "-c",
                  "cp /bin/busybox /dev/.enforcer-landlock && echo replaced; echo tried"],
                 env=env)
    assert r.stdout.split() == ["tried"], r.stdout + r.stderr
    assert "Read-only file system" in r.stderr
    r = run_shim(["exec", container_id, "/bin/sh", "-c",
                  "cp /bin/busybox /tmp/bb && /tmp/bb true && echo ran-unconfined "
                  "|| echo exec-denied"], env=env)
    assert r.stdout.split() == ["exec-denied"], r.stdout + r.stderr


def test_image_symlink_does_not_widen_a_grant(tmp_path: Any, rootfs_src: str,
                                              env: dict[str, str], container_id: str) -> None:
    """The image makes the granted /var/lib/app a symlink to /: the helper
    refuses to start the container instead of granting writes everywhere.
    (Against a helper without the check: etc-written.)"""
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sh", "-c", WRITES])
    app = os.path.join(bundle, "rootfs", "var", "lib", "app")
    os.rmdir(app)
    os.symlink("/", app)
    r = run_shim(["--policy", env["LL_POLICY"], "run", "--bundle", bundle, container_id],
                 env=env)
    assert r.returncode == 125
    assert "etc-written" not in r.stdout and "ok" not in r.stdout.split()
    assert r.stderr.strip().splitlines()[-1] == (
        "enforcer-landlock: landlock: /var/lib/app: resolves to / (through a symlink); "
        "write / if the whole tree is meant")


def test_image_cannot_provide_the_helper(tmp_path: Any, rootfs_src: str, env: dict[str, str],
                                         container_id: str) -> None:
    """An image that ships its own /dev/.enforcer-landlock (a script that
    just runs its arguments) is not what runs: /dev is the runtime's tmpfs,
    and the real helper is bind-mounted on top."""
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sh", "-c", WRITES])
    fake = os.path.join(bundle, "rootfs", "dev", ".enforcer-landlock")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done; shift; exec \"$@\"\n")
    os.chmod(fake, 0o755)
    r = run_shim(["--policy", env["LL_POLICY"], "run", "--bundle", bundle, container_id],
                 env=env)
    assert r.stdout.split() == ["ok", "tmp-denied", "etc-denied"], r.stdout + r.stderr
