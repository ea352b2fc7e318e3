"""The monitor counts the Landlock denials of a real `enforcer run` workload
and attributes them to it, with the path, port or signal target in the
event log -- from the real kernel's audit records (types 1423 and 1424).

The kernel logs Landlock denials only while its audit is enabled: the
monitor is started with --enable-audit (holding the machine-wide "audit"
lock), and the fixture puts the kernel's audit status back afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.monitor_helpers import (REPO, MonitorProcess, monitors, needs_root,  # noqa: F401
                                   value_for, wait_for)

pytestmark = [pytest.mark.root, needs_root]

ENFORCER = [os.path.join(REPO, ".venv", "bin", "python"), "-m", "enforcer"]


@pytest.fixture
def kernel_audit() -> Iterator[None]:
    from enforcer.apply.landlock import kernel_abi
    from enforcer.monitor.sources import audit_control as ac

    if kernel_abi() < 7:
        pytest.skip("the kernel logs Landlock denials from ABI 7 (6.15)")
    with session.host_lock("audit"):
        before = ac.read_status()
        try:
            yield
        finally:
            ac.set_fields(ac.AUDIT_STATUS_ENABLED | ac.AUDIT_STATUS_BACKLOG_LIMIT,
                          enabled=before.enabled, backlog_limit=before.backlog_limit)


def test_denials_of_an_enforcer_run_workload_are_counted_and_attributed(
        tmp_path: Path, kernel_audit: None, monitors: list[MonitorProcess]) -> None:
    scratch = Path(session.mkdtemp("enforcer-ll-monitor-", dir="/var/lib"))
    try:
        (scratch / "ok").mkdir()
        (scratch / "denied").mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        policy = tmp_path / "ll-monitor.yaml"
        policy.write_text(f"""name: ll-monitor
landlock:
  filesystem:
    read: [/]
    execute: [/]
    write: [{scratch}/ok, /dev/null]
  scope: [signal]
""")
        runtime = str(tmp_path / "rt")
        events = str(tmp_path / "ev.jsonl")
        m = MonitorProcess(runtime, events, "--enable-audit")
        monitors.append(m)
        assert "audit is disabled" not in m.stderr()
        # 20 creations refused in one directory, one signal to a process
        # outside, one TCP bind (by a child process: attributed too).
        script = (f"for i in $(seq 20); do {{ true > {scratch}/denied/f$i; }} 2>/dev/null; done; "
                  f"true > {scratch}/ok/fine; kill -0 1 2>/dev/null; "
                  f"/usr/bin/python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", "
                  f"{port}))' 2>/dev/null; true")
        r = subprocess.run([*ENFORCER, "run", "--policy", str(policy), "--name", "ll-mon", "--",
                            "/bin/sh", "-c", script],
                           env=dict(os.environ, ENFORCER_RUNTIME_DIR=runtime),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert (scratch / "ok" / "fine").exists() and not any((scratch / "denied").iterdir())

        def counted(access: str) -> float:
            return value_for(m.samples("enforcer_landlock_denials_total"), workload="ll-mon",
                             policy="ll-monitor", access=access)

        assert wait_for(lambda: counted("fs.make_reg") == 20, timeout=10), m.metrics_text()
        assert wait_for(lambda: counted("scope.signal") == 1 and counted("net.bind_tcp") == 1,
                        timeout=10), m.metrics_text()
        assert value_for(m.samples("enforcer_landlock_denials_total"), workload="unmanaged") == 0
        assert m.terminate() == 0
        lines = [json.loads(line) for line in open(events)]
        landlock = [e for e in lines if "landlock" in e and e["workload"] == "ll-mon"]
        assert len(landlock) == 22, lines
        made = [e for e in landlock if e["landlock"]["access"] == ["fs.make_reg"]]
        assert {e["landlock"]["path"] for e in made} == {f"{scratch}/denied"}
        assert {e["syscall"] for e in made} == {"openat"} and {e["comm"] for e in made} == {"sh"}
        signal = next(e for e in landlock if e["landlock"]["access"] == ["scope.signal"])
        assert signal["landlock"]["target_pid"] == 1 and signal["syscall"] == "kill"
        bind = next(e for e in landlock if e["landlock"]["access"] == ["net.bind_tcp"])
        assert (bind["landlock"]["port"], bind["landlock"]["address"], bind["comm"]) == \
            (port, "127.0.0.1", "python3")
        assert bind["pid"] != signal["pid"]  # the child, attributed to the same workload
    finally:
        session.remove_tree(str(scratch))
