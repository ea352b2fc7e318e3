"""Helpers for the monitor's tests: a violation generator, a monitor
process, v1 cgroups made and removed by fixtures, /metrics parsing, CPU
hogs, and an independent witness of the audit stream.

The generator is a tiny C program (compiled once per session): it makes a
chosen syscall N times in a loop, or forks N children that each make it
once (for the short-lived, killed-by-the-filter case). The seccomp filter
is loaded by pyseccomp in the child between fork and exec, with
SECCOMP_FILTER_FLAG_LOG so errno denials reach the audit stream.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import pytest

from tests import session

if TYPE_CHECKING:
    import ssl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
GETPPID_NR = 110  # x86_64; the tests that use it are x86_64-only
PERSONALITY_NR = 135

# Allocate and touch 256 MiB: past a small memory limit, the OOM killer.
MEMORY_HOG = "x = bytearray(256 << 20); x[::4096] = b'1' * (len(x) // 4096)"

# Fork until the kernel refuses (a pids limit); print CLOCK_MONOTONIC at the
# refusal (shared by all processes; nothing if fork never failed), then reap.
FORK_UNTIL_REFUSED = """
import os, time
children = []
for _ in range(20):
    try:
        pid = os.fork()
    except BlockingIOError:  # EAGAIN: the pids limit
        print(time.monotonic())
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""

GEN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
/* gen loop N NR   : make syscall NR N times
   gen fork N NR   : fork N children, each makes syscall NR once
   With GEN_WAIT set, first wait for one byte on stdin (the test's go). */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    if (getenv("GEN_WAIT")) { char b; if (read(0, &b, 1) != 1) return 3; }
    long n = atol(argv[2]), nr = atol(argv[3]);
    if (!strcmp(argv[1], "loop")) {
        for (long i = 0; i < n; i++) syscall(nr, 0xffffffffL);
        return 0;
    }
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) { syscall(nr, 0xffffffffL); _exit(0); }
        if (pid > 0) waitpid(pid, NULL, 0);
    }
    return 0;
}
"""


@pytest.fixture(scope="session")
def gen_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("monitor-gen")
    source = directory / "gen.c"
    source.write_text(GEN_C)
    binary = str(directory / "gen")
    subprocess.run(["gcc", "-O2", "-o", binary, str(source)], check=True)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _filter_loader(action: str, syscall: str, cgroup_dirs: list[str],  # type: ignore[no-untyped-def]
                   new_session: bool = False):
    import pyseccomp

    def load() -> None:
        # Runs in the child between fork and exec.
        if new_session:
            from enforcer.audit_session import start_new_session

            if start_new_session() is None:
                raise OSError("cannot start an audit session")
        for d in cgroup_dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        act = {"errno": pyseccomp.ERRNO(1), "kill": pyseccomp.KILL_PROCESS,
               "log": pyseccomp.LOG}[action]
        f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        f.set_attr(pyseccomp.Attr.CTL_LOG, 1)
        f.add_rule(act, syscall)
        f.load()

    return load


class Violator:
    """A generator process under a seccomp filter, held until go().

    With `new_session`, it runs in a fresh audit session of its own, as
    `enforcer run` starts its workloads (`self.session`, for the registry
    record): then every record is attributed by its `ses=`, even one the
    monitor reads long after the process is gone."""

    def __init__(self, gen: str, mode: str, n: int, *, action: str = "errno",
                 syscall: str = "getppid", nr: int = GETPPID_NR,
                 cgroup_dirs: list[str] | None = None, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(
            [gen, mode, str(n), str(nr)], stdin=subprocess.PIPE,
            env={"GEN_WAIT": "1", "PATH": "/usr/bin:/bin"},
            preexec_fn=_filter_loader(action, syscall, cgroup_dirs or [], new_session))
        self.pid = self.proc.pid
        self.session: int | None = None
        if new_session:
            with open(f"/proc/{self.pid}/sessionid") as f:
                self.session = int(f.read())

    def go(self, timeout: float = 120) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"g")
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def violators() -> Iterator[list[Violator]]:
    made: list[Violator] = []
    yield made
    for v in made:
        v.kill()


class MonitorProcess:
    """The real `enforcer monitor`. It reads the audit multicast group unless
    `extra` names another --audit-mode: a test that lets it become the
    kernel's audit daemon holds the host's audit lock (the audit_host
    fixture), since only one process on the machine can be that."""

    def __init__(self, runtime_dir: str, events: str, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.events = events
        self.stderr_path = events + ".stderr"
        self._stderr = open(self.stderr_path, "wb")
        mode = [] if any(a.startswith("--audit-mode") for a in extra) else ["--audit-mode=multicast"]
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "enforcer", "monitor", "--listen", f"127.0.0.1:{self.port}",
             "--runtime-dir", runtime_dir, "--events", events, "--poll-interval", "0.25",
             "--procs-interval", "1", *mode, *extra],
            stdout=subprocess.DEVNULL, stderr=self._stderr)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"monitor exited {self.proc.returncode}: {self.stderr()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("monitor did not become healthy: " + self.stderr())

    def stderr(self) -> str:
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return parse_samples(self.metrics_text(), name)

    def terminate(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return int(self.proc.returncode)


def http_get(url: str, context: "ssl.SSLContext | None" = None,
             credentials: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET, with basic auth if `credentials`; an HTTP
    error status is an answer, not an exception."""
    import base64
    import urllib.error

    request = urllib.request.Request(url)
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())


