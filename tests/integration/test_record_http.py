"""Acceptance of `enforcer record` on a real workload and kernel (root).

`python3 -m http.server` is recorded under `restricted` while a client
makes requests; the learned policy must then carry the server through
1,000 requests, stop the probe suite at least as well as `restricted`
does, and allow at most half of what Docker's default profile allows.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Iterator

import pytest

from tests import session

from enforcer.policy.loader import load_policy
from enforcer.record.merge import merge
from enforcer.record.render import read_metadata
from monitor_helpers import MonitorProcess, value_for, wait_for
from record_helpers import (PYTHON, REPO, allowed_names, docker_default_x86_64_names, enforcer,
                            free_port, get_many, kill_group, probe_overlay, remove, scratch_dir,
                            start, stop, wait_port, PROBE_HARNESS)
from run_helpers import build_probe, run_probes

pytestmark = [pytest.mark.root, pytest.mark.slow]

@pytest.fixture(autouse=True, scope="module")
def _audit_rules_lock() -> Iterator[None]:
    """A recording adds audit rules, a host singleton (tests/session.py)."""
    with session.host_lock("audit"):
        yield


SERVER_PYTHON = "/usr/bin/python3"  # readable by nobody (restricted runs as nobody)
BODY = b"hello from the recorded server\n" * 20


def server_argv(port: int, www: str) -> list[str]:
    return [SERVER_PYTHON, "-m", "http.server", "--bind", "127.0.0.1", str(port),
            "--directory", www]


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel audit stream, seccomp, cgroups)")
    if not os.path.exists(SERVER_PYTHON):
        pytest.skip(f"{SERVER_PYTHON} not installed")
    d = scratch_dir()
    www = os.path.join(d, "www")
    os.makedirs(www)
    with open(os.path.join(www, "hello.txt"), "wb") as f:
        f.write(BODY)
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "hello.txt"), 0o644)
    yield d
    remove(d)


# The learned policy grants the TCP port the server bound while it was
# recorded, and no other: it is recorded and served on this one.
PORT = free_port()


def record_server(workdir: str, out: str, requests: int) -> subprocess.CompletedProcess[str]:
    port = PORT
    www = os.path.join(workdir, "www")
    log = out + ".log"
    # Output to a file, never an unread pipe: a full pipe would stall the
    # server's request log (one line per request).
    with open(log, "w") as f:
        rec = start([PYTHON, "-m", "enforcer", "record", "--base", "restricted", "-o", out, "--",
                     *server_argv(port, www)], stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_port(port, rec, timeout=60)
        replies = get_many(port, "/hello.txt", requests)
        assert all(status == 200 and body == BODY for status, body in replies)
        get_many(port, "/", 2)  # a directory listing
        get_many(port, "/missing", 2)  # a 404
        rc = stop(rec, signal.SIGINT, timeout=60)
        return subprocess.CompletedProcess(rec.args, rc, "", open(log).read())
    finally:
        kill_group(rec)


@pytest.fixture(scope="module")
def recorded(workdir: str) -> str:
    out = os.path.join(workdir, "web.yaml")
    r = record_server(workdir, out, 100)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and os.path.exists(out)
    return out


def test_recording_is_a_valid_policy_extending_the_base(recorded: str) -> None:
    text = open(recorded).read()
    policy = load_policy(recorded)
    meta = read_metadata(text, recorded)
    assert meta["base"] == "restricted" and meta["records"] > 100
    assert "inherit: false" in text and "http.server" in text
    allowed = allowed_names(policy)
    # The server's own calls are there; what it never did is not.
    assert {"accept4", "bind", "listen", "openat", "read", "sendto", "execve"} <= allowed
    assert not allowed & {"ptrace", "mount", "unshare", "setns", "bpf", "chmod", "ioctl_ficlone"}
    # Non-syscall rules of the base are kept.
    assert policy.user is not None and policy.user.uid == 65534
    assert policy.filesystem.read_only_root


def test_recorded_policy_serves_1000_requests(workdir: str, recorded: str) -> None:
    port = PORT
    log = os.path.join(workdir, "serve.log")
    runtime = os.path.join(workdir, "rt")
    os.makedirs(runtime, exist_ok=True)
    # The monitor watches the run: a refused syscall the server shrugs off
    # (no error reply) must not hide either.
    mon = MonitorProcess(runtime, os.path.join(runtime, "events.jsonl"))
    with open(log, "w") as f:
        srv = start([PYTHON, "-m", "enforcer", "run", "--policy", recorded, "--",
                     *server_argv(port, os.path.join(workdir, "www"))],
                    stdout=f, stderr=subprocess.STDOUT,
                    env={**os.environ, "ENFORCER_RUNTIME_DIR": runtime})
    try:
        wait_port(port, srv, timeout=60)
        replies = get_many(port, "/hello.txt", 1000)
        errors = [s for s, body in replies if s != 200 or body != BODY]
        assert len(replies) == 1000 and not errors, f"{len(errors)} bad replies"
        assert srv.poll() is None, "the server died under its learned policy"
        # The monitor knows the workload, and counted no violation of it.
        assert wait_for(lambda: value_for(mon.samples("enforcer_workloads"), policy="web") >= 1,
                        timeout=10), mon.metrics_text()
        time.sleep(0.5)  # let the last records of the run arrive
        violations = {k: v for k, v in mon.samples("enforcer_seccomp_violations_total").items()
                      if dict(k).get("policy") == "web"}
        # clone3 gets ENOSYS by design (the base's `unknown` action; glibc
        # falls back to clone, which the learned policy allows): one per
        # request thread, and nothing else.
        refused = {dict(k)["syscall"]: v for k, v in violations.items()
                   if dict(k)["syscall"] != "clone3"}
        assert not refused, refused
        clone3 = [(dict(k)["action"], v) for k, v in violations.items()
                  if dict(k)["syscall"] == "clone3"]
        assert clone3 and all(action == "errno" and v >= 1000 for action, v in clone3), clone3
        stop(srv, signal.SIGTERM)
        err = open(log).read()
        assert err.count('"GET /hello.txt HTTP/1.1" 200') == 1000
        assert "Operation not permitted" not in err and "SIGSYS" not in err, err[-2000:]
    finally:
        kill_group(srv)
        mon.terminate()


def test_recorded_policy_allows_at_most_half_of_docker(recorded: str) -> None:
    docker = docker_default_x86_64_names()
    mine = allowed_names(load_policy(recorded))
    print(f"recorded policy allows {len(mine)} syscalls; Docker's default {len(docker)}")
    assert len(docker) > 250  # the fixture is the real profile
    assert 2 * len(mine) <= len(docker), (len(mine), len(docker))


def test_probe_suite_blocked_at_least_as_well_as_restricted(workdir: str, recorded: str) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    exe = build_probe(workdir)
    cache = os.path.join(workdir, "cache")
    # The probe program's own harness (a pipe and a child per probe, waited
    # for, its process group killed, a scratch directory made and removed)
    # needs a few syscalls an HTTP server never makes; none of them is one
    # the probes attack with. They are added on top of the learned policy,
    # which is otherwise used as is, so that every attack is really tried.
    overlay = probe_overlay(recorded, exe, os.path.join(workdir, "web-plus-probe-harness.yaml"))
    assert allowed_names(load_policy(overlay)) == \
        allowed_names(load_policy(recorded)) | set(PROBE_HARNESS) | {"mkdir"}
    mine = run_probes(exe, cache, overlay)
    theirs = run_probes(exe, cache, "restricted")
    assert set(mine) == set(theirs) and len(mine) >= 30
    not_tried = [n for n, (verdict, _) in mine.items() if verdict not in ("blocked", "allowed")]
    assert not not_tried, f"probes that could not set up: { {n: mine[n] for n in not_tried} }"
    weaker = [n for n, (verdict, _) in theirs.items()
              if verdict == "blocked" and mine[n][0] != "blocked"]
    assert not weaker, f"blocked under restricted but not under the learned policy: {weaker}"
    print(f"{sum(v == 'blocked' for v, _ in mine.values())} of {len(mine)} probes blocked")


def test_merging_a_real_recording_with_a_hand_made_one(workdir: str, recorded: str) -> None:
    hand = os.path.join(workdir, "hand.yaml")
    meta = read_metadata(open(recorded).read(), recorded)
    # A hand-made recording of the same base and host, allowing one syscall
    # the server never made and one it did.
    header = ('# enforcer-record: {"version":1,"base":"restricted","host_arch":"%s",'
              '"arches_seen":%s,"default_action":"errno EPERM","records":2,'
              '"counts":{"getpgid":1,"read":1},"left_out":{},"runs":[]}\n'
              % (meta["host_arch"], str(meta["arches_seen"]).replace("'", '"')))
    with open(hand, "w") as f:
        f.write(header + "name: hand\nextends: restricted\nsyscalls:\n  inherit: false\n"
                "  default: errno EPERM\n  allow: [getpgid, read]\n")
    out = os.path.join(workdir, "merged.yaml")
    r = enforcer(["record", "--merge", recorded, hand, "-o", out])
    assert r.returncode == 0, r.stderr
    merged = allowed_names(load_policy(out))
    assert merged == allowed_names(load_policy(recorded)) | {"getpgid", "read"}
    counts = read_metadata(open(out).read(), out)["counts"]
    assert counts["read"] == meta["counts"]["read"] + 1
    # Same answer through the library.
    learned, _ = merge([recorded, hand])
    assert learned.allowed_names() == merged
