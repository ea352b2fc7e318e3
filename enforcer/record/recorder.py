"""Run a workload under a logging filter and learn what it calls.

    base policy ──recording_policy()──▶ same caps, mounts, limits, user,
                                       namespaces; seccomp: `log` everything
               ──compile──▶ Plan (temp file)
    gate (fresh audit session) ──"G"──exec──▶ `enforcer run --plan` ──▶ CMD
    audit multicast ──SessionCollector──▶ records of that session only

The workload runs through the ordinary `enforcer run` path, so it is set up
exactly as it will be under the learned policy. The filter is loaded right
before execve (enforcer/apply/sequence.py), so the only syscall of the
runtime that reaches the recording is that execve itself -- which the
learned policy must allow anyway, since it is filtered the same way.

The launcher starts a new audit session before it execs `enforcer run`;
every process of the workload inherits it, so every record is attributed
exactly, even of children that lived for a millisecond.

The recording is published in the workload registry (kind "recording",
with its audit session) before the workload may start: the launcher is a
small gate that waits for the go byte "G" after the record is written. So
`enforcer monitor` knows every record of the session for what it is,
learning and not a violation (docs/metrics.md, "Recordings").
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from enforcer import exitcodes
from enforcer.errors import EnforcerError
from enforcer.registry import WorkloadRecord
from enforcer.policy.model import Action, ActionKind, Mode, Policy, SyscallPolicy
from enforcer.apply.supervise import RECORD_USAGE_FD_ENV
from enforcer.monitor.registry import RECORDING_KIND
from enforcer.record.access import AccessLog, EventAssembler
from enforcer.record.auditrules import AuditRulesError, RecordingRules
from enforcer.record.collector import DEFAULT_RCVBUF, CollectorError, SessionCollector


class RecordError(EnforcerError):
    """The recording could not be made or is incomplete; nothing was written."""


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def recording_policy(base: Policy) -> Policy:
    """The base policy with its syscall rules replaced by "log everything".

    Same architectures as the base (anything else is still killed, as it
    will be under the learned policy); everything else of the base --
    capabilities, mounts, limits, user, namespaces -- is kept, and enforced
    even if the base says `mode: audit`, so the workload is recorded in the
    environment it will run in.
    """
    sc = base.syscalls
    logging = SyscallPolicy(default_action=Action(ActionKind.LOG), rules=(),
                            architectures=sc.architectures, log_denials=True,
                            unknown_action=sc.unknown_action)
    # Limits the base does not set are set out of reach, so that the
    # workload's cgroup has its memory and pids controllers (cgroup v2 only
    # enables what a limit needs) and `enforcer run` can report the peaks
    # the learned limits come from.
    res = base.resources
    resources = dataclasses.replace(
        res, memory_max=res.memory_max if res.memory_max is not None else UNLIMITED_MEMORY,
        pids_max=res.pids_max if res.pids_max is not None else UNLIMITED_PIDS)
    # The base's Landlock section is left out: the learned one replaces it
    # (`inherit: false`), so the recording must see every file and port.
    return dataclasses.replace(base, name=f"{base.name}.record"[:63], syscalls=logging,
                               mode=Mode.ENFORCE, resources=resources, landlock=None)


UNLIMITED_MEMORY = 1 << 50  # "no limit" that still makes the memory controller count
UNLIMITED_PIDS = 4194304  # the kernel's PID_MAX_LIMIT


@dataclass
class RunResult:
    command: list[str]
    when: str  # ISO 8601 UTC of the start
    host_arch: str
    exit_code: int  # `enforcer run`'s exit code (the workload's, or 125..127)
    session: int
    calls: dict[tuple[int, int], int]  # (AUDIT_ARCH, nr) -> records
    other_actions: dict[tuple[int, int, str], int] = field(default_factory=dict)
    records: int = 0
    processes: int = 0
    notes: list[str] = field(default_factory=list)  # said after the summary
    access: AccessLog = field(default_factory=AccessLog)  # files, ports, arguments
    peaks: dict[str, int] = field(default_factory=dict)  # "memory" (bytes), "pids"
    pids: set[int] = field(default_factory=set)  # the workload's processes

    def by_name(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(name -> count, arch name -> count, "ARCH syscall NR" -> count for
        numbers libseccomp has no name for)."""
        from enforcer.monitor.syscalls import SyscallNames, arch_name

        names = SyscallNames()
        counts: dict[str, int] = {}
        arches: dict[str, int] = {}
        unnamed: dict[str, int] = {}
        for (arch, nr), n in self.calls.items():
            name = names.name(arch, nr)
            label = arch_name(arch)
            if label == "x86_64" and nr & 0x40000000:
                label = "x32"
            arches[label] = arches.get(label, 0) + n
            if name is None:
                key = f"{label} syscall {nr}"
                unnamed[key] = unnamed.get(key, 0) + n
                continue
            counts[name] = counts.get(name, 0) + n
        return counts, arches, unnamed

    def describe_other_actions(self) -> list[str]:
        from enforcer.monitor.syscalls import SyscallNames, arch_name

        names = SyscallNames()
        out = []
        for (arch, nr, action), n in sorted(self.other_actions.items()):
            out.append(f"{names.name(arch, nr) or nr} on {arch_name(arch)}: {action} x{n}")
        return out


