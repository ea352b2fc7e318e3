"""Is enforcer-shimd serving, and did a stopped one leave anything behind?

`check` asks a server what it would run for `runc --version`, as a front
end would (`enforcer-shimd --check`, a readiness probe);
`server_processes` and `terminate` are for operators' and tests' checks
that a stopped server left no worker or reaper behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from enforcer.shim.protocol import MAX_MESSAGE, PROTOCOL_VERSION, _encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable


def server_processes(socket_path: str) -> list[int]:
    """Pids of a server started with `--socket socket_path` and of its workers
    and reapers (forks, so they carry its command line); for operators' and
    tests' checks that a stopped server left nothing behind."""
    wanted = os.fsencode(socket_path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            pass  # gone meanwhile
    return found


def terminate(proc: "subprocess.Popen[bytes]", leftovers: "Callable[[], list[int]]",
              timeout: float = 10) -> list[int]:
    """Stop a server started as `proc` the way systemd's KillMode=process
    does (SIGTERM to the server only), wait for `leftovers()` (its other
    processes) to go, SIGKILL any still there after `timeout` and return
    their pids: for tests and benchmarks that must leave nothing behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + timeout
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftovers()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def check(path: str) -> int:
    """Ask the server at `path` what it would run for `runc --version`, as a
    front end would: exit 0 and say so if it serves, 1 with the reason if not."""
    # No environment: the server answers with its own configuration, as it
    # would for a container runtime (which sets none of enforcer's variables).
    environ: list[str] = []
    view = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in (".", "/", "/proc/self/ns/mnt")]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.settimeout(10)
            conn.connect(path)
            socket.send_fds(conn, [_encode(("R", PROTOCOL_VERSION, "", os.getcwd(), "1",
                                            "--version", *environ))], view)
            reply = conn.recv(MAX_MESSAGE).rstrip(b"\0").split(b"\0")
    except OSError as e:
        print(f"enforcer-shimd: {path}: not serving ({e.strerror or e})")
        return 1
    finally:
        for fd in view:
            os.close(fd)
    if reply[0] == b"X" and len(reply) > 1:
        print(f"enforcer-shimd: {path}: serving; runc is {os.fsdecode(reply[1])}")
        return 0
    detail = os.fsdecode(reply[1]) if len(reply) > 1 else "no answer"
    print(f"enforcer-shimd: {path}: answers, but not with runc: {detail}")
    return 1
