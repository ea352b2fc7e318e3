#!/usr/bin/env python3
"""Throughput of nginx, redis-server and PostgreSQL 15 under their example
policies, next to the same server unconfined and while `enforcer record`
records it, in one run on one machine.

    sudo .venv/bin/python bench/server_bench.py [--rounds 5] [--seconds 4]
        [--servers nginx,redis,postgresql] [--no-record] [--monitor multicast|daemon]
        [--name servers]
        [--out bench/results]

Each server is started in a scratch directory on a scratch loopback port
(bench/servers.py, as the tests do) three ways, interleaved round by round
so that a busy machine slows every variant alike:

* unconfined: the server as its own user (setpriv), no enforcer;
* confined: `enforcer run` with the example policy (extended by the scratch
  paths and port only);
* recorded: `enforcer record --base <that policy>`: every syscall is
  logged through the kernel audit stream and read back (docs/record.md,
  "Cost").

With --monitor multicast|daemon, an `enforcer monitor` in that audit mode
runs during the recorded variant, and its CPU time and what it counted are
reported: a recording next to a monitor on the same host. Only one process
can be the kernel's audit daemon: on a machine shared with the test suite,
run the daemon variant under its lock,
    flock /run/lock/enforcer-tests-audit.lock .venv/bin/python bench/server_bench.py --monitor daemon

Load: wrk (nginx, a static page), redis-benchmark (SET, GET; figures are
the mean of the two), pgbench (TPC-B-like, scale 2, 4 clients, with
synchronous_commit off so that a shared disk's latency does not drown
the server's own work). A round's figure is the generator's own rate; a
variant's figure is its best round -- the least disturbed by other work
on a shared machine, as bench/run keeps the fastest batch -- with the
median of its rounds beside it. Results: OUT/NAME.md and OUT/NAME.json, with the command
line that made them. Needs root (the servers' users, cgroups, the audit
stream for recording).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers  # noqa: E402

VARIANTS = ("unconfined", "confined", "recorded")


def load_for(server: servers.Server, seconds: float) -> Callable[[], servers.Load]:
    if server.kind == "nginx":
        return lambda: servers.wrk(server.port, seconds=seconds, connections=32)
    if server.kind == "redis":
        # About `seconds` of work at the rates seen here (~30-60k/s).
        n = int(30000 * seconds)
        return lambda: servers.redis_benchmark(server.port, requests=n, clients=32, tests="set,get")
    return lambda: servers.pgbench(server.port, clients=4, transactions=None, seconds=seconds)


def argv_for(variant: str, server: servers.Server, policy: str, scratch: str) -> list[str]:
    enforcer = servers.enforcer_command()
    if variant == "unconfined":
        return servers.unconfined_argv(server)
    if variant == "confined":
        return [*enforcer, "run", "--policy", policy, "--", *server.argv]
    learned = os.path.join(scratch, f"{server.kind}-learned.yaml")
    return [*enforcer, "record", "--base", policy, "-o", learned, "--", *server.argv]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(launcher: int, exe: str) -> float:
    """CPU seconds the server has used so far: every process under
    `launcher` (itself included) that runs `exe`, plus what the topmost of
    them reaped from children that already exited (postgres backends).
    Less sensitive than throughput to other work on a shared machine: it
    counts the server's own work, however long it waited for a CPU."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
    total, todo = 0.0, [launcher]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        with contextlib.suppress(OSError):
            if os.path.realpath(f"/proc/{pid}/exe") != exe:
                continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid_exe = ""
            with contextlib.suppress(OSError):
                ppid_exe = os.path.realpath(f"/proc/{fields[1]}/exe")
            own = int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14]) if ppid_exe != exe else 0
            total += (own + reaped) / os.sysconf("SC_CLK_TCK")
    return total


def metric_sum(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's series (those whose labels contain `label`)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if (line.startswith(name + "{") or line.startswith(name + " "))
               and label in line)


@contextlib.contextmanager
def monitor(scratch: str, policy: str, mode: str) -> Iterator[Callable[[], dict[str, float]]]:
    """enforcer monitor on a scratch port, in audit mode `mode`; yields a
    reader of its CPU time and counters (violations: of workloads under
    `policy`; the monitor sees the whole host)."""
    port = servers.free_port()
    argv = [*servers.enforcer_command(), "monitor", "--audit-mode", mode,
            "--listen", f"127.0.0.1:{port}", "--events", os.path.join(scratch, "events.jsonl")]

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
        except OSError:
            return False
    with servers.running(argv, ready) as proc:
        def read() -> dict[str, float]:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
            return {"cpu_s": cpu_seconds(proc.pid),
                    "recorded": metric_sum(text, "enforcer_recorded_syscalls_total"),
                    "lost": metric_sum(text, "enforcer_monitor_events_lost_total"),
                    "violations": metric_sum(text, "enforcer_seccomp_violations_total",
                                             f'policy="{policy}"')}
        yield read


