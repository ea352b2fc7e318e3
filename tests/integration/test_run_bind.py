"""`filesystem.bind` for real: host paths made visible where the policy
says, read-only or writable, inside the policy's own tmpfs (as bwrap's
--tmpfs /tmp --bind SRC /tmp/x), from a source the policy's tmpfs covers,
and `tmpfs_remove`. Real kernel, in the workload's own mount namespace."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests import session

from run_helpers import enforcer_run, require_root, scratch_dir

pytestmark = pytest.mark.root


@pytest.fixture
def tree() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-bind-")
    for sub in ("conf", "data", "data-target"):
        os.mkdir(os.path.join(d, sub))
    os.chmod(os.path.join(d, "data"), 0o777)  # the dynamic user of `restricted` writes there
    with open(os.path.join(d, "conf", "app.conf"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(d, "single-file"), "w") as f:
        f.write("one file\n")
    yield d
    session.remove_tree(d)


def policy(d: str, body: str, name: str = "bind-test") -> str:
    path = os.path.join(d, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"version: 1\nname: {name}\nextends: restricted\nfilesystem:\n{body}")
    return path


def test_binds_read_only_writable_and_inside_the_tmpfs(tree: str) -> None:
    p = policy(tree, (
        "  bind:\n"
        f"    - {{source: {tree}/conf, target: /tmp/app/conf, read_only: true}}\n"
        f"    - {{source: {tree}/data, target: {tree}/data-target}}\n"
        f"    - {{source: {tree}/single-file, target: /tmp/one, read_only: true}}\n"))
    script = "; ".join([
        "cat /tmp/app/conf/app.conf",
        "(echo x > /tmp/app/conf/new) 2>/dev/null && echo CONF-WRITABLE || echo CONF-RO",
        f"echo written > {tree}/data-target/new && echo DATA-RW",
        "cat /tmp/one",
        "touch /tmp/scratch && echo TMP-STILL-TMPFS",
    ])
    r = enforcer_run(["--policy", p, "--", "sh", "-c", script])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello", "CONF-RO", "DATA-RW", "one file", "TMP-STILL-TMPFS"]
    # The writable bind wrote through to the host's source; nothing else did.
    assert open(os.path.join(tree, "data", "new")).read() == "written\n"
    assert os.listdir(os.path.join(tree, "conf")) == ["app.conf"]
    assert os.listdir(os.path.join(tree, "data-target")) == []


def test_source_below_the_policys_tmpfs_is_the_hosts() -> None:
    require_root()
    src = session.mkdtemp("enforcer-bind-src-", dir="/tmp")
    d = scratch_dir("enforcer-bind-")
    try:
        os.chmod(src, 0o755)
        with open(os.path.join(src, "f"), "w") as f:
            f.write("from the host's /tmp\n")
        p = policy(d, f"  bind:\n    - {{source: {src}, target: /tmp/seen, read_only: true}}\n")
        r = enforcer_run(["--policy", p, "--", "sh", "-c", f"cat /tmp/seen/f; ls {src} 2>&1 "
                          "| grep -c 'No such'"])
        assert r.returncode == 0, r.stderr
        # Visible at the target; the source path itself is hidden by the tmpfs.
        assert r.stdout.splitlines() == ["from the host's /tmp", "1"]
    finally:
        session.remove_tree(src)
        session.remove_tree(d)


def test_missing_target_on_the_host_fails_closed(tree: str) -> None:
    p = policy(tree, f"  bind:\n    - {{source: {tree}/conf, target: {tree}/nowhere}}\n")
    r = enforcer_run(["--policy", p, "--", "true"])
    assert r.returncode == 125
    assert r.stderr.strip() == (
        f"enforcer run: mounts: bind {tree}/nowhere: ENOENT (No such file or directory): path "
        "does not exist (enforcer makes mount points only inside a rootfs or a tmpfs of the "
        "policy, never in a bind's host source)")
    assert not os.path.exists(os.path.join(tree, "nowhere"))


def test_no_mount_point_is_made_in_a_binds_host_source(tree: str) -> None:
    p = policy(tree, (f"  bind:\n    - {{source: {tree}/data, target: /tmp/data}}\n"
                      "  tmpfs: [/tmp/data/cache]\n"))
    r = enforcer_run(["--policy", p, "--", "true"])
    assert r.returncode == 125
    assert "tmpfs /tmp/data/cache: ENOENT" in r.stderr and "never in a bind's" in r.stderr
    assert os.listdir(os.path.join(tree, "data")) == []


def test_missing_source_fails_closed(tree: str) -> None:
    p = policy(tree, f"  bind:\n    - {{source: {tree}/gone, target: /tmp/x}}\n")
    r = enforcer_run(["--policy", p, "--", "true"])
    assert r.returncode == 125
    assert r.stderr.strip() == (
        f"enforcer run: mounts: bind /tmp/x: source {tree}/gone: ENOENT (No such file or "
        "directory): source does not exist on the host")


def test_tmpfs_remove_shows_the_hosts_directory(tree: str) -> None:
    marker = session.mkdtemp("enforcer-tmpfs-remove-", dir="/tmp")
    try:
        p = policy(tree, "  tmpfs_remove: [/tmp]\n")
        r = enforcer_run(["--policy", p, "--", "sh", "-c", f"test -d {marker} && echo HOST-TMP"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "HOST-TMP"
    finally:
        session.remove_tree(marker)
