"""Landlock in containers, end to end with the real runc: the shim starts the
container's process and every `runc exec` process through the static
helper, so a container writes, reads and executes only where its policy
lets it -- and the image cannot take the helper's place.

Busybox is static, so the policies below need no loader in `execute`.
Each test builds its own bundle and force-deletes its container.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from typing import Any, Iterator

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, runc_spec_bundle
from tests.shim_helpers import REPO, RUNC, force_delete, run_shim, run_shim_files

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.usefixtures("shim_front_end")]

PYTHON = os.path.join(REPO, ".venv", "bin", "python")

POLICY = """name: {name}
extends: default
landlock:
  filesystem:
    read: [/]
    write: [/var/lib/app, /dev/null]
    execute: [/bin]
  scope: [signal, abstract-unix-socket]
"""

# Writes anywhere (/dev, where the helper is, included); executes only /bin.
WIDE_POLICY = """name: {name}
extends: default
landlock:
  filesystem:
    read: [/]
    write: [/]
    execute: [/bin]
"""

# Writes to three places, one granted; prints what happened.
WRITES = ("echo ok > /var/lib/app/x && cat /var/lib/app/x; "
          "echo no > /tmp/x 2>/dev/null && echo tmp-written || echo tmp-denied; "
          "echo no > /etc/x 2>/dev/null && echo etc-written || echo etc-denied")


def writable(config: dict[str, Any]) -> dict[str, Any]:
    """`runc spec` makes the root read-only; these tests need Landlock to be
    what stops a write."""
    config["root"]["readonly"] = False
    return config


def bundle_for(path: str, rootfs_src: str, args: list[str]) -> str:
    return runc_spec_bundle(path, rootfs_src, args, writable)


@pytest.fixture(scope="module", autouse=True)
def _needs_root_runc_and_landlock() -> None:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")
    from enforcer.apply.landlock import kernel_abi

    if kernel_abi() < 6:
        pytest.skip("needs Landlock ABI 6")


@pytest.fixture(scope="module")
def rootfs_src(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_busybox_rootfs(str(tmp_path_factory.mktemp("ll-rootfs") / "rootfs"))


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The helper as a node has it: root-owned, in a directory only root writes."""
    d = tmp_path_factory.mktemp("ll-helper")
    os.chmod(d, 0o755)
    path = str(d / "enforcer-landlock")
    subprocess.run([PYTHON, "-m", "enforcer.shim.frontend", "--landlock", path], check=True,
                   capture_output=True, cwd=REPO)
    return path


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The policy compiled into a plans_dir, as a node installs it: `runc
    exec` finds the container's policy there by name."""
    d = tmp_path_factory.mktemp("ll-plans")
    for name, text in (("ll-container", POLICY), ("ll-wide", WIDE_POLICY)):
        policy = d / f"{name}.yaml"
        policy.write_text(text.format(name=name))
        subprocess.run([PYTHON, "-m", "enforcer", "compile", str(policy), "-o",
                        str(d / f"{name}.json")], check=True, capture_output=True, cwd=REPO)
    return str(d)


@pytest.fixture
def env(tmp_path: Any, helper: str, plans: str) -> dict[str, str]:
    (tmp_path / "shim.json").write_text(json.dumps({"runc": RUNC, "landlock_helper": helper,
                                                    "plans_dir": plans}))
    return {"ENFORCER_RUNTIME_DIR": str(tmp_path / "run"),
            "ENFORCER_SHIM_CONFIG": str(tmp_path / "shim.json"),
            "ENFORCER_CACHE_DIR": str(tmp_path / "plan-cache"),
            "LL_POLICY": "ll-container"}


@pytest.fixture
def container_id() -> Iterator[str]:
    cid = session.unique("enf-ll-")
    yield cid
    force_delete(cid)
    force_delete(cid + "-plain")


def test_container_writes_only_where_its_policy_lets_it(tmp_path: Any, rootfs_src: str,
                                                        env: dict[str, str],
                                                        container_id: str) -> None:
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sh", "-c", WRITES])
    plain = subprocess.run([RUNC, "run", "--bundle", bundle, container_id + "-plain"],
                           capture_output=True, text=True, timeout=60)
    assert plain.stdout.split() == ["ok", "tmp-written", "etc-written"], plain.stderr
    bundle = bundle_for(str(tmp_path / "c"), rootfs_src, ["/bin/sh", "-c", WRITES])
    r = run_shim(["--policy", env["LL_POLICY"], "run", "--bundle", bundle, container_id],
                 env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "tmp-denied", "etc-denied"], r.stdout + r.stderr
    config = json.load(open(os.path.join(bundle, "config.json")))
    assert config["process"]["args"][0] == "/dev/.enforcer-landlock"
    assert config["process"]["args"][-3:] == ["/bin/sh", "-c", WRITES]
    assert config["mounts"][-1]["destination"] == "/dev/.enforcer-landlock"
    assert "ro" in config["mounts"][-1]["options"]


