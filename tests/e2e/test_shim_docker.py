"""The shim under a real Docker engine: one runtime per policy via runtimeArgs.

Uses the private dockerd and busybox image of tests/e2e/conftest.py. This
module registers three runtimes in that daemon's daemon.json
(enforcer-restricted, enforcer-web-server, and enforcer-nosuch for a policy
that is not installed; each the shim with a `--policy` runtimeArg),
reloads dockerd with SIGHUP, and in its finalizer restores daemon.json,
reloads again and removes every container it made.

The runtime registered is what a node gets: the compiled front end
(`enforcer-runc`) with an enforcer-shimd of this module's own serving it,
configured by its own shim.json (the server takes no configuration from
its clients). dockerd's environment does not carry our socket path, so each
runtime path is a two-line wrapper that sets ENFORCER_SHIM_SOCKET (a node
uses the default /run/enforcer-shimd/shim.sock and needs none).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from tests import session

from tests.shim_fixtures import start_server, stop_server
from tests.run_helpers import probe_env
from tests.shim_helpers import REPO, RUNC, expected_probe_table

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

ENFORCER = os.path.join(REPO, ".venv", "bin", "enforcer")
PROBE_SRC = os.path.join(REPO, "tests", "probes", "probe.c")
# For the plain-Docker comparison: probes Docker's defaults leave to root.
PROBES = ["mount", "unshare_user_mount", "ptrace_attach", "bpf", "kexec_load", "reboot",
          "setuid0", "raw_socket", "write_root", "chroot", "userfaultfd", "x32_syscall"]


def _reload(dockerd) -> None:
    pid = int(open(os.path.join(dockerd.root, "docker.pid")).read())
    os.kill(pid, signal.SIGHUP)


@pytest.fixture(scope="module")
def shimd(tmp_path_factory):
    """The enforcer-shimd the registered runtimes talk to (stopped at the end),
    with the shipped policies precompiled into its plans_dir."""
    work = tmp_path_factory.mktemp("shim-docker")
    plans = work / "plans"
    plans.mkdir()
    for policy in ("restricted", "web-server"):
        subprocess.run([ENFORCER, "compile", policy, "-o", str(plans / f"{policy}.json")],
                       check=True, timeout=120)
    shim_config = work / "shim.json"
    shim_config.write_text(json.dumps({"plans_dir": str(plans), "runc": RUNC,
                                       "runtime_dir": str(work / "run")}))
    server = start_server(str(tmp_path_factory.mktemp("shimd-docker")), "--config",
                          str(shim_config))
    server.run_dir = work / "run"
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def runtimes(dockerd, shimd, tmp_path_factory):
    """Register enforcer-restricted, enforcer-web-server and enforcer-nosuch;
    yield the registry dir."""
    work = tmp_path_factory.mktemp("shim-docker-runtimes")
    launcher = str(work / "enforcer-runc-wrapper")
    with open(launcher, "w") as f:
        f.write(f"#!/bin/sh\nENFORCER_SHIM_SOCKET={shimd.socket} exec {shimd.binary} \"$@\"\n")
    os.chmod(launcher, 0o755)
    daemon_json = os.path.join(dockerd.root, "daemon.json")
    original = open(daemon_json).read()
    config = json.loads(original)
    config["runtimes"] = {
        f"enforcer-{policy}": {"path": launcher, "runtimeArgs": ["--policy", policy]}
        for policy in ("restricted", "web-server", "nosuch")
    }
    with open(daemon_json, "w") as f:
        json.dump(config, f)
    try:
        _reload(dockerd)
        deadline = time.monotonic() + 30
        while True:
            info = dockerd("info", "--format", "{{json .Runtimes}}").stdout
            if all(f"enforcer-{p}" in info for p in ("restricted", "web-server", "nosuch")):
                break
            assert time.monotonic() < deadline, f"dockerd did not load the runtimes: {info}"
            time.sleep(0.2)
        yield shimd.run_dir
    finally:
        with open(daemon_json, "w") as f:
            f.write(original)
        _reload(dockerd)


def test_a_refusal_reaches_docker_run(dockerd, runtimes, busybox_image, names):
    """containerd reports the runtime's error from runc's --log file, not its
    stderr: the shim writes its one-line reason there as runc would."""
    r = dockerd("run", "--rm", "--name", names(), "--network", "none", "--runtime",
                "enforcer-nosuch", busybox_image, "true")
    assert r.returncode != 0
    assert "enforcer-runc: policy 'nosuch' is not installed" in r.stderr, r.stderr
    assert "unable to retrieve OCI runtime error" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def probe_image(dockerd, busybox_image, tmp_path_factory) -> str:
    """busybox + the statically linked probe, as an image."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the probe")
    ctx = tmp_path_factory.mktemp("probe-image")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(ctx / "probe"), PROBE_SRC], check=True,
                   timeout=120)
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY probe /probe\n")
    name = "enforcer-e2e-shim-probe:latest"
    r = dockerd("build", "-q", "-t", name, str(ctx), timeout=300)
    if r.returncode != 0:
        # The classic builder needs nothing more than the daemon; say why if it failed.
        raise RuntimeError(f"docker build failed: {r.stderr.strip()}")
    return name


