"""The monitor runs under the kind of policy it enforces on others, for real:
`enforcer run` applies deploy/systemd/monitor-policy.yaml (only its writable
log directory moved to a temp dir) to the real `enforcer monitor`, which
must still serve /healthz and /metrics and count a seccomp violation from
the audit stream. Also: every monitor flag the shipped unit and DaemonSet
pass is one the monitor accepts."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy_helpers import (  # noqa: E402
    K8S, SYSTEMD, VENV_BIN, free_port, http_get, monitor_available, run, stop, temp_dir,
    wait_for, yaml_docs,
)

GETCWD_X86_64 = 79


def shipped_monitor_flags() -> dict[str, list[str]]:
    unit = (SYSTEMD / "enforcer-monitor.service").read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert exec_start[1] == "monitor"
    (ds,) = [d for d in yaml_docs(K8S / "monitor.yaml") if d["kind"] == "DaemonSet"]
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["enforcer", "monitor"]
    return {"systemd unit": exec_start[2:], "DaemonSet": c["args"]}


def test_the_monitor_accepts_the_shipped_flags() -> None:
    if not monitor_available():
        pytest.skip("`enforcer monitor` is not in this build yet")
    r = run([str(VENV_BIN / "enforcer"), "monitor", "--help"])
    assert r.returncode == 0, r.stderr
    for where, args in shipped_monitor_flags().items():
        for arg in args:
            flag = arg.split("=", 1)[0]
            assert flag.startswith("--") and flag in r.stdout, f"{where}: {flag} is not a monitor option"


@pytest.mark.root
@pytest.mark.slow
def test_monitor_works_under_its_own_policy() -> None:
    if not monitor_available():
        pytest.skip("`enforcer monitor` is not in this build yet")
    if os.uname().machine != "x86_64":
        pytest.skip("the violator uses the x86_64 getcwd number")
    # Not under /tmp: the policy mounts a fresh tmpfs there.
    with temp_dir("deploy-selfpolicy-", parent="/var/tmp") as d:
        logs, runtime = d / "log", d / "run"
        logs.mkdir()
        runtime.mkdir()
        policy = yaml.safe_load((SYSTEMD / "monitor-policy.yaml").read_text())
        assert policy["filesystem"]["writable_paths"] == ["/var/log/enforcer"]
        policy["filesystem"]["writable_paths"] = [str(logs)]
        # The interpreter and this checkout may live under a path the policy
        # hides or covers with a tmpfs on a test machine (a per-user Python
        # build, a clone under /tmp): keep exactly those visible. On a real
        # host enforcer is installed under /usr, which the policy leaves be.
        needed = [os.path.realpath(sys.executable), str(VENV_BIN.resolve().parent.parent)]

        def covers(path: str) -> bool:
            return any(n == path or n.startswith(path.rstrip("/") + "/") for n in needed)

        fs = policy["filesystem"]
        fs["hidden_paths"] = [p for p in fs["hidden_paths"] if not covers(p)]
        fs["tmpfs"] = [t for t in fs["tmpfs"] if not covers(t["path"])]
        policy_file = d / "monitor-policy.yaml"
        policy_file.write_text(yaml.safe_dump(policy))
        port = free_port()
        env = dict(os.environ, ENFORCER_RUNTIME_DIR=str(runtime))
        out = open(d / "monitor.out", "wb")
        proc = subprocess.Popen(
            [str(VENV_BIN / "enforcer"), "run", "--policy", str(policy_file), "--",
             str(VENV_BIN / "enforcer"), "monitor", f"--listen=127.0.0.1:{port}",
             f"--runtime-dir={runtime}", f"--events={logs / 'events.jsonl'}"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"the monitor under its policy exited {proc.returncode}: "
                                         + (d / "monitor.out").read_text()[-3000:])
                return http_get(base + "/healthz", 1)[0] == 200
            wait_for(healthy, 30, "the monitor (under its own policy) to be healthy")
            # One logged denial from an unregistered process: counted as unmanaged.
            violator = (
                "import ctypes, errno, pyseccomp as sc\n"
                "f = sc.SyscallFilter(sc.ALLOW); f.set_attr(sc.Attr.CTL_LOG, 1)\n"
                "f.add_rule(sc.ERRNO(errno.EPERM), 'getcwd'); f.load()\n"
                f"ctypes.CDLL(None).syscall({GETCWD_X86_64}, 0, 0)\n")
            assert run([sys.executable, "-c", violator]).returncode == 0

            def counted() -> bool:
                status, text = http_get(base + "/metrics", 2)
                return status == 200 and any(
                    line.startswith("enforcer_seccomp_violations_total{") and 'syscall="getcwd"' in line
                    for line in text.splitlines())
            wait_for(counted, 15, "the violation in /metrics")
            assert proc.poll() is None
        finally:
            stop(proc)
            out.close()
        # Nothing the monitor needed was denied by its own filter: its log
        # would show a failed call; the exit must be clean on SIGTERM.
        assert proc.returncode in (0, -15, 143), (d / "monitor.out").read_text()[-3000:]
