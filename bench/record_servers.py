#!/usr/bin/env python3
"""Record real servers, then enforce what was learned (issue 16, part 4).

    bench/record_servers.py [--servers nginx,redis,postgresql] [--seconds 10]
                            [--rounds 2] [--out bench/results/record-servers.md]
                            [--keep DIR]

For each server from Debian's packages, run as its documentation runs it
(nginx's master as root with `user www-data`, redis-server and PostgreSQL as
their own users), on 127.0.0.1 and with its files in a scratch directory:

1. `enforcer record --base BASE` while its load generator (wrk,
   redis-benchmark, pgbench -i then pgbench) drives it;
2. the same load, in alternating rounds, against the server unconfined and
   under the learned policy (`enforcer run --policy learned.yaml`):
   throughput of each (the median of the rounds) and their ratio;
3. the probe suite (tests/probes) under the learned policy and under
   `restricted`: every probe restricted blocks must be blocked.

Writes a Markdown report (with this command line) to --out; --keep DIR
keeps each learned policy there (docs/record.md shows them). Needs root;
leaves no process, data directory or audit rule behind.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
PYTHON = sys.executable
NGINX_PORT, REDIS_PORT, PG_PORT = 18081, 16379, 15432


@dataclass
class Server:
    name: str
    user: str | None  # the server's own user (None: started as root)
    port: int
    setup: Callable[[str], None]
    argv: Callable[[str], list[str]]
    warmup: Callable[[str], None]  # the load during the recording
    load: Callable[[str, int], float]  # seconds -> throughput
    unit: str
    notes: list[str] = field(default_factory=list)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)  # type: ignore[call-overload]


# -- nginx --------------------------------------------------------------------------------

NGINX_CONF = """user www-data;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 768; }}
http {{
    sendfile on;
    tcp_nopush on;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root /var/www/html;
        index index.html index.nginx-debian.html;
        location / {{ try_files $uri $uri/ =404; }}
    }}
}}
"""


def nginx_setup(d: str) -> None:
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(d=d, port=NGINX_PORT))


def wrk(seconds: int) -> float:
    out = run(["wrk", "-t2", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{NGINX_PORT}/"]).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


# -- redis --------------------------------------------------------------------------------


def redis_setup(d: str) -> None:
    os.makedirs(f"{d}/data")
    os.chown(f"{d}/data", *_ids("redis"))


def redis_argv(d: str) -> list[str]:
    # Debian's configuration, with the port, files and foreground mode of this run.
    return ["/usr/bin/redis-server", "/etc/redis/redis.conf", "--port", str(REDIS_PORT),
            "--bind", "127.0.0.1", "--daemonize", "no", "--supervised", "no",
            "--pidfile", f"{d}/data/redis.pid", "--logfile", "", "--dir", f"{d}/data"]


def redis_benchmark(requests: int) -> float:
    out = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(REDIS_PORT), "-q", "-c", "32",
               "-n", str(requests), "-t", "set,get"]).stdout
    rates = [float(x) for x in re.findall(r"([\d.]+) requests per second", out)]
    assert len(rates) == 2, out
    return statistics.mean(rates)


# -- PostgreSQL ---------------------------------------------------------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"


def pg_setup(d: str) -> None:
    os.makedirs(f"{d}/sock")
    os.chown(f"{d}/sock", *_ids("postgres"))
    os.makedirs(f"{d}/pgdata", mode=0o700)
    os.chown(f"{d}/pgdata", *_ids("postgres"))
    run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/initdb", "-D", f"{d}/pgdata",
         "--auth=trust", "-U", "postgres", "--no-sync"], cwd="/")


def pg_argv(d: str) -> list[str]:
    return [f"{PG_BIN}/postgres", "-D", f"{d}/pgdata", "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={PG_PORT}", "-c", f"unix_socket_directories={d}/sock"]


def pgbench(args: list[str]) -> str:
    return run(["pgbench", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", *args,
                "postgres"]).stdout


def pg_warmup(_d: str) -> None:
    pgbench(["-i", "-s", "2", "-q"])
    pgbench(["-c", "8", "-j", "2", "-T", "5"])


def pg_load(seconds: int) -> float:
    out = pgbench(["-c", "8", "-j", "2", "-T", str(seconds)])
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    assert m, out
    return float(m.group(1))


SERVERS = {
    "nginx": Server("nginx", None, NGINX_PORT, nginx_setup,
                    lambda d: ["/usr/sbin/nginx", "-p", d, "-c", f"{d}/nginx.conf",
                               "-g", "daemon off;"],
                    lambda d: (wrk(5), None)[1], lambda _d, s: wrk(s), "requests/s (wrk -t2 -c32)"),
    "redis": Server("redis", "redis", REDIS_PORT, redis_setup, redis_argv,
                    lambda d: (redis_benchmark(20000), None)[1],
                    lambda _d, s: redis_benchmark(s * 20000),
                    "requests/s (redis-benchmark -c 32 -t set,get, mean of the two)"),
    "postgresql": Server("postgresql", "postgres", PG_PORT, pg_setup, pg_argv, pg_warmup,
                         lambda _d, s: pg_load(s), "tps (pgbench -c 8 -j 2, scale 2)"),
}


def _ids(user: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


# -- running servers ----------------------------------------------------------------------


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited early with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start(cmd: list[str], log: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd="/")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the group left (nothing, normally)
    except ProcessLookupError:
        pass
    return proc.returncode


def unconfined(server: Server, d: str) -> list[str]:
    argv = server.argv(d)
    return ["runuser", "-u", server.user, "--", *argv] if server.user else argv


def base_policy(server: Server, d: str) -> str:
    """`default`, plus the server's own user where it runs as one."""
    if server.user is None:
        return "default"
    path = f"{d}/{server.name}-base.yaml"
    with open(path, "w") as f:
        f.write(f"name: {server.name}-base\nextends: default\nuser: {{uid: {server.user}}}\n")
    return path


