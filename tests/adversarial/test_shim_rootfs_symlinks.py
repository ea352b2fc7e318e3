"""Hole 1 of the trust-boundary issue: a writable path must never reach the host.

The attacker is the image author: the rootfs is theirs, symlinks and all.
Under a policy with a read-only root and a writable path, the shim used to
build the bind source as `bundle/rootfs + path` and let the host resolve
it, so an image shipping `/var/cache/app -> /some/host/dir` (or a relative
link with enough `..`) got that host directory bound read-write into the
container. A Plan whose mount path climbs out with `..` did the same.

Each attack runs for real: a busybox rootfs with the attacker's links, the
real runc behind the shim (both front ends), and a container that tries to
write through the path. The host directory the links point at is a fresh
scratch directory of this test (never a real system path): whatever gets
through would land there, and the test asserts it stays empty.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from enforcer.plan import MountOp
from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.shim_helpers import (
    RUNC,
    force_delete,
    make_plan,
    run_shim,
    run_shim_files,
    write_plan,
)

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.usefixtures("shim_front_end")]


@pytest.fixture(scope="module", autouse=True)
def _needs_root_and_runc() -> None:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")


@pytest.fixture(scope="module")
def rootfs_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("symlink-rootfs") / "rootfs"))


@pytest.fixture
def host_dir():
    """The host directory the attacker's links aim at: empty, and must stay so."""
    path = session.mkdtemp("enf-hostdir-", dir="/tmp")
    try:
        yield path
    finally:
        session.remove_tree(path)


@pytest.fixture
def container_id():
    cid = session.unique("enf-symlink-")
    yield cid
    force_delete(cid)