def _start_session_or_die() -> None:
    """preexec_fn of the launcher: a new audit session, or no launch at all.

    Also: if `enforcer record` dies, the launcher (`enforcer run`, which
    forwards the signal to the workload and removes its cgroup) gets
    SIGTERM rather than running on unrecorded."""
    from enforcer.apply import _sys
    from enforcer.audit_session import start_new_session

    if start_new_session() is None:
        raise OSError("cannot start an audit session")
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGTERM, step="record", what="prctl(PR_SET_PDEATHSIG)")


def _read_session(pid: int) -> int | None:
    from enforcer.audit_session import UNSET

    try:
        with open(f"/proc/{pid}/sessionid") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == UNSET else value


# The launcher: it already runs in the recording's audit session (started
# by preexec_fn), waits until the recording is registered, then becomes
# `enforcer run`. argv: GATE_FD -m enforcer run ... . No go byte (the
# recorder died): nothing runs unrecorded.
_GATE = ("import os, sys\n"
         "fd = int(sys.argv[1])\n"
         "if os.read(fd, 1) != b'G':\n"
         "    sys.exit(125)\n"
         "os.close(fd)\n"
         "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n")


def _publish_recording(base: Policy, policy_hash: str, launcher_pid: int,
                       session: int) -> WorkloadRecord | None:
    """Register the recording (kind "recording") so that the monitor counts
    its session's records apart; None if it could not be written (then said
    on stderr: a monitor would count the recording's syscalls as
    violations of an audit-mode policy)."""
    from enforcer import registry

    record = registry.WorkloadRecord(
        id=f"record-{os.getpid()}-{os.urandom(3).hex()}", kind=RECORDING_KIND,
        policy=base.name, policy_hash=policy_hash, mode="record", pid=launcher_pid,
        audit_session=session)
    try:
        registry.write_record(record)
    except OSError as e:
        print(f"enforcer record: warning: cannot register the recording in "
              f"{registry.workloads_dir()} ({e.strerror}); a running `enforcer monitor` will "
              "count its syscalls as violations", file=sys.stderr)
        return None
    return record


def _name_sentinel(record: WorkloadRecord) -> Callable[[int], None]:
    """The end-of-recording sentinel runs outside the session: name its pid
    in the recording's record, so that its two logged calls are the
    recording's too."""
    from enforcer import registry

    def announce(pid: int) -> None:
        record.pid = pid
        try:
            registry.write_record(record)
        except OSError:
            pass  # two records counted as unmanaged: not worth failing the recording
    return announce


