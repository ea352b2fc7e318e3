"""Per-syscall overhead of seccomp filters: build, prepare filters, measure.

The C program (syscall_bench.c) measures one filter per process. This
module builds it, writes every compared filter as a raw BPF file, finds
out which syscalls a filter denies or kills (probe), and then runs the
variants round-robin -- round 1: A B C D, round 2: B C D A, ... -- so a
slow phase of this shared 2-core VM hits every variant alike. Each process
gives one sample per syscall (the minimum over a few repeats); the report
quotes the median over rounds and the min-max range.
"""

from __future__ import annotations

import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
BUILD = os.path.join(BENCH_DIR, "build")
DOCKER_PROFILE_DEFAULT = os.path.join(os.path.dirname(ROOT), "shared", "fixtures",
                                      "docker-default-seccomp.json")

ARG_FREE = ("getppid", "read0", "fstat", "close_badfd", "clock_getres", "futex_wake")
ARG_CHECKED = ("socket_inet", "personality", "fork_wait")
SYSCALL_OF = {  # bench name -> the syscall the filter decides on
    "getppid": "getppid", "read0": "read", "fstat": "fstat", "close_badfd": "close",
    "clock_getres": "clock_getres", "futex_wake": "futex", "socket_inet": "socket",
    "personality": "personality", "fork_wait": "clone",
}
SYSCALL_ARGS = {  # what the C program passes (for the BPF replay in the notes)
    "getppid": (), "read0": (3, 0, 0), "fstat": (3, 0), "close_badfd": (1 << 20,),
    "clock_getres": (1, 0), "futex_wake": (0, 129, 1), "socket_inet": (2, 2, 0),
    "personality": (0xFFFFFFFF,), "fork_wait": (17, 0, 0, 0, 0),
}

RET_ALLOW = 0x7FFF0000


def sock_filter(*insns: tuple[int, int, int, int]) -> bytes:
    return b"".join(struct.pack("<HBBI", *i) for i in insns)


# -- building -----------------------------------------------------------------


def build_c(cc: str = "gcc") -> str:
    """gcc -O2 syscall_bench.c -> bench/build/syscall_bench (rebuilt if older)."""
    os.makedirs(BUILD, exist_ok=True)
    src = os.path.join(BENCH_DIR, "syscall_bench.c")
    out = os.path.join(BUILD, "syscall_bench")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", out, src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return out


# -- filters ------------------------------------------------------------------


@dataclass
class Variant:
    key: str  # short id used in tables and the chart
    label: str  # what it is, one line
    bpf_path: str | None  # None: the program loads no filter itself
    insns: int = 0
    note: str = ""
    # Run the program under this command (e.g. `enforcer run --policy
    # default --`), which applies its own filter first.
    prefix: tuple[str, ...] = ()
    inherited_filters: int = 0  # filters the program must find on entry


