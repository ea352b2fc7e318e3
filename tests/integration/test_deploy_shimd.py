"""enforcer-shimd as deploy/systemd starts it, for real.

systemd is not PID 1 on the test machine, so the units cannot be started
by systemd itself. What a test can do instead, it does here:

- the socket is handed over the way systemd hands it over: by
  `systemd-socket-activate --seqpacket` (LISTEN_PID/LISTEN_FDS, fd 3; the
  server starts on the first connection, which waits in the backlog);
- the server is the unit's ExecStart with its arguments, from a directory
  laid out like /usr/local/bin by `python -m enforcer.launcher` (what
  install-node.sh runs), with systemd's environment (PATH, plus the node's
  shim configuration as a drop-in's Environment= would set it) and `/` as
  its working directory;
- the parts of the unit's hardening that need no service manager are
  applied, read from the unit file: CapabilityBoundingSet=,
  NoNewPrivileges=, MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE),
  and as a seccomp filter built after systemd's: RestrictAddressFamilies=,
  RestrictNamespaces=, RestrictSUIDSGID=, RestrictRealtime=, ProtectClock=
  (its syscalls), SystemCallArchitectures=native (the filter kills other
  architectures). Not emulated: DevicePolicy= and ProtectClock='s device
  rule (cgroup device access), LockPersonality=, LimitNOFILE=. The unit has
  no setting that changes namespaces (tests/unit/test_deploy_shimd_units.py
  checks that), so there is nothing of that kind to emulate.

Then the compiled front end from that directory serves a `create` through
the server: the server logs the request with the front end's pid, runc is
started by the front end with the arguments, and `runc features` (the real
runc) runs inside the hardened server. Every process is stopped and checked
gone, and every file removed, in finalizers.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import REPO, SYSTEMD, need, temp_dir, unit_settings  # noqa: E402

from enforcer.plan import SeccompFilter, SeccompPlan  # noqa: E402
from enforcer.kernel.capabilities import CAPABILITIES  # noqa: E402
from enforcer.shim.health import terminate  # noqa: E402
from tests.shim_helpers import (  # noqa: E402
    ALLOW_BPF,
    FIXTURE_CONFIG,
    OCI_NO_MKDIR,
    PYTHON,
    RUNC,
    applied_policy,
    make_plan,
    write_plan,
)

pytestmark = [pytest.mark.root, pytest.mark.runc]

SERVICE = SYSTEMD / "enforcer-shimd.service"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Applies the hardening that can be had without systemd, then execs the
# server (same pid, so LISTEN_PID still matches; fd 3 stays open).
SANDBOX = r'''
import ctypes, errno, json, os, sys

settings = json.loads(sys.argv[1])
command = sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)


def prctl(option, arg):
    args = [ctypes.c_ulong(option), ctypes.c_ulong(arg)] + [ctypes.c_ulong(0)] * 3
    if libc.prctl(*args) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {arg})")


PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 24, 38, 65, 1
with open("/proc/sys/kernel/cap_last_cap") as f:
    last_cap = int(f.read())
for cap in range(last_cap + 1):
    if cap not in settings["keep_caps"]:
        prctl(PR_CAPBSET_DROP, cap)
if settings["no_new_privs"]:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
if settings["mdwe"]:
    prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)

import pyseccomp as sc

# Only the native architecture is added: a call from another one is killed.
flt = sc.SyscallFilter(sc.ALLOW)
if settings["families"] is not None:
    for family in range(64):
        if family not in settings["families"]:
            flt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.EQ, family))
    flt.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.GE, 64))
if settings["restrict_namespaces"]:
    for flag in (0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                 0x40000000):
        flt.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        flt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, 0x80, 0x80))
    flt.add_rule(sc.ERRNO(errno.EPERM), "setns")
    # As systemd does: clone3's flags are out of a filter's reach, so
    # it fails with ENOSYS and libc falls back to clone.
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
if settings["restrict_suid_sgid"]:
    O_CREAT = 0o100
    for bit in (0o4000, 0o2000):  # S_ISUID, S_ISGID
        flt.add_rule(sc.ERRNO(errno.EPERM), "chmod", sc.Arg(1, sc.MASKED_EQ, bit, bit))
        flt.add_rule(sc.ERRNO(errno.EPERM), "fchmod", sc.Arg(1, sc.MASKED_EQ, bit, bit))
        flt.add_rule(sc.ERRNO(errno.EPERM), "fchmodat", sc.Arg(2, sc.MASKED_EQ, bit, bit))
        flt.add_rule(sc.ERRNO(errno.EPERM), "creat", sc.Arg(1, sc.MASKED_EQ, bit, bit))
        flt.add_rule(sc.ERRNO(errno.EPERM), "open", sc.Arg(1, sc.MASKED_EQ, O_CREAT, O_CREAT),
                     sc.Arg(2, sc.MASKED_EQ, bit, bit))
        flt.add_rule(sc.ERRNO(errno.EPERM), "openat", sc.Arg(2, sc.MASKED_EQ, O_CREAT, O_CREAT),
                     sc.Arg(3, sc.MASKED_EQ, bit, bit))
if settings["restrict_realtime"]:
    for policy in (1, 2, 6):  # SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
        flt.add_rule(sc.ERRNO(errno.EPERM), "sched_setscheduler", sc.Arg(1, sc.EQ, policy))
if settings["protect_clock"]:
    for name in ("adjtimex", "clock_adjtime", "clock_settime", "settimeofday"):
        flt.add_rule(sc.ERRNO(errno.EPERM), name)
flt.load()
os.execv(command[0], command)
'''


def sandbox_settings() -> dict[str, Any]:
    unit = unit_settings(SERVICE)
    (caps,) = unit["CapabilityBoundingSet"]
    (families,) = unit["RestrictAddressFamilies"]
    assert unit["SystemCallArchitectures"] == ["native"]
    return {
        "keep_caps": [CAPABILITIES[name] for name in caps.split()],
        "no_new_privs": unit["NoNewPrivileges"] == ["yes"],
        "mdwe": unit["MemoryDenyWriteExecute"] == ["yes"],
        "families": [int(getattr(socket, name)) for name in families.split()],
        "restrict_namespaces": unit["RestrictNamespaces"] == ["yes"],
        "restrict_suid_sgid": unit["RestrictSUIDSGID"] == ["yes"],
        "restrict_realtime": unit["RestrictRealtime"] == ["yes"],
        "protect_clock": unit["ProtectClock"] == ["yes"],
    }


def exec_start() -> list[str]:
    (line,) = unit_settings(SERVICE)["ExecStart"]
    return shlex.split(line)


def process_group(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
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


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


class Node:
    """A node's /usr/local/bin in a temp dir, a bundle, a recording runc."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        r = subprocess.run([PYTHON, "-m", "enforcer.launcher", str(self.bin)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        self.front_end = self.bin / "enforcer-runc"
        if self.front_end.read_bytes()[:4] != b"\x7fELF":
            pytest.skip(f"no C compiler: the front end was not built ({r.stdout.strip()})")
        self.socket = root / "shim.sock"
        self.log = root / "shimd.log"
        self.bundle = root / "bundle"
        self.bundle.mkdir()
        (self.bundle / "config.json").write_bytes(Path(FIXTURE_CONFIG).read_bytes())
        plans = root / "plans"
        plans.mkdir()
        # A filter flag makes the shim ask the runc in use what it supports
        # (`runc features`), from inside the server.
        oci = copy.deepcopy(OCI_NO_MKDIR)
        oci["flags"] = ["SECCOMP_FILTER_FLAG_LOG"]
        seccomp = SeccompPlan(native_arch="x86_64", architectures=("x86_64",),
                              default_action="allow",
                              filter=SeccompFilter(bpf_b64=ALLOW_BPF, flags=()),
                              syscall_names={83: "mkdir"}, oci=oci)
        write_plan(str(plans / "handmade.json"), make_plan(seccomp=seccomp))
        self.marker = root / "runc-calls"
        self.runc = root / "runc"
        # Records "PPID ARGS" per call; `features` is answered by the real runc.
        self.runc.write_text(
            "#!/bin/sh\n"
            f"printf '%s %s\\n' \"$PPID\" \"$*\" >> {self.marker}\n"
            'if [ "$1" = features ]; then\n'
            f"    out=$({RUNC} features); status=$?\n"
            "    printf '%s\\n' \"$out\"\n"
            f"    echo \"features-exit $status\" >> {self.marker}\n"
            "    exit $status\n"
            "fi\n"
            "exit 0\n")
        self.runc.chmod(0o755)
        self.config = root / "shim.json"
        self.config.write_text(json.dumps({"plans_dir": str(plans), "runc": str(self.runc)}))

    def configuration(self) -> dict[str, str]:
        """The shim configuration of this node, for the server and its clients."""
        return {"ENFORCER_SHIM_CONFIG": str(self.config),
                "ENFORCER_RUNTIME_DIR": str(self.root / "run"),
                "ENFORCER_CACHE_DIR": str(self.root / "cache")}

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", SYSTEMD_PATH), **self.configuration(), **extra}

    def calls(self) -> list[tuple[int, str]]:
        """(parent pid, arguments) per runc call; (-1, line) for the exit notes."""
        if not self.marker.exists():
            return []
        out = []
        for line in self.marker.read_text().splitlines():
            ppid, _, args = line.partition(" ")
            out.append((int(ppid), args) if ppid.isdigit() else (-1, line))
        return out


