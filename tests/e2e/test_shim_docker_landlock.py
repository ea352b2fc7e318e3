"""Landlock under a real Docker engine: a container started with an
enforcer runtime whose policy has a `landlock` section writes only where
the policy lets it, and `docker exec` processes are confined too.

Uses the private dockerd and busybox image of tests/e2e/conftest.py; this
module registers its own runtime (the compiled front end with an
enforcer-shimd of its own, the Landlock helper next to it, as setup.sh
installs them) in daemon.json, and restores daemon.json at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Iterator

import pytest

from tests import session
from tests.shim_fixtures import ShimServer, start_server, stop_server
from tests.shim_helpers import REPO, RUNC

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

PYTHON = os.path.join(REPO, ".venv", "bin", "python")
RUNTIME = "enforcer-ll-container"
POLICY = """name: ll-container
extends: default
landlock:
  filesystem:
    read: [/]
    write: [/var/lib/app, /dev/null]
    execute: [/bin]
  scope: [signal, abstract-unix-socket]
"""
WRITES = ("echo ok > /var/lib/app/x && cat /var/lib/app/x; "
          "echo no > /tmp/x 2>/dev/null && echo tmp-written || echo tmp-denied; "
          "echo no > /etc/x 2>/dev/null && echo etc-written || echo etc-denied")


def _reload(dockerd: Any) -> None:
    pid = int(open(os.path.join(dockerd.root, "docker.pid")).read())
    os.kill(pid, signal.SIGHUP)


@pytest.fixture(scope="module")
def shimd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShimServer]:
    server = start_server(str(tmp_path_factory.mktemp("shimd-ll")))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def runtime(dockerd: Any, shimd: ShimServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    from enforcer.apply.landlock import kernel_abi

    if kernel_abi() < 6:
        pytest.skip("needs Landlock ABI 6")
    work = tmp_path_factory.mktemp("ll-docker")
    plans = work / "plans"
    plans.mkdir()
    (work / "ll-container.yaml").write_text(POLICY)
    subprocess.run([PYTHON, "-m", "enforcer", "compile", str(work / "ll-container.yaml"), "-o",
                    str(plans / "ll-container.json")], check=True, capture_output=True, cwd=REPO)
    launcher = work / "enforcer-runc-wrapper"
    launcher.write_text(f"#!/bin/sh\nENFORCER_SHIM_SOCKET={shimd.socket} "
                        f"exec {shimd.binary} \"$@\"\n")
    os.chmod(launcher, 0o755)
    (work / "shim.json").write_text(json.dumps({"plans_dir": str(plans), "runc": RUNC,
                                                "runtime_dir": str(work / "run")}))
    daemon_json = os.path.join(dockerd.root, "daemon.json")
    original = open(daemon_json).read()
    config = json.loads(original)
    config.setdefault("runtimes", {})[RUNTIME] = {
        "path": str(launcher),
        "runtimeArgs": ["--config", str(work / "shim.json"), "--policy", "ll-container"]}
    with open(daemon_json, "w") as f:
        json.dump(config, f)
    try:
        _reload(dockerd)
        deadline = time.monotonic() + 30
        while RUNTIME not in dockerd("info", "--format", "{{json .Runtimes}}").stdout:
            assert time.monotonic() < deadline, "dockerd did not load the runtime"
            time.sleep(0.2)
        yield RUNTIME
    finally:
        with open(daemon_json, "w") as f:
            f.write(original)
        _reload(dockerd)


@pytest.fixture
def names(dockerd: Any) -> Iterator[Any]:
    made: list[str] = []

    def new() -> str:
        made.append(session.unique("enf-ll-"))
        return made[-1]

    yield new
    if made:
        dockerd("rm", "-f", *made, timeout=60)


def test_container_and_docker_exec_are_confined(dockerd: Any, runtime: str, busybox_image: str,
                                                names: Any) -> None:
    plain = dockerd("run", "--rm", "--name", names(), "--network", "none", busybox_image,
                    "sh", "-c", WRITES)
    assert plain.stdout.split() == ["ok", "tmp-written", "etc-written"], plain.stderr
    confined = dockerd("run", "--rm", "--name", names(), "--network", "none", "--runtime",
                       runtime, busybox_image, "sh", "-c", WRITES)
    assert confined.returncode == 0, confined.stderr
    assert confined.stdout.split() == ["ok", "tmp-denied", "etc-denied"], confined.stderr
    name = names()
    r = dockerd("run", "-d", "--name", name, "--network", "none", "--runtime", runtime,
                busybox_image, "sleep", "60")
    assert r.returncode == 0, r.stderr
    exec_ = dockerd("exec", name, "sh", "-c", WRITES)
    assert exec_.stdout.split() == ["ok", "tmp-denied", "etc-denied"], exec_.stderr
    # a root exec process cannot put another program in the helper's place
    attack = dockerd("exec", name, "sh", "-c",
                     "cp /bin/busybox /dev/.enforcer-landlock 2>/dev/null && echo replaced; "
                     "echo tried")
    assert attack.stdout.split() == ["tried"], attack.stderr
    assert dockerd("exec", name, "sh", "-c", WRITES).stdout.split() == \
        ["ok", "tmp-denied", "etc-denied"]
