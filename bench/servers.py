"""nginx, redis-server and PostgreSQL 15 from Debian 12's packages, on
loopback, in scratch directories and on scratch ports -- confined by an
enforcer policy or not -- and the load generators that drive them (wrk,
redis-benchmark, pgbench) with their output read back.

One module for the benchmark (bench/server_bench.py: throughput confined
vs unconfined) and the tests (tests/integration/test_example_servers.py),
so both start the servers the same way. Never the system's own services:
every server gets a directory of its own under the caller's scratch
directory and a port nobody listens on; `running()` stops it (and
everything it started) however the caller leaves.

A policy for a server in a scratch directory is written by `site_policy`:
the example (policies/examples/) extended by the scratch paths and port
only, as docs/tutorial.md has the reader do for their own paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Iterator, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "policies", "examples")
PG_BIN = "/usr/lib/postgresql/15/bin"


def example(name: str) -> str:
    """The absolute path of policies/examples/NAME.yaml."""
    return os.path.join(EXAMPLES, name + ".yaml")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Server:
    """One server ready to start: its command line and what it needs."""

    kind: str                  # nginx | redis | postgresql
    home: str                  # its scratch directory (read by the server)
    port: int
    user: str                  # the system user the example policy runs it as
    argv: list[str]
    writable: list[str]        # directories it writes (owned by `user`)
    ready: Callable[[], bool]  # answers once it serves


def _owned_dir(path: str, user: str, mode: int = 0o755) -> str:
    os.makedirs(path, exist_ok=True)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)
    return path


def _public_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def _tcp_answers(port: int, send: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(send)
            return expect in s.recv(256)
    except OSError:
        return False


NGINX_CONF = """\
{user}worker_processes 2;
error_log {logs}/error.log;
{own_paths}
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    access_log {logs}/access.log;
{temp_paths}
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {html};
    }}
}}
"""


NGINX_OWN_PATHS = """\
pid {logs}/nginx.pid;
"""
NGINX_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def prepare_nginx(scratch: str, port: int, *, master_as_root: bool = False,
                  own_paths: bool = False) -> Server:
    """nginx serving a small static page. With `master_as_root` the config
    names `user www-data;`: a master started as root switches its workers
    to www-data itself (policies/examples/nginx-as-root.yaml). Its pid file
    and temporary files go where Debian's build puts them (/run/nginx.pid,
    /var/lib/nginx: the example policy's private tmpfs mounts), or with
    `own_paths` into its log directory -- so that it also runs as
    www-data without enforcer, for the benchmark's baseline."""
    home = _public_dir(os.path.join(scratch, "nginx"))
    html = _public_dir(os.path.join(home, "html"))
    with open(os.path.join(html, "index.html"), "w") as f:
        f.write("<h1>served under enforcer</h1>\n" + "x" * 512 + "\n")
    os.chmod(os.path.join(html, "index.html"), 0o644)
    # As www-data it creates its logs; a root master creates them as root.
    logs = os.path.join(home, "logs")
    if master_as_root:
        _public_dir(logs)
    else:
        _owned_dir(logs, "www-data")
    conf = os.path.join(home, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(user="user www-data;\n" if master_as_root else "",
                                  own_paths=NGINX_OWN_PATHS.format(logs=logs) if own_paths else "",
                                  temp_paths="".join(
                                      f"    {t}_temp_path {logs}/{t}_temp;\n"
                                      for t in NGINX_TEMP_PATHS) if own_paths else "",
                                  logs=logs, port=port, html=html))
    os.chmod(conf, 0o644)
    argv = ["/usr/sbin/nginx", "-c", conf, "-e", "stderr", "-g", "daemon off;"]
    return Server("nginx", home, port, "www-data", argv, [logs],
                  lambda: _tcp_answers(port, b"GET / HTTP/1.0\r\n\r\n", b" 200 "))


def prepare_redis(scratch: str, port: int) -> Server:
    """redis-server with Debian's /etc/redis/redis.conf, its port, data
    directory and pid file moved into the scratch directory."""
    home = _public_dir(os.path.join(scratch, "redis"))
    data = _owned_dir(os.path.join(home, "data"), "redis", 0o750)
    argv = ["/usr/bin/redis-server", "/etc/redis/redis.conf", "--port", str(port),
            "--bind", "127.0.0.1", "--dir", data, "--pidfile", os.path.join(data, "redis.pid"),
            "--logfile", "", "--daemonize", "no", "--supervised", "no", "--save", ""]
    return Server("redis", home, port, "redis", argv, [data],
                  lambda: _tcp_answers(port, b"PING\r\n", b"+PONG"))


def prepare_postgresql(scratch: str, port: int) -> Server:
    """A fresh PostgreSQL 15 cluster (initdb as postgres, trust on
    loopback), its socket in the scratch directory, TCP on 127.0.0.1."""
    home = _public_dir(os.path.join(scratch, "postgresql"))
    data_parent = _owned_dir(os.path.join(home, "cluster"), "postgres", 0o700)
    sock = _owned_dir(os.path.join(home, "sock"), "postgres")
    data = os.path.join(data_parent, "data")
    subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                    os.path.join(PG_BIN, "initdb"), "-D", data, "-A", "trust", "-U", "postgres",
                    "--no-sync"], check=True, capture_output=True, cwd="/")
    argv = [os.path.join(PG_BIN, "postgres"), "-D", data, "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}"]

    def ready() -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0
    return Server("postgresql", home, port, "postgres", argv, [data_parent, sock], ready)