def bench_server(kind: str, args: argparse.Namespace, scratch: str) -> dict[str, object]:
    port = servers.free_port()
    # nginx keeps its pid and temporary files in its own directory, so the
    # unconfined baseline can run as www-data too.
    server = (servers.prepare_nginx(scratch, port, own_paths=True) if kind == "nginx"
              else servers.PREPARE[kind](scratch, port))
    if kind == "postgresql":
        # Commits without waiting for the disk: what is measured is the
        # server's own work (where a filter or Landlock would cost), not the
        # latency of a shared disk.
        server.argv += ["-c", "synchronous_commit=off"]
    policy = servers.site_policy(server, servers.example(kind),
                                 os.path.join(scratch, f"{kind}-site.yaml"))
    variants = [v for v in VARIANTS if v != "recorded" or not args.no_record]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    cpu_us: dict[str, list[float]] = {v: [] for v in variants}  # server CPU per request
    exe = os.path.realpath(server.argv[0])
    errors: dict[str, list[str]] = {v: [] for v in variants}
    mon: dict[str, float] = {}
    load = load_for(server, args.seconds)
    if kind == "postgresql":
        with servers.running(servers.unconfined_argv(server), server.ready):
            servers.pgbench_init(server.port, scale=2)
    for rnd in range(args.rounds):
        order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
        for variant in order:
            argv = argv_for(variant, server, policy, scratch)
            with contextlib.ExitStack() as stack:
                read = (stack.enter_context(monitor(scratch, f"{kind}-site", args.monitor))
                        if args.monitor and variant == "recorded" else None)
                before = read() if read else {}
                proc = stack.enter_context(servers.running(argv, server.ready, timeout=120))
                cpu0 = server_cpu(proc.pid, exe)
                result = load()
                # Let the server reap what the load left (postgres backends
                # exit when pgbench disconnects): their CPU time is counted
                # once their parent has them.
                time.sleep(1)
                cpu_us[variant].append((server_cpu(proc.pid, exe) - cpu0) * 1e6
                                       / max(result.done, 1))
                after = read() if read else {}
            rates[variant].append(result.rate)
            errors[variant].extend(result.errors)
            for key in after:
                mon[key] = mon.get(key, 0.0) + after[key] - before[key]
            print(f"[server-bench] {kind} round {rnd + 1} {variant}: {result.rate:.0f}/s, "
                  f"{cpu_us[variant][-1]:.1f} us CPU each", file=sys.stderr)
    medians = {v: statistics.median(r) for v, r in rates.items()}
    best = {v: max(r) for v, r in rates.items()}
    # Per round, confined over unconfined measured moments apart: the median
    # of these is the least sensitive to the machine's load drifting.
    paired = statistics.median(c / u for c, u in zip(rates["confined"], rates["unconfined"]))
    cpu = {v: statistics.median(c) for v, c in cpu_us.items()}
    return {"unit": "requests/s" if kind == "nginx" else
            ("commands/s" if kind == "redis" else "transactions/s"),
            "rounds": rates, "median": medians, "best": best, "errors": errors,
            "cpu_us_rounds": cpu_us, "cpu_us_median": cpu,
            "ratio_confined": best["confined"] / best["unconfined"],
            "ratio_confined_median": medians["confined"] / medians["unconfined"],
            "ratio_confined_paired": paired,
            "ratio_recorded": (best["recorded"] / best["unconfined"]
                               if "recorded" in best else None),
            "monitor": mon or None}


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        r = subprocess.run(argv, capture_output=True, text=True)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"
    return {"kernel": platform.release(), "cpus": str(os.cpu_count()),
            "nginx": first_line(["/usr/sbin/nginx", "-v"]),
            "redis": first_line(["/usr/bin/redis-server", "--version"]),
            "postgresql": first_line([os.path.join(servers.PG_BIN, "postgres"), "--version"]),
            "wrk": first_line(["wrk", "--version"])}