def parse_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value_for(samples: dict[tuple[tuple[str, str], ...], float], **labels: str) -> float:
    """Sum of the samples whose labels include `labels`."""
    return sum(v for k, v in samples.items() if all(dict(k).get(a) == b for a, b in labels.items()))


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    return last


@pytest.fixture
def monitors() -> Iterator[list[MonitorProcess]]:
    made: list[MonitorProcess] = []
    yield made
    for m in made:
        m.terminate()


class V1Cgroup:
    """A cgroup in the v1 memory and pids hierarchies, removed by the fixture."""

    def __init__(self, root: str = "/sys/fs/cgroup") -> None:
        self.name = session.unique("enforcer-test-")
        self.root = root
        self.dirs: dict[str, str] = {}
        for controller in ("memory", "pids"):
            d = os.path.join(root, controller, self.name)
            os.mkdir(d)
            self.dirs[controller] = d

    def write(self, controller: str, filename: str, value: str) -> None:
        with open(os.path.join(self.dirs[controller], filename), "w") as f:
            f.write(value)

    @property
    def record_cgroups(self) -> dict[str, str]:
        return {c: "/" + self.name for c in self.dirs}

    def remove(self) -> None:
        for d in self.dirs.values():
            deadline = time.monotonic() + 5
            while os.path.isdir(d):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        for pid in f.read().split():
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)


@pytest.fixture
def v1_cgroup() -> Iterator[V1Cgroup]:
    if not os.path.isdir("/sys/fs/cgroup/memory") or os.geteuid() != 0:
        pytest.skip("needs root and cgroup v1 memory/pids hierarchies")
    cg = V1Cgroup()
    try:
        yield cg
    finally:
        cg.remove()


def write_workload(runtime_dir: str, workload_id: str, *, pid: int | None, policy: str = "test",
                   cgroups: dict[str, str] | None = None, mode: str = "enforce",
                   container_id: str | None = None, audit_session: int | None = None,
                   kind: str = "run") -> str:
    from enforcer import registry

    record = registry.WorkloadRecord(id=workload_id, kind=kind, policy=policy,
                                     policy_hash="sha256:test", mode=mode,
                                     cgroups=cgroups or {}, pid=pid, container_id=container_id,
                                     audit_session=audit_session)
    return registry.write_record(record, runtime_dir)


def fake_process(proc_root: str, pid: int, starttime: int = 1, state: str = "S") -> None:
    """A /proc/PID/stat in a fixture proc tree: the monitor checks a
    registered pid's start time to tell a live workload from a stale record."""
    directory = os.path.join(proc_root, str(pid))
    os.makedirs(directory, exist_ok=True)
    fields = [state, "1"] + ["0"] * 17 + [str(starttime)] + ["0"] * 30
    with open(os.path.join(directory, "stat"), "w") as f:
        f.write(f"{pid} (a (b) c) {' '.join(fields)}\n")


def count_event_lines(path: str, **match: object) -> int:
    import json

    n = 0
    for candidate in sorted(p for p in os.listdir(os.path.dirname(path))
                            if p == os.path.basename(path) or p.startswith(os.path.basename(path) + ".")):
        if candidate.endswith(".stderr"):
            continue
        with open(os.path.join(os.path.dirname(path), candidate), encoding="utf-8") as f:
            for line in f:
                event = json.loads(line)
                if all(event.get(k) == v for k, v in match.items()):
                    n += 1
    return n