@dataclass
class Result:
    name: str
    unit: str
    unconfined: list[float] = field(default_factory=list)
    learned: list[float] = field(default_factory=list)
    weaker: list[str] = field(default_factory=list)
    blocked: int = 0
    probes: int = 0
    record_log: str = ""
    policy: str = ""
    notes: list[str] = field(default_factory=list)


def bench_server(server: Server, seconds: int, rounds: int, keep: str | None) -> Result:
    from tests import session
    from run_helpers import build_probe, run_probes
    from record_helpers import probe_overlay

    d = session.mkdtemp(f"enforcer-bench-{server.name}-", dir="/var/tmp")
    os.chmod(d, 0o755)
    res = Result(server.name, server.unit)
    try:
        server.setup(d)
        learned = f"{d}/{server.name}-learned.yaml"
        rec = start([PYTHON, "-m", "enforcer", "record", "--base", base_policy(server, d),
                     "-o", learned, "--", *server.argv(d)], f"{d}/record.log")
        try:
            wait_port(server.port, rec)
            server.warmup(d)
        finally:
            rc = stop(rec, signal.SIGINT)
        res.record_log = open(f"{d}/record.log").read()
        if rc != 0 or not os.path.exists(learned):
            raise RuntimeError(f"recording {server.name} failed ({rc}):\n{res.record_log[-3000:]}")
        res.policy = open(learned).read()
        if keep:
            os.makedirs(keep, exist_ok=True)
            with open(os.path.join(keep, f"{server.name}-learned.yaml"), "w") as f:
                f.write(res.policy)
            base = f"{d}/{server.name}-base.yaml"
            if os.path.exists(base):  # the learned policy extends it by name
                with open(base) as src, open(os.path.join(keep, os.path.basename(base)), "w") as f:
                    f.write(src.read())
        modes = {"unconfined": unconfined(server, d),
                 "learned": [PYTHON, "-m", "enforcer", "run", "--policy", learned, "--",
                             *server.argv(d)]}
        for _ in range(rounds):
            for mode, cmd in modes.items():
                proc = start(cmd, f"{d}/{mode}.log")
                try:
                    wait_port(server.port, proc)
                    getattr(res, mode).append(server.load(d, seconds))
                    if proc.poll() is not None:
                        raise RuntimeError(f"{server.name} {mode} died: {open(f'{d}/{mode}.log').read()[-2000:]}")
                finally:
                    stop(proc)
        exe = build_probe(d)
        cache = f"{d}/cache"
        overlay = probe_overlay(learned, exe, f"{d}/{server.name}-probes.yaml")
        mine = run_probes(exe, cache, overlay)
        theirs = run_probes(exe, cache, "restricted")
        # The TIOCSTI and TIOCLINUX probes set up a pseudo-terminal with
        # ioctl before they attack with it: under a policy that allows no
        # ioctl at all the attack is refused as surely as the setup is.
        from enforcer.policy.loader import load_policy

        allowed = {r.syscall for r in load_policy(learned).syscalls.rules if not r.action.blocks}
        for n in ("tiocsti", "tiocsti_high_bits", "tioclinux"):
            if mine.get(n, ("",))[0] == "setup-error" and "ioctl" not in allowed:
                mine[n] = ("blocked", "no ioctl at all (the probe's pty setup fails first)")
                res.notes.append(f"{n}: the learned policy allows no ioctl")
        res.weaker = [f"{n} ({' '.join(mine[n])})" for n, (v, _) in theirs.items()
                      if v == "blocked" and mine[n][0] != "blocked"]
        res.probes = len(mine)
        res.blocked = sum(v == "blocked" for v, _ in mine.values())
        return res
    finally:
        session.remove_tree(d)