def _plan_env(tmp_path, *writable: str) -> dict[str, str]:
    """A shim configuration whose policy `attack` has a read-only root and
    these writable paths (no seccomp filter: the runc spec config has none)."""
    plans = tmp_path / "plans"
    plans.mkdir(exist_ok=True)
    mounts = (MountOp(kind="readonly", path="/"),) + tuple(
        MountOp(kind="writable", path=p) for p in writable)
    write_plan(str(plans / "attack.json"),
               make_plan(policy_name="attack", seccomp=None, mounts=mounts))
    (tmp_path / "shim.json").write_text(json.dumps({"runc": RUNC, "plans_dir": str(plans)}))
    return {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache")}


def _bundle(tmp_path, rootfs_src: str, links: dict[str, str], script: str) -> str:
    bundle = runc_spec_bundle(str(tmp_path / "bundle"), rootfs_src, ["/bin/sh", "-c", script])
    rootfs = os.path.join(bundle, "rootfs")
    for link, target in links.items():
        path = os.path.join(rootfs, link.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    return bundle


def _run(bundle: str, container_id: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_shim(["--policy", "attack", "run", "--bundle", bundle, container_id], env=env)


def _staging_left(env: dict[str, str], timeout: float = 10) -> list[str]:
    """Mounts the shim left under its runtime directory (there must be none).

    A foreground `run` releases them with its registry record, in a
    detached process, once runc has exited: give it a moment."""
    root = os.path.realpath(env["ENFORCER_RUNTIME_DIR"])
    deadline = time.monotonic() + timeout
    while True:
        left = session.mounts_under(root) if os.path.isdir(root) else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


WRITE = "echo pwned > /var/cache/app/probe && echo WROTE || echo DENIED"


def test_absolute_symlink_to_a_host_directory_is_not_bound(tmp_path, rootfs_src, host_dir,
                                                          container_id) -> None:
    env = _plan_env(tmp_path, "/var/cache/app")
    bundle = _bundle(tmp_path, rootfs_src, {"/var/cache/app": host_dir}, WRITE)
    r = _run(bundle, container_id, env)
    assert os.listdir(host_dir) == [], f"the container wrote into the host: {r.stdout}{r.stderr}"
    # Resolved inside the container's root, the link names a directory the
    # image does not have: the shim refuses, naming the path.
    assert r.returncode == 125, r.stdout + r.stderr
    assert "/var/cache/app" in r.stderr and "not a directory" in r.stderr, r.stderr
    assert _staging_left(env) == []


def test_relative_symlink_climbing_out_with_dotdot_is_not_bound(tmp_path, rootfs_src, host_dir,
                                                               container_id) -> None:
    env = _plan_env(tmp_path, "/var/cache/app")
    climb = "../" * 12 + host_dir.lstrip("/")
    bundle = _bundle(tmp_path, rootfs_src, {"/var/cache/app": climb}, WRITE)
    r = _run(bundle, container_id, env)
    assert os.listdir(host_dir) == [], f"the container wrote into the host: {r.stdout}{r.stderr}"
    assert r.returncode == 125, r.stdout + r.stderr
    assert "/var/cache/app" in r.stderr, r.stderr


def test_symlinked_parent_directory_is_not_followed_out(tmp_path, rootfs_src, host_dir,
                                                       container_id) -> None:
    """The link is a parent of the writable path, not the path itself."""
    env = _plan_env(tmp_path, "/var/cache/app")
    os.mkdir(os.path.join(host_dir, "app"))
    bundle = _bundle(tmp_path, rootfs_src, {"/var/cache": host_dir}, WRITE)
    r = _run(bundle, container_id, env)
    assert os.listdir(os.path.join(host_dir, "app")) == [], r.stdout + r.stderr
    assert r.returncode == 125, r.stdout + r.stderr


def test_plan_path_with_dotdot_is_refused(tmp_path, rootfs_src, host_dir, container_id) -> None:
    """A Plan's writable path `/var/lib/app/../../../..<host dir>`."""
    climb = "/var/lib/app/" + "../" * 12 + host_dir.lstrip("/")
    env = _plan_env(tmp_path, climb)
    bundle = _bundle(tmp_path, rootfs_src, {},
                     f"echo pwned > {climb}/probe && echo WROTE || echo DENIED")
    r = _run(bundle, container_id, env)
    assert os.listdir(host_dir) == [], f"the container wrote into the host: {r.stdout}{r.stderr}"
    assert r.returncode == 125, r.stdout + r.stderr
    assert "'..'" in r.stderr, r.stderr


def test_symlink_inside_the_root_is_followed_inside_the_root(tmp_path, rootfs_src, host_dir,
                                                            container_id) -> None:
    """What is legitimate keeps working: a link that stays in the image (as
    `/var/run -> /run` does in many images) is resolved there, the way runc
    resolves a mount destination, and only that directory becomes writable."""
    env = _plan_env(tmp_path, "/var/cache/app")
    script = ("echo ok > /var/cache/app/probe && cat /var/lib/app/probe; "
              "echo x > /etc/probe 2>/dev/null && echo ETC-WRITABLE || echo etc-read-only")
    bundle = _bundle(tmp_path, rootfs_src, {"/var/cache/app": "/var/lib/app"}, script)
    r = _run(bundle, container_id, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["ok", "etc-read-only"], r.stdout + r.stderr
    assert open(os.path.join(bundle, "rootfs", "var", "lib", "app", "probe")).read() == "ok\n"
    # runc got a bind source the image cannot swap: not a path in its rootfs.
    config = json.load(open(os.path.join(bundle, "config.json")))
    sources = [m["source"] for m in config["mounts"] if m["destination"] == "/var/cache/app"]
    assert len(sources) == 1
    assert not os.path.realpath(sources[0]).startswith(os.path.join(bundle, "rootfs"))
    assert _staging_left(env) == []
    assert os.listdir(host_dir) == []


def test_writable_path_that_is_a_file_is_refused(tmp_path, rootfs_src, container_id) -> None:
    env = _plan_env(tmp_path, "/etc/passwd")
    bundle = _bundle(tmp_path, rootfs_src, {}, "true")
    r = _run(bundle, container_id, env)
    assert r.returncode == 125 and "/etc/passwd" in r.stderr, r.stdout + r.stderr
    assert "not a directory" in r.stderr


def test_detached_create_releases_the_staging_as_soon_as_runc_returns(
        tmp_path, rootfs_src, host_dir, container_id) -> None:
    """`create` (what Docker and containerd use): the staging mount exists
    only while runc makes the container's mounts. Swapping the directory
    for a link to the host after the check reaches nothing on the host."""
    env = _plan_env(tmp_path, "/var/lib/app")
    bundle = _bundle(tmp_path, rootfs_src, {}, "echo late > /var/lib/app/probe")
    rc, out, err = run_shim_files(["--policy", "attack", "create", "--bundle", bundle,
                                   container_id], env, str(tmp_path))
    assert rc == 0, out + err
    assert _staging_left(env, timeout=0) == []
    assert os.listdir(os.path.join(env["ENFORCER_RUNTIME_DIR"], "mounts")) == []
    app = os.path.join(bundle, "rootfs", "var", "lib", "app")
    os.rename(app, app + ".old")
    os.symlink(host_dir, app)
    started = subprocess.run([RUNC, "start", container_id], capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = subprocess.run([RUNC, "state", container_id], capture_output=True, text=True)
        if '"stopped"' in state.stdout:
            break
        time.sleep(0.05)
    assert '"stopped"' in state.stdout
    assert os.listdir(host_dir) == []


def test_a_policy_with_dotdot_in_a_writable_path_is_refused_with_its_line(tmp_path) -> None:
    from enforcer.errors import PolicyErrors
    from enforcer.policy.loader import load_policy

    policy = tmp_path / "climb.yaml"
    policy.write_text("version: 1\nname: climb\nfilesystem:\n  read_only_root: true\n"
                      "  writable_paths: [/var/lib/app/../../../etc]\n")
    with pytest.raises(PolicyErrors) as err:
        load_policy(str(policy))
    assert f"{policy}:5" in str(err.value) and "'..'" in str(err.value)


def test_staging_left_by_a_killed_shim_is_swept(tmp_path) -> None:
    """A shim killed between staging and release leaves a staging mount;
    the next container that stages removes it (its owner is gone)."""
    from enforcer.shim.staging import Stager

    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = str(tmp_path / "run")
    left = Stager(run, "gone", dead.pid)
    source = left.stage(str(rootfs), "/data")
    assert session.mounts_under(source) == [source]
    fresh = Stager(run, "next", os.getpid())
    try:
        fresh.stage(str(rootfs), "/data")
        assert session.mounts_under(source) == [] and not os.path.exists(source)
    finally:
        fresh.release()
    assert session.mounts_under(run) == []


def test_staging_asks_the_runner_first_and_leaves_nothing_when_handed_over(tmp_path) -> None:
    """enforcer-shimd may not mount (its unit grants no CAP_SYS_ADMIN): the
    stager asks first, and the server hands the request to the front end's
    Python shim, which makes the mounts with its caller's privileges."""
    from enforcer.shim.staging import Stager

    class HandedOver(Exception):
        pass

    def hand_over() -> None:
        raise HandedOver()

    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    run = tmp_path / "run"
    stager = Stager(str(run), "c1", os.getpid(), before_mount=hand_over)
    with pytest.raises(HandedOver):
        stager.stage(str(rootfs), "/data")
    assert session.mounts_under(str(tmp_path)) == []
    assert not (run / "mounts").exists()
