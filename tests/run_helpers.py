"""Helpers for the `enforcer run` tests: hand-built Plans with real BPF.

The BPF is compiled here with pyseccomp (a test-time dependency) so the
apply side can be tested without the policy compiler; the run path itself
never imports pyseccomp.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from typing import Callable, Iterable, Iterator, TypeVar

from tests import session

from enforcer.plan import (PLAN_FORMAT, CapabilityPlan, CgroupPlan, MountOp, Plan, SeccompFilter,
                           SeccompPlan, replace)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
T = TypeVar("T")


def bpf_for(default: str = "allow", kill: Iterable[str] = (), errno_eperm: Iterable[str] = (),
            log: Iterable[str] = ()) -> tuple[bytes, dict[int, str]]:
    import pyseccomp as sc

    actions = {"allow": sc.ALLOW, "kill": sc.KILL_PROCESS, "log": sc.LOG,
               "eperm": sc.ERRNO(1)}
    f = sc.SyscallFilter(actions[default])
    names: dict[int, str] = {}
    for group, act in ((kill, sc.KILL_PROCESS), (errno_eperm, sc.ERRNO(1)), (log, sc.LOG)):
        for name in group:
            f.add_rule(act, name)
            names[sc.resolve_syscall(sc.Arch.NATIVE, name)] = name
    with tempfile.TemporaryFile() as tf:
        f.export_bpf(tf)
        tf.seek(0)
        return tf.read(), names


def seccomp_plan(default: str = "allow", kill: Iterable[str] = (),
                 errno_eperm: Iterable[str] = (), log: Iterable[str] = (),
                 flags: tuple[str, ...] = ("log",)) -> SeccompPlan:
    import base64

    bpf, names = bpf_for(default, kill, errno_eperm, log)
    return SeccompPlan(native_arch="x86_64", architectures=("x86_64",),
                       default_action=default,
                       filter=SeccompFilter(bpf_b64=base64.b64encode(bpf).decode(),
                                            flags=flags),
                       syscall_names=names)


def make_plan(**kw: object) -> Plan:
    base = Plan(format=PLAN_FORMAT, enforcer_version="test", policy_name="test-plan",
                policy_hash="0" * 64, mode="enforce", seccomp=None, capabilities=None)
    return replace(base, **kw)  # type: ignore[arg-type]


def write_plan(plan: Plan, directory: str) -> str:
    path = os.path.join(directory, f"{plan.policy_name}.plan.json")
    with open(path, "w") as f:
        f.write(plan.to_json())
    return path


def enforcer_run(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
                 **kw: object) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([PYTHON, "-m", "enforcer", "run", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO, **kw)


def v1_cgroup_dirs(name: str) -> list[str]:
    return [d for d in (f"/sys/fs/cgroup/{c}{session.CGROUP_PARENT}/{name}" for c in
                        ("memory", "pids", "cpu", "blkio")) if os.path.exists(d)]


__all__ = ["CapabilityPlan", "CgroupPlan", "MountOp", "make_plan", "seccomp_plan",
           "write_plan", "enforcer_run", "v1_cgroup_dirs", "bpf_for"]


def require_root() -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root (cgroups, namespaces, mounts)")


def scratch_dir(prefix: str = "enforcer-run-test-") -> str:
    """A world-readable temp dir outside /tmp (the shipped policies put a
    tmpfs on /tmp, so files there are invisible to the workload)."""
    d = session.mkdtemp(prefix, dir="/var/lib")
    os.chmod(d, 0o755)
    return d


def run_ok_plan(tmp: str) -> Plan:
    """A Plan that exercises every step and lets sh/coreutils run."""
    return make_plan(
        policy_name="test-all-steps",
        seccomp=seccomp_plan(kill=["ptrace"]),
        capabilities=CapabilityPlan(bounding=0, effective=0, permitted=0, inheritable=0,
                                    ambient=0),
        cgroup=CgroupPlan(memory_max=256 << 20, pids_max=64),
        mounts=(MountOp("make_private", "/"), MountOp("readonly", "/"),
                MountOp("writable", tmp)),
        namespaces=("mount", "ipc", "uts"),
    )


PROBE_TABLE = os.path.join(REPO, "tests", "probes", "expected.md")


def read_probe_table() -> dict[str, dict[str, str]]:
    """tests/probes/expected.md: probe -> policy -> "blocked"/"allowed"."""
    table: dict[str, dict[str, str]] = {}
    header: list[str] = []
    for line in open(PROBE_TABLE):
        if not line.startswith("|") or set(line.strip()) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "probe":
            header = cells[1:]
            continue
        table[cells[0]] = dict(zip(header, (c.split()[0] for c in cells[1:])))
    return table


# -- watching workloads from outside (host pid namespace) ---------------------


def pids_with_arg(marker: str, program: str | None = None) -> list[int]:
    """Host pids whose command line has `marker` as one of its arguments
    (and, if given, runs `program`: the supervisor's own command line names
    the workload's arguments too)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in args and (
                program is None or os.path.basename(args[0]) == program.encode()):
            found.append(int(name))
    return found