PREPARE = {"nginx": prepare_nginx, "redis": prepare_redis, "postgresql": prepare_postgresql}


def site_policy(server: Server, base: str, path: str, *, name: str | None = None,
                read: Sequence[str] = (), write: Sequence[str] = (),
                execute: Sequence[str] = ()) -> str:
    """Write a policy at `path` that extends `base` (an example) with what
    a server in a scratch directory needs beyond it: its directory readable,
    its data directories writable, its port bindable. Nothing else."""
    def flow(items: Sequence[str]) -> str:
        return "[" + ", ".join(items) + "]"
    writable = list(server.writable) + list(write)
    text = (f"version: 1\nname: {name or server.kind + '-site'}\nextends: {base}\n"
            f"filesystem:\n  writable_paths: {flow(writable)}\n"
            "landlock:\n  filesystem:\n"
            f"    read: {flow([server.home, *read])}\n"
            f"    write: {flow(writable)}\n"
            + (f"    execute: {flow(list(execute))}\n" if execute else "")
            + f"  network:\n    bind: [{server.port}]\n")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


def enforcer_command() -> list[str]:
    """How to start enforcer: this interpreter's module (the tests' venv)."""
    return [sys.executable, "-m", "enforcer"]


def unconfined_argv(server: Server) -> list[str]:
    """The server as its own user, without enforcer: the baseline."""
    return ["setpriv", f"--reuid={server.user}", f"--regid={server.user}", "--init-groups",
            "--", *server.argv]


@contextlib.contextmanager
def running(argv: list[str], ready: Callable[[], bool], *, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> Iterator[subprocess.Popen[str]]:
    """Start `argv` in a session of its own, wait until `ready()`, and stop
    it on the way out: SIGINT (enforcer run forwards it; each server shuts
    down fast on it), then SIGKILL to the whole session if it lingers."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})}, cwd="/")
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode} before it served:\n{out}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(argv)}: not ready after {timeout}s")
            time.sleep(0.1)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str], grace: float = 30.0) -> str:
    """Stop a process started by `running` and everything in its session;
    returns what it printed."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.stdout.read() if proc.stdout else ""


@dataclasses.dataclass
class Load:
    """What a load generator reported."""

    done: int          # requests, commands or transactions completed
    errors: list[str]  # each kind of error it reported, with its count
    rate: float        # per second, as the generator measured it
    output: str


def _number(pattern: str, text: str, default: float | None = None) -> float:
    m = re.search(pattern, text)
    if m is None:
        if default is not None:
            return default
        raise ValueError(f"no match for {pattern!r} in:\n{text}")
    return float(m.group(1))


def wrk(port: int, seconds: float = 3, connections: int = 16, threads: int = 2) -> Load:
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         check=True, timeout=seconds + 60).stdout
    errors = []
    m = re.search(r"Socket errors: (.*)", out)
    if m and any(int(n) for n in re.findall(r"\d+", m.group(1))):
        errors.append("socket errors: " + m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors.append(f"non-2xx responses: {m.group(1)}")
    return Load(int(_number(r"(\d+) requests in", out)), errors,
                _number(r"Requests/sec:\s+([\d.]+)", out), out)


def redis_benchmark(port: int, requests: int = 20000, clients: int = 16,
                    tests: str = "set,get,incr,lpush,lpop") -> Load:
    """redis-benchmark; `done` is what the server says it processed."""
    before = redis_commands(port)
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests),
                        "-c", str(clients), "-t", tests, "--csv"],
                       capture_output=True, text=True, check=True, timeout=600)
    rates = [float(row.split(",")[1].strip('"')) for row in r.stdout.splitlines()[1:] if row]
    errors = [line for line in (r.stdout + r.stderr).splitlines() if "ERR" in line]
    return Load(redis_commands(port) - before, errors,
                sum(rates) / len(rates) if rates else 0.0, r.stdout)


def redis_commands(port: int) -> int:
    """total_commands_processed from INFO stats."""
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", "stats"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int(_number(r"total_commands_processed:(\d+)", out))


def pgbench_init(port: int, scale: int = 1) -> None:
    subprocess.run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(port),
                    "-U", "postgres", "postgres"], capture_output=True, text=True, check=True,
                   timeout=600)


def pgbench(port: int, *, clients: int = 4, transactions: int | None = 200,
            seconds: float | None = None) -> Load:
    """pgbench's TPC-B-like run: a number of transactions per client, or a
    duration."""
    length = ["-t", str(transactions)] if seconds is None else ["-T", str(int(seconds))]
    r = subprocess.run(["pgbench", "-n", "-c", str(clients), "-j", str(min(clients, 2)), *length,
                        "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"],
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    errors = [] if r.returncode == 0 else [f"pgbench exit {r.returncode}"]
    failed = int(_number(r"number of failed transactions: (\d+)", out, 0))
    if failed:
        errors.append(f"failed transactions: {failed}")
    return Load(int(_number(r"number of transactions actually processed: (\d+)", out)), errors,
                _number(r"tps = ([\d.]+)", out), out)
