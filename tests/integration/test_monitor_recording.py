"""`enforcer record` and `enforcer monitor` on one host: a recording must not
blind the monitor, and must say honestly what it lost itself.

A recording logs every syscall of its workload: hundreds of thousands of
audit records that are learning, not violations. The monitor (as the
kernel's audit daemon here, its default where the host allows) must count
every real violation made at the same time, count the recording apart, log
none of its records, and lose nothing. When the recording's own socket
overflows, `record` must refuse to write a policy and report the kernel's
count of what it dropped, which the monitor's exact count confirms.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests import session
from tests.monitor_helpers import (  # noqa: F401
    GEN_C, PYTHON, AuditWitness, MonitorProcess, Violator, audit_host, gen_binary, monitors,
    needs_root, value_for, violators, wait_for, write_workload, x86_64_only)

pytestmark = [pytest.mark.root, pytest.mark.slow, needs_root, x86_64_only]

@pytest.fixture(autouse=True, scope="module")
def _audit_rules_lock() -> Iterator[None]:
    """A recording adds audit rules, a host singleton (tests/session.py)."""
    with session.host_lock("audit"):
        yield


RECORDED_CALLS = 200_000
VIOLATIONS = 10_000
SUMMARY = re.compile(r"enforcer record: (\d+) audit records from")
DROPPED = re.compile(r"the kernel dropped (\d+) audit record\(s\) on the recording's socket "
                     r"\(its own count; (\d+) of the recording's records were read\)")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """Outside /tmp (a recording's base policy may put a tmpfs there), readable
    by the recorded workload: the generator's binary and the output."""
    d = Path(session.mkdtemp("monitor-recording-", dir="/var/tmp"))
    d.chmod(0o755)
    (d / "gen.c").write_text(GEN_C)
    subprocess.run(["gcc", "-O2", "-o", str(d / "gen"), str(d / "gen.c")], check=True)
    try:
        yield d
    finally:
        session.remove_tree(str(d))


def start_recording(scratch: Path, runtime: str, calls: int,
                    *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        # --syscalls-only: these tests measure the monitor beside a flood of
        # syscall records; a full recording's audit rules would also put
        # every syscall of the host (the monitor's own) on the kernel's
        # slower audit path while it runs (docs/record.md).
        [PYTHON, "-m", "enforcer", "record", "--base", "default", "-o", str(scratch / "out.yaml"),
         "--syscalls-only", *extra, "--", str(scratch / "gen"), "loop", str(calls), "110"],
        env={**{k: v for k, v in os.environ.items() if k != "GEN_WAIT"},
             "ENFORCER_RUNTIME_DIR": runtime},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def recorded(m: MonitorProcess) -> dict[tuple[tuple[str, str], ...], float]:
    return m.samples("enforcer_recorded_syscalls_total")


def test_a_recording_beside_a_real_violation_loses_none_of_the_violations(
        audit_host: dict[str, object],
        tmp_path: Path,
        scratch: Path,
        gen_binary: str,
        monitors: list[MonitorProcess],
        violators: list[Violator]) -> None:
    rt, events = str(tmp_path / "rt"), str(tmp_path / "ev.jsonl")
    m = MonitorProcess(rt, events, "--audit-mode=daemon", "--events-max-bytes", str(256 << 20))
    monitors.append(m)
    v = Violator(gen_binary, "loop", VIOLATIONS, new_session=True)
    violators.append(v)
    write_workload(rt, "real", pid=v.pid, policy="web", audit_session=v.session)
    recording = start_recording(scratch, rt, RECORDED_CALLS)
    try:
        # The violator's burst while the recording floods the stream.
        assert wait_for(lambda: sum(recorded(m).values()) > 1000 or recording.poll() is not None,
                        timeout=120)
        assert v.go(timeout=600) == 0
        out, err = recording.communicate(timeout=900)
    finally:
        if recording.poll() is None:
            recording.kill()
            recording.wait()
    # Every real violation made during the recording is counted.
    assert wait_for(lambda: value_for(m.samples("enforcer_seccomp_violations_total"),
                                      workload="real") == VIOLATIONS, timeout=120)
    violations = m.samples("enforcer_seccomp_violations_total")
    assert value_for(violations, workload="real", policy="web", action="errno") == VIOLATIONS
    assert not [k for k in violations if dict(k)["policy"].endswith(".record")], violations
    summary = SUMMARY.search(err)
    if recording.returncode == 0:
        # Every recorded syscall counted apart (and the recorder's two-call
        # end-of-recording marker with them), not one as a violation.
        assert summary, err
        session_records = int(summary.group(1))
        assert session_records > RECORDED_CALLS  # the workload's loop, and its start
        assert wait_for(lambda: sum(recorded(m).values()) == session_records + 2,
                        timeout=120), (recorded(m), session_records)
        (labels,) = recorded(m)
        assert dict(labels)["policy"] == "default"
        print(f"recording of {session_records} records beside {VIOLATIONS} violations: "
              f"violations counted {VIOLATIONS}, recorded counted {session_records + 2} "
              "(with the end marker), none as violations")
        note = re.search(r"note: the kernel dropped (\d+) audit record\(s\) of other processes", err)
        if note:  # another process's record that could not wait (docs/record.md)
            print(f"(the recording noted {note.group(1)} other process(es)' record(s) dropped)")
    else:
        # The kernel dropped records while one of the recording's may have
        # been among them (a process waited out backlog_wait_time): the
        # recording refuses, saying so; the monitor's count, the kernel's,
        # agrees (docs/record.md).
        kernel = re.search(r"the kernel dropped (\d+) audit record\(s\) during the recording",
                           err)
        assert kernel and summary is None, err
        assert value_for(m.samples("enforcer_monitor_events_lost_total"),
                         source="audit") >= int(kernel.group(1))
        print(f"recording refused (the kernel dropped {kernel.group(1)} other record(s)); "
              f"violations counted {VIOLATIONS} of {VIOLATIONS}")
    assert m.terminate() == 0
    logged = {json.loads(line)["workload"] for line in open(events, encoding="utf-8")}
    assert "real" in logged and not [w for w in logged if w.startswith(("record-", "run-"))], logged


def test_record_reports_its_own_losses_honestly(
        audit_host: dict[str, object],
        tmp_path: Path,
        scratch: Path,
        monitors: list[MonitorProcess]) -> None:
    """A recording whose socket overflows (a 64 KiB buffer) writes nothing
    and says how many records the kernel dropped on it. The monitor, which
    as the audit daemon lost none, counts the session exactly: the records
    `record` read plus those it says it lost account for all of them."""
    rt = str(tmp_path / "rt")
    m = MonitorProcess(rt, str(tmp_path / "ev.jsonl"), "--audit-mode=daemon",
                       "--events-max-bytes", str(256 << 20))
    monitors.append(m)
    witness = AuditWitness()
    recording = start_recording(scratch, rt, 50_000, "--rcvbuf", str(64 << 10))
    try:
        _, err = recording.communicate(timeout=900)
    finally:
        if recording.poll() is None:
            recording.kill()
            recording.wait()
    assert recording.returncode != 0, "a recording that lost records wrote a policy"
    assert not (scratch / "out.yaml").exists()
    dropped = DROPPED.search(err)
    assert dropped, err
    said_lost, read = int(dropped.group(1)), int(dropped.group(2))
    # The monitor's exact count of the session (less the marker's two calls,
    # which the recording counts apart from its session).
    assert wait_for(lambda: value_for(m.samples("enforcer_monitor_events_lost_total"),
                                      source="audit") == 0 and sum(recorded(m).values()) > 0,
                    timeout=60)
    assert value_for(m.samples("enforcer_monitor_events_lost_total"), source="audit") == 0
    assert wait_for(lambda: sum(recorded(m).values()) >= read, timeout=60)
    seen = witness.stop()
    in_session = sum(recorded(m).values()) - 2
    missed = in_session - read
    assert missed > 0, "the 64 KiB buffer should have overflowed"
    # What it says it lost covers what it missed of its session; the rest of
    # its count are other records it dropped in the same burst: no more than
    # the witness saw besides the session (the marker's two calls included).
    assert said_lost >= missed, (said_lost, missed)
    assert said_lost - missed <= len(seen) - in_session, (said_lost, missed, len(seen))
    print(f"record: read {read} of its session's {in_session} records, said it lost "
          f"{said_lost}; the monitor lost none")

