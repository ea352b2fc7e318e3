"""A workload that changes after it was recorded (root, real kernel).

The workload is recorded doing its usual work; then it starts making a new
syscall (getpgid). Under the learned policy in enforce mode the new call is
refused and named -- by `enforcer run` when the default action kills, by
the monitor's metrics and event log when it returns EPERM -- and in audit
mode the workload runs and the monitor counts the would-be violation.
"""

from __future__ import annotations

import json
import os
import time
from typing import Iterator

import pytest

from tests import session

from enforcer.policy.loader import load_policy
from monitor_helpers import MonitorProcess, parse_samples, value_for, wait_for
from record_helpers import allowed_names, enforcer, iter_lines, remove, scratch_dir

pytestmark = [pytest.mark.root, pytest.mark.slow]

@pytest.fixture(autouse=True, scope="module")
def _audit_rules_lock() -> Iterator[None]:
    """A recording adds audit rules, a host singleton (tests/session.py)."""
    with session.host_lock("audit"):
        yield


PY = "/usr/bin/python3"
SCRIPT = """\
import os, sys
print("ok", flush=True)
if sys.argv[1:] == ["new"]:
    try:
        print("pgid", os.getpgid(0), flush=True)
    except OSError as e:
        print("refused", e.errno, flush=True)
"""
NEW_SYSCALL = "getpgid"


def workload(*extra: str) -> list[str]:
    return [PY, "-I", "-S", "-c", SCRIPT, *extra]


@pytest.fixture(scope="module")
def workdir() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel audit stream, seccomp, cgroups)")
    if not os.path.exists(PY):
        pytest.skip(f"{PY} not installed")
    d = scratch_dir()
    yield d
    remove(d)


def record(workdir: str, name: str, *options: str) -> str:
    out = os.path.join(workdir, f"{name}.yaml")
    r = enforcer(["record", "--base", "restricted", *options, "-o", out, "--", *workload()])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n"  # the workload's own output passes through
    policy = load_policy(out)
    assert NEW_SYSCALL not in allowed_names(policy), "the recording already made the new call"
    return out


@pytest.fixture(scope="module")
def kill_policy(workdir: str) -> str:
    return record(workdir, "learned-kill", "--default-action", "kill-process")


@pytest.fixture(scope="module")
def errno_policy(workdir: str) -> str:
    return record(workdir, "learned-errno")


@pytest.fixture
def monitor(workdir: str) -> Iterator[tuple[MonitorProcess, str]]:
    runtime = os.path.join(workdir, f"rt-{time.monotonic_ns()}")
    os.makedirs(runtime)
    events = os.path.join(runtime, "events.jsonl")
    mon = MonitorProcess(runtime, events)
    try:
        yield mon, runtime
    finally:
        mon.terminate()


def test_recorded_workload_runs_under_its_policy(kill_policy: str, errno_policy: str) -> None:
    for policy in (kill_policy, errno_policy):
        r = enforcer(["run", "--policy", policy, "--", *workload()])
        assert r.returncode == 0 and r.stdout == "ok\n", (policy, r.returncode, r.stderr)


def test_new_syscall_kills_and_run_names_it(kill_policy: str) -> None:
    r = enforcer(["run", "--policy", kill_policy, "--", *workload("new")])
    assert r.stdout == "ok\n"  # it ran until the new call
    assert r.returncode == 128 + 31, (r.returncode, r.stderr)  # SIGSYS
    assert f"syscall {NEW_SYSCALL} (" in r.stderr, r.stderr


def _violations(mon: MonitorProcess, action: str) -> float:
    samples = parse_samples(mon.metrics_text(), "enforcer_seccomp_violations_total")
    return value_for(samples, syscall=NEW_SYSCALL, action=action)


def test_new_syscall_refused_and_monitor_names_it(errno_policy: str,
                                                  monitor: tuple[MonitorProcess, str]) -> None:
    mon, runtime = monitor
    r = enforcer(["run", "--policy", errno_policy, "--", *workload("new")],
                 env={**os.environ, "ENFORCER_RUNTIME_DIR": runtime})
    assert r.returncode == 0 and r.stdout == "ok\nrefused 1\n", (r.stdout, r.stderr)
    assert wait_for(lambda: _violations(mon, "errno") >= 1, timeout=10), mon.metrics_text()
    assert _violations(mon, "errno") == 1
    events = [json.loads(line) for line in iter_lines(mon.events)]
    mine = [e for e in events if e.get("syscall") == NEW_SYSCALL]
    assert len(mine) == 1 and mine[0]["action"] == "errno", events[-5:]


@pytest.mark.parametrize("how", ["flag", "file"])
def test_audit_mode_runs_and_monitor_counts_would_be_violation(
        errno_policy: str, monitor: tuple[MonitorProcess, str], how: str) -> None:
    mon, runtime = monitor
    if how == "flag":
        args = ["--mode", "audit", "--policy", errno_policy]
        policy_name = "learned-errno"
    else:  # a small policy on top of the learned one says `mode: audit`
        path = os.path.join(os.path.dirname(errno_policy), "learned-audit.yaml")
        with open(path, "w") as f:
            f.write("name: learned-audit\nextends: learned-errno.yaml\nmode: audit\n")
        args = ["--policy", path]
        policy_name = "learned-audit"
    r = enforcer(["run", *args, "--", *workload("new")],
                 env={**os.environ, "ENFORCER_RUNTIME_DIR": runtime})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok\npgid "), r.stdout  # the call went through
    assert wait_for(lambda: _violations(mon, "log") >= 1, timeout=10), mon.metrics_text()
    assert _violations(mon, "log") == 1
    # Nothing else the workload did counts as a violation of its learned policy.
    samples = parse_samples(mon.metrics_text(), "enforcer_seccomp_violations_total")
    others = {dict(k)["syscall"]: v for k, v in samples.items()
              if dict(k).get("syscall") != NEW_SYSCALL and dict(k).get("policy") == policy_name}
    assert not others, others
    assert value_for(samples, syscall=NEW_SYSCALL, action="log", policy=policy_name) == 1
