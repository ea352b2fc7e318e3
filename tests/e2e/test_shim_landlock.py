"""Landlock in containers, end to end with the real runc: the shim starts the
container's process and every `runc exec` process through the static
helper, so a container writes, reads and executes only where its policy
lets it; and what the shim refuses, in one line. The attacks on the helper
are in tests/adversarial/test_landlock_attacks.py.

Each test builds its own bundle and force-deletes its container.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from typing import Any

import pytest

from tests.e2e.rootfs import runc_spec_bundle
from tests.landlock_containers import (  # noqa: F401 (fixtures)
    POLICY, WRITES, _needs_root_runc_and_landlock, bundle_for, container_id, env, helper, plans,
    rootfs_src, wait_running, writable)
from tests.shim_helpers import RUNC, run_shim, run_shim_files

pytestmark = [pytest.mark.runc, pytest.mark.root, pytest.mark.usefixtures("shim_front_end")]


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


def test_exec_processes_are_confined_and_cannot_replace_the_helper(
        tmp_path: Any, rootfs_src: str, env: dict[str, str], container_id: str) -> None:
    bundle = bundle_for(str(tmp_path / "b"), rootfs_src, ["/bin/sleep", "60"])
    rc, _, err = run_shim_files(["--policy", env["LL_POLICY"], "run", "-d", "--bundle", bundle,
                                 container_id], env, str(tmp_path))
    assert rc == 0, err
    wait_running(container_id)
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
        f"enforcer-runc: landlock helper {loose}/enforcer-landlock: its directory {loose} must "
        "be owned by root and writable by no one else"]
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
