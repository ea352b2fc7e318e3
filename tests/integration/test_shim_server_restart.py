"""enforcer-shimd's workers die with their server; old code never serves again.

The listening socket is held by the test, as systemd holds it for a
socket-activated unit, and handed to each server as fd 3 (LISTEN_FDS). A
burst of 200 concurrent front-end requests is already waiting on it when
the server starts (as connections wait while systemd starts or restarts a
socket-activated server); the server is then stopped the way `systemctl
restart` stops it (SIGTERM to the server process only, KillMode=process)
and a new server takes the same socket. Afterwards no process of the old
server may be alive, and every later request must be served by the new
one.

What went wrong before: every worker registering the listener while a
connection waited saw it readable, all called accept(2) on the blocking
socket, one got the connection and the others stayed blocked in accept,
where the server's end was invisible to them: they outlived the server
(PPID 1) and served later requests with the old code. That race does not
happen on every run, so the test also checks what prevents it: the
workers' listening socket (fd 3, shared with the "systemd" holding it) is
non-blocking, and no idle worker sits in accept(2).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.shim_fixtures import build_front_end
from tests.shim_helpers import FIXTURE_CONFIG, PYTHON, REPO, fake_runc, make_plan, write_plan

pytestmark = [pytest.mark.root, pytest.mark.slow]

BURST = 200


def _process_group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


class Activated:
    """One server generation on the test's socket, in a process group of its own."""

    def __init__(self, listener: socket.socket, log: Path, env: dict[str, str]) -> None:
        self.log = log
        fd = listener.fileno()

        def as_fd_3() -> None:
            os.dup2(fd, 3)
            os.set_inheritable(3, True)

        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", PYTHON, "-m",
                 "enforcer.shim.server", "--verbose", "--workers", "4"],
                cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=as_fd_3, close_fds=False, start_new_session=True)
        deadline = time.monotonic() + 30
        while "serving on" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def processes(self) -> list[int]:
        return _process_group(self.proc.pid)

    def stop(self) -> None:
        """What `systemctl stop` does with KillMode=process: SIGTERM to the server only."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def kill_all(self) -> list[int]:
        left = self.processes()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return left


ACCEPT4 = {"x86_64": 288, "aarch64": 242}.get(os.uname().machine, -1)


def _flags(pid: int, fd: int) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags for fd {fd} of {pid}")


def _syscall(pid: int) -> int:
    """The system call `pid` is blocked in (-1 if running)."""
    with open(f"/proc/{pid}/syscall") as f:
        first = f.read().split()[0]
    return int(first) if first.isdigit() else -1


def _queued(node: Path) -> int:
    """How many front ends have started (and so connected, or are about to)."""
    return sum(1 for p in node.iterdir() if p.name.startswith("burst"))


@pytest.fixture
def node() -> Iterator[Path]:
    root = Path(session.mkdtemp("enf-shimd-restart-", dir="/tmp"))
    try:
        yield root
    finally:
        session.remove_tree(str(root))


def test_a_burst_then_a_restart_leaves_no_old_worker_and_no_old_server_serves(
        node: Path) -> None:
    plans = node / "plans"
    plans.mkdir()
    write_plan(str(plans / "handmade.json"), make_plan())
    runc = fake_runc(str(node / "fake-runc"), str(node / "runc-args"))
    (node / "shim.json").write_text(json.dumps({"plans_dir": str(plans), "runc": runc}))
    env = {"ENFORCER_SHIM_CONFIG": str(node / "shim.json"),
           "ENFORCER_RUNTIME_DIR": str(node / "run"),
           "ENFORCER_CACHE_DIR": str(node / "cache")}
    front_end = build_front_end(str(node))
    sock_path = str(node / "shim.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(sock_path)
    listener.listen(4096)
    client_env = {**{k: v for k, v in os.environ.items() if not k.startswith("ENFORCER_SHIM")},
                  **env, "ENFORCER_SHIM_SOCKET": sock_path,
                  "ENFORCER_SHIM_FALLBACK": str(node / "no-fallback")}

    def create(name: str) -> subprocess.CompletedProcess[str]:
        bundle = node / name
        bundle.mkdir()
        shutil.copy(FIXTURE_CONFIG, bundle / "config.json")
        (bundle / "pid").write_text(str(os.getpid()))  # the fake runc writes none
        return subprocess.run([front_end, "--policy", "handmade", "create", "--bundle",
                               str(bundle), "--pid-file", str(bundle / "pid"), name],
                              env=client_env, capture_output=True, text=True, timeout=300)

    old = new = None
    try:
        with ThreadPoolExecutor(max_workers=BURST) as pool:
            waiting = [pool.submit(create, f"burst{i}") for i in range(BURST)]
            deadline = time.monotonic() + 60
            while _queued(node) < BURST // 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            old = Activated(listener, node / "old.log", env)
            burst = [f.result() for f in waiting]
        failed = [(r.returncode, r.stderr) for r in burst if r.returncode != 0]
        assert not failed, failed[:5]
        workers = [p for p in old.processes() if p != old.proc.pid]
        assert len(workers) == 4, workers
        for pid in workers:
            assert _flags(pid, 3) & os.O_NONBLOCK, f"worker {pid} accepts on a blocking socket"
            assert _syscall(pid) != ACCEPT4, f"idle worker {pid} is blocked in accept(2)"
        old.stop()
        new = Activated(listener, node / "new.log", env)
        deadline = time.monotonic() + 10
        while old.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.processes() == [], "workers of the stopped server are still alive"
        with ThreadPoolExecutor(max_workers=20) as pool:
            after = list(pool.map(create, [f"after{i}" for i in range(50)]))
        assert [r.returncode for r in after] == [0] * 50, [r.stderr for r in after][:5]
        old_log, new_log = (node / "old.log").read_text(), (node / "new.log").read_text()
        served_by_old = [i for i in range(50) if f" after{i}\n" in old_log]
        assert served_by_old == [], "requests served by the old server's code"
        assert all(f" after{i}\n" in new_log for i in range(50))
    finally:
        left = old.kill_all() if old is not None else []
        if new is not None:
            new.stop()
            new.kill_all()
        listener.close()
    assert left == [], f"old server processes were still alive at the end: {left}"
