"""Fixtures that run the shim tests through both front ends.

`shim_front_end` is parametrized: "python" runs the Python shim in its own
process (what `enforcer-runc-py` and the fallback do), "compiled" runs the
C front end against a real enforcer-shimd (what a node registers). The same
assertions hold for both: that is the point of keeping one shim.

The server serves with its own configuration (ENFORCER_SHIM_CONFIG,
ENFORCER_RUNTIME_DIR, ENFORCER_CACHE_DIR of its own environment): a request
that names another is declined and done by the Python shim. So the
compiled front end gets, per test, one server per configuration the test
uses (`ServerPool`), started on first use and stopped, with a check that
no worker outlives it, when the test ends.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Iterator, Sequence

import pytest

from enforcer.shim.health import server_processes, terminate
from enforcer.shim.peer import CONFIG_VARIABLES
from tests.shim_helpers import FRONT_END, PYTHON, REPO


class ShimServer:
    def __init__(self, binary: str, socket_path: str, log_path: str,
                 proc: subprocess.Popen[bytes]) -> None:
        self.binary, self.socket, self.log, self.proc = binary, socket_path, log_path, proc

    def log_text(self) -> str:
        with open(self.log) as f:
            return f.read()


def build_front_end(directory: str) -> str:
    """The compiled front end, with the Python shim next to it as its
    fallback and the Landlock helper (what a node has: setup.sh builds all)."""
    binary = os.path.join(directory, "enforcer-runc")
    subprocess.run([PYTHON, "-m", "enforcer.shim.frontend", binary], check=True,
                   capture_output=True, cwd=REPO)
    subprocess.run([PYTHON, "-m", "enforcer.shim.frontend", "--landlock",
                    os.path.join(directory, "enforcer-landlock")],
                   check=True, capture_output=True, cwd=REPO)
    subprocess.run([PYTHON, "-m", "enforcer.shim.launcher",
                    os.path.join(directory, "enforcer-runc-py")],
                   check=True, capture_output=True, cwd=REPO)
    return binary


def start_server(directory: str, *extra: str, env: dict[str, str] | None = None,
                 prefix: Sequence[str] = (), front_end: str | None = None) -> ShimServer:
    """A server on DIRECTORY/shim.sock. `env` is added to its environment
    (its own configuration: ENFORCER_SHIM_CONFIG, ENFORCER_RUNTIME_DIR,
    ENFORCER_CACHE_DIR, as a unit's Environment= sets them); `prefix` is a
    command that execs the server in a given context (e.g. nsenter into the
    mount namespace of its clients). The front end is built into DIRECTORY
    unless `front_end` names one already built."""
    socket_path = os.path.join(directory, "shim.sock")
    log_path = os.path.join(directory, "shimd.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*prefix, PYTHON, "-m", "enforcer.shim.server", "--socket",
                                 socket_path, "--verbose", *extra],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path):
        assert proc.poll() is None, open(log_path).read()
        assert time.monotonic() < deadline, "enforcer-shimd did not start"
        time.sleep(0.02)
    return ShimServer(front_end or build_front_end(directory), socket_path, log_path, proc)


def stop_server(server: ShimServer) -> None:
    """SIGTERM, then check every worker went with it (none may be left behind)."""
    left = terminate(server.proc, lambda: server_processes(server.socket))
    assert not left, f"enforcer-shimd workers outlived the server: {left}"
    assert not os.path.exists(server.socket), "the server left its socket behind"


class ServerPool:
    """Servers of one test, one per shim configuration (see the module docstring)."""

    def __init__(self, directory: str, front_end: str) -> None:
        self.directory, self.front_end = directory, front_end
        self.servers: dict[tuple[str | None, ...], ShimServer] = {}

    def for_env(self, env: dict[str, str]) -> ShimServer:
        key = tuple(env.get(k) for k in CONFIG_VARIABLES)
        if key not in self.servers:
            directory = os.path.join(self.directory, f"srv{len(self.servers)}")
            os.mkdir(directory)
            own = {k: env[k] for k in CONFIG_VARIABLES if k in env}
            self.servers[key] = start_server(directory, "--workers", "2", env=own,
                                             front_end=self.front_end)
        return self.servers[key]

    def close(self) -> None:
        for server in self.servers.values():
            stop_server(server)


@pytest.fixture(scope="session")
def compiled_front_end(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_front_end(str(tmp_path_factory.mktemp("front-end")))


@pytest.fixture(params=["python", "compiled"])
def shim_front_end(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run the test through one front end (see the module docstring)."""
    if request.param == "compiled":
        pool = ServerPool(str(tmp_path_factory.mktemp("shimd")),
                          request.getfixturevalue("compiled_front_end"))
        monkeypatch.setitem(FRONT_END, "name", "compiled")
        monkeypatch.setitem(FRONT_END, "binary", pool.front_end)
        monkeypatch.setitem(FRONT_END, "pool", pool)
        try:
            yield request.param
        finally:
            pool.close()
    else:
        monkeypatch.setitem(FRONT_END, "name", "python")
        yield request.param