def record_run(base: Policy, argv: list[str], *, workdir: str | None = None,
               timeout: float | None = None, rcvbuf: int | None = None,
               learn_files: bool = True) -> RunResult:
    """Run `argv` under the recording filter of `base`; return what it did.

    Raises RecordError when the recording cannot be trusted to be complete.
    `timeout` (seconds) stops the workload with SIGTERM (for tests);
    `rcvbuf` sizes the audit socket's buffer (default DEFAULT_RCVBUF);
    `learn_files` False adds no audit rules (syscalls only, `--syscalls-only`).
    """
    from enforcer import registry
    from enforcer.compile import compile_policy
    from enforcer.policy import syscalls as sc_names

    if os.geteuid() != 0:
        raise RecordError("recording needs root: reading the audit stream needs CAP_AUDIT_READ "
                          "and starting the workload's audit session CAP_AUDIT_CONTROL")
    plan = compile_policy(recording_policy(base))
    tmp = tempfile.mkdtemp(prefix="enforcer-record-", dir=workdir)
    plan_path = os.path.join(tmp, "recording.plan.json")
    with open(plan_path, "w") as f:
        f.write(plan.to_json())
    collector = SessionCollector(rcvbuf or DEFAULT_RCVBUF)
    proc: subprocess.Popen[bytes] | None = None
    old_handlers: dict[int, Any] = {}
    published: WorkloadRecord | None = None
    rules: RecordingRules | None = None
    access = AccessLog()
    gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
    usage_r, usage_w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            collector.open()
        except CollectorError as e:
            raise RecordError(str(e)) from None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cmd = [sys.executable, "-I", "-S", "-c", _GATE, str(gate_r),
               "-m", "enforcer", "run", "--plan", plan_path, "--", *argv]
        try:
            # Before the reader thread starts: preexec_fn in a threaded
            # process is unsafe. The socket is bound already, so nothing the
            # workload does is missed meanwhile.
            # ENFORCER_KEEP_AUDIT_SESSION: `enforcer run` would otherwise
            # start a session of its own for the workload, and the
            # collector, which follows this launcher's session, would see
            # none of its records.
            # ENFORCER_RECORD_USAGE_FD: where it reports the cgroup's peaks.
            env = {**os.environ, "ENFORCER_KEEP_AUDIT_SESSION": "1",
                   RECORD_USAGE_FD_ENV: str(usage_w)}
            proc = subprocess.Popen(cmd, preexec_fn=_start_session_or_die, env=env,
                                    pass_fds=(gate_r, usage_w))
        except subprocess.SubprocessError:
            raise RecordError("cannot start a new audit session for the workload (writing "
                              "/proc/self/loginuid needs CAP_AUDIT_CONTROL and a loginuid that is "
                              "not immutable); without one its records cannot be told apart") from None
        os.close(gate_r)
        os.close(usage_w)
        gate_r = usage_w = -1
        session = _read_session(proc.pid)
        if session is not None:
            published = _publish_recording(base, plan.policy_hash, proc.pid, session)
            if published is not None:
                collector.announce_sentinel = _name_sentinel(published)
            if learn_files:
                rules = RecordingRules(session, target_arches(base))
                try:
                    rules.install()
                except AuditRulesError as e:
                    raise RecordError(str(e)) from None
                collector.assembler = _assembler(rules.key, access, collector, session)
        collector.start()
        try:
            os.write(gate_w, b"G")  # the workload may start
        except BrokenPipeError:
            pass  # the launcher is gone; its exit status says why
        os.close(gate_w)
        gate_w = -1

        def forward(signum: int, _frame: object) -> None:
            # Ctrl-C ends the recording: the workload gets the signal (through
            # `enforcer run`, which forwards it) and we write what we saw.
            if proc is not None and proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass

        for sig in FORWARDED:
            old_handlers[sig] = signal.signal(sig, forward)
        try:
            exit_code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                exit_code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_code = proc.wait()
        if session is None:
            raise RecordError("the launcher exited before its audit session could be read; "
                              f"`enforcer run` exit status {exit_code}")
        try:
            collector.finish(session=session)
        except CollectorError as e:
            raise RecordError(str(e)) from None
        records = collector.session(session)
        notes = list(collector.notes) + (rules.notes if rules is not None else [])
        return RunResult(command=list(argv), when=when, host_arch=sc_names.native_arch(),
                         exit_code=exit_code, session=session, calls=dict(records.calls),
                         other_actions=dict(records.other_actions), records=records.records,
                         processes=len(records.pids), notes=notes, access=access,
                         peaks=_read_peaks(usage_r), pids=set(records.pids))
    finally:
        if rules is not None:
            rules.remove()
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        collector.close()
        for fd in (gate_r, gate_w, usage_r, usage_w):
            if fd >= 0:
                os.close(fd)
        if published is not None:
            registry.remove_record(published.id)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def target_arches(base: Policy) -> tuple[str, ...]:
    from enforcer.policy import syscalls

    return syscalls.effective_arches(base.syscalls.architectures)


def _assembler(key: str, access: AccessLog, collector: SessionCollector,
               session: int) -> EventAssembler:
    """Events of the recording's rules, counted for processes of the
    workload only: those the collector has seen in a seccomp record of the
    session (see enforcer/record/access.py)."""
    from enforcer.monitor.syscalls import SyscallNames

    names = SyscallNames()

    def counts(pid: int) -> bool:
        return pid in collector.session(session).pids

    return EventAssembler(key, access, counts, names.name)


def _read_peaks(fd: int) -> dict[str, int]:
    """The cgroup peaks `enforcer run` reported (empty if it did not)."""
    import json

    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        peaks = json.loads(data or b"{}")
    except ValueError:
        return {}
    return {k: int(v) for k, v in peaks.items() if k in ("memory", "pids") and isinstance(v, int)}


APPLY_EXIT_CODES = (exitcodes.APPLY_FAILED, exitcodes.CANNOT_EXECUTE, exitcodes.NOT_FOUND)


def command_text(argv: list[str]) -> str:
    return shlex.join(argv)