def _write(name: str, data: bytes) -> str:
    path = os.path.join(BUILD, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def allow_all_filter() -> bytes:
    """`ret ALLOW`: one instruction; the action cache takes every syscall."""
    return sock_filter((0x06, 0, 0, RET_ALLOW))


def one_rule_filter() -> bytes:
    """The floor: libseccomp, default allow, one errno rule for acct(2).

    The smallest filter a real tool would load: libseccomp's architecture
    check, one comparison, allow. Every syscall we time depends only on
    (arch, nr) in it, so the kernel's action cache takes them all and the
    filter never runs for them: what remains is the cost of seccomp being
    on at all (the syscall entry's slow path and the cache lookup). The
    1-instruction allow-all filter is measured next to it to show that.
    """
    import pyseccomp

    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    f.set_attr(pyseccomp.Attr.CTL_NNP, 0)
    f.add_rule(pyseccomp.ERRNO(1), "acct")
    return _export_libseccomp(f)


def _export_libseccomp(f: Any) -> bytes:
    with tempfile.TemporaryFile() as t:
        f.export_bpf(t)
        t.seek(0)
        return t.read()


def enforcer_filter(policy_spec: str) -> tuple[bytes | None, str]:
    """BPF of a compiled enforcer policy, or (None, why not)."""
    try:
        from enforcer.compile import compile_policy
        from enforcer.policy.loader import load_policy
    except ImportError as e:
        return None, f"enforcer compiler/loader not importable: {e}"
    try:
        plan = compile_policy(load_policy(policy_spec))
    except Exception as e:  # report any failure of another area as data
        return None, f"compiling {policy_spec!r} failed: {type(e).__name__}: {e}"
    if plan.seccomp is None:
        return None, f"policy {policy_spec!r} has no seccomp filter"
    flags = ",".join(plan.seccomp.filter.flags) or "none"
    return plan.seccomp.filter.bpf, (f"mode {plan.mode}, default {plan.seccomp.default_action}, "
                                     f"arches {','.join(plan.seccomp.architectures)}, "
                                     f"plan flags {flags} (loaded here with 0)")


def enforcer_run_variant(policy: str) -> tuple[Variant | None, str]:
    """The program started by `enforcer run --policy P --`: the filter as
    enforcer itself applies it (with the Plan's flags, after capabilities,
    mounts and the rest), end to end. Needs root and a working `run`."""
    exe = os.path.join(os.path.dirname(sys.executable), "enforcer")
    if not os.path.exists(exe):
        return None, f"no enforcer executable next to {sys.executable}"
    v = Variant(f"{policy}-run", f"`enforcer run --policy {policy}` (end to end)", None,
                prefix=(exe, "run", "--policy", policy, "--"), inherited_filters=1)
    try:
        r = subprocess.run([*v.prefix, "/bin/true"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"could not start: {e}"
    if r.returncode != 0:
        return None, f"`enforcer run` failed: {r.stderr.strip()[-200:]}"
    return v, ""


def docker_filter(profile: str) -> tuple[bytes | None, str]:
    if not os.path.exists(profile):
        return None, f"{profile} not found"
    sys.path.insert(0, BENCH_DIR)
    from docker_profile import compile_docker_profile

    return compile_docker_profile(profile), (
        "dockerd -> OCI -> runc 1.1 (libseccomp defaults + ENOSYS stub)")


def prepare_variants(docker_profile: str = DOCKER_PROFILE_DEFAULT,
                     enforcer_policies: tuple[str, ...] = ("default", "restricted")
                     ) -> tuple[list[Variant], list[str]]:
    """Every compared filter as a file in bench/build; notes for the missing."""
    os.makedirs(BUILD, exist_ok=True)
    variants = [Variant("none", "no filter (no_new_privs only)", None)]
    missing: list[str] = []
    for key, label, fixed in (
        ("allow1", "1-instruction `ret ALLOW`", allow_all_filter()),
        ("floor", "floor: libseccomp, default allow + 1 errno rule (acct)", one_rule_filter()),
    ):
        variants.append(Variant(key, label, _write(f"{key}.bpf", fixed), len(fixed) // 8))
    for spec in enforcer_policies:
        data, note = enforcer_filter(spec)
        if data is None:
            missing.append(f"enforcer `{spec}`: {note}")
            continue
        variants.append(Variant(spec, f"enforcer `{spec}` (compiled)",
                                _write(f"enforcer-{spec}.bpf", data), len(data) // 8, note))
    if any(v.key == "default" for v in variants):
        run_variant, why = enforcer_run_variant("default")
        if run_variant:
            variants.append(run_variant)
        else:
            missing.append(f"`enforcer run --policy default`: {why}")
    data, note = docker_filter(docker_profile)
    if data is None:
        missing.append(f"docker: {note}")
    else:
        variants.append(Variant("docker", "Docker default profile via runc",
                                _write("docker.bpf", data), len(data) // 8, note))
    return variants, missing


# -- running ------------------------------------------------------------------


@dataclass
class Outcome:
    """What one process said about one syscall."""

    ns: float
    ret: int
    err: int


@dataclass
class ProbeResult:
    status: str  # "allowed" | "denied errno N" | "killed (SIGSYS)" | ...
    measurable: bool  # False: the process dies, skip it in the rounds


# Every measured process runs on one CPU (the highest one we may use), the
# same for every variant. fork+wait depends on where the child is placed:
# unpinned on this 2-CPU VM, with other work around, its upper quartile was
# 104 us against 78 us pinned (median 77-78 both); the cheap syscalls do
# not care.
_BENCH_CPU = max(os.sched_getaffinity(0))


def _pin() -> None:
    os.sched_setaffinity(0, {_BENCH_CPU})


def run_once(binary: str, variant: Variant, only: tuple[str, ...] | None = None,
             scale: float = 1.0, repeats: int = 5) -> tuple[dict[str, Outcome], int]:
    """One process; returns (per-syscall outcomes, exit status or -signal)."""
    cmd = [*variant.prefix, binary, "--scale", str(scale), "--repeats", str(repeats)]
    if variant.bpf_path:
        cmd += ["--filter", variant.bpf_path]
    if only:
        cmd += ["--only", ",".join(only)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=_pin)
    out: dict[str, Outcome] = {}
    for line in r.stdout.splitlines():
        if line.startswith("# inherited_filters"):
            found = int(line.split()[-1])
            if found != variant.inherited_filters and r.returncode == 0:
                raise RuntimeError(f"{variant.key}: the program found {found} seccomp filters on "
                                   f"entry, expected {variant.inherited_filters}")
            continue
        name, ns, ret, err = line.split()
        out[name] = Outcome(float(ns), int(ret), int(err))
    return out, r.returncode


def probe(binary: str, variant: Variant, names: tuple[str, ...]) -> dict[str, ProbeResult]:
    """Which syscalls the filter lets through, denies, or kills the process for."""
    res: dict[str, ProbeResult] = {}
    for name in names:
        out, rc = run_once(binary, variant, (name,), scale=0.001, repeats=1)
        if rc < 0:
            sig = signal.Signals(-rc).name
            res[name] = ProbeResult(f"process killed ({sig})", False)
        elif name not in out:
            res[name] = ProbeResult(f"no output (exit {rc})", False)
        elif out[name].err:
            import errno as E

            res[name] = ProbeResult(f"denied: {E.errorcode.get(out[name].err, out[name].err)}",
                                    True)
        else:
            res[name] = ProbeResult("allowed", True)
    return res


@dataclass
class Series:
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def lo(self) -> float:
        return min(self.samples)

    @property
    def hi(self) -> float:
        return max(self.samples)

    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 4:
            return self.lo, self.hi
        q = statistics.quantiles(self.samples, n=4)
        return q[0], q[2]


def round_robin(binary: str, variants: list[Variant], measure: Mapping[str, tuple[str, ...]],
                rounds: int, scale: float = 1.0, repeats: int = 5,
                progress: bool = True) -> dict[str, dict[str, Series]]:
    """rounds x variants processes, the variant order rotated every round."""
    results: dict[str, dict[str, Series]] = {v.key: {} for v in variants}
    t0 = time.monotonic()
    for r in range(rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            names = measure.get(v.key, ())
            if not names:
                continue
            out, rc = run_once(binary, v, names, scale, repeats)
            if rc != 0:
                raise RuntimeError(f"syscall_bench under {v.key} exited {rc} "
                                   f"(the probe said {names} were safe)")
            for name, o in out.items():
                results[v.key].setdefault(name, Series()).samples.append(o.ns)
        if progress:
            print(f"\r  round {r + 1}/{rounds} ({time.monotonic() - t0:.0f}s)", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return results


def machine_clock_note() -> str:
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
