"""Fixtures for end-to-end tests that need a real container engine.

`dockerd` (session scope) starts a private Docker engine that touches
nothing of the host's own Docker setup:

* --data-root, --exec-root, the pidfile, the API socket and daemon.json
  all live in one temporary directory;
* no networking changes: --iptables=false --ip6tables=false --bridge=none
  (containers run with `--network none`);
* its containers' cgroups sit under one cgroup parent of its own
  (cgroupfs driver), removed at the end;
* the vfs storage driver, so no overlay mounts are left behind.

The finalizer removes every container, stops dockerd (and its managed
containerd), unmounts whatever is still mounted under the temporary
directory, removes the cgroup parent and deletes the directory, and removes
what the engine created at fixed paths (/etc/docker/key.json, /run/docker,
/run/containerd/s) if they were not there before, even when tests failed. `busybox_image` imports a busybox rootfs as an image
(no registry needed). Use them with @pytest.mark.docker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests import session
from tests.e2e.rootfs import build_busybox_rootfs, docker_import

# Paths dockerd and containerd create whatever --data-root/--exec-root say
# (the engine key, the plugin socket dir, the shims' socket dir). Whatever of
# these did not exist before the fixture started is removed at the end.
FIXED_PATHS = ("/etc/docker/key.json", "/etc/docker", "/run/docker/plugins", "/run/docker",
               "/run/containerd/s", "/run/containerd")

DOCKERD = shutil.which("dockerd")
DOCKER = shutil.which("docker")


@dataclass
class Dockerd:
    """A running private dockerd; call it like the docker CLI."""

    host: str  # unix:///…/docker.sock
    root: str  # the temporary directory holding everything
    cgroup_parent: str

    def __call__(self, *args: str, stdin: Any = None, input: str | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert DOCKER is not None
        return subprocess.run([DOCKER, "-H", self.host, *args], stdin=stdin, input=input,
                              capture_output=True, text=True, timeout=timeout)


def _mounts_under(path: str) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == path or mount_point.startswith(path.rstrip("/") + "/"):
                found.append(mount_point)
    return sorted(found, key=len, reverse=True)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    if DOCKERD is None or DOCKER is None:
        pytest.skip("dockerd/docker are not installed")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    with session.host_lock("dockerd"):
        yield from _private_dockerd()


def _private_dockerd() -> Iterator[Dockerd]:
    assert DOCKERD is not None
    existed = {p for p in FIXED_PATHS if os.path.lexists(p)}
    # Short path: containerd's sockets live under exec-root (sun_path is 108 bytes).
    root = session.mkdtemp("enf-dockerd-", dir="/tmp")
    sock = os.path.join(root, "docker.sock")
    config = os.path.join(root, "daemon.json")
    with open(config, "w") as f:
        json.dump({}, f)
    cgroup_parent = f"/enforcer-e2e-docker-{session.TAG}"
    log = open(os.path.join(root, "dockerd.log"), "wb")
    cmd = [
        DOCKERD, "--iptables=false", "--ip6tables=false", "--bridge=none",
        "--ip-masq=false", "--ip-forward=false", "--userland-proxy=false",
        "--data-root", os.path.join(root, "data"), "--exec-root", os.path.join(root, "x"),
        "--pidfile", os.path.join(root, "docker.pid"), "--host", f"unix://{sock}",
        "--config-file", config, "--storage-driver", "vfs",
        "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", cgroup_parent,
        "--log-level", "warn",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    daemon = Dockerd(host=f"unix://{sock}", root=root, cgroup_parent=cgroup_parent)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}: "
                                   + open(log.name, errors="replace").read()[-2000:])
            if os.path.exists(sock) and daemon("version", timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("dockerd did not answer within 60 s: "
                                   + open(log.name, errors="replace").read()[-2000:])
            time.sleep(0.2)
        yield daemon
    finally:
        if proc.poll() is None and os.path.exists(sock):
            ids = daemon("ps", "-aq", timeout=30).stdout.split()
            if ids:
                daemon("rm", "-f", *ids, timeout=60)
        _stop(proc)
        log.close()
        for mount_point in _mounts_under(root):
            subprocess.run(["umount", "-l", mount_point], capture_output=True)
        session.remove_cgroup_tree(cgroup_parent)
        session.remove_tree(root)
        session.remove_new_paths(FIXED_PATHS, existed)


@pytest.fixture(scope="session")
def busybox_image(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image named enforcer-e2e-busybox made from a busybox rootfs."""
    rootfs = build_busybox_rootfs(str(tmp_path_factory.mktemp("busybox-image") / "rootfs"))
    return docker_import(dockerd, rootfs, "enforcer-e2e-busybox:latest")
