"""deploy/docker/daemon.json in a real Docker engine: a private dockerd (its
own data-root, exec-root and socket under a temp dir, no iptables, no
bridge) started with the shipped file as its --config-file accepts it and
lists one enforcer runtime per shipped policy with the shim's path and
`--policy <name>`. Running containers through the shim is the shim's own
end-to-end test (tests/e2e)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import DEPLOY, shipped_policy_names  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]


def _umount_under(root: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(root + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def test_dockerd_registers_a_runtime_per_policy() -> None:
    dockerd, docker = shutil.which("dockerd"), shutil.which("docker")
    if not dockerd or not docker:
        pytest.skip("dockerd/docker are not installed")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    with session.host_lock("dockerd"):
        _registers_a_runtime_per_policy(dockerd, docker)


def _registers_a_runtime_per_policy(dockerd: str, docker: str) -> None:
    root = session.mkdtemp("enf-deploy-dockerd-", dir="/tmp")  # short: socket paths
    sock = f"unix://{root}/docker.sock"
    log = open(os.path.join(root, "dockerd.log"), "wb")
    proc = subprocess.Popen(
        [dockerd, "--config-file", str(DEPLOY / "docker" / "daemon.json"),
         "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
         "--data-root", f"{root}/data", "--exec-root", f"{root}/x", "--pidfile", f"{root}/docker.pid",
         "--host", sock, "--storage-driver", "vfs", "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        info = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"dockerd refused the config (exit {proc.returncode}): "
                            + Path(log.name).read_text(errors="replace")[-2000:])
            r = subprocess.run([docker, "--host", sock, "info", "--format", "{{json .Runtimes}}"],
                               capture_output=True, text=True, timeout=20)
            if r.returncode == 0:
                info = json.loads(r.stdout)
                break
            time.sleep(0.3)
        assert info is not None, "dockerd did not answer: " + Path(log.name).read_text(errors="replace")[-2000:]
        for policy in shipped_policy_names():
            rt = info[f"enforcer-{policy}"]
            assert rt["path"] == "/usr/local/bin/enforcer-runc"
            assert rt["runtimeArgs"] == ["--policy", policy]
        assert "runc" in info, "the default runtime stays available"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()
        _umount_under(root)
        session.remove_tree(root)