# The audit settings a test may change only for its own duration: what a
# daemon-mode monitor must give back when it stops. (`lost`, `backlog` and
# the wait counters are counters, not settings.)
AUDIT_SETTINGS = ("pid", "enabled", "failure", "rate_limit", "backlog_limit", "backlog_wait_time")


def audit_settings() -> dict[str, object]:
    from enforcer.monitor.sources.audit_control import read_status

    status = read_status()
    return {name: getattr(status, name) for name in AUDIT_SETTINGS}


@pytest.fixture
def audit_host() -> Iterator[dict[str, object]]:
    """For a test whose monitor may register as the kernel's audit daemon:
    holds the machine-wide "audit" lock (one audit daemon per host), and
    afterwards checks that the host's audit settings are what they were
    (the monitor unregistered and restored everything it changed).
    Yields the settings found."""
    with session.host_lock("audit"):
        before = audit_settings()
        yield before
        # A monitor that stopped has unregistered already; wait a moment
        # all the same, so that a failure names what stayed changed.
        if not wait_for(lambda: audit_settings() == before, timeout=10):
            after = audit_settings()
            assert after == before, f"audit settings changed by the test: {before} -> {after}"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers are x86_64")
__all__ = ["sys"]


# -- a busy machine ----------------------------------------------------------------


@pytest.fixture
def cpu_hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two busy loops, one per core of the CI machine, for the test's whole
    duration: the monitor must keep up on a node that is busy."""
    hogs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# -- an independent witness of the audit stream ------------------------------------

_STAMP = re.compile(rb"audit\(\d+\.\d+:(\d+)\)")
_PID = re.compile(rb" pid=(\d+)")


@dataclass(frozen=True)
class Seen:
    """One audit record as the witness saw it."""

    type: int
    serial: int
    pid: int | None


class AuditWitness:
    """A second reader of the audit multicast group, in the test process,
    with a 256 MiB buffer and a thread that only copies datagrams: what the
    kernel sent while it ran, records of every type and every process (the
    machine is shared: other test sessions log too). stop() checks, with the
    kernel's own drop counter, that the witness lost nothing itself."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 9)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((0, 1))  # AUDIT_NLGRP_READLOG
        self.sock.setblocking(False)
        self.datagrams: list[bytes] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-witness", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if select.select([self.sock], [], [], 0.05)[0]:
                self._drain()

    def _drain(self) -> None:
        append = self.datagrams.append
        while True:
            try:
                append(self.sock.recv(1 << 16))
            except BlockingIOError:
                return

    def stop(self) -> list[Seen]:
        from enforcer.monitor.sources.audit_control import socket_drops

        self._stopping.set()
        self._thread.join()
        self._drain()
        drops = socket_drops(self.sock)
        self.sock.close()
        assert drops == 0, f"the witness itself lost {drops} records: its counts prove nothing"
        seen = []
        for data in self.datagrams:
            if len(data) < 16:
                continue
            mtype = int.from_bytes(data[4:6], "little")
            stamp = _STAMP.search(data, 16, 80)
            if stamp is None:
                continue
            pid = _PID.search(data)
            seen.append(Seen(mtype, int(stamp.group(1)), int(pid.group(1)) if pid else None))
        return seen


def event_serials(path: str) -> set[int]:
    """The audit serial of every line of an event log and its rotations."""
    import json

    serials: set[int] = set()
    directory, name = os.path.dirname(path), os.path.basename(path)
    for candidate in os.listdir(directory):
        if (candidate == name or candidate.startswith(name + ".")) and not candidate.endswith(".stderr"):
            with open(os.path.join(directory, candidate), encoding="utf-8") as f:
                serials.update(json.loads(line)["serial"] for line in f)
    return serials


@dataclass
class LossAccount:
    """What reached a monitor, from an independent witness: the records of
    `ours` (pids) and of everyone else, each either in the monitor's event
    log or not."""

    sent: int  # seccomp records of ours the kernel sent
    counted: int  # ... of them in the event log
    others_missed: int  # seccomp records of other processes not in the event log
    others_other_types: int  # records of other types (not logged; lost or not, unknown)


def account(seen: list[Seen], logged: set[int], ours: set[int]) -> LossAccount:
    sent = counted = others_missed = other_types = 0
    for record in seen:
        if record.type != 1326:
            other_types += 1
        elif record.pid in ours:
            sent += 1
            counted += record.serial in logged
        elif record.serial not in logged:
            others_missed += 1
    return LossAccount(sent, counted, others_missed, other_types)