@pytest.fixture
def names(dockerd):
    """Container names for one test, removed at the end whatever happened."""
    made: list[str] = []

    def new() -> str:
        made.append(session.unique("enf-shim-"))
        return made[-1]

    yield new
    if made:
        dockerd("rm", "-f", *made, timeout=60)


def _table(output: str) -> dict[str, str]:
    return {p[0]: p[1] for p in (line.split(None, 2) for line in output.splitlines())
            if len(p) >= 2 and p[1] in ("blocked", "allowed", "setup-error")}


def test_restricted_runtime_blocks_the_probes_plain_docker_does_not(dockerd, runtimes,
                                                                    probe_image, names,
                                                                    tmp_path):
    # The same bounds as the probe table: twice restricted's own limits.
    from enforcer.compile.cache import load_or_compile

    plan = load_or_compile("restricted", cache_dir=str(tmp_path / "cache"))
    bounds = [arg for k, v in probe_env(plan, "").items() if k.startswith("PROBE_")
              for arg in ("-e", f"{k}={v}")]
    enforced = dockerd("run", "--name", names(), "--rm", "--network", "none", *bounds,
                       "--runtime", "enforcer-restricted", probe_image, "/probe", timeout=300)
    table = _table(enforced.stdout)
    # the same table as `enforcer run --policy restricted` (tests/probes/expected.md)
    assert table == expected_probe_table("restricted"), enforced.stdout + enforced.stderr
    assert "setuid0" in table and table["setuid0"] == "blocked"
    # Plain Docker (its default seccomp profile, no enforcer) lets root in the
    # container do what restricted forbids. (The probe refuses to run unless
    # it is under a filter, which Docker's default profile is.)
    plain = dockerd("run", "--name", names(), "--rm", "--network", "none", probe_image,
                    "/probe", *PROBES, timeout=180)
    plain_table = _table(plain.stdout)
    assert set(plain_table) == set(PROBES), plain.stdout + plain.stderr
    for probe in ("setuid0", "write_root", "chroot"):
        assert plain_table[probe] == "allowed", plain_table


def test_restricted_runtime_registers_the_container(dockerd, runtimes, shimd, busybox_image,
                                                    names):
    name = names()
    r = dockerd("run", "-d", "--name", name, "--network", "none", "--runtime",
                "enforcer-restricted", busybox_image, "sleep", "60")
    assert r.returncode == 0, r.stderr
    container_id = r.stdout.strip()
    record_path = os.path.join(runtimes, "workloads", container_id + ".json")
    assert os.path.exists(record_path), os.listdir(os.path.join(runtimes, "workloads"))
    record = json.load(open(record_path))
    inspect = json.loads(dockerd("inspect", container_id).stdout)[0]
    assert (record["policy"], record["kind"], record["pid"]) == \
        ("restricted", "container", inspect["State"]["Pid"])
    status = dockerd("exec", name, "cat", "/proc/1/status").stdout
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status
    assert "Uid:\t65534" in status
    # created through enforcer-shimd, not the Python fallback
    assert container_id in shimd.log_text()
    assert dockerd("rm", "-f", name).returncode == 0
    deadline = time.monotonic() + 30
    while os.path.exists(record_path):
        assert time.monotonic() < deadline, "record not removed on delete"
        time.sleep(0.1)


def test_web_server_runtime_serves_http(dockerd, runtimes, busybox_image, names):
    port = 18000 + os.getpid() % 1000
    name = names()
    r = dockerd("run", "-d", "--name", name, "--network", "host", "--runtime",
                "enforcer-web-server", busybox_image, "sh", "-c",
                f"echo enforcer-shim-ok > /tmp/index.html && "
                f"exec httpd -f -p 127.0.0.1:{port} -h /tmp")
    assert r.returncode == 0, r.stderr
    body = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as resp:
                body = resp.read()
                break
        except OSError:
            time.sleep(0.2)
    logs = dockerd("logs", name)
    assert body == b"enforcer-shim-ok\n", logs.stdout + logs.stderr
    ok = 0
    for _ in range(100):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as resp:
            ok += resp.status == 200
    assert ok == 100
    status = dockerd("exec", name, "cat", "/proc/1/status").stdout
    assert "Seccomp:\t2" in status and "Uid:\t65534" in status
    container_id = dockerd("inspect", "--format", "{{.Id}}", name).stdout.strip()
    record = json.load(open(os.path.join(runtimes, "workloads", container_id + ".json")))
    assert record["policy"] == "web-server"
