#!/usr/bin/env python3
"""Overhead of the OCI shim: `runc run` through enforcer-runc vs plain `runc run`.

    .venv/bin/python bench/shim_bench.py [--runs N] [--no-hyperfine] [--no-write]   (as root)

A busybox /bin/true bundle, five ways plus two reference steps,
interleaved run by run (each round in a rotated order, so load on the
machine and any "what ran just before" effect hit all of them alike):

  A  runc run                  the bundle as `runc spec` wrote it
  B  runc run                  the same bundle after the shim merged
                               `restricted` into it (runc's own extra work
                               for the policy: seccomp, mounts)
  C  enforcer-runc --policy restricted run    the compiled front end talking
                               to a running enforcer-shimd: the deploy path,
                               and the one judged (C - A <= 15 ms at the median)
  D  enforcer-runc-py --policy restricted run  the Python shim through its
                               fast launcher: what runs with no server
  E  enforcer-runc --policy restricted run    the compiled front end with no
                               server listening: it execs enforcer-runc-py
  F  exec-only runc run        a static program that only execs runc, on B's
                               config: a reference step for the breakdown
  G  exec-only, burning CPU    F after spending as much CPU as the shim's path
                               (measured first, with /bin/true as "runc")

The tools are built as a node gets them (`python -m enforcer.launcher
--python <fast python> DIR`), into a temporary directory; the server is
that directory's enforcer-shimd on a socket there, stopped at the end, and
the benchmark checks that none of its workers outlive it, that every
registry record was removed and that runc kept no container.

CPU time is the command's and everything it waited for (getrusage of
children); for C the server's work for the request (its processes'
schedstat run time) is added, since the work moved there. Then a measured
breakdown of C - A: (B - A) + (F - B) + (G - F) + (C - G), with the shim's
step measured on its own (/bin/true as "runc"; and a client that speaks the
front end's protocol, for the server's handling time). A/B/C through
hyperfine as a cross-check. Results go to bench/results/shim.md; the exit
status is 1 when C - A is over 15 ms or the clean-up checks fail.

Not timed here any more: pip's console script and the launcher on the
venv's own interpreter. Neither is what a node registers now (the launcher
directory is), and the interpreter choice is timed for `enforcer run` by
bench/start_latency.sh, which this would only repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from enforcer.shim.health import server_processes, terminate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv", "bin")
RESULTS = os.path.join(REPO, "bench", "results", "shim.md")
BUDGET_MS = 15.0
WARMUP = 5
POLICY = "restricted"

# Speaks the front end's protocol (enforcer/shim/frontend/enforcer-runc.c)
# to time the server alone: from sending the request to receiving the
# "exec runc" answer, less the client's own turn for the audit session
# question. Run as its own short-lived process because the server watches
# the client's pid (the pid runc would keep) to remove the registry record.
PROTOCOL_CLIENT = r"""
import os, socket, sys, time
sock_path, self_path, cwd, *argv = sys.argv[1:]
now = time.perf_counter_ns
fields = ["R", "1", self_path, cwd, str(len(argv)), *argv,
          *(f"{k}={v}" for k, v in os.environ.items())]
request = b"".join(os.fsencode(f) + b"\0" for f in fields)
# The front end's view of the system goes with the request (cwd, root, mount ns).
view = [os.open(p, os.O_PATH) for p in (cwd, "/", "/proc/self/ns/mnt")]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
t0 = now()
s.connect(sock_path)
t1 = now()
socket.send_fds(s, [request], view)
server_ns = 0
mark = now()
while True:
    data = s.recv(4 << 20)
    t = now()
    server_ns += t - mark
    tag = data[:1]
    if tag == b"S":
        mark = now()
        s.send(b"s\0\0")  # no audit session: the front end's own step, not the server's
        continue
    if tag == b"W":
        mark = now()
        continue
    if tag == b"X":
        break
    sys.exit(f"unexpected answer from the server: {data[:200]!r}")
print(t1 - t0, server_ns)
"""


def sh(*cmd: str, **kw: Any) -> "subprocess.CompletedProcess[bytes]":
    return subprocess.run(list(cmd), check=True, **kw)


def make_bundle(path: str) -> str:
    rootfs = os.path.join(path, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, d))
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "true"))
    sh("runc", "spec", cwd=path)
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/true"]
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return path


def fast_interpreter() -> str:
    """The distro's python3 when it has the venv's minor version (statically
    linked and PGO-built, it starts ~2 ms faster), else the venv's."""
    venv_python = os.path.join(VENV, "python")
    probe = "import sys; print(sys.version_info[:2])"
    if os.path.exists("/usr/bin/python3"):
        mine = subprocess.run([venv_python, "-c", probe], capture_output=True, text=True).stdout
        distro = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True,
                                text=True).stdout
        if mine and mine == distro:
            return "/usr/bin/python3"
    return venv_python


