"""`enforcer record` learns the whole policy (root, real kernel): files
read, written and run, TCP ports, a read-only root with the paths written,
limits, and a dynamic user when nothing needed root -- from audit rules
scoped to the recording's session, which never outlive it.

The workload is a Python script under the `default` base: today's learned
policy kept default's root, writable root and NET_RAW, and let probes
through that `restricted` blocks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Iterator

import pytest

from enforcer.monitor.sources import audit_control
from enforcer.policy.loader import load_policy
from enforcer.record.auditrules import KEY_PREFIX
from record_helpers import (PYTHON, enforcer, free_port, kill_group, probe_overlay, remove,
                            scratch_dir, start)
from run_helpers import build_probe, run_probes
from tests import session

pytestmark = [pytest.mark.root, pytest.mark.slow]

SCRIPT = r'''
import os, socket, subprocess, sys
here, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "work":
    print(open(os.path.join(here, "app", "conf.txt")).read().strip())
    out = os.path.join(here, "data", "out-%d.txt" % os.getpid())
    with open(out, "w") as f:
        f.write("x")
    os.unlink(out)
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen()
    c = socket.create_connection(("127.0.0.1", port)); c.close(); s.close()
    subprocess.run(["/bin/true"], check=True)
    print("ok")
    sys.exit(0)
def attempt(what, fn):
    try:
        fn()
        print(what, "allowed")
    except OSError as e:  # EACCES from Landlock, EROFS from the read-only root
        print(what, "denied" if e.errno in (1, 13, 30) else "failed-%d" % e.errno)
def bind_other():
    with socket.socket() as s:
        s.bind(("127.0.0.1", port + 1))
def connect_other():
    with socket.socket() as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", 9))
attempt("read-secret", lambda: open(os.path.join(here, "app", "secret.txt")).read())
attempt("write-app", lambda: open(os.path.join(here, "app", "new.txt"), "w").close())
attempt("bind-other", bind_other)
attempt("connect-other", connect_other)
attempt("exec-other", lambda: subprocess.run(["/usr/bin/id"], check=True))
'''


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel audit rules and stream, seccomp, cgroups)")
    d = scratch_dir()
    os.makedirs(os.path.join(d, "app"))
    os.makedirs(os.path.join(d, "data"))
    os.chmod(os.path.join(d, "data"), 0o1777)  # anyone may write: no root needed
    for name, text in (("conf.txt", "configured\n"), ("secret.txt", "secret\n"),
                       ("script.py", SCRIPT)):
        path = os.path.join(d, "app", name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
    os.chmod(os.path.join(d, "app"), 0o755)
    yield d
    remove(d)


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


def argv(workdir: str, port: int, mode: str) -> list[str]:
    return ["/usr/bin/python3", "-I", os.path.join(workdir, "app", "script.py"), workdir,
            str(port), mode]


def recording_keys() -> set[str]:
    return {r.key() or "" for r in audit_control.list_rules()
            if (r.key() or "").startswith(KEY_PREFIX)}


@pytest.fixture(scope="module")
def learned(workdir: str, port: int) -> str:
    out = os.path.join(workdir, "learned.yaml")
    with session.host_lock("audit"):
        before = audit_control.read_status().enabled
        r = enforcer(["record", "-o", out, "--", *argv(workdir, port, "work")])
        after = audit_control.read_status().enabled
        left = recording_keys()
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    # The recording's audit rules are gone, and audit is as it was.
    assert not left and after == before
    return out


def test_learned_policy_has_files_ports_limits_and_a_dynamic_user(workdir: str, port: int,
                                                                  learned: str) -> None:
    text = open(learned).read()
    policy = load_policy(learned)
    ll = policy.landlock
    assert ll is not None
    read = {p.path for p in ll.read}
    write = {p.path for p in ll.write}
    execute = {p.path for p in ll.execute}
    app, data = os.path.join(workdir, "app"), os.path.join(workdir, "data")
    # The files it read (its script and configuration: collapsed into their
    # directory? no: two entries stay apart), the directory it wrote in, the
    # programs it ran with their loader.
    assert {os.path.join(app, "conf.txt"), os.path.join(app, "script.py")} <= read
    assert os.path.join(app, "secret.txt") not in read and app not in read
    assert write == {data}
    assert "/usr/bin/true" in execute and any("ld-linux" in p for p in execute)
    assert ll.bind == (port,) and ll.connect == (port,)
    assert set(ll.scope) == {"signal", "abstract-unix-socket"}
    assert policy.filesystem.read_only_root and data in policy.filesystem.writable_paths
    assert policy.user is not None and policy.user.dynamic
    assert policy.capabilities.keep == frozenset()
    assert {"mount", "pid", "ipc", "uts"} <= set(policy.namespaces)
    assert any(r.resource == "CORE" and r.hard == 0 for r in policy.rlimits)
    assert policy.resources.memory_max and policy.resources.pids_max
    assert any(r.resource == "MEMLOCK" for r in policy.rlimits)
    assert "inherit: false" in text


def test_the_workload_runs_under_what_was_learned(workdir: str, port: int, learned: str) -> None:
    r = enforcer(["run", "--policy", learned, "--", *argv(workdir, port, "work")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["configured", "ok"]


def test_what_it_never_did_is_denied(workdir: str, port: int, learned: str) -> None:
    r = enforcer(["run", "--policy", learned, "--", *argv(workdir, port, "escape")])
    assert r.returncode == 0, r.stderr
    verdicts = dict(line.split() for line in r.stdout.splitlines())
    assert verdicts == {k: "denied" for k in (
        "read-secret", "write-app", "bind-other", "connect-other", "exec-other")}, r.stdout


def test_probe_suite_blocked_at_least_as_well_as_restricted(workdir: str, learned: str) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    exe = build_probe(workdir)
    cache = os.path.join(workdir, "cache")
    overlay = probe_overlay(learned, exe, os.path.join(workdir, "learned-probes.yaml"))
    mine = run_probes(exe, cache, overlay)
    theirs = run_probes(exe, cache, "restricted")
    assert set(mine) == set(theirs) and len(mine) >= 50
    not_tried = {n: v for n, v in mine.items() if v[0] not in ("blocked", "allowed")}
    assert not not_tried, f"probes that could not set up: {not_tried}"
    weaker = [n for n, (v, _) in theirs.items() if v == "blocked" and mine[n][0] != "blocked"]
    assert not weaker, f"blocked under restricted but not under the learned policy: {weaker}"


def test_a_killed_recorder_leaves_no_audit_rule(workdir: str) -> None:
    out = os.path.join(workdir, "killed.yaml")
    with session.host_lock("audit"):
        rec = start([PYTHON, "-m", "enforcer", "record", "-o", out, "--", "/bin/sleep", "60"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            mine = f"{KEY_PREFIX}{rec.pid}:"
            deadline = time.monotonic() + 60
            while not any(k.startswith(mine) for k in recording_keys()):
                assert rec.poll() is None and time.monotonic() < deadline, "no rule appeared"
                time.sleep(0.05)
            os.kill(rec.pid, signal.SIGKILL)  # no finally, no atexit: only the guardian is left
            rec.wait()
            deadline = time.monotonic() + 15
            while any(k.startswith(mine) for k in recording_keys()):
                assert time.monotonic() < deadline, "the killed recording's rules stayed"
                time.sleep(0.05)
        finally:
            kill_group(rec)
    assert not os.path.exists(out)


def test_rules_of_a_dead_recording_are_removed_at_the_next_start(workdir: str) -> None:
    from enforcer.record.auditrules import rules_for

    dead = subprocess.Popen(["/bin/true"])
    dead.wait()  # a pid that is gone: its "recorder" cannot clean up
    stale = rules_for(999999999, ("x86_64",), f"{KEY_PREFIX}{dead.pid}:999999999")
    with session.host_lock("audit"):
        for rule in stale:
            audit_control.add_rule(rule)
        try:
            r = enforcer(["record", "-o", os.path.join(workdir, "true.yaml"), "--", "/bin/true"])
            left = recording_keys()
        finally:
            for rule in stale:
                try:
                    audit_control.delete_rule(rule)
                except OSError:
                    pass
    assert r.returncode == 0, r.stderr
    assert "removed 1 audit rule(s) a stopped recording left behind" in r.stderr
    assert not left