def wait_for(check: Callable[[], T | None], timeout: float = 20.0,
             what: str = "condition") -> T:
    """Poll `check` until it returns something truthy (busy machines are slow)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def process_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a host process, from /proc/PID/status."""
    uid = gid = -1
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    return uid, gid


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


PROBE_SRC = os.path.join(REPO, "tests", "probes", "probe.c")


@contextlib.contextmanager
def built_probe(prefix: str) -> Iterator[tuple[str, str]]:
    """(probe program, Plan cache directory) in a fresh scratch directory,
    removed afterwards; skips without root or gcc."""
    import shutil

    import pytest

    require_root()
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    d = scratch_dir(prefix)
    try:
        yield build_probe(d), os.path.join(d, "cache")
    finally:
        session.remove_tree(d)


def build_probe(directory: str) -> str:
    """Compile tests/probes/probe.c into `directory` (world-executable, so a
    workload running as nobody can run it); returns the program's path."""
    exe = os.path.join(directory, "probe")
    subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", exe, PROBE_SRC], check=True)
    os.chmod(exe, 0o755)
    return exe


def probe_env(plan: Plan, cache: str) -> dict[str, str]:
    """The probe's bounds for one policy: twice the policy's own limits (so
    "beyond the limit" is what is tried), or fixed harmless sizes."""
    mem = plan.cgroup.memory_max
    pids = plan.cgroup.pids_max
    memlock = next((r.soft for r in plan.rlimits if r.resource == "MEMLOCK" and r.soft >= 0), None)
    return {"ENFORCER_CACHE_DIR": cache, "PROBE_SCRATCH": "/tmp",
            "PROBE_HOG_BYTES": str(2 * mem if mem else 512 << 20),
            "PROBE_FORKS": str(2 * pids if pids else 256),
            "PROBE_MEMLOCK_BYTES": str(2 * memlock if memlock else 32 << 10)}


def run_probes(exe: str, cache: str, policy: str,
               names: Iterable[str] = ()) -> dict[str, tuple[str, str]]:
    """Run probes (all, or `names`) under `policy` with `enforcer run`:
    probe name -> (verdict, detail)."""
    from enforcer.compile.cache import load_or_compile

    plan = load_or_compile(policy, cache_dir=cache)
    bounds = probe_env(plan, cache)
    cache_env = {"ENFORCER_CACHE_DIR": bounds.pop("ENFORCER_CACHE_DIR")}
    # The policies reset the workload's environment (env.clear): the probe's
    # bounds go in through env(1), as the workload's own.
    r = enforcer_run(["--policy", policy, "--", "env", *(f"{k}={v}" for k, v in bounds.items()),
                      exe, *names], env=cache_env, timeout=300)
    assert r.returncode == 0, f"probe under {policy}: exit {r.returncode}: {r.stderr}"
    results = {}
    for line in r.stdout.splitlines():
        name, verdict, *detail = line.split(" ", 2)
        results[name] = (verdict, " ".join(detail))
    return results
