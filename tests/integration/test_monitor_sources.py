"""Source robustness on the real kernel: an audit socket overrun is counted
as lost (the kernel's count) and the socket keeps working; the kmsg
fallback says it is lossy."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from enforcer.monitor.sources.audit import AuditSource
from tests.monitor_helpers import (PYTHON, MonitorProcess, Violator, free_port,  # noqa: F401
                                   gen_binary, monitors, needs_root, value_for, violators,
                                   x86_64_only)

pytestmark = [pytest.mark.root, needs_root, x86_64_only]


def drain_all(source: AuditSource, pid: int) -> tuple[int, int, list[str]]:
    """(records of `pid` received, records lost by the kernel's count, malformed)."""
    got: list[bytes] = []
    lost: list[int] = []
    bad: list[str] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if source.drain(got.append, lost.append, bad.append) == 0:
            time.sleep(0.05)
    marker = f" pid={pid} ".encode()
    return sum(1 for g in got if marker in g), sum(lost), bad


def test_an_overrun_is_counted_exactly_and_the_socket_recovers(
        gen_binary: str, violators: list[Violator]) -> None:
    source = AuditSource(rcvbuf=4096, max_rcvbuf=64 << 20)  # tiny: it must overflow
    source.open()
    try:
        v = Violator(gen_binary, "loop", 3000)
        violators.append(v)
        assert v.go() == 0  # nobody reads while the burst happens
        received, lost, bad = drain_all(source, v.pid)
        assert received < 3000 and lost > 0, "a 4 KiB buffer cannot hold 3,000 records"
        # The kernel's drop counter: everything missing of ours (and any
        # other process's records dropped with them; test_monitor_loss.py
        # tells the two apart with a witness).
        assert received + lost >= 3000
        assert source.rcvbuf > 4096  # grown after the overrun
        assert bad == []
        # The same socket goes on receiving: with room in the buffer (it grows
        # by doubling on each overrun; here set at once) a burst arrives whole.
        assert source.sock is not None
        source._set_rcvbuf(source.sock, 8 << 20)  # noqa: SLF001
        v2 = Violator(gen_binary, "loop", 50)
        violators.append(v2)
        assert v2.go() == 0
        received2, _lost2, _ = drain_all(source, v2.pid)
        assert received2 == 50
    finally:
        source.close()


def test_kmsg_fallback_says_it_is_lossy(tmp_path: Path, monitors: list[MonitorProcess]) -> None:
    m = MonitorProcess(str(tmp_path / "rt"), str(tmp_path / "ev.jsonl"), "--source", "kmsg")
    monitors.append(m)
    assert "WARNING" in m.stderr() and "/dev/kmsg" in m.stderr()
    source = m.samples("enforcer_monitor_source")
    assert value_for(source, source="kmsg", complete="false") == 1
    assert ("source", "kmsg") in {kv for k in m.samples("enforcer_monitor_events_lost_total") for kv in k}
    assert m.terminate() == 0


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_without_cap_audit_read_one_clear_line(tmp_path: Path) -> None:
    r = subprocess.run(["setpriv", "--bounding-set", "-audit_read", "--inh-caps=-all",
                        PYTHON, "-m", "enforcer", "monitor", "--audit-mode=multicast",
                        "--runtime-dir", str(tmp_path / "rt"),
                        "--listen", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "enforcer monitor: audit: cannot join the audit multicast group: Operation not permitted "
        "(needs CAP_AUDIT_READ); try --source kmsg (lossy)"]
