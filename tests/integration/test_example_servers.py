"""The example policies (policies/examples/) with the real servers from
Debian 12's packages, on the real kernel.

Each server runs under its example -- extended only by its scratch
directory and port (bench/servers.py `site_policy`, what docs/tutorial.md
has a reader write) -- on 127.0.0.1, serves load from its own load
generator without an error, and is confined as the example says (its
user, no capabilities, no_new_privs, a seccomp filter). The two ways a
server gets its own user are both run (docs/servers.md): `user:` in the
policy (every example) and a root master that switches its workers itself
(nginx-as-root). And every example blocks every probe `restricted` blocks.

Throughput confined vs unconfined is a benchmark, not a test:
bench/server_bench.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Iterator

import pytest

from bench_helpers import BENCH_DIR  # noqa: F401  (puts bench/ on sys.path)
from run_helpers import (built_probe, enforcer_run, read_probe_table, require_root, run_probes,
                         scratch_dir, wait_for)
from tests import session

import servers  # bench/servers.py

pytestmark = [pytest.mark.root, pytest.mark.slow]

TOOLS = ("nginx", "redis-server", "redis-benchmark", "redis-cli", "wrk", "pgbench", "pg_isready",
         "setpriv")
CAP_SETUID, CAP_SETGID, CAP_CHOWN = 7, 6, 0


@pytest.fixture
def scratch() -> Iterator[str]:
    require_root()
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if missing or not os.path.exists(os.path.join(servers.PG_BIN, "postgres")):
        pytest.skip(f"not installed (scripts/setup.sh installs them): {missing or 'postgresql-15'}")
    d = scratch_dir("enforcer-servers-")
    try:
        yield d
    finally:
        session.remove_tree(d)


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def server_pids(launcher: int, server: servers.Server) -> list[int]:
    """Host pids of the server's processes: the descendants of `launcher`
    (enforcer run) that run the server's binary. Found by parentage, since
    nginx workers, postgres backends and redis rename themselves."""
    exe = os.path.realpath(server.argv[0])
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            children.setdefault(_ppid(int(name)), []).append(int(name))
    found, todo = [], [launcher]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                if os.path.realpath(f"/proc/{child}/exe") == exe:
                    found.append(child)
            except OSError:
                continue
    return sorted(found)


def masters(pids: list[int]) -> list[int]:
    """The processes among `pids` whose parent is not one of them."""
    return [p for p in pids if _ppid(p) not in pids]


def _ppid(pid: int) -> int:
    try:
        return int(status(pid)["PPid"])
    except (OSError, KeyError):
        return -1


def caps(pid: int, which: str) -> int:
    return int(status(pid)[which], 16)


def uid(pid: int) -> int:
    return int(status(pid)["Uid"].split()[0])


def prepare(kind: str, scratch: str) -> tuple[servers.Server, str]:
    """The server and its site policy (the example plus scratch paths/port)."""
    server = servers.PREPARE[kind](scratch, servers.free_port())
    policy = servers.site_policy(server, servers.example(kind),
                                 os.path.join(scratch, f"{kind}-site.yaml"))
    return server, policy


def serve_load(server: servers.Server) -> servers.Load:
    """The server's own load generator against it; the count it reports is
    checked against what the server itself says it did."""
    if server.kind == "nginx":
        load = servers.wrk(server.port, seconds=3)
        with open(os.path.join(server.home, "logs", "access.log")) as f:
            logged = sum(1 for line in f if '" 200 ' in line)
        assert logged >= load.done, f"access log has {logged} 200s, wrk counted {load.done}"
        return load
    if server.kind == "redis":
        load = servers.redis_benchmark(server.port, requests=5000)
        assert load.done >= 5 * 5000, load.output
        return load
    servers.pgbench_init(server.port)
    load = servers.pgbench(server.port, clients=4, transactions=100)
    assert load.done == 400, load.output
    return load


@pytest.mark.parametrize("kind", ["nginx", "redis", "postgresql"])
def test_example_serves_load_as_its_user(kind: str, scratch: str) -> None:
    server, policy = prepare(kind, scratch)
    argv = [*servers.enforcer_command(), "run", "--policy", policy, "--", *server.argv]
    with servers.running(argv, server.ready) as proc:
        pids = server_pids(proc.pid, server)
        assert pids, f"no {kind} process found under {proc.pid}"
        want_uid = int(subprocess.run(["id", "-u", server.user], capture_output=True,
                                      text=True, check=True).stdout)
        for pid in pids:
            st = status(pid)
            # `user:` in the policy: every process is the server's user from
            # its first instruction, holding no capability at all.
            assert uid(pid) == want_uid, (pid, st["Uid"])
            assert caps(pid, "CapEff") == caps(pid, "CapPrm") == caps(pid, "CapBnd") == 0, st
            assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        load = serve_load(server)
        assert load.done > 0 and not load.errors, load.output
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "server processes left"


def test_redis_example_saves_in_the_background(scratch: str) -> None:
    """BGSAVE forks a child that writes and fsyncs the dump: the example
    must allow it (the issue's learned policy refused the child's fsync)."""
    server, policy = prepare("redis", scratch)
    argv = [*servers.enforcer_command(), "run", "--policy", policy, "--", *server.argv]
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(server.port)]
    with servers.running(argv, server.ready):
        subprocess.run([*cli, "SET", "k", "v"], check=True, capture_output=True)
        subprocess.run([*cli, "BGSAVE"], check=True, capture_output=True)

        def saved() -> bool:
            out = subprocess.run([*cli, "INFO", "persistence"], capture_output=True,
                                 text=True).stdout
            return ("rdb_bgsave_in_progress:0" in out
                    and "rdb_last_bgsave_status:ok" in out
                    and os.path.exists(os.path.join(server.writable[0], "dump.rdb")))
        wait_for(saved, timeout=30, what="BGSAVE to finish with status ok")


def test_nginx_master_as_root_switches_its_workers(scratch: str) -> None:
    """The other pattern: nginx started as root drops privileges itself. The
    master keeps only SETUID, SETGID and CHOWN; the workers are www-data with
    none; the policy lets the uid change go to www-data (33) and nowhere else."""
    server = servers.prepare_nginx(scratch, servers.free_port(), master_as_root=True)
    policy = servers.site_policy(server, servers.example("nginx-as-root"),
                                 os.path.join(scratch, "nginx-as-root-site.yaml"))
    argv = [*servers.enforcer_command(), "run", "--policy", policy, "--", *server.argv]
    with servers.running(argv, server.ready) as proc:
        pids = server_pids(proc.pid, server)
        master, *workers = masters(pids) + [p for p in pids if p not in masters(pids)]
        assert len(masters(pids)) == 1 and len(workers) == 2, pids
        assert uid(master) == 0
        assert caps(master, "CapEff") == (1 << CAP_SETUID) | (1 << CAP_SETGID) | (1 << CAP_CHOWN)
        assert caps(master, "CapBnd") == caps(master, "CapEff")
        for w in workers:
            assert uid(w) == 33 and caps(w, "CapEff") == caps(w, "CapPrm") == 0, status(w)
            assert status(w)["Groups"].split() == ["33"], status(w)
        load = servers.wrk(server.port, seconds=2)
        assert load.done > 0 and not load.errors, load.output


def test_nginx_as_root_cannot_switch_to_another_user(scratch: str) -> None:
    """The uid change is pinned to www-data: the same master configured for
    another user (here nobody) cannot hand anything to it, nor start its
    workers as it."""
    server = servers.prepare_nginx(scratch, servers.free_port(), master_as_root=True)
    conf = server.argv[2]
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("user www-data;", "user nobody nogroup;"))
    policy = servers.site_policy(server, servers.example("nginx-as-root"),
                                 os.path.join(scratch, "nginx-as-root-site.yaml"))
    r = enforcer_run(["--policy", policy, "--", *server.argv], timeout=60)
    # The master gives its temporary directories to the workers' user before
    # it forks them: the first place the pinned uid bites.
    assert r.returncode == 1, r
    assert 'chown("/var/lib/nginx/body", 65534) failed (1: Operation not permitted)' in r.stderr, r


def test_setpriv_launcher_under_restricted(scratch: str) -> None:
    """A launcher that changes the user (setpriv, su, gosu) cannot work under
    a policy that already dropped root: first the filter refuses capset
    (@setuid), and with capset allowed the uid change itself is refused.
    docs/servers.md explains both; the fix is `user:` in the policy."""
    launcher = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "id", "-u"]
    r = enforcer_run(["--policy", "restricted", "--", *launcher])
    assert r.returncode == 127 and "activate capabilities: Operation not permitted" in r.stderr, r
    policy = os.path.join(scratch, "setuid-allowed.yaml")
    with open(policy, "w") as f:
        f.write("name: setuid-allowed\nextends: restricted\nsyscalls:\n  allow: ['@setuid']\n")
    r = enforcer_run(["--policy", policy, "--", *launcher])
    # With the syscalls allowed, the kernel refuses: the dynamic user holds
    # no CAP_SETUID, and its bounding set is empty.
    assert r.returncode == 127 and "setresuid failed: Operation not permitted" in r.stderr, r
    # The fix: the user in the policy. enforcer changes it before it drops
    # the capabilities and loads the filter; no launcher is needed.
    with open(policy, "w") as f:
        f.write("name: setuid-allowed\nextends: restricted\nuser: {uid: postgres}\n")
    r = enforcer_run(["--policy", policy, "--", "id", "-u"])
    postgres_uid = subprocess.run(["id", "-u", "postgres"], capture_output=True, text=True).stdout
    assert r.returncode == 0 and r.stdout == postgres_uid, r


def test_postgres_refuses_root(scratch: str) -> None:
    """Why the postgresql example names its user: started as root, postgres
    refuses to run at all."""
    server = servers.prepare_postgresql(scratch, servers.free_port())
    policy = os.path.join(scratch, "pg-root.yaml")
    with open(policy, "w") as f:
        f.write(f"name: pg-root\nextends: {servers.example('postgresql')}\n"
                "user: {uid: 0, gid: 0}\n")
    r = enforcer_run(["--policy", policy, "--", *server.argv], timeout=120)
    assert r.returncode == 1 and "root\" execution of the PostgreSQL server is not permitted" in r.stderr, r


# -- probes -------------------------------------------------------------------


EXAMPLES = ("nginx", "nginx-as-root", "redis", "postgresql")


@pytest.fixture(scope="module")
def probe() -> Iterator[tuple[str, str]]:
    with built_probe("enforcer-probe-examples-") as built:
        yield built


def probe_policy(example: str, exe: str) -> str:
    """The example, plus what the probe program itself needs from Landlock:
    run itself and env(1), read (/proc/self/status, where it checks that a
    seccomp filter is there before it runs at all; `/` itself, a mount
    point for open_by_handle_at), open a pseudo-terminal of its own (the
    TIOCSTI and TIOCLINUX probes) and make its scratch files in the policy's
    own private /tmp. So each probe reaches the call it tests instead of
    failing earlier at Landlock; no probe is about reading files (kcore is
    masked by a mount, not by Landlock)."""
    directory = os.path.dirname(exe)
    path = os.path.join(directory, f"{example}-probe.yaml")
    with open(path, "w") as f:
        f.write(f"name: {example}-probe\nextends: {servers.example(example)}\n"
                "landlock:\n  filesystem:\n"
                "    read: [/]\n    write: [/tmp, /dev/ptmx, /dev/pts]\n"
                f"    execute: [{exe}, /usr/bin/env]\n")
    os.chmod(path, 0o644)
    return path


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_blocks_every_probe_restricted_blocks(example: str,
                                                      probe: tuple[str, str]) -> None:
    exe, cache = probe
    results = run_probes(exe, cache, probe_policy(example, exe))
    table = read_probe_table()
    blocked_by_restricted = {name for name, row in table.items() if row["restricted"] == "blocked"}
    assert blocked_by_restricted and blocked_by_restricted <= set(results), results
    let_through = {n: results[n] for n in sorted(blocked_by_restricted)
                   if results[n][0] != "blocked"}
    assert not let_through, f"{example} lets through what restricted blocks: {let_through}"
    # The probe that binds port 80 is blocked by Landlock (only the
    # server's port is listed), also for nginx-as-root's root master.
    assert re.search(r"EACCES", results["bind_port_80"][1]), results["bind_port_80"]
