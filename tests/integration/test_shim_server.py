"""The compiled front end and enforcer-shimd: what holds beyond "same as the
Python shim" (which tests/integration/test_shim_bundles.py and
tests/e2e/test_shim_runc.py check through both front ends).

- no server -> the front end runs the Python shim next to it, same result;
- a server that misbehaves (hangs up, answers nonsense) -> exit 125, one
  line, runc never started: the front end fails closed;
- the server refuses other uids, other protocol versions, malformed requests;
- foreground `runc run` records are removed by the server, and still after
  the server is stopped mid-run;
- concurrent container operations through few workers all complete, and a
  worker that dies is replaced.

Every server a test starts is stopped in a finalizer, which also checks
that none of its processes is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from enforcer.shim.peer import CONFIG_VARIABLES
from enforcer.shim.protocol import parse_request
from enforcer.shim.errors import ShimError
from tests.shim_fixtures import ShimServer, build_front_end, start_server, stop_server
from tests.shim_helpers import (FIXTURE_CONFIG, PYTHON, REPO, applied_policy, fake_runc,
                                make_plan, write_plan)

pytestmark = pytest.mark.root


def _configuration(setup: dict[str, Any]) -> dict[str, str]:
    """The shim configuration of `setup`, for a server to serve with."""
    return {k: setup["env"][k] for k in CONFIG_VARIABLES if k in setup["env"]}


@pytest.fixture
def server(tmp_path: Path, setup: dict[str, Any]) -> Iterator[ShimServer]:
    """A server of this test's own (the tests here stop, kill or load it),
    serving with `setup`'s configuration."""
    directory = tmp_path / "srv"
    directory.mkdir()
    srv = start_server(str(directory), "--workers", "2", env=_configuration(setup))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    """Bundle with Docker's config, a Plan, a recording fake runc, a shim config."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plan(str(plans / "handmade.json"), make_plan())
    marker = tmp_path / "runc-args"
    runc = fake_runc(str(tmp_path / "fake-runc"), str(marker))
    shim_config = tmp_path / "shim.json"
    shim_config.write_text(json.dumps({"plans_dir": str(plans), "runc": runc}))
    env = {k: v for k, v in os.environ.items() if k != "ENFORCER_SHIM_ACTIVE"}
    env.update(ENFORCER_SHIM_CONFIG=str(shim_config), ENFORCER_RUNTIME_DIR=str(tmp_path / "run"))
    return {"bundle": bundle, "marker": marker, "runc": runc, "env": env, "tmp": tmp_path,
            "plans": plans}


def _run(binary: str, args: list[str], env: dict[str, str],
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _records(setup: dict[str, Any]) -> list[str]:
    workloads = setup["tmp"] / "run" / "workloads"
    return sorted(os.listdir(workloads)) if workloads.exists() else []


def _wait_for(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- no server ----------------------------------------------------------------------


def test_without_a_server_the_python_shim_does_the_work(setup: dict[str, Any]) -> None:
    binary = build_front_end(str(setup["tmp"]))
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": str(setup["tmp"] / "nobody-listens.sock")}
    r = _run(binary, ["--policy", "handmade", "create", "-b", str(setup["bundle"]),
                      "--pid-file", str(setup["tmp"] / "pid"), "c1"], env)
    assert r.returncode == 0, r.stderr
    assert setup["marker"].read_text().splitlines()[0] == "create"
    assert applied_policy(setup["tmp"] / "run", "c1").startswith("handmade@")
    # and it refuses exactly as the server would
    r = _run(binary, ["--policy", "no-such", "create", "-b", str(setup["bundle"]), "c2"], env)
    assert r.returncode == 125
    assert r.stderr.startswith("enforcer-runc: ") and len(r.stderr.splitlines()) == 1


def test_without_a_server_or_python_shim_nothing_starts(setup: dict[str, Any]) -> None:
    binary = build_front_end(str(setup["tmp"]))
    os.unlink(setup["tmp"] / "enforcer-runc-py")
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": str(setup["tmp"] / "nobody-listens.sock")}
    r = _run(binary, ["--policy", "handmade", "create", "-b", str(setup["bundle"]), "c1"], env)
    assert r.returncode == 125
    assert len(r.stderr.splitlines()) == 1
    assert "no usable shim server" in r.stderr and "enforcer-runc-py cannot run" in r.stderr
    assert not setup["marker"].exists()


def test_front_end_in_another_mount_namespace_runs_the_python_shim(
        setup: dict[str, Any], server: ShimServer) -> None:
    """Its paths would name other files in the server's namespace: the server
    declines, and the front end does the work itself (same result)."""
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": server.socket}
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", server.binary,
                        "--policy", "handmade", "create", "-b", str(setup["bundle"]),
                        "--pid-file", str(setup["tmp"] / "pid"), "c1"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert setup["marker"].read_text().splitlines()[0] == "create"
    assert applied_policy(setup["tmp"] / "run", "c1").startswith("handmade@")
    assert _records(setup) == ["c1.json"]
    assert " c1" not in server.log_text()  # the server ran none of it


# -- a misbehaving server: the front end fails closed ----------------------------------


class FakeServer:
    """Accepts one connection, reads the request, then does `behaviour`."""

    def __init__(self, path: str, behaviour: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(path)
        self.sock.listen(1)
        self.behaviour = behaviour
        self.request = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            self.request = conn.recv(1 << 22)
            if self.behaviour == "garbage":
                conn.send(b"Z\0what\0")
            elif self.behaviour == "unterminated":
                conn.send(b"X\0/bin/true")
            elif self.behaviour == "refuse":
                conn.send(b"E\0policy says no\0")
            time.sleep(0.2)  # "hangup": close without a word

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.mark.parametrize("behaviour, message", [
    ("hangup", "closed the connection without an answer"),
    ("garbage", "unknown message Z"),
    ("unterminated", "malformed message"),
    ("refuse", "policy says no"),
])
def test_front_end_fails_closed_on_a_bad_server(setup: dict[str, Any], behaviour: str,
                                                message: str) -> None:
    binary = build_front_end(str(setup["tmp"]))
    path = str(setup["tmp"] / "fake.sock")
    fake = FakeServer(path, behaviour)
    try:
        r = _run(binary, ["--policy", "handmade", "run", "c1"],
                 {**setup["env"], "ENFORCER_SHIM_SOCKET": path})
    finally:
        fake.close()
    assert r.returncode == 125
    assert r.stderr.splitlines() == [r.stderr.strip()] and message in r.stderr, r.stderr
    assert r.stderr.startswith("enforcer-runc: ")
    assert not setup["marker"].exists()
    # what the front end sent: R, protocol 1, its own path, cwd, argc, argv, env
    fields = fake.request.split(b"\0")
    assert fields[:2] == [b"R", b"1"] and fields[4:9] == [b"4", b"--policy", b"handmade",
                                                          b"run", b"c1"]


# -- the server's own checks -----------------------------------------------------------


def _raw_request(path: str, fields: list[str]) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(path)
        s.send(b"".join(f.encode() + b"\0" for f in fields))
        s.settimeout(30)
        return s.recv(1 << 20).decode().rstrip("\0").split("\0")


def test_another_protocol_version_is_sent_to_the_python_shim(server: ShimServer) -> None:
    """A front end newer or older than the server (an upgrade without a server
    restart) is told to run the Python shim, which is as new as it is."""
    reply = _raw_request(server.socket, ["R", "2", "/x", "/", "1", "state"])
    assert reply[0] == "P" and "protocol '2'" in reply[1]


def test_a_request_without_its_view_is_sent_to_the_python_shim(server: ShimServer) -> None:
    """The front end sends descriptors of its cwd, root and mount namespace;
    without them the server cannot know what its paths mean, so it declines."""
    reply = _raw_request(server.socket, ["R", "1", "/x", "/", "1", "state"])
    assert reply[0] == "P" and "did not describe its view" in reply[1]


def test_server_refuses_another_uid(server: ShimServer) -> None:
    """The socket is 0600; should it be opened up by mistake, SO_PEERCRED still
    keeps other users out."""
    assert os.stat(server.socket).st_mode & 0o777 == 0o600
    os.chmod(server.socket, 0o666)
    os.chmod(os.path.dirname(server.socket), 0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_end)
            # (the test's temporary directories are root's only: enter the
            # socket's directory first, and connect by a relative name)
            os.chdir(os.path.dirname(server.socket))
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            reply = _raw_request(os.path.basename(server.socket),
                                 ["R", "1", "/x", "/", "1", "state"])
            os.write(write_end, "\0".join(reply).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        reply = f.read().decode().split("\0")
    os.waitpid(pid, 0)
    assert reply[0] == "E" and "uid 65534 may not use this shim server" in reply[1], reply


@pytest.mark.parametrize("data", [b"", b"R\0", b"R\x001\0/x\0/\0", b"R\x001\0/x\0/\x009\0a\0",
                                  b"Q\x001\0", b"R\x001\0/x\0/\0one\0a\0"])
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(ShimError, match="malformed request"):
        parse_request(data)


def test_request_is_parsed_with_environment() -> None:
    request = parse_request(b"R\x001\0/usr/bin/enforcer-runc\0/b\x002\0run\0c1\0A=1\0B=x=y\0junk\0")
    assert (request.self_path, request.cwd, request.argv) == \
        ("/usr/bin/enforcer-runc", "/b", ["run", "c1"])
    assert request.environ == {"A": "1", "B": "x=y"}


# -- records of foreground runs ----------------------------------------------------------


def _sleeping_runc(setup: dict[str, Any], seconds: float) -> str:
    path = setup["tmp"] / "sleepy-runc"
    path.write_text(f"#!/bin/sh\nsleep {seconds}\nexit 0\n")
    path.chmod(0o755)
    config = json.loads(Path(setup["env"]["ENFORCER_SHIM_CONFIG"]).read_text())
    config["runc"] = str(path)
    Path(setup["env"]["ENFORCER_SHIM_CONFIG"]).write_text(json.dumps(config))
    return str(path)


def test_foreground_run_record_outlives_a_server_restart(setup: dict[str, Any],
                                                         server: ShimServer) -> None:
    """The server removes a foreground run's record when runc exits, even if
    the server itself was stopped in between (it hands the watch over)."""
    _sleeping_runc(setup, 1.5)
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": server.socket}
    proc = subprocess.Popen([server.binary, "--policy", "handmade", "run", "-b",
                             str(setup["bundle"]), "fg1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: _records(setup) == ["fg1.json"]), _records(setup)
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=10)
        assert _records(setup) == ["fg1.json"]  # the run goes on, so does its record
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        assert _wait_for(lambda: _records(setup) == []), "record left after the run ended"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_foreground_run_record_removed_by_the_server(setup: dict[str, Any],
                                                    server: ShimServer) -> None:
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": server.socket}
    r = _run(server.binary, ["--policy", "handmade", "run", "-b", str(setup["bundle"]), "fg2"],
             env)
    assert r.returncode == 0, r.stderr
    assert setup["marker"].read_text().splitlines() == ["run", "-b", str(setup["bundle"]),
                                                        "fg2"]
    assert _wait_for(lambda: _records(setup) == [])
    assert "fg2" in server.log_text()  # served by the server, not the fallback


# -- load and failures -------------------------------------------------------------------


def test_concurrent_creates_through_two_workers(setup: dict[str, Any],
                                                server: ShimServer) -> None:
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": server.socket}
    bundles = []
    for i in range(16):
        bundle = setup["tmp"] / f"bundle{i}"
        bundle.mkdir()
        shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
        (bundle / "pid").write_text(str(os.getpid()))  # the fake runc writes none
        bundles.append(bundle)

    def create(i: int) -> subprocess.CompletedProcess[str]:
        return _run(server.binary, ["--policy", "handmade", "create", "-b", str(bundles[i]),
                                    "--pid-file", str(bundles[i] / "pid"), f"c{i}"], env)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(create, range(16)))
    assert [r.returncode for r in results] == [0] * 16, [r.stderr for r in results]
    for i in range(16):
        assert applied_policy(setup["tmp"] / "run", f"c{i}").startswith("handmade@")
    assert _records(setup) == sorted(f"c{i}.json" for i in range(16))


def test_a_silent_client_cannot_hold_a_worker(setup: dict[str, Any], tmp_path: Path) -> None:
    """A peer that connects and says nothing (hung, stopped) is dropped after
    --request-timeout; the only worker then serves the next front end."""
    directory = tmp_path / "one-worker"
    directory.mkdir()
    srv = start_server(str(directory), "--workers", "1", "--request-timeout", "1",
                       env=_configuration(setup))
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        silent.connect(srv.socket)
        started = time.monotonic()
        env = {**setup["env"], "ENFORCER_SHIM_SOCKET": srv.socket}
        r = _run(srv.binary, ["--policy", "handmade", "create", "-b", str(setup["bundle"]),
                              "--pid-file", str(setup["tmp"] / "pid"), "c1"], env, timeout=30)
        waited = time.monotonic() - started
        assert r.returncode == 0, r.stderr
        assert 0.5 < waited < 10, waited  # served once the silent one was given up on
        silent.settimeout(5)
        assert silent.recv(100) == b""  # and that one was hung up on
    finally:
        silent.close()
        stop_server(srv)


def _worker_pids(server: ShimServer) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_a_dead_worker_is_replaced(setup: dict[str, Any], server: ShimServer) -> None:
    assert _wait_for(lambda: len(_worker_pids(server)) == 2)
    victims = _worker_pids(server)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert _wait_for(lambda: len(set(_worker_pids(server)) - set(victims)) == 2)
    env = {**setup["env"], "ENFORCER_SHIM_SOCKET": server.socket}
    r = _run(server.binary, ["--policy", "handmade", "create", "-b", str(setup["bundle"]),
                             "--pid-file", str(setup["tmp"] / "pid"), "c1"], env)
    assert r.returncode == 0, r.stderr
    assert "worker" in server.log_text() and "ended with status" in server.log_text()


def test_second_server_on_the_same_socket_is_refused(server: ShimServer) -> None:
    r = subprocess.run([PYTHON, "-m", "enforcer.shim.server", "--socket", server.socket],
                       cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "another server is listening" in r.stderr
    assert os.path.exists(server.socket)


def test_a_stale_socket_file_is_replaced(setup: dict[str, Any], tmp_path: Path) -> None:
    """A server that died without cleaning up leaves its socket file; nobody
    answers there (the front end would fall back), and a new server takes it."""
    directory = tmp_path / "stale"
    directory.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(str(directory / "shim.sock"))
    stale.close()
    srv = start_server(str(directory), env=_configuration(setup))
    try:
        env = {**setup["env"], "ENFORCER_SHIM_SOCKET": srv.socket}
        r = _run(srv.binary, ["--policy", "handmade", "create", "-b", str(setup["bundle"]),
                              "--pid-file", str(setup["tmp"] / "pid"), "c1"], env)
        assert r.returncode == 0, r.stderr
        assert " c1" in srv.log_text()
    finally:
        stop_server(srv)


def test_check_tells_whether_a_server_serves(server: ShimServer, tmp_path: Path) -> None:
    ok = subprocess.run([PYTHON, "-m", "enforcer.shim.server", "--check", "--socket",
                         server.socket], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "serving; runc is /" in ok.stdout, ok.stdout + ok.stderr
    missing = str(tmp_path / "none.sock")
    no = subprocess.run([PYTHON, "-m", "enforcer.shim.server", "--check", "--socket", missing],
                        cwd=REPO, capture_output=True, text=True, timeout=30)
    assert no.returncode == 1 and "not serving" in no.stdout


def test_workers_must_be_a_positive_number() -> None:
    r = subprocess.run([PYTHON, "-m", "enforcer.shim.server", "--workers", "0"], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "1 or more" in r.stderr and "Traceback" not in r.stderr