def report(results: list[Result], argv: list[str], seconds: int, rounds: int) -> str:
    lines = ["# Recorded servers: learned policies under load", "",
             f"Command: `{shlex.join(['bench/record_servers.py', *argv])}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{os.cpu_count()} CPUs shared with other work)", "",
             f"Each server recorded under load, then {rounds} alternating rounds of {seconds} s "
             "of the same load unconfined and under the learned policy (median of the rounds); "
             "then the probe suite under the learned policy (with the probe harness's own "
             "syscalls and scratch directory added) against `restricted`.", "",
             "| server | load | unconfined | learned | learned / unconfined | probes blocked | "
             "blocked by restricted, not by the learned policy |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        u, l = statistics.median(r.unconfined), statistics.median(r.learned)
        lines.append(f"| {r.name} | {r.unit} | {u:,.0f} ({', '.join(f'{x:,.0f}' for x in r.unconfined)}) "
                     f"| {l:,.0f} ({', '.join(f'{x:,.0f}' for x in r.learned)}) | {l / u:.3f} "
                     f"| {r.blocked} of {r.probes} | {', '.join(r.weaker) or 'none'} |")
    lines.append("")
    for r in results:
        lines.append(f"## {r.name}: the recording said")
        lines.append("")
        lines.append("```")
        lines.extend(x for x in r.record_log.splitlines() if x.startswith("enforcer record:"))
        lines.append("```")
        lines.extend(f"\n* {n}" for n in r.notes)
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", default="nginx,redis,postgresql")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "record-servers.md"))
    p.add_argument("--keep", default=None, metavar="DIR")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("record_servers.py: needs root", file=sys.stderr)
        return 2
    from tests import session

    session.export_environment()
    results = []
    with session.host_lock("audit"):
        for name in args.servers.split(","):
            print(f"record_servers: {name} ...", file=sys.stderr, flush=True)
            results.append(bench_server(SERVERS[name], args.seconds, args.rounds, args.keep))
    text = report(results, sys.argv[1:], args.seconds, args.rounds)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    return 0 if all(not r.weaker for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