@pytest.fixture
def node() -> Iterator[Node]:
    with temp_dir("deploy-shimd-") as root:
        yield Node(root)


class ActivatedServer:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid  # systemd-socket-activate execs the server in its place

    def log_text(self) -> str:
        return self.log.read_text()


def stop(server: ActivatedServer) -> None:
    """SIGTERM as systemd's KillMode=process sends it, then nothing of ours may be left."""
    left = terminate(server.proc, lambda: process_group(server.pid))
    assert not left, f"processes of enforcer-shimd outlived it: {left}\n{server.log_text()}"


@pytest.fixture
def activated(node: Node) -> Iterator[ActivatedServer]:
    tool = need("systemd-socket-activate")
    if not os.access(RUNC, os.X_OK):
        pytest.skip("runc is not installed")
    sandbox = node.root / "sandbox.py"
    sandbox.write_text(SANDBOX)
    argv = exec_start()
    assert argv[0] == "/usr/local/bin/enforcer-shimd", argv
    server_cmd = [str(node.bin / "enforcer-shimd"), *argv[1:], "--verbose"]
    with open(node.log, "wb") as log:
        proc = subprocess.Popen(
            [tool, "--seqpacket", "-l", str(node.socket),
             # systemd-socket-activate gives the server only what -E names
             *(f"--setenv={k}={v}" for k, v in node.configuration().items()), "--",
             PYTHON, str(sandbox), json.dumps(sandbox_settings()), *server_cmd],
            cwd="/", env={"PATH": SYSTEMD_PATH, **node.configuration()},
            stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    server = ActivatedServer(proc, node.log)
    try:
        deadline = time.monotonic() + 10
        while not node.socket.exists():
            assert proc.poll() is None, server.log_text()
            assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
            time.sleep(0.02)
        yield server
    finally:
        try:
            stop(server)
        finally:
            if node.socket.exists():
                node.socket.unlink()


def test_socket_activated_server_serves_the_front_end(node: Node,
                                                      activated: ActivatedServer) -> None:
    # Nothing is running yet but systemd-socket-activate holding the socket:
    # the first connection starts the server, and waits for it.
    # No fallback is possible: had the front end run the Python shim, it
    # would fail to find it.
    env = node.env(ENFORCER_SHIM_SOCKET=str(node.socket),
                   ENFORCER_SHIM_FALLBACK=str(node.root / "no-fallback"))
    args = ["--policy", "handmade", "create", "--bundle", str(node.bundle), "c1"]
    fe = subprocess.Popen([str(node.front_end), *args], env=env, cwd=str(node.root),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = fe.communicate(timeout=120)
    finally:
        if fe.poll() is None:
            fe.kill()
            fe.wait()
    log = activated.log_text()
    assert fe.returncode == 0, f"{err}\n--- server log ---\n{log}"
    assert err == "", err

    # Served by this server, started through socket activation.
    assert "enforcer-shimd: serving on the socket systemd passed" in log, log
    assert f"enforcer-shimd: pid {fe.pid}: {' '.join(args)}" in log, log

    # Under the emulated hardening.
    assert status_field(activated.pid, "NoNewPrivs") == "1"
    assert status_field(activated.pid, "Seccomp") == "2"
    keep = sum(1 << n for n in sandbox_settings()["keep_caps"])
    assert int(status_field(activated.pid, "CapBnd"), 16) == keep

    calls = node.calls()
    # runc got the arguments, from the front end itself (its child, not the server's).
    assert (fe.pid, f"create --bundle {node.bundle} c1") in calls, calls
    # The server's own runc calls ran inside the hardened server, in a worker.
    features = [ppid for ppid, a in calls if a == "features"]
    assert features and features[0] != fe.pid, calls
    with open(f"/proc/{features[0]}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == activated.pid
    assert (-1, "features-exit 0") in calls, calls

    config = json.loads((node.bundle / "config.json").read_text())
    assert applied_policy(node.root / "run", "c1").startswith("handmade@")
    # The policy's filter denies mkdir; the container's profile allows it:
    # the merged profile (their intersection) no longer does.
    allowed = {name for rule in config["linux"]["seccomp"]["syscalls"]
               if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
               for name in rule["names"]}
    assert "read" in allowed and "mkdir" not in allowed
    record = json.loads((node.root / "run" / "workloads" / "c1.json").read_text())
    assert record["policy"] == "handmade"


def test_stopping_the_server_alone_takes_its_workers_along(node: Node,
                                                          activated: ActivatedServer) -> None:
    """What `systemctl stop` does under KillMode=process: SIGTERM to the
    server process only. Its idle workers must go too (PR_SET_PDEATHSIG)."""
    env = node.env(ENFORCER_SHIM_SOCKET=str(node.socket))
    r = subprocess.run([str(node.front_end), "--policy", "handmade", "create", "--bundle",
                        str(node.bundle), "c1"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    workers = [p for p in process_group(activated.pid) if p != activated.pid]
    assert len(workers) == 4, (workers, activated.log_text())  # the default --workers
    os.kill(activated.pid, signal.SIGTERM)
    assert activated.proc.wait(timeout=10) == 0, activated.log_text()
    deadline = time.monotonic() + 10
    while process_group(activated.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_group(activated.pid) == []


def test_without_a_server_the_front_end_runs_the_python_shim_next_to_it(node: Node) -> None:
    """The layout install-node.sh writes: enforcer-runc-py is found beside enforcer-runc."""
    env = node.env(ENFORCER_SHIM_SOCKET=str(node.root / "nobody-listens.sock"))
    args = ["--policy", "handmade", "create", "--bundle", str(node.bundle), "c1"]
    fe = subprocess.run([str(node.front_end), *args], env=env, cwd=str(node.root),
                        capture_output=True, text=True, timeout=120)
    assert fe.returncode == 0, fe.stderr
    calls = node.calls()
    assert any(a == f"create --bundle {node.bundle} c1" for _, a in calls), calls
    assert applied_policy(node.root / "run", "c1").startswith("handmade@")
    assert "enforcer-shimd" not in fe.stderr


def test_a_policy_without_a_plan_is_compiled_outside_the_hardened_server(
        node: Node, activated: ActivatedServer) -> None:
    """No precompiled Plan: the hardened server does not compile (it never
    loads PyYAML or libseccomp); a confined child of it does, and the server
    caches the Plan it verified."""
    env = node.env(ENFORCER_SHIM_SOCKET=str(node.socket),
                   ENFORCER_SHIM_FALLBACK=str(node.root / "no-fallback"))
    r = subprocess.run([str(node.front_end), "--policy", "restricted", "create", "--bundle",
                        str(node.bundle), "c2"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{r.stderr}\n--- server log ---\n{activated.log_text()}"
    assert applied_policy(node.root / "run", "c2").startswith("restricted@")
    # Cached by the server in its ENFORCER_CACHE_DIR, root's only.
    entries = list((node.root / "cache").iterdir())
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600, entries
    assert f"--policy restricted create --bundle {node.bundle} c2" in activated.log_text()
    for pid in process_group(activated.pid):
        with open(f"/proc/{pid}/maps") as f:
            assert "libseccomp" not in f.read(), f"process {pid} of the server loaded libseccomp"
