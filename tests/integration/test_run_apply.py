"""`enforcer run` against the real kernel: exit status, signals, the
supervisor's explanations, cleanup, and fault injection (fail closed).

Plans are built by hand (tests/run_helpers.py) so each test pins exactly the
step it is about; the shipped policies are covered by test_run_probes.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Iterator

import pytest

from enforcer.plan import replace
from enforcer.plan import CgroupPlan, MountOp, UserPlan
from run_helpers import (PYTHON, REPO, enforcer_run, require_root, run_ok_plan,
                         scratch_dir, seccomp_plan, v1_cgroup_dirs, write_plan)
from tests.session import CGROUP_PARENT as PARENT, remove_tree

pytestmark = pytest.mark.root


@pytest.fixture
def work() -> Iterator[str]:
    require_root()
    d = scratch_dir()
    yield d
    remove_tree(d)


@pytest.fixture
def runtime_dir(work: str) -> dict[str, str]:
    return {"ENFORCER_RUNTIME_DIR": os.path.join(work, "runtime")}


def no_enforcer_cgroups(name: str) -> None:
    assert v1_cgroup_dirs(name) == [], f"cgroup of {name} left behind"


def test_exit_status_passes_through_and_cgroup_is_removed(work: str,
                                                          runtime_dir: dict[str, str]) -> None:
    plan = write_plan(run_ok_plan(work), work)
    marker = os.path.join(work, "ran")
    r = enforcer_run(["--plan", plan, "--name", "t-exit7", "--",
                      "sh", "-c", f"cat /proc/self/cgroup > {marker}; exit 7"], env=runtime_dir)
    assert r.returncode == 7, r.stderr
    cg = open(marker).read()
    assert f"memory:{PARENT}/t-exit7" in cg and f"pids:{PARENT}/t-exit7" in cg
    no_enforcer_cgroups("t-exit7")
    assert os.listdir(os.path.join(runtime_dir["ENFORCER_RUNTIME_DIR"], "workloads")) == []


def test_every_step_applied(work: str, runtime_dir: dict[str, str]) -> None:
    plan = write_plan(run_ok_plan(work), work)
    script = ("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
              "touch /etc/enforcer-should-fail 2>/dev/null && echo ETC-WRITABLE; "
              f"touch {work}/w && echo WORK-WRITABLE")
    r = enforcer_run(["--plan", plan, "--", "sh", "-c", script], env=runtime_dir)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "CapEff:\t0000000000000000" in out
    assert "CapBnd:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert "Seccomp:\t2" in out
    assert "ETC-WRITABLE" not in out and not os.path.exists("/etc/enforcer-should-fail")
    assert "WORK-WRITABLE" in out


def test_registry_record_while_running(work: str, runtime_dir: dict[str, str]) -> None:
    plan = write_plan(run_ok_plan(work), work)
    p = subprocess.Popen([PYTHON, "-m", "enforcer", "run", "--plan", plan, "--name", "t-reg",
                          "--", "sleep", "30"], cwd=REPO, env={**os.environ, **runtime_dir},
                         stderr=subprocess.PIPE, text=True)
    try:
        path = os.path.join(runtime_dir["ENFORCER_RUNTIME_DIR"], "workloads", "t-reg.json")
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.02)
        rec = json.load(open(path))
        assert rec["policy"] == "test-all-steps" and rec["kind"] == "run"
        assert rec["cgroups"]["memory"] == f"{PARENT}/t-reg"
        assert rec["limits"] == {"memory_max": 256 << 20, "pids_max": 64}
        assert os.path.exists(f"/proc/{rec['pid']}")
        # SIGTERM from outside reaches the workload; status is 128+15.
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not os.path.exists(path)
    no_enforcer_cgroups("t-reg")


def test_sigterm_forwarded_and_leftover_children_killed(work: str,
                                                        runtime_dir: dict[str, str]) -> None:
    plan = write_plan(run_ok_plan(work), work)
    pidfile = os.path.join(work, "bg.pid")
    p = subprocess.Popen([PYTHON, "-m", "enforcer", "run", "--plan", plan, "--name", "t-term",
                          "--", "sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"],
                         cwd=REPO, env={**os.environ, **runtime_dir}, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if os.path.exists(pidfile) and open(pidfile).read().strip():
                break
            time.sleep(0.02)
        bg = int(open(pidfile).read())
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 128 + signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # The orphaned `sleep` was in the cgroup: killed before the cgroup went.
    time.sleep(0.1)
    assert not os.path.exists(f"/proc/{bg}") or "zombie" in open(f"/proc/{bg}/status").read()
    no_enforcer_cgroups("t-term")


def test_killed_by_filter_names_the_syscall(work: str, runtime_dir: dict[str, str]) -> None:
    plan = write_plan(run_ok_plan(work), work)
    r = enforcer_run(["--plan", plan, "--name", "t-sys", "--", PYTHON, "-c",
                      "import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)"], env=runtime_dir)
    assert r.returncode == 128 + signal.SIGSYS
    assert "syscall ptrace (101)" in r.stderr, r.stderr
    assert "seccomp filter" in r.stderr
    no_enforcer_cgroups("t-sys")


def test_oom_kill_is_explained(work: str, runtime_dir: dict[str, str]) -> None:
    plan = replace(run_ok_plan(work), cgroup=CgroupPlan(memory_max=64 << 20, memory_swap_max=0))
    path = write_plan(plan, work)
    r = enforcer_run(["--plan", path, "--", PYTHON, "-c", "b = bytearray(512 << 20)"],
                     env=runtime_dir)
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    assert "killed by the OOM killer at the policy's memory limit 64 MiB" in r.stderr


def test_pids_limit_is_explained(work: str, runtime_dir: dict[str, str]) -> None:
    plan = replace(run_ok_plan(work), cgroup=CgroupPlan(pids_max=8))
    path = write_plan(plan, work)
    script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done; kill $(jobs -p); true"
    r = enforcer_run(["--plan", path, "--", "sh", "-c", script], env=runtime_dir)
    assert "at the policy's pids limit 8" in r.stderr, r.stderr


def test_fds_are_closed(work: str, runtime_dir: dict[str, str]) -> None:
    plan = write_plan(run_ok_plan(work), work)
    fd = os.open(plan, os.O_RDONLY)  # inheritable by the enforcer process
    os.set_inheritable(fd, True)
    try:
        r = enforcer_run(["--plan", plan, "--", "ls", "/proc/self/fd"], env=runtime_dir,
                         pass_fds=(fd,))
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    # 0-2 and the fd of ls's own directory listing, nothing inherited.
    assert sorted(int(x) for x in r.stdout.split()) == [0, 1, 2, 3]


def test_audit_mode_blocks_nothing(work: str, runtime_dir: dict[str, str]) -> None:
    plan = replace(run_ok_plan(work), mode="audit",
                   seccomp=seccomp_plan(default="allow", log=["ptrace", "mount"]))
    path = write_plan(plan, work)
    r = enforcer_run(["--plan", path, "--", "sh", "-c",
                      "touch /etc/.enforcer-audit && rm /etc/.enforcer-audit && "
                      "grep -E '^(CapEff|Seccomp):' /proc/self/status"], env=runtime_dir)
    assert r.returncode == 0, r.stderr
    assert "audit mode" in r.stderr
    assert "Seccomp:\t2" in r.stdout
    mine = [ln for ln in open("/proc/self/status") if ln.startswith("CapEff:")][0]
    assert mine.strip() in r.stdout  # capabilities untouched in audit mode


def test_exec_mode_replaces_the_process(work: str) -> None:
    plan = replace(run_ok_plan(work), cgroup=CgroupPlan())
    path = write_plan(plan, work)
    r = enforcer_run(["--plan", path, "--exec", "--", "sh", "-c",
                      "echo $$; grep Seccomp: /proc/self/status"])
    assert r.returncode == 0, r.stderr
    assert "Seccomp:\t2" in r.stdout


def test_pid_namespace(work: str, runtime_dir: dict[str, str]) -> None:
    plan = replace(run_ok_plan(work), namespaces=("mount", "pid"))
    path = write_plan(plan, work)
    r = enforcer_run(["--plan", path, "--", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'"],
                     env=runtime_dir)
    assert r.returncode == 0, r.stderr
    pid, nprocs = r.stdout.split()
    # Pid 1 is the namespace's init (enforcer/apply/pidns.py); the workload
    # is its first child. Visible: init, sh, ls, grep.
    assert pid == "2" and int(nprocs) <= 4


# -- fault injection: the workload never runs --------------------------------


def _assert_fail_closed(r: subprocess.CompletedProcess[str], marker: str, step: str,
                        code: int = 125) -> None:
    assert not os.path.exists(marker), "the workload ran although the policy failed"
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("enforcer run:")]
    assert lines and lines[-1].startswith(f"enforcer run: {step}:"), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("case", ["unwritable-cgroup", "missing-controller-file",
                                  "failing-mount", "missing-rootfs", "invalid-uid",
                                  "bad-capset", "missing-command"])
def test_fault_injection(work: str, runtime_dir: dict[str, str], case: str) -> None:
    marker = os.path.join(work, "marker")
    base = run_ok_plan(work)
    step = {"unwritable-cgroup": "cgroup", "missing-controller-file": "cgroup",
            "failing-mount": "mounts", "missing-rootfs": "mounts", "invalid-uid": "user",
            "bad-capset": "capabilities", "missing-command": "exec"}[case]
    code = 127 if case == "missing-command" else 125
    if case == "unwritable-cgroup":
        # A Plan holds numbers now, not file text; the kernel refuses a CFS
        # quota below 1 ms (EINVAL), which the Plan format leaves to it.
        plan = replace(base, cgroup=CgroupPlan(cpu_quota_us=500, cpu_period_us=100_000))
    elif case == "missing-controller-file":
        # Since Linux 5.0 (no CFQ) cgroup v1 has no blkio.weight: only BFQ
        # adds a weight file, and as blkio.bfq.weight.
        assert not os.path.exists("/sys/fs/cgroup/blkio/blkio.weight")
        plan = replace(base, cgroup=CgroupPlan(io_weight=100))
    elif case == "failing-mount":
        plan = replace(base, mounts=base.mounts + (MountOp("tmpfs", "/nonexistent-enforcer"),))
    elif case == "missing-rootfs":
        plan = replace(base, mounts=(MountOp("make_private", "/"),
                                     MountOp("pivot_root", "/nonexistent-rootfs")))
    elif case == "invalid-uid":
        # A uid that is no uid: (uid_t)-1 would mean "unchanged" to
        # setresuid and silently keep root. (Unknown user *names* are
        # resolved at compile time: test_unknown_user_in_policy.)
        plan = replace(base, user=UserPlan(uid=4_294_967_295, gid=65534))
    elif case == "bad-capset":
        caps = base.capabilities
        assert caps is not None
        plan = replace(base, capabilities=replace(caps, effective=1 << 21))  # not in permitted
    else:
        plan = base
    path = write_plan(plan, work)
    argv = ["sh", "-c", f"touch {marker}"] if case != "missing-command" else ["no-such-cmd-x"]
    r = enforcer_run(["--plan", path, "--name", f"t-fault-{case}", "--", *argv], env=runtime_dir)
    _assert_fail_closed(r, marker, step, code)
    if case == "unwritable-cgroup":
        assert (f"/sys/fs/cgroup/cpu{PARENT}/t-fault-unwritable-cgroup/cpu.cfs_quota_us"
                in r.stderr)
        assert "'500'" in r.stderr
    no_enforcer_cgroups(f"t-fault-{case}")


def test_corrupt_plan(work: str) -> None:
    marker = os.path.join(work, "marker")
    path = write_plan(run_ok_plan(work), work)
    text = open(path).read().replace('"no_new_privileges":true', '"no_new_privileges":false')
    open(path, "w").write(text)
    r = enforcer_run(["--plan", path, "--", "sh", "-c", f"touch {marker}"])
    _assert_fail_closed(r, marker, "plan")
    assert "corrupt" in r.stderr


def test_corrupt_cached_plan(work: str) -> None:
    marker = os.path.join(work, "marker")
    cache = os.path.join(work, "cache")
    env = {"ENFORCER_CACHE_DIR": cache}
    assert enforcer_run(["--policy", "default", "--", "true"], env=env).returncode == 0
    entries = [os.path.join(dp, f) for dp, _, fs in os.walk(cache) for f in fs
               if f.endswith(".plan")]
    assert entries
    for e in entries:
        data = bytearray(open(e, "rb").read())
        data[len(data) // 2] ^= 0x55
        open(e, "wb").write(bytes(data))
    r = enforcer_run(["--policy", "default", "--", "sh", "-c", f"touch {marker}"], env=env)
    _assert_fail_closed(r, marker, "plan")


def test_unknown_user_in_policy(work: str) -> None:
    marker = os.path.join(work, "marker")
    pol = os.path.join(work, "p.yaml")
    with open(pol, "w") as f:
        f.write("name: unknown-user\nextends: default\n"
                "user: {uid: enforcer-no-such-user, gid: nogroup}\n")
    r = enforcer_run(["--policy", pol, "--", "sh", "-c", f"touch {marker}"],
                     env={"ENFORCER_CACHE_DIR": os.path.join(work, "cache")})
    assert not os.path.exists(marker)
    assert r.returncode == 125, r.stderr
    assert "enforcer-no-such-user" in r.stderr and "Traceback" not in r.stderr


def test_exec_mode_refuses_pid_namespace(work: str) -> None:
    plan = replace(run_ok_plan(work), cgroup=CgroupPlan(), namespaces=("mount", "pid"))
    marker = os.path.join(work, "marker")
    r = enforcer_run(["--plan", write_plan(plan, work), "--exec", "--", "touch", marker])
    _assert_fail_closed(r, marker, "namespaces")
    assert "--exec" in r.stderr


def test_shipped_restricted_kill_is_named(work: str) -> None:
    cache = {"ENFORCER_CACHE_DIR": os.path.join(work, "cache")}
    # restricted runs as nobody: the system python3, which nobody can read.
    r = enforcer_run(["--policy", "restricted", "--name", "t-restricted-kill", "--",
                      "/usr/bin/python3", "-c",
                      "import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)"], env=cache)
    assert r.returncode == 128 + signal.SIGSYS
    assert r.stderr.strip() == ("enforcer run: workload killed by SIGSYS from the seccomp "
                                "filter of policy 'restricted': syscall ptrace (101) is not "
                                "allowed")
    no_enforcer_cgroups("t-restricted-kill")


def test_audit_mode_logs_would_be_violations(work: str) -> None:
    from enforcer.apply.audit import AuditListener

    listener = AuditListener.open()
    if listener is None:
        pytest.skip("cannot read the audit multicast stream")
    try:
        cache = {"ENFORCER_CACHE_DIR": os.path.join(work, "cache")}
        p = subprocess.Popen(
            [PYTHON, "-m", "enforcer", "run", "--policy", "restricted", "--mode", "audit", "--",
             PYTHON, "-c", "import ctypes, os; print(os.getpid(), flush=True); "
             "print(ctypes.CDLL(None).ptrace(0, 0, 0, 0))"],
            cwd=REPO, env={**os.environ, **cache}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        pid, ret = out.split()
        assert ret == "0"  # ptrace(PTRACE_TRACEME) ran: nothing blocked
        assert "audit mode" in err
        deadline = time.monotonic() + 5
        found = None
        while found is None and time.monotonic() < deadline:
            found = next((rec for rec in _drain(listener) if rec.pid == int(pid)
                          and rec.syscall == 101), None)
        assert found is not None, "no audit record of the would-be violation"
        assert found.code == 0x7FFC0000  # SECCOMP_RET_LOG: logged, allowed
    finally:
        listener.close()


def _drain(listener: object) -> list:  # type: ignore[type-arg]
    from enforcer.apply.audit import parse_messages

    import select

    sock = listener.sock  # type: ignore[attr-defined]
    select.select([sock], [], [], 0.2)
    out = []
    while True:
        try:
            out.extend(parse_messages(sock.recv(65536)))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP, signal.SIGWINCH, signal.SIGINT])
def test_signals_are_forwarded(work: str, runtime_dir: dict[str, str],
                               sig: signal.Signals) -> None:
    plan = write_plan(run_ok_plan(work), work)
    ready = os.path.join(work, "ready")
    name = sig.name[3:]
    script = f"trap 'echo got-{name}; exit 3' {name}; touch {ready}; while :; do sleep 0.05; done"
    p = subprocess.Popen([PYTHON, "-m", "enforcer", "run", "--plan", plan, "--", "sh", "-c",
                          script], cwd=REPO, env={**os.environ, **runtime_dir},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(500):
            if os.path.exists(ready):
                break
            time.sleep(0.01)
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 3, err
    assert out.strip() == f"got-{name}"


def test_exec_mode_failure_removes_its_cgroup(work: str) -> None:
    plan = replace(run_ok_plan(work), mounts=(MountOp("make_private", "/"),
                                              MountOp("mask", "/nonexistent-enforcer")))
    marker = os.path.join(work, "marker")
    r = enforcer_run(["--plan", write_plan(plan, work), "--exec", "--name", "t-exec-fail", "--",
                      "touch", marker])
    _assert_fail_closed(r, marker, "mounts")
    no_enforcer_cgroups("t-exec-fail")


def test_exec_mode_cgroup_outlives(work: str) -> None:
    plan = write_plan(run_ok_plan(work), work)
    try:
        r = enforcer_run(["--plan", plan, "--exec", "--name", "t-exec-ok", "--", "sh", "-c",
                          f"grep -c {PARENT}/t-exec-ok /proc/self/cgroup"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "2"  # memory and pids
        assert len(v1_cgroup_dirs("t-exec-ok")) == 2  # documented: nobody removes it
    finally:
        for d in v1_cgroup_dirs("t-exec-ok"):
            os.rmdir(d)
            try:
                os.rmdir(os.path.dirname(d))  # the shared parent, if now empty
            except OSError:
                pass