def _wait_running(container_id: str) -> None:
    deadline = time.monotonic() + 30
    while '"running"' not in subprocess.run([RUNC, "state", container_id],
                                            capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, "container did not start"
        time.sleep(0.05)


def test_exec_processes_are_confined_and_cannot_replace_the_helper(
        tmp_path: Any, rootfs_src: str, env: dict[str, str], container_id: str) -> None:
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sleep", "60"])
    rc, _, err = run_shim_files(["--policy", env["LL_POLICY"], "run", "-d", "--bundle", bundle,
                                 container_id], env, str(tmp_path))
    assert rc == 0, err
    _wait_running(container_id)
    # `runc exec ID CMD...`: the command-line form
    r = run_shim(["exec", container_id, "/bin/sh", "-c", WRITES], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "tmp-denied", "etc-denied"], r.stdout + r.stderr
    # `runc exec --process FILE ID` (what Docker and containerd use)
    process = json.load(open(os.path.join(bundle, "config.json")))["process"]
    process["args"] = ["/bin/sh", "-c", WRITES]
    spec = tmp_path / "process.json"
    spec.write_text(json.dumps(process))
    r = run_shim(["exec", "--process", str(spec), container_id], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "tmp-denied", "etc-denied"], r.stdout + r.stderr
    # The attack: a process of the container (root in it) overwrites or
    # covers the helper, so that the next exec would run unconfined.
    attack = ("cp /bin/busybox /dev/.enforcer-landlock 2>/dev/null && echo replaced; "
              "mount --bind /bin/busybox /dev/.enforcer-landlock 2>/dev/null && echo covered; "
              "umount /dev/.enforcer-landlock 2>/dev/null && echo unmounted; echo tried")
    r = run_shim(["exec", container_id, "/bin/sh", "-c", attack], env=env)
    assert r.stdout.split() == ["tried"], r.stdout + r.stderr
    r = run_shim(["exec", container_id, "/bin/sh", "-c", WRITES], env=env)
    assert r.stdout.split() == ["ok", "tmp-denied", "etc-denied"], r.stdout + r.stderr


def test_helper_cannot_be_overwritten_where_the_policy_allows_writes(
        tmp_path: Any, rootfs_src: str, env: dict[str, str], container_id: str) -> None:
    """Root in the container may write everywhere under this policy, but the
    helper is a read-only bind mount: the next exec still runs the real
    helper. (With a read-write bind, `replaced` and then `ran-unconfined`.)"""
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sleep", "60"])
    rc, _, err = run_shim_files(["--policy", "ll-wide", "run", "-d", "--bundle", bundle,
                                 container_id], env, str(tmp_path))
    assert rc == 0, err
    _wait_running(container_id)
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


def test_refusals_are_one_line(tmp_path: Any, rootfs_src: str, env: dict[str, str],
                               container_id: str, helper: str) -> None:
    def no_dev_tmpfs(config: dict[str, Any]) -> dict[str, Any]:
        config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/dev"]
        return config

    bundle = runc_spec_bundle(str(tmp_path / "b"), rootfs_src, ["/bin/true"],
                              lambda c: no_dev_tmpfs(writable(c)))
    r = run_shim(["--policy", env["LL_POLICY"], "run", "--bundle", bundle, container_id],
                 env=env)
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [
        "enforcer-runc: policy ll-container: the Landlock helper is mounted in the container's "
        "/dev, which must be a tmpfs the runtime creates (so the image cannot shadow it); this "
        "config has none"]
    # a helper someone else could replace is not handed to containers
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    shutil.copy(helper, loose / "enforcer-landlock")
    cfg = json.loads(open(env["ENFORCER_SHIM_CONFIG"]).read())
    cfg["landlock_helper"] = str(loose / "enforcer-landlock")
    (tmp_path / "loose.json").write_text(json.dumps(cfg))
    bundle = bundle_for(str(tmp_path / "c"), rootfs_src, ["/bin/true"])
    r = run_shim(["--policy", env["LL_POLICY"], "run", "--bundle", bundle, container_id],
                 env={**env, "ENFORCER_SHIM_CONFIG": str(tmp_path / "loose.json")})
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [
        f"enforcer-runc: landlock helper {loose}/enforcer-landlock: its directory must be "
        "owned by root and writable by no one else"]
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o777
    # a policy asking for a newer ABI than the kernel's
    from enforcer.apply.landlock import kernel_abi

    abi = kernel_abi()
    newer = tmp_path / "ll-newer.yaml"
    newer.write_text(POLICY.format(name="ll-newer").replace("landlock:\n",
                                                            f"landlock:\n  abi: {abi + 1}\n"))
    bundle = bundle_for(str(tmp_path / "d"), rootfs_src, ["/bin/true"])
    r = run_shim(["--policy", str(newer), "run", "--bundle", bundle, container_id], env=env)
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [
        f"enforcer-runc: policy ll-newer: landlock: the policy requires Landlock ABI {abi + 1} "
        f"(landlock.abi); this kernel has ABI {abi}"]
