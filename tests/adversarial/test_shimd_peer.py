"""Hole 5: enforcer-shimd acts for no one with fewer rights than its own.

The server used to serve any peer with uid 0, then act with its own
privileges. A root process with no capabilities (a root workload under a
policy that drops them all) could make it
- execute a binary of its choosing (`--runc PATH`, or a shim config of its
  own naming one) with the server's capabilities, no seccomp filter and the
  server's cgroup;
- read a file it cannot read itself, through the error `--policy FILE`
  printed.
And the front end obeyed whatever answered on its socket.

Each attack is made by a real capability-less root (`setpriv` with empty
bounding, inheritable and ambient sets) against a real server; what the
server would have executed records its own capabilities.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests import session
from tests.adversarial.shim_attack import CAPLESS, HostState, ShimNode, recording_runc, \
    runc_calls, which
from tests.shim_helpers import FIXTURE_CONFIG, REPO, applied_policy

pytestmark = [pytest.mark.root]

SECRET = "top-secret-token-9b2e"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ShimNode]:
    which("setpriv")
    log = tmp_path / "node-runc-calls"
    node = ShimNode(config={"runc": recording_runc(tmp_path / "node-runc", log, real=None)})
    try:
        yield node
    finally:
        node.close()


def _bundle(node: ShimNode) -> tuple[str, Path]:
    cid = session.unique("enf-adv-peer-")
    bundle = node.root / cid
    bundle.mkdir()
    shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
    return cid, bundle


@pytest.mark.parametrize("how", ["--runc", "--config", "ENFORCER_SHIM_CONFIG"])
def test_a_capless_root_cannot_make_the_server_run_its_binary(node: ShimNode, tmp_path: Path,
                                                            how: str) -> None:
    evil_log = tmp_path / "evil-calls"
    evil = recording_runc(tmp_path / "evil", evil_log, real=None)
    evil_config = tmp_path / "evil-shim.json"
    evil_config.write_text(f'{{"plans_dir": "{node.plans}", "runc": "{evil}"}}')
    cid, bundle = _bundle(node)
    host = HostState(node, [node.config_path])
    env = node.env()
    shim_args: list[str] = []
    if how == "--runc":
        shim_args = ["--runc", evil]
    elif how == "--config":
        shim_args = ["--config", str(evil_config)]
    else:
        env["ENFORCER_SHIM_CONFIG"] = str(evil_config)
    # No --pid-file: the shim then asks `runc state` for the container's pid.
    r = node.shim([*shim_args, "--policy", "strict", "create", "--bundle", str(bundle), cid],
                  prefix=CAPLESS, env=env)
    calls = runc_calls(evil_log)
    assert calls, (r.returncode, r.stderr)  # it ran: as the client, not as the server
    for ppid, caps, args in calls:
        assert caps == 0, f"{evil} ran with capabilities {caps:#x} ({args}, parent {ppid})"
    host.assert_unchanged()


@pytest.mark.parametrize("suffix", [".yaml", ".json", ""])
def test_a_capless_root_cannot_read_a_file_through_the_server(node: ShimNode,
                                                              suffix: str) -> None:
    secret = node.root / f"secret{suffix}"
    secret.write_text(f"{SECRET}: 1\n# {SECRET}\n")
    os.chown(secret, 4242, 4242)
    secret.chmod(0o600)
    cid, bundle = _bundle(node)
    host = HostState(node, [secret, bundle / "config.json"])
    r = node.shim(["--policy", str(secret), "create", "--bundle", str(bundle), cid],
                  prefix=CAPLESS)
    assert r.returncode == 125, (r.returncode, r.stderr)
    assert SECRET not in r.stderr + r.stdout
    assert node.server is not None and SECRET not in node.server.log_text()
    host.assert_unchanged()


def test_a_capless_root_is_not_served_but_gets_the_same_result(node: ShimNode) -> None:
    """Declined by the server, the request is done by the Python shim in the
    client's own process, with its own rights: same outcome, no privilege lent."""
    cid, bundle = _bundle(node)
    r = node.shim(["--policy", "strict", "create", "--bundle", str(bundle), "--pid-file",
                   str(bundle / "pid"), cid], prefix=CAPLESS)
    assert r.returncode == 0, r.stderr
    assert applied_policy(node.root / "run", cid).startswith("strict@")
    assert node.server is not None and cid not in node.server.log_text()
    # and the same request from a root with every capability is served
    cid2, bundle2 = _bundle(node)
    r = node.shim(["--policy", "strict", "create", "--bundle", str(bundle2), "--pid-file",
                   str(bundle2 / "pid"), cid2])
    assert r.returncode == 0, r.stderr
    assert cid2 in node.server.log_text()


def _rogue_server(directory: Path, marker: Path) -> int:
    """A server run by uid 65534 that tells its client to run a command."""
    sock_path = directory / "rogue.sock"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(ready_r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            srv.bind(str(sock_path))
            srv.listen(1)
            os.write(ready_w, b"1")
            srv.settimeout(60)
            conn, _ = srv.accept()
            conn.recv(1 << 22)
            conn.send(b"X\0/bin/sh\0/bin/sh\0-c\0touch " + str(marker).encode() + b"\0")
            conn.recv(1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    os.close(ready_r)
    return pid


def test_the_front_end_obeys_no_server_of_another_user(node: ShimNode) -> None:
    shared = Path(session.mkdtemp("enf-adv-rogue-", dir="/tmp"))
    try:
        shared.chmod(0o777)
        marker = node.root / "rogue-was-obeyed"
        pid = _rogue_server(shared, marker)
        try:
            env = {**node.env(), "ENFORCER_SHIM_SOCKET": str(shared / "rogue.sock")}
            r = node.shim(["state", "x"], env=env)
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert not marker.exists(), "the front end obeyed a server of uid 65534"
        assert r.returncode == 125 and "65534" in r.stderr, r.stderr
    finally:
        session.remove_tree(str(shared))


def _socket_unit_path() -> str:
    unit = (Path(REPO) / "deploy" / "systemd" / "enforcer-shimd.socket").read_text()
    (path,) = re.findall(r"^ListenSequentialPacket=(\S+)", unit, re.M)
    return path


def test_the_socket_is_not_in_a_directory_mounted_into_workloads() -> None:
    """The monitor DaemonSet mounts /run/enforcer (the registry) into its pod;
    a socket there is in reach of whatever runs in that pod."""
    from enforcer.shim import server

    path = _socket_unit_path()
    c_source = (Path(REPO) / "enforcer" / "shim" / "frontend" / "enforcer-runc.c").read_text()
    (c_default,) = re.findall(r'#define DEFAULT_SOCKET "([^"]+)"', c_source)
    assert path == server.DEFAULT_SOCKET == c_default
    mounted = []
    for doc in yaml.safe_load_all((Path(REPO) / "deploy" / "kubernetes" / "monitor.yaml")
                                  .read_text()):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        mounted += [v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v]
    assert mounted, "the DaemonSet mounts no host path? the test reads the wrong file"
    mounted.append("/run/enforcer")  # the registry root, whatever the manifest says
    for host_path in mounted:
        assert not (path + "/").startswith(host_path.rstrip("/") + "/"), (path, host_path)
