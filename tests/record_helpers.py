"""Helpers for the `enforcer record` tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Iterator

from tests import session

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
DOCKER_PROFILE = os.path.join(os.path.dirname(REPO), "shared", "fixtures",
                              "docker-default-seccomp.json")


def allowed_names(policy) -> set[str]:  # type: ignore[no-untyped-def]
    """Every syscall some rule of an effective Policy may allow."""
    return {r.syscall for r in policy.syscalls.rules if not r.action.blocks}


def audit_datagram(body: str, mtype: int = 1326) -> bytes:
    """One netlink message as the kernel multicasts an audit record."""
    payload = body.encode() + b"\0"
    return struct.pack("=IHHII", 16 + len(payload), mtype, 0, 0, 0) + payload


def seccomp_record(serial: int, ses: int, pid: int, nr: int, code: str = "0x7ffc0000",
                   arch: str = "c000003e") -> str:
    return (f"audit(1700000000.000:{serial}): auid=0 uid=0 gid=0 ses={ses} pid={pid} "
            f'comm="x" exe="/usr/bin/x" sig=0 arch={arch} syscall={nr} compat=0 '
            f"ip=0x7f0000001000 code={code}")


def scratch_dir(prefix: str = "enforcer-record-") -> str:
    """A world-readable directory outside /tmp (policies mount a tmpfs on /tmp)."""
    d = session.mkdtemp(prefix, dir="/var/tmp")
    os.chmod(d, 0o755)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def get_many(port: int, path: str, n: int) -> list[tuple[int, bytes]]:
    """n sequential GETs (http.server speaks HTTP/1.0: one connection each)."""
    out = []
    for _ in range(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            out.append((resp.status, resp.read()))
        finally:
            conn.close()
    return out


def start(cmd: list[str], **kw: object) -> subprocess.Popen:  # type: ignore[type-arg]
    """A process in its own process group, so a finalizer can end all of it."""
    return subprocess.Popen(cmd, start_new_session=True, cwd=REPO, **kw)  # type: ignore[call-overload]


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 30) -> int:  # type: ignore[type-arg]
    """Send `sig` to the process (not its group: the recorder forwards it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
    return proc.returncode


def kill_group(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """End a started process and everything it started, also on failure.

    SIGTERM first: `enforcer run` and `enforcer record` forward it to the
    workload and remove its cgroup on the way out, which SIGKILL would not
    let them do. SIGKILL to the whole group only for what is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    leftover = [d for d in _cgroup_dirs_of(proc.pid)]
    for d in leftover:  # a supervisor killed outright leaves its cgroup
        try:
            os.rmdir(d)
        except OSError:
            pass


def _cgroup_dirs_of(pid: int) -> list[str]:
    """Workload cgroups `enforcer run` (pid) made: enforcer/run-PID-*."""
    out = []
    for ctrl in ("memory", "pids", "cpu", "blkio", "cpuset", "unified"):
        base = f"/sys/fs/cgroup/{ctrl}{session.CGROUP_PARENT}"
        try:
            names = os.listdir(base)
        except OSError:
            continue
        out += [os.path.join(base, n) for n in names if n.startswith(f"run-{pid}-")]
    return out


def enforcer(args: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "enforcer", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, **kw)  # type: ignore[call-overload]


def remove(path: str) -> None:
    session.remove_tree(path)


def docker_default_x86_64_names() -> set[str]:
    """Syscall names Docker's default profile allows on x86_64 with Docker's
    default capabilities (entries gated on other caps or arches left out)."""
    import json

    from enforcer.policy import syscalls

    default_caps = {f"CAP_{c}" for c in (
        "CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP "
        "NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE").split()}
    with open(DOCKER_PROFILE) as f:
        profile = json.load(f)
    names: set[str] = set()
    for entry in profile["syscalls"]:
        if entry["action"] != "SCMP_ACT_ALLOW":
            continue
        inc, exc = entry.get("includes") or {}, entry.get("excludes") or {}
        if inc.get("caps") and not set(inc["caps"]) <= default_caps:
            continue
        if inc.get("arches") and "amd64" not in inc["arches"]:
            continue
        if exc.get("caps") and set(exc["caps"]) & default_caps:
            continue
        if exc.get("arches") and "amd64" in exc["arches"]:
            continue
        names |= {n for n in entry["names"] if syscalls.exists_on(n, "x86_64")}
    return names


def iter_lines(path: str) -> Iterator[str]:
    try:
        with open(path) as f:
            yield from f
    except FileNotFoundError:
        return


# The probe program's own harness (a pipe and a child per probe, waited for,
# its process group killed, a scratch directory made and removed) needs a
# few syscalls a server never makes; none of them is one the probes attack
# with. (setsid: the TIOCSTI probes take a pty of their own as controlling
# terminal; mkdir only without set-id bits, as restricted has it: a probe
# attacks that.)
PROBE_HARNESS = ("pipe2", "wait4", "setpgid", "kill", "rmdir", "unlink", "setsid")
HARNESS_MKDIR = ('    - {syscalls: [mkdir], action: allow,\n'
                 '       args: [{index: 1, op: masked_eq, mask: "S_ISUID|S_ISGID", value: 0}]}\n'
                 # fork() (a workload may only have used vfork), as restricted allows it
                 '    - {syscalls: [clone], action: allow,\n'
                 '       args: [{index: 0, op: masked_eq, value: 0, mask: "CLONE_NEWNS|CLONE_NEWCGROUP|'
                 'CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET"}]}\n')


def probe_overlay(learned: str, exe: str, out: str) -> str:
    """A policy on top of a learned one that lets the probe program run
    and set up its probes, and nothing else: the harness's syscalls, and,
    where the learned policy has a Landlock section, running `env` and the
    probe, reading /proc (it checks its own seccomp status there before it
    runs anything) and / (open_by_handle_at's mount fd), a pseudo-terminal
    of its own (the TIOCSTI probes), and a scratch directory in /tmp
    (PROBE_SCRATCH). Every attack is then tried against the learned policy
    as it is."""
    name = os.path.basename(out).rsplit(".", 1)[0]
    text = (f"name: {name}\nextends: {os.path.basename(learned)}\n"
            f"syscalls:\n  allow: [{', '.join(PROBE_HARNESS)}]\n  rules:\n{HARNESS_MKDIR}")
    if "\nlandlock:" in open(learned).read():
        from enforcer.policy.loader import load_policy

        policy = load_policy(learned)
        if policy.filesystem.read_only_root and \
                "/tmp" not in {t.path for t in policy.filesystem.tmpfs}:
            text += "filesystem:\n  writable_paths: [/tmp]\n"
        text += ("landlock:\n  filesystem:\n"
                 f"    read: [/, {os.path.dirname(exe)}, /proc]\n"
                "    write: [/tmp, /dev/ptmx, /dev/pts]\n"
                 f"    execute: [/usr/bin/env, {exe}]\n")
    with open(out, "w") as f:
        f.write(text)
    return out