def stats(samples_ns: list[int]) -> dict[str, float]:
    ms = sorted(s / 1e6 for s in samples_ns)
    q = statistics.quantiles(ms, n=10)
    return {"median": statistics.median(ms), "mean": statistics.fmean(ms), "p10": q[0],
            "p90": q[-1], "min": ms[0], "max": ms[-1]}


def median_ms(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e6


def median_difference_interval(a: list[int], b: list[int], resamples: int = 2000,
                               seed: int = 8) -> tuple[float, float]:
    """95% interval (ms) of median(b) - median(a), resampling whole rounds:
    a[i] and b[i] ran in the same round, so they stay together."""
    import random

    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(statistics.median([b[i] for i in idx])
                     - statistics.median([a[i] for i in idx]))
    diffs.sort()
    return diffs[int(0.025 * resamples)] / 1e6, diffs[int(0.975 * resamples) - 1] / 1e6


def command_line(argv: list[str], executable: str, environ: "dict[str, str] | os._Environ[str]",
                 repo: str = REPO) -> str:
    """This run's command line as typed from the repository root (for the record)."""
    def shown(path: str) -> str:
        absolute = os.path.abspath(path)
        return os.path.relpath(absolute, repo) if absolute.startswith(repo + os.sep) else path
    words = [shown(executable), shown(argv[0]), *argv[1:]]
    return ("sudo " if environ.get("SUDO_COMMAND") else "") + shlex.join(words)


# -- the tools and the server ----------------------------------------------------------


EXEC_WRAPPER_C = r"""
/* shim_bench's reference: exec-only BURN_US PROG ARGS... spends BURN_US
 * microseconds of CPU (0: none), then execs PROG: the compiled front end
 * minus the protocol and the server, optionally with the CPU they take. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long cpu_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1000000L + t.tv_nsec / 1000;
}

int main(int argc, char **argv)
{
    volatile unsigned long spin = 0;
    long burn, start;

    if (argc < 3)
        return 2;
    burn = atol(argv[1]);
    start = cpu_us();
    while (burn > 0 && cpu_us() - start < burn)
        spin++;
    execv(argv[2], argv + 2);
    perror(argv[2]);
    return 127;
}
"""


def build_exec_wrapper(directory: str) -> str:
    """The exec-only reference, linked like the front end (static when possible)."""
    from enforcer.shim.frontend import CFLAGS, compiler

    cc = compiler()
    if not cc:
        raise SystemExit("shim_bench: no C compiler for the exec-only reference")
    source, binary = os.path.join(directory, "exec-only.c"), os.path.join(directory, "exec-only")
    if os.path.exists(binary):
        return binary
    with open(source, "w") as f:
        f.write(EXEC_WRAPPER_C)
    for link in (["-static"], ["-pie", "-fPIE"]):
        if subprocess.run([cc, *CFLAGS, *link, "-o", binary, source],
                          capture_output=True).returncode == 0:
            return binary
    raise SystemExit(f"shim_bench: {cc} could not build the exec-only reference")


def build_tools(directory: str, fast_python: str) -> dict[str, str]:
    """What `python -m enforcer.launcher` installs on a node, in `directory`."""
    os.makedirs(directory)
    sh(os.path.join(VENV, "python"), "-m", "enforcer.launcher", "--python", fast_python,
       directory, stdout=subprocess.DEVNULL, cwd=REPO)
    tools = {name: os.path.join(directory, name)
             for name in ("enforcer-runc", "enforcer-runc-py", "enforcer-shimd")}
    with open(tools["enforcer-runc"], "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise SystemExit("shim_bench: the compiled front end was not built (no C compiler?); "
                             "this benchmark is about it")
    return tools


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def run_time_ns(pid: int) -> int:
    """CPU time the scheduler has charged to `pid` (all its threads), in ns."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


class ShimServer:
    """DIR/enforcer-shimd on a socket of its own, for the benchmark's lifetime."""

    def __init__(self, binary: str, socket_path: str, log_path: str, env: dict[str, str]):
        self.socket, self.log = socket_path, log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen([binary, "--socket", socket_path], env=env,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None:
                raise SystemExit(f"shim_bench: enforcer-shimd exited: {self.log_text()}")
            if time.monotonic() > deadline:
                raise SystemExit("shim_bench: enforcer-shimd did not start in 30 s")
            time.sleep(0.02)
        # Its workers are forked right after it listens: wait for all of them.
        while len(children_of(self.proc.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.workers = children_of(self.proc.pid)

    def _answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            probe.close()  # a worker sees EOF instead of a request: it refuses, no harm

    def cpu_ns(self) -> int:
        """Run time of the server and its current workers."""
        return self.main_cpu_ns() + self.workers_cpu_ns()

    def main_cpu_ns(self) -> int:
        """The server process alone: it keeps the workers, takes the pidfd
        of each foreground run from them and removes the record at its end."""
        return run_time_ns(self.proc.pid)

    def workers_cpu_ns(self) -> int:
        """The workers: each serves a request (the shim's code) start to end."""
        return sum(run_time_ns(p) for p in children_of(self.proc.pid))

    def log_text(self) -> str:
        with open(self.log) as f:
            return f.read()

    def stop(self) -> list[int]:
        """SIGTERM; returns the pids of its processes still alive after 10 s (killed)."""
        # Workers are forks of the server: their command line names the socket.
        return terminate(self.proc, lambda: server_processes(self.socket))


# -- measuring -----------------------------------------------------------------------


class Variant:
    def __init__(self, key: str, label: str, cmd: list[str], cwd: str, env: dict[str, str],
                 uses_server: bool = False):
        self.key, self.label, self.cmd, self.cwd, self.env = key, label, cmd, cwd, env
        self.uses_server = uses_server
        self.wall: list[int] = []
        self.cpu: list[int] = []
        self.stdout: list[bytes] = []
        # Per run: the server process's and its workers' CPU, ns.
        self.server_main: list[int] = []
        self.server_workers: list[int] = []

    @property
    def server(self) -> list[int]:
        return [a + b for a, b in zip(self.server_main, self.server_workers)]


def timed_run(cmd: list[str], cwd: str, env: dict[str, str]) -> tuple[int, int, bytes]:
    """(wall ns, CPU ns of the command and all it waited for, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter_ns()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter_ns() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"shim_bench: {' '.join(cmd)} exited {proc.returncode}: "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    cpu_ns = int(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1e9)
    return elapsed, cpu_ns, proc.stdout


def interleave(variants: list[Variant], runs: int, used_ids: list[str],
               server: "ShimServer | None" = None) -> None:
    """Warm-up rounds, then `runs` rounds; each round runs every variant once,
    starting one further along each time. A fresh container id per run: one
    that runc failed to clean up (it happens under load) must not fail every
    later run.

    With a `server`, its CPU is read before every run, and what it spent up
    to the next reading is charged to the run in between: so the registry
    record removal it does after a run's runc exits counts for that run.
    A variant that does not use the server should be charged ~0 (reported
    as a check of the method).
    """
    last: "tuple[Variant, tuple[int, int]] | None" = None

    def reading() -> tuple[int, int]:
        assert server is not None
        return server.main_cpu_ns(), server.workers_cpu_ns()

    def settle(now: tuple[int, int]) -> None:
        if last is not None:
            v, start = last
            v.server_main.append(now[0] - start[0])
            v.server_workers.append(now[1] - start[1])

    for i in range(runs + WARMUP):
        shift = i % len(variants)
        for v in variants[shift:] + variants[:shift]:
            cmd = v.cmd[:-1] + [f"{v.cmd[-1]}-{i}"]
            used_ids.append(cmd[-1])
            if server is not None:
                now = reading()
                settle(now)
                last = (v, now) if i >= WARMUP else None
            wall, cpu, out = timed_run(cmd, v.cwd, v.env)
            if server is not None and v.uses_server:
                # Untimed: let the server remove the run's record (it wakes
                # when runc exits, as we do) before the next reading.
                time.sleep(0.01)
            if i >= WARMUP:
                v.wall.append(wall)
                v.cpu.append(cpu)
                v.stdout.append(out)
    if server is not None:
        time.sleep(0.2)
        settle(reading())


def wait_until_empty(directory: str, seconds: float = 10.0) -> list[str]:
    """Registry records still present after waiting up to `seconds` for the reapers."""
    deadline = time.monotonic() + seconds
    while True:
        left = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
        left = [n for n in left if n.endswith(".json")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def breakdown(tools: dict[str, str], work: str, plans: str,
              fast_python: str, exec_only: str, runs: int,
              used_ids: list[str]) -> dict[str, Any]:
    """The /bin/true steps, with a server of their own: enforcer-shimd serves
    with its own configuration only (here: runc = /bin/true), and a client
    naming another would be sent to the Python shim."""
    true = shutil.which("true") or "/bin/true"
    config = os.path.join(work, "shim-true.json")
    with open(config, "w") as f:
        json.dump({"plans_dir": plans, "runc": true}, f)
    env = {**os.environ, "ENFORCER_SHIM_CONFIG": config,
           "ENFORCER_RUNTIME_DIR": os.path.join(work, "run-true")}
    for name in ("ENFORCER_SHIM_ACTIVE", "ENFORCER_SHIM_FALLBACK", "ENFORCER_SHIM_SOCKET"):
        env.pop(name, None)
    server = ShimServer(tools["enforcer-shimd"], os.path.join(work, "shim-true.sock"),
                        os.path.join(work, "shimd-true.log"), env)
    try:
        return _breakdown(tools, server, work, fast_python, exec_only, runs, used_ids,
                          {**env, "ENFORCER_SHIM_SOCKET": server.socket})
    finally:
        left = server.stop()
        if left:
            raise SystemExit(f"shim_bench: enforcer-shimd processes outlived it: {left}")


def _breakdown(tools: dict[str, str], server: ShimServer, work: str,
               fast_python: str, exec_only: str, runs: int,
               used_ids: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The shim's path with /bin/true standing in for runc, and the server alone.

    T0 /bin/true; T1 the compiled front end + server, runc = /bin/true;
    T2 the Python shim, runc = /bin/true; T3 a protocol client timing the
    server (its own figures, printed on stdout); T4 the exec-only program,
    then /bin/true. Interleaved like the main runs. A registry root of its
    own, so the runc-features cache of the main runs is left alone.
    """
    true = shutil.which("true") or "/bin/true"
    bundle = make_bundle(os.path.join(work, "t"))
    shim_args = ["--policy", POLICY, "run", "--bundle", bundle]
    t0 = Variant("T0", "/bin/true", [true, "bench-shim-t0"], bundle, env)
    t1 = Variant("T1", "front end + server, runc = /bin/true",
                 [tools["enforcer-runc"], *shim_args, "bench-shim-t1"], bundle, env, True)
    t2 = Variant("T2", "Python shim, runc = /bin/true",
                 [tools["enforcer-runc-py"], *shim_args, "bench-shim-t2"], bundle, env)
    t4 = Variant("T4", "exec-only program, then /bin/true",
                 [exec_only, "0", true, "bench-shim-t4"], bundle, env)
    t3 = Variant("T3", "protocol client timing the server",
                 [fast_python, "-I", "-S", "-c", PROTOCOL_CLIENT, server.socket,
                  tools["enforcer-runc"], bundle, *shim_args, "bench-shim-t3"], bundle, env, True)
    # T0 passes the id to /bin/true, which ignores it: same argv length, no container.
    interleave([t0, t1, t2, t3, t4], runs, used_ids, server)
    connect, handling = zip(*((int(c), int(h)) for c, h in (o.split() for o in t3.stdout)))
    # CPU of the shim's path beyond a bare exec: front end + server, less exec-only.
    path_cpu_ms = median_ms([a + b for a, b in zip(t1.cpu, t1.server)]) - median_ms(t4.cpu)
    return {"true": t0, "front": t1, "python": t2, "exec_only": t4, "others": [t0, t2, t4],
            "path_cpu_ms": path_cpu_ms,
            "connect": list(connect),
            "handling": list(handling), "registry": os.path.join(work, "run-true", "workloads")}


def hyperfine(variants: list[Variant], runs: int, work: str,
              env: dict[str, str]) -> tuple[str, dict[str, float]]:
    """A/B/C through hyperfine: (its Markdown table, median ms by variant key)."""
    md, js = os.path.join(work, "hyperfine.md"), os.path.join(work, "hyperfine.json")
    hf = ["hyperfine", "-N", "--warmup", str(WARMUP), "--runs", str(runs),
          "--export-markdown", md, "--export-json", js]
    for v in variants:
        # hyperfine -N has no cwd option: pass the bundle explicitly.
        hf += ["-n", v.key, shlex.join(v.cmd[:-1] + ["--bundle", v.cwd, v.cmd[-1] + "-hf"])]
    run = subprocess.run(hf, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"shim_bench: hyperfine failed: {run.stderr.strip()[-2000:]}")
    with open(js) as f:
        medians = {r["command"]: r["median"] * 1e3 for r in json.load(f)["results"]}
    with open(md) as f:
        return f.read().strip(), medians


# -- the report --------------------------------------------------------------------------


def report(opts: argparse.Namespace, command: str, load: tuple[float, float], fast_python: str,
           variants: dict[str, Variant], parts: dict[str, Any],
           cleanup: list[str], hf: "tuple[str, dict[str, float]] | None") -> tuple[str, float]:
    A, C = variants["A"], variants["C"]
    med = {k: median_ms(v.wall) for k, v in variants.items()}
    cpu = {k: median_ms(v.cpu) for k, v in variants.items()}
    c_total_cpu = median_ms([a + b for a, b in zip(C.cpu, C.server)])
    server_cpu = median_ms(C.server)
    over_a = med["C"] - med["A"]
    interval = median_difference_interval(A.wall, C.wall)
    try:
        runc_version = subprocess.run(["runc", "--version"], capture_output=True,
                                      text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        runc_version = "runc version unknown"
    lines = [
        "# Shim overhead: `runc run` through enforcer-runc vs plain `runc run`",
        "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this host: "
        f"kernel {platform.release()}, {os.cpu_count()} CPUs, {runc_version}.",
        "",
        f"Command (as root, from the repository root): `{command}`",
        "",
        f"{opts.runs} runs each after {WARMUP} warm-up rounds, interleaved run by run (each "
        "round in a rotated order); wall time of the whole command as seen by the caller; "
        f"busybox `/bin/true` bundle; policy `{POLICY}` precompiled to a Plan file (the "
        "deploy path); front end, Python launchers and enforcer-shimd built by "
        f"`python -m enforcer.launcher --python {fast_python} DIR`; bundles, registry and the "
        f"server's socket under {opts.dir} (containerd and Docker keep theirs on the /run "
        "tmpfs; on a disk, the shim's fsyncs add the disk's latency).",
        "",
        f"Load average (1 min): {load[0]:.2f} at the start, {load[1]:.2f} at the end, "
        f"on {os.cpu_count()} CPUs.",
        "",
        "| variant | median ms | mean ms | p10 ms | p90 ms | min ms | max ms | CPU ms (median) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, v in variants.items():
        s = stats(v.wall)
        cpu_cell = f"{cpu[k]:.1f}" if k != "C" else \
            f"{c_total_cpu:.1f} ({cpu[k]:.1f} + enforcer-shimd {server_cpu:.1f})"
        lines.append(f"| {k} {v.label} | {s['median']:.1f} | {s['mean']:.1f} | {s['p10']:.1f} | "
                     f"{s['p90']:.1f} | {s['min']:.1f} | {s['max']:.1f} | {cpu_cell} |")
    verdict = "within" if over_a <= BUDGET_MS else "OVER"
    lines += [
        "",
        f"- C - A, the deploy path (shim + the policy's own cost in runc): "
        f"**{over_a:+.1f} ms** at the median, {verdict} the {BUDGET_MS:.0f} ms budget "
        f"(95% interval {interval[0]:+.1f} to {interval[1]:+.1f} ms, bootstrap over rounds); "
        f"CPU {c_total_cpu - cpu['A']:+.1f} ms (front end and runc "
        f"{cpu['C'] - cpu['A']:+.1f}, enforcer-shimd {server_cpu:.1f}).",
        f"- C - B (the shim alone: front end, server's merge + registry record + "
        f"config.json write, exec): {med['C'] - med['B']:+.1f} ms wall, "
        f"{c_total_cpu - cpu['B']:+.1f} ms CPU.",
        f"- D - A (the Python shim, what runs with no server): {med['D'] - med['A']:+.1f} ms "
        f"wall, {cpu['D'] - cpu['A']:+.1f} ms CPU.",
        f"- E - D (the front end finding no server and exec'ing the Python shim): "
        f"{med['E'] - med['D']:+.1f} ms wall, {cpu['E'] - cpu['D']:+.1f} ms CPU.",
    ]
    if hf:
        lines.append(f"- hyperfine medians: C - A {hf[1]['C'] - hf[1]['A']:+.1f} ms, "
                     f"B - A {hf[1]['B'] - hf[1]['A']:+.1f} ms (table below).")
    lines += ["", *where_the_time_goes(variants, parts, interval)]
    lines += ["", "Clean-up checked at the end: " + ("; ".join(cleanup) if cleanup else "none")
              + "."]
    if hf:
        lines += ["", "Cross-check with hyperfine (not interleaved: all runs of one command, "
                  "then the next; C with the server running):", "", hf[0]]
    return "\n".join(lines) + "\n", over_a


def where_the_time_goes(variants: dict[str, Variant], parts: dict[str, Any],
                        interval: tuple[float, float]) -> list[str]:
    """The measured breakdown of C - A (every figure from this run).

    C - A = (B - A) + (F - B) + (G - F) + (C - G) exactly (medians
    telescope), one thing added at each step; the shim's own step is
    measured again without runc (/bin/true as the target) and from the
    server's side.
    """
    med = {k: median_ms(v.wall) for k, v in variants.items()}
    cpu = {k: median_ms(v.cpu) for k, v in variants.items()}
    C = variants["C"]
    server_cpu = median_ms(C.server)
    idle = max(median_ms(v.server) for v in [*variants.values(), *parts["others"]]
               if not v.uses_server)
    t0, t1, t2, t4 = parts["true"], parts["front"], parts["python"], parts["exec_only"]
    true_ms, front_ms, python_ms, exec_ms = (median_ms(v.wall) for v in (t0, t1, t2, t4))
    handling = median_ms(parts["handling"])
    connect = median_ms(parts["connect"])
    shim_step = med["C"] - med["F"]
    shim_alone = front_ms - exec_ms
    burn = med["G"] - med["F"]
    rest = med["C"] - med["G"]
    n = len(t0.wall)

    def ci(a: str, b: str) -> str:
        lo, hi = median_difference_interval(variants[a].wall, variants[b].wall)
        return f"95% interval {lo:+.1f} to {hi:+.1f}"

    rest_lo, rest_hi = median_difference_interval(variants["G"].wall, C.wall)
    return [
        f"Where C - A goes, measured in this run (medians; {n} interleaved rounds of every "
        "experiment; intervals: bootstrap over rounds). "
        "C - A = (B - A) + (F - B) + (G - F) + (C - G), one thing added at each step:",
        "",
        f"- B - A = {med['B'] - med['A']:+.1f} ms wall ({cpu['B'] - cpu['A']:+.1f} ms CPU; "
        f"{ci('A', 'B')}): runc itself doing more for the policy (the OCI seccomp profile "
        "compiled by libseccomp, more masked and read-only mounts). Any seccomp profile "
        "costs runc this; plain `runc spec` has none.",
        f"- F - B = {med['F'] - med['B']:+.1f} ms wall ({cpu['F'] - cpu['B']:+.1f} ms CPU; "
        f"{ci('B', 'F')}): one static program exec'd in front of runc (F: a C program that "
        "only execs its arguments, built with the front end's flags, on B's config). The "
        f"same program in front of /bin/true: {exec_ms - true_ms:+.2f} ms ({exec_ms:.2f} vs "
        f"{true_ms:.2f} ms).",
        f"- The shim's own step, measured without runc (the shim config's \"runc\" is "
        f"/bin/true; same front end, server, bundle merge, registry record): front end + "
        f"server {front_ms:.2f} ms vs the exec-only program {exec_ms:.2f} ms = "
        f"**{shim_alone:+.2f} ms** wall, {parts['path_cpu_ms']:+.2f} ms CPU (front end and "
        f"/bin/true {median_ms(t1.cpu):.2f} ms + enforcer-shimd {median_ms(t1.server):.2f} ms, "
        f"vs exec-only and /bin/true {median_ms(t4.cpu):.2f} ms; CPU medians move by a few "
        "tenths of a ms from run to run). Of that, the server's handling of one request, "
        "timed by a client "
        f"that speaks the front end's protocol (from sending the request to the exec answer; "
        f"connect {connect * 1e3:.0f} µs apart): {handling:.2f} ms.",
        f"- G - F = {burn:+.1f} ms wall ({ci('F', 'G')}): F spending that same "
        f"{parts['path_cpu_ms']:.2f} ms of CPU (a busy loop) just before it execs runc: "
        f"{burn / parts['path_cpu_ms'] if parts['path_cpu_ms'] > 0 else 0:.1f} ms of wall "
        "time per ms of CPU spent in front of runc.",
        f"- C - G = {rest:+.1f} ms wall ({ci('G', 'C')}): the real shim against that stand-in. "
        + ("Zero is inside the interval: the shim's step costs runc what its CPU costs, and "
           "nothing else measurable."
           if rest_lo <= 0 <= rest_hi else
           ("Above zero: beyond its CPU the shim's step costs runc this much more "
            "(not explained by this run's measurements)." if rest_lo > 0 else
            "Below zero: the real shim costs less than a busy loop of the same CPU "
            "(its CPU is split over two processes that overlap, the loop's is not).")),
        f"- So C - F, the shim's whole step with runc, is {shim_step:+.1f} ms "
        f"({ci('F', 'C')}) for {shim_alone:.2f} ms of work of its own.",
        f"- enforcer-shimd's CPU per `runc run` in C: {server_cpu:.2f} ms (the worker serving "
        f"the request {median_ms(C.server_workers):.2f} ms, the server process taking the "
        f"run's pidfd and removing the registry record when runc exits "
        f"{median_ms(C.server_main):.2f} ms); schedstat run time of its processes from the "
        "start of a C run to the start of the next run of any variant (runs that do not use "
        f"the server were charged {idle:.2f} ms at most: the method's error).",
        f"- For comparison, the Python shim on the /bin/true path: {python_ms:.2f} ms "
        f"({python_ms - true_ms:+.2f} ms over /bin/true): the interpreter's start is what the "
        "server saves.",
        f"- C - A's 95% interval ({interval[0]:+.1f} to {interval[1]:+.1f} ms) is the "
        "resolution of all of the above.",
    ]


# -- main --------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--no-hyperfine", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else "/var/tmp",
                    help="where the bundles, the registry and the socket go (default /dev/shm: "
                         "a tmpfs, as /run is where containerd and Docker keep theirs)")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("shim_bench: needs root (runc)", file=sys.stderr)
        return 2
    command = command_line(sys.argv, sys.executable, os.environ)
    load_at_start = os.getloadavg()[0]
    work = tempfile.mkdtemp(prefix="enforcer-shim-bench.", dir=opts.dir)
    used_ids: list[str] = []
    server: ShimServer | None = None
    cleanup: list[str] = []
    problems: list[str] = []
    try:
        # An installed package ships .pyc files; this environment may set
        # PYTHONDONTWRITEBYTECODE, so byte-compile like an install would.
        sh(os.path.join(VENV, "python"), "-m", "compileall", "-q", os.path.join(REPO, "enforcer"))
        plans = os.path.join(work, "plans")
        os.makedirs(plans)
        sh(os.path.join(VENV, "enforcer"), "compile", POLICY, "-o",
           os.path.join(plans, f"{POLICY}.json"))
        fast_python = fast_interpreter()
        tools = build_tools(os.path.join(work, "bin"), fast_python)
        shim_config = os.path.join(work, "shim.json")
        with open(shim_config, "w") as f:
            json.dump({"plans_dir": plans, "runc": shutil.which("runc")}, f)
        env = {**os.environ, "ENFORCER_SHIM_CONFIG": shim_config,
               "ENFORCER_RUNTIME_DIR": os.path.join(work, "run")}
        for name in ("ENFORCER_SHIM_ACTIVE", "ENFORCER_SHIM_SOCKET", "ENFORCER_SHIM_FALLBACK"):
            env.pop(name, None)
        socket_path = os.path.join(work, "shim.sock")
        server = ShimServer(tools["enforcer-shimd"], socket_path,
                            os.path.join(work, "shimd.log"), env)
        env_c = {**env, "ENFORCER_SHIM_SOCKET": socket_path}
        # E: a socket path where nothing listens (ENOENT: the front end falls back).
        env_e = {**env, "ENFORCER_SHIM_SOCKET": os.path.join(work, "no-server.sock")}
        bundles = {k: make_bundle(os.path.join(work, k.lower())) for k in "ACDE"}
        # The first shim run merges the policy and fills the shim's caches;
        # B is A's bundle with the config the shim wrote.
        sh(tools["enforcer-runc"], "--policy", POLICY, "run", "bench-shim-first",
           cwd=bundles["C"], env=env_c)
        used_ids.append("bench-shim-first")
        bundles["B"] = os.path.join(work, "b")
        shutil.copytree(bundles["A"], bundles["B"], symlinks=True)
        shutil.copy(os.path.join(bundles["C"], "config.json"),
                    os.path.join(bundles["B"], "config.json"))
        shim = ["--policy", POLICY, "run"]
        # The breakdown's experiments without runc first: G below spends the
        # CPU they measure for the shim's path.
        exec_only = build_exec_wrapper(work)
        parts = breakdown(tools, work, plans, fast_python, exec_only, opts.runs, used_ids)
        burn_us = max(0, round(parts["path_cpu_ms"] * 1e3))
        runc = shutil.which("runc") or "runc"
        variants = {
            "A": Variant("A", "runc run (plain config)", ["runc", "run", "bench-shim-a"],
                         bundles["A"], env),
            "B": Variant("B", f"runc run (config merged with {POLICY})",
                         ["runc", "run", "bench-shim-b"], bundles["B"], env),
            "C": Variant("C", "enforcer-runc (compiled) + enforcer-shimd",
                         [tools["enforcer-runc"], *shim, "bench-shim-c"], bundles["C"], env_c,
                         True),
            "D": Variant("D", f"enforcer-runc-py (Python shim, launcher on {fast_python})",
                         [tools["enforcer-runc-py"], *shim, "bench-shim-d"], bundles["D"], env),
            "E": Variant("E", "enforcer-runc (compiled), no server: falls back to D",
                         [tools["enforcer-runc"], *shim, "bench-shim-e"], bundles["E"], env_e),
            # Not ways to run the shim: the breakdown's reference steps (see
            # where_the_time_goes), timed in the same rounds as the others.
            "F": Variant("F", "static exec-only program, then runc run (B's config)",
                         [exec_only, "0", runc, "run", "bench-shim-f"], bundles["B"], env),
            "G": Variant("G", f"F, spending {burn_us / 1e3:.2f} ms of CPU (the shim path's) "
                         "before the exec",
                         [exec_only, str(burn_us), runc, "run", "bench-shim-g"], bundles["B"],
                         env),
        }
        interleave(list(variants.values()), opts.runs, used_ids, server)
        hf = None
        if not opts.no_hyperfine and shutil.which("hyperfine"):
            hf_variants = [variants[k] for k in "ABC"]
            used_ids += [v.cmd[-1] + "-hf" for v in hf_variants]
            hf = hyperfine(hf_variants, opts.runs, work, env_c)
        # Every `runc run` has ended: its registry record must go (the server
        # removes C's when the front end's pid exits, the Python shim's
        # reaper D's and E's) and the server must take its workers with it.
        for registry in (os.path.join(work, "run", "workloads"), parts["registry"]):
            left = wait_until_empty(registry)
            if left:
                problems.append(f"{len(left)} registry records left in "
                                f"{os.path.relpath(registry, work)}: {', '.join(left[:5])}")
            else:
                cleanup.append(f"registry `{os.path.relpath(registry, work)}` empty")
        workers = len(server.workers)
        left_pids = server.stop()
        server = None
        if left_pids:
            problems.append(f"enforcer-shimd processes outlived it (killed): {left_pids}")
        else:
            cleanup.append(f"enforcer-shimd and its {workers} workers gone after SIGTERM")
        if os.path.exists(socket_path):
            problems.append("enforcer-shimd left its socket behind")
        kept = [c for c in set(used_ids) if os.path.exists(os.path.join("/run/runc", c))]
        if kept:
            problems.append(f"runc kept {len(kept)} containers (deleted now): {sorted(kept)[:5]}")
        else:
            cleanup.append(f"no container left in runc's state dir ({len(set(used_ids))} ids)")
        text, over_a = report(opts, command, (load_at_start, os.getloadavg()[0]), fast_python,
                              variants, parts, cleanup + [f"PROBLEM: {p}" for p in problems], hf)
        print(text)
        if not opts.no_write:
            with open(RESULTS, "w") as f:
                f.write(text)
        for p in problems:
            print(f"shim_bench: {p}", file=sys.stderr)
        return 0 if over_a <= BUDGET_MS and not problems else 1
    finally:
        if server is not None:
            server.stop()
        for cid in set(used_ids):
            if os.path.exists(os.path.join("/run/runc", cid)):
                subprocess.run(["runc", "delete", "-f", cid], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