def report(results: dict[str, dict[str, object]], command: str, started: str,
           took: float, mode: str | None, name: str) -> str:
    v = versions()
    lines = ["# Servers under their example policies", "",
             f"Made by `{command}` on {started} in {took:.0f} s, on {v['cpus']} CPUs, "
             f"kernel {v['kernel']}; {v['nginx']}, {v['redis'].split(' sha')[0]}, "
             f"{v['postgresql']}.", "",
             "Each round runs every variant once, interleaved; a variant's figure is its "
             "best round (the least disturbed by the other work on a shared machine, as "
             "bench/run keeps the fastest batch), the median of the rounds beside it. "
             "`confined` = `enforcer run` with the example policy (policies/examples/), "
             "`recorded` = `enforcer record` with it as the base.", "",
             "The ratio columns: best over best; in brackets the median of the per-round "
             "ratios (each round's two variants ran moments apart).", "",
             "| server | load | unconfined | confined | confined / unconfined (per round) | "
             "recorded | recorded / unconfined | errors |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for kind, r in results.items():
        med = r["best"]
        assert isinstance(med, dict)
        rec = r.get("ratio_recorded")
        errs = r["errors"]
        assert isinstance(errs, dict)
        n_err = sum(len(e) for e in errs.values())
        gen = {"nginx": "wrk, 32 connections", "redis": "redis-benchmark SET+GET, 32 clients",
               "postgresql": "pgbench scale 2, 4 clients, synchronous_commit off"}[kind]
        lines.append(f"| {kind} | {gen} | {med['unconfined']:.0f} {r['unit']} | "
                     f"{med['confined']:.0f} | {float(r['ratio_confined']) * 100:.1f}% "
                     f"({float(r['ratio_confined_paired']) * 100:.1f}%) | "
                     + (f"{med['recorded']:.0f} | {float(rec) * 100:.1f}% | " if rec else "- | - | ")
                     + ("none" if not n_err else f"{n_err}: see {name}.json") + " |")
    lines += ["", "The server's own CPU time per request (command, transaction), median of "
              "the rounds: what the confinement or the recording adds to each, however "
              "long the server waited for a CPU on the shared machine.", "",
              "| server | unconfined | confined | confined / unconfined | recorded | "
              "recorded / unconfined |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind, r in results.items():
        c = r["cpu_us_median"]
        assert isinstance(c, dict)
        rec_cpu = (f"{c['recorded']:.1f} us | {c['recorded'] / c['unconfined'] * 100:.0f}%"
                   if "recorded" in c else "- | -")
        lines.append(f"| {kind} | {c['unconfined']:.1f} us | {c['confined']:.1f} us | "
                     f"{c['confined'] / c['unconfined'] * 100:.1f}% | {rec_cpu} |")
    mons = {k: r["monitor"] for k, r in results.items() if r.get("monitor")}
    if mons:
        lines += ["", f"A monitor (`enforcer monitor --audit-mode {mode}`) on the same host "
                  "during the recorded rounds, summed over them:", "",
                  "| server | monitor CPU time | records it counted as recorded | lost | "
                  "counted as the server's violations |", "| --- | ---: | ---: | ---: | ---: |"]
        for kind, m in mons.items():
            assert isinstance(m, dict)
            lines.append(f"| {kind} | {m['cpu_s']:.1f} s | {m['recorded']:.0f} | {m['lost']:.0f} | "
                         f"{m['violations']:.0f} |")
    lines += ["", f"Raw rounds: {name}.json. The machine is shared (other work runs beside "
              "the benchmark), so a single round can be off; the interleaving and the "
              "median are what keep the comparison fair.", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--servers", default="nginx,redis,postgresql")
    ap.add_argument("--no-record", action="store_true", help="skip the recorded variant")
    ap.add_argument("--monitor", choices=("multicast", "daemon"),
                    help="run enforcer monitor in this audit mode during the recorded rounds "
                         "(daemon: as the kernel's audit daemon; hold the host's audit lock, "
                         "see the module doc)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results"))
    ap.add_argument("--name", default="servers",
                    help="results file names: OUT/NAME.md and OUT/NAME.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("server_bench: run as root", file=sys.stderr)
        return 2
    for tool in ("wrk", "redis-benchmark", "pgbench", "setpriv"):
        if shutil.which(tool) is None:
            print(f"server_bench: {tool} is not installed (scripts/setup.sh)", file=sys.stderr)
            return 2
    # SIGTERM unwinds like Ctrl-C: every `running` block stops its server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "bench/server_bench.py " + shlex.join(sys.argv[1:])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="enforcer-server-bench-", dir="/var/lib")
    os.chmod(scratch, 0o755)
    results: dict[str, dict[str, object]] = {}
    try:
        for kind in args.servers.split(","):
            results[kind] = bench_server(kind, args, os.path.join(scratch, kind))
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", scratch])
    took = time.monotonic() - t0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.name + ".json"), "w") as f:
        json.dump({"command": command, "started": started, "seconds": took,
                   "versions": versions(), "results": results}, f, indent=1)
        f.write("\n")
    text = report(results, command, started, took, args.monitor, args.name)
    with open(os.path.join(args.out, args.name + ".md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
