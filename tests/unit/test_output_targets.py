"""Writing a result never destroys what is at the output path (issue 19,
point 10).

Every command that takes `-o PATH` -- compile, export (each format, and the
Kubernetes profile written beside OUT), import, record -- writes a regular
file atomically, writes a character device or a FIFO in place, refuses a
socket or a directory with one line, and takes `-o -` as standard output.

Never the real /dev/null: each test makes a copy of it (1:3) with mknod in
its own scratch directory, and a FIFO with a reader.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.paths import DOCKER_DEFAULT_SECCOMP

pytestmark = pytest.mark.root

DEVNULL_RDEV = os.makedev(1, 3)
DOCKER_PROFILE = str(DOCKER_DEFAULT_SECCOMP)


class Targets:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.null = directory / "null"
        os.mknod(self.null, 0o666 | stat.S_IFCHR, DEVNULL_RDEV)
        self.fifo = directory / "fifo"
        os.mkfifo(self.fifo, 0o600)
        self.sock_path = directory / "sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.sock_path))

    def unchanged(self) -> None:
        """The device, the FIFO and the socket are what they were, and
        nothing else (no temporary file, no stray profile) appeared."""
        st = os.lstat(self.null)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == DEVNULL_RDEV
        assert stat.S_ISFIFO(os.lstat(self.fifo).st_mode)
        assert stat.S_ISSOCK(os.lstat(self.sock_path).st_mode)
        assert sorted(os.listdir(self.dir)) == ["fifo", "null", "sock"], os.listdir(self.dir)


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[Targets]:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    scratch = tmp_path / "out"
    scratch.mkdir()
    t = Targets(scratch)
    yield t
    t.sock.close()


def enforcer(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True,
                          timeout=120, cwd=cwd)


def through_fifo(fifo: Path, *args: str) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run the command with a reader on the FIFO; what the reader got."""
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        r = enforcer(*args)
    finally:
        if reader.is_alive():
            # The command failed before opening the FIFO: release the reader.
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
    return r, got[0] if got else b""


RECORDING = """\
# enforcer-record: {"version":1,"base":"restricted","host_arch":"x86_64","arches_seen":["x86_64"],"default_action":"errno EPERM","records":3,"counts":{"read":1,"write":1,"exit_group":1},"left_out":{},"runs":[{"command":"x"}]}
name: rec
extends: restricted
syscalls:
  inherit: false
  default: errno EPERM
  allow: [%s, exit_group]
"""


def recordings(directory: Path) -> tuple[str, str]:
    a, b = directory / "a.yaml", directory / "b.yaml"
    a.write_text(RECORDING % "read")
    b.write_text(RECORDING % "write")
    return str(a), str(b)


# (name, argv before -o, what the output starts with)
COMMANDS = [
    ("compile", ["compile", "restricted"], b"{"),
    ("export-oci", ["export", "--format", "oci", "restricted"], b"{"),
    ("export-docker", ["export", "--format", "docker", "restricted"], b"{"),
    ("export-kubernetes", ["export", "--format", "kubernetes", "restricted"], b"apiVersion"),
    ("export-systemd", ["export", "--format", "systemd", "restricted"], b"#"),
    ("export-bpf", ["export", "--format", "bpf", "restricted"], b""),
    ("import", ["import", DOCKER_PROFILE], b"#"),
    ("record-merge", ["record", "--merge", "A", "B"], b"# Learned"),
]


def argv_for(argv: list[str], tmp_path: Path) -> list[str]:
    if "A" in argv:
        a, b = recordings(tmp_path)
        return [a if x == "A" else b if x == "B" else x for x in argv]
    return argv


@pytest.mark.parametrize("name,argv,head", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_character_device_is_written_in_place(targets: Targets, tmp_path: Path, name: str,
                                                argv: list[str], head: bytes) -> None:
    # Before: as root, the temporary file was renamed over the device node.
    r = enforcer(*argv_for(argv, tmp_path), "-o", str(targets.null))
    assert r.returncode == 0, r.stderr.decode()
    targets.unchanged()


@pytest.mark.parametrize("name,argv,head", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_fifo_is_written_in_place(targets: Targets, tmp_path: Path, name: str,
                                    argv: list[str], head: bytes) -> None:
    r, got = through_fifo(targets.fifo, *argv_for(argv, tmp_path), "-o", str(targets.fifo))
    assert r.returncode == 0, r.stderr.decode()
    assert got.startswith(head) and len(got) > 64, got[:200]
    targets.unchanged()


@pytest.mark.parametrize("name,argv,head", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_socket_is_refused_with_one_line(targets: Targets, tmp_path: Path, name: str,
                                           argv: list[str], head: bytes) -> None:
    r = enforcer(*argv_for(argv, tmp_path), "-o", str(targets.sock_path))
    assert r.returncode == 2, r.stderr.decode()
    lines = r.stderr.decode().splitlines()
    refusal = [line for line in lines if "not written" in line]
    assert len(refusal) == 1 and "is a socket" in refusal[0], lines
    assert "Traceback" not in r.stderr.decode()
    targets.unchanged()


@pytest.mark.parametrize("name,argv,head", [c for c in COMMANDS if c[0] != "export-bpf"],
                         ids=[c[0] for c in COMMANDS if c[0] != "export-bpf"])
def test_dash_means_standard_output(tmp_path: Path, name: str, argv: list[str],
                                    head: bytes) -> None:
    r = enforcer(*argv_for(argv, tmp_path), "-o", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.startswith(head) and len(r.stdout) > 64
    assert not (tmp_path / "-").exists()


def test_a_regular_file_is_replaced_and_a_directory_refused(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    out.write_text("old")
    r = enforcer("compile", "restricted", "-o", str(out))
    assert r.returncode == 0 and json.loads(out.read_text())["plan"]["policy_name"] == "restricted"
    r = enforcer("compile", "restricted", "-o", str(tmp_path))
    assert r.returncode == 2 and "is a directory" in r.stderr.decode()
    assert sorted(os.listdir(tmp_path)) == ["plan.json"]


def test_a_symlink_stays_a_symlink(tmp_path: Path) -> None:
    from enforcer.atomicfile import write_result

    target = tmp_path / "real.yaml"
    target.write_text("old content that is longer than the new")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    write_result(str(link), b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_the_kubernetes_profile_goes_nowhere_beside_a_device(targets: Targets) -> None:
    r = enforcer("export", "--format", "kubernetes", "restricted", "-o", str(targets.null))
    assert r.returncode == 0, r.stderr.decode()
    assert "profile for Localhost is not written" in r.stderr.decode()
    targets.unchanged()  # no null.seccomp.json beside it


def test_the_monitor_event_log_refuses_a_device(targets: Targets) -> None:
    from enforcer.monitor.events import EventLog

    with pytest.raises(OSError, match="not a regular file"):
        EventLog(str(targets.null))
    targets.unchanged()
