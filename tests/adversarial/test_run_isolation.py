"""Hole 6: workloads under a confining policy must not reach each other.

Two workloads run under the shipped `restricted` policy, as two tenants of
one host would. The victim keeps a secret in its environment; the attacker
is handed the victim's host pid (as if it had guessed it) and tries what
worked before the fix: read /proc/PID/environ, open /proc/PID/mem, kill it.

Before: both ran as uid 65534 in the host's pid namespace, so all three
succeeded (the secret was printed and the victim died). Now every
workload gets a pid namespace of its own (it cannot even name another
workload's pid) and a uid of its own from the dynamic range (so even
without the namespace the kernel's same-uid rule for ptrace, /proc and
signals no longer holds between workloads).

Harmless: the victim is a `sleep` the test started; nothing else is
touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from typing import Iterator

import pytest

from run_helpers import (PYTHON, REPO, alive, enforcer_run, pids_with_arg, process_ids,
                         require_root, scratch_dir, wait_for)
from tests import session

pytestmark = [pytest.mark.root]

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by every uid (the venv's may not be)

# The attacker: one line per attempt, "NAME ok" or "NAME denied ERRNO".
ATTACK = r"""
import os, signal, sys
pid = int(sys.argv[1])
print("uid", os.getuid(), flush=True)
def attempt(name, fn):
    try:
        fn()
        print(name, "ok", flush=True)
    except OSError as e:
        print(name, "denied", e.errno, flush=True)
def environ():
    print("environ-data", open(f"/proc/{pid}/environ", "rb").read(), flush=True)
attempt("environ", environ)
attempt("mem", lambda: os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY)))
attempt("kill", lambda: os.kill(pid, signal.SIGKILL))
"""


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir("enforcer-isolation-")
    yield d
    session.remove_tree(d)


class Victim:
    """A workload that holds a secret in its environment and sleeps."""

    def __init__(self, work: str, policy: str, secret: str) -> None:
        self.marker = f"600.{uuid.uuid4().int % 10**9:09d}"  # a unique `sleep` argument
        env = {**os.environ, "ENFORCER_CACHE_DIR": os.path.join(work, "cache")}
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "enforcer", "run", "--policy", policy, "--",
             "sh", "-c", f"exec env SECRET_TOKEN={secret} sleep {self.marker}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid = wait_for(lambda: self._pid(), what="the victim's sleep")

    def _pid(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"victim exited {self.proc.returncode}: "
                                 f"{self.proc.stderr.read() if self.proc.stderr else ''}")
        found = pids_with_arg(self.marker, "sleep")
        return found[0] if found else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


def attack(work: str, policy: str, victim_pid: int) -> dict[str, list[str]]:
    r = enforcer_run(["--policy", policy, "--", SYSTEM_PYTHON, "-c", ATTACK, str(victim_pid)],
                     env={"ENFORCER_CACHE_DIR": os.path.join(work, "cache")})
    assert r.returncode == 0, r.stderr
    return {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line}


@pytest.mark.parametrize("policy", ["restricted", "web-server"])
def test_workloads_cannot_read_or_kill_each_other(work: str, policy: str) -> None:
    secret = uuid.uuid4().hex
    victim = Victim(work, policy, secret)
    try:
        seen = attack(work, policy, victim.pid)
        assert secret not in str(seen), "the attacker read the victim's environment"
        for what in ("environ", "mem", "kill"):
            assert seen[what][0] == "denied", f"{what}: {seen[what]} under {policy}"
        assert alive(victim.pid), "the attacker killed the victim"
        # Each workload has a uid of its own, none of the host's users.
        victim_uid = process_ids(victim.pid)[0]
        attacker_uid = int(seen["uid"][0])
        assert victim_uid != 65534 and victim_uid != attacker_uid
    finally:
        victim.stop()


def test_dynamic_uid_alone_keeps_workloads_apart(work: str) -> None:
    """Without a pid namespace the attacker can name the victim: the
    dynamic uid alone must still stop it (a policy may leave `pid` out)."""
    policy = os.path.join(work, "uid-only.yaml")
    with open(policy, "w") as f:
        f.write("version: 1\nname: uid-only\nuser: {dynamic: true}\n"
                "capabilities: {keep: []}\nnamespaces: [mount]\n")
    secret = uuid.uuid4().hex
    victim = Victim(work, policy, secret)
    try:
        seen = attack(work, policy, victim.pid)
        assert secret not in str(seen)
        assert seen["environ"] == ["denied", "13"]  # EACCES: another uid
        assert seen["mem"] == ["denied", "13"]
        assert seen["kill"] == ["denied", "1"]  # EPERM
        assert alive(victim.pid)
        assert process_ids(victim.pid)[0] != int(seen["uid"][0])
    finally:
        victim.stop()
