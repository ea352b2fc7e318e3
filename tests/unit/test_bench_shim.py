"""bench/shim_bench.py's parts that can be checked without runc: the
protocol client it times the server with, its exec-only reference program,
its statistics and the shape of its report (bench/run reads the headline)."""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shutil
import socket
import subprocess
import sys
import threading

import pytest

import tests.bench_helpers  # noqa: F401  (puts bench/ on sys.path)

import report as bench_report  # noqa: E402
import shim_bench as sb  # noqa: E402
from enforcer.shim.protocol import Request, parse_request


def test_interval_of_a_constant_shift_is_that_shift() -> None:
    a = [20_000_000 + 137_000 * (i % 7) for i in range(50)]
    assert sb.median_difference_interval(a, [x + 5_000_000 for x in a]) == (5.0, 5.0)
    assert sb.median_difference_interval(a, list(a)) == (0.0, 0.0)


def test_interval_is_wider_for_noisier_samples_and_holds_the_shift() -> None:
    import random

    rng = random.Random(3)
    a = [int(rng.gauss(30e6, 5e6)) for _ in range(100)]
    b = [int(x + 4e6 + rng.gauss(0, 5e6)) for x in a]
    lo, hi = sb.median_difference_interval(a, b)
    assert lo < 4.0 < hi
    assert hi - lo > 1.0


def test_command_line_is_relative_to_the_repository() -> None:
    repo = "/somewhere/repo"
    argv = [f"{repo}/bench/shim_bench.py", "--runs", "100"]
    assert sb.command_line(argv, f"{repo}/.venv/bin/python", {}, repo) == \
        ".venv/bin/python bench/shim_bench.py --runs 100"
    assert sb.command_line(argv, "/usr/bin/python3", {"SUDO_COMMAND": "x"}, repo) == \
        "sudo /usr/bin/python3 bench/shim_bench.py --runs 100"


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler")
def test_exec_only_reference_burns_then_execs(tmp_path: pathlib.Path) -> None:
    binary = sb.build_exec_wrapper(str(tmp_path))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run([binary, "30000", "/bin/sh", "-c", "exit 7"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert run.returncode == 7  # it became the program it was given
    spent = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert spent >= 0.029
    missing = subprocess.run([binary, "0", str(tmp_path / "absent")], capture_output=True)
    assert missing.returncode == 127 and b"absent" in missing.stderr


def test_protocol_client_speaks_the_front_ends_protocol(tmp_path: pathlib.Path) -> None:
    """A stand-in server: the client's request must parse as the real server
    parses it, and the client must answer S and stop at X."""
    path = os.path.join(str(tmp_path), "s.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(1)
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            seen["request"] = parse_request(data)
            seen["view"] = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
            for fd in fds:
                os.close(fd)
            conn.send(b"S\0")
            seen["session"] = conn.recv(4096)
            conn.send(b"W\0a warning\0")
            conn.send(b"X\0/bin/true\0/bin/true\0run\0")

    server = threading.Thread(target=serve)
    server.start()
    try:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", sb.PROTOCOL_CLIENT, path,
                              "/opt/enforcer-runc", str(tmp_path), "--policy", "p", "run",
                              "id1"],
                             capture_output=True, text=True, timeout=30,
                             env={"A": "1", "ENFORCER_X": "y=z"})
    finally:
        server.join(timeout=30)
        listener.close()
    assert out.returncode == 0, out.stderr
    connect_ns, server_ns = (int(x) for x in out.stdout.split())
    assert connect_ns > 0 and server_ns > 0
    request = seen["request"]
    assert isinstance(request, Request)
    assert request.self_path == "/opt/enforcer-runc" and request.cwd == str(tmp_path)
    # its view of the system, as the front end sends it: cwd, root, mount namespace
    view = seen["view"]
    assert isinstance(view, list) and view[:2] == [str(tmp_path), "/"]
    assert view[2].startswith("mnt:[")
    assert request.argv == ["--policy", "p", "run", "id1"]
    assert request.environ["A"] == "1" and request.environ["ENFORCER_X"] == "y=z"
    assert seen["session"] == b"s\0\0"


def _variant(key: str, wall_ms: float, server: bool = False) -> sb.Variant:
    v = sb.Variant(key, f"variant {key}", ["x"], "/", {}, server)
    v.wall = [int((wall_ms + (i % 5) * 0.1) * 1e6) for i in range(20)]
    v.cpu = [int(wall_ms * 0.9e6)] * 20
    v.server_main = [300_000 if server else 0] * 20
    v.server_workers = [1_500_000 if server else 0] * 20
    return v


def test_report_headline_is_the_judged_figure() -> None:
    """bench/run puts the first bold bullet in its summary: it must be C - A."""
    variants = {k: _variant(k, ms, k == "C") for k, ms in
                zip("ABCDEFG", (30.0, 33.0, 37.0, 52.0, 53.0, 34.0, 36.0))}
    parts = {"true": _variant("T0", 1.3), "front": _variant("T1", 3.2, True),
             "python": _variant("T2", 15.0), "exec_only": _variant("T4", 2.0),
             "connect": [60_000] * 20, "handling": [1_500_000] * 20, "path_cpu_ms": 1.8}
    parts["others"] = [parts["true"], parts["python"], parts["exec_only"]]
    opts = argparse.Namespace(runs=20, dir="/dev/shm")
    text, over = sb.report(opts, "cmd", (0.5, 1.0), "/usr/bin/python3", variants, parts,
                           ["registry empty"], None)
    assert over == pytest.approx(7.0)
    lines = text.splitlines()
    headline = bench_report._headline(lines)
    assert headline.startswith("C - A") and "**+7.0 ms**" in headline and "within" in headline
    # Every variant has its row; the breakdown's steps add up to C - A.
    for key in "ABCDEFG":
        assert any(line.startswith(f"| {key} variant {key} |") for line in lines)
    assert "C - A = (B - A) + (F - B) + (G - F) + (C - G)" in text
    assert "Command (as root, from the repository root): `cmd`" in text
    over_budget = {**variants, "C": _variant("C", 50.0, True)}
    _, over = sb.report(opts, "cmd", (0.5, 1.0), "/usr/bin/python3", over_budget, parts, [], None)
    assert over > sb.BUDGET_MS
