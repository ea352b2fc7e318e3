"""Run a workload under a logging filter and learn what it calls.

    base policy ──recording_policy()──▶ same caps, mounts, limits, user,
                                       namespaces; seccomp: `log` everything
               ──compile──▶ Plan (temp file)
    launcher (fresh audit session) ──exec──▶ `enforcer run --plan` ──▶ CMD
    audit multicast ──SessionCollector──▶ records of that session only

The workload runs through the ordinary `enforcer run` path, so it is set up
exactly as it will be under the learned policy. The filter is loaded right
before execve (enforcer/apply/sequence.py), so the only syscall of the
runtime that reaches the recording is that execve itself -- which the
learned policy must allow anyway, since it is filtered the same way.

The launcher starts a new audit session before it execs `enforcer run`;
every process of the workload inherits it, so every record is attributed
exactly, even of children that lived for a millisecond.
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
from typing import Any

from enforcer import exitcodes
from enforcer.errors import EnforcerError
from enforcer.policy.model import Action, ActionKind, Mode, Policy, SyscallPolicy
from enforcer.record.collector import CollectorError, SessionCollector


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
    return dataclasses.replace(base, name=f"{base.name}.record"[:63], syscalls=logging,
                               mode=Mode.ENFORCE)


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


def record_run(base: Policy, argv: list[str], *, workdir: str | None = None,
               timeout: float | None = None) -> RunResult:
    """Run `argv` under the recording filter of `base`; return what it did.

    Raises RecordError when the recording cannot be trusted to be complete.
    `timeout` (seconds) stops the workload with SIGTERM (for tests).
    """
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
    collector = SessionCollector()
    proc: subprocess.Popen[bytes] | None = None
    old_handlers: dict[int, Any] = {}
    try:
        try:
            collector.open()
        except CollectorError as e:
            raise RecordError(str(e)) from None
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cmd = [sys.executable, "-m", "enforcer", "run", "--plan", plan_path, "--", *argv]
        try:
            # Before the reader thread starts: preexec_fn in a threaded
            # process is unsafe. The socket is bound already, so nothing the
            # workload does is missed meanwhile.
            # ENFORCER_KEEP_AUDIT_SESSION: `enforcer run` would otherwise
            # start a session of its own for the workload, and the
            # collector, which follows this launcher's session, would see
            # none of its records.
            env = {**os.environ, "ENFORCER_KEEP_AUDIT_SESSION": "1"}
            proc = subprocess.Popen(cmd, preexec_fn=_start_session_or_die, env=env)
        except subprocess.SubprocessError:
            raise RecordError("cannot start a new audit session for the workload (writing "
                              "/proc/self/loginuid needs CAP_AUDIT_CONTROL and a loginuid that is "
                              "not immutable); without one its records cannot be told apart") from None
        session = _read_session(proc.pid)
        collector.start()

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
            collector.finish()
        except CollectorError as e:
            raise RecordError(str(e)) from None
        records = collector.session(session)
        return RunResult(command=list(argv), when=when, host_arch=sc_names.native_arch(),
                         exit_code=exit_code, session=session, calls=dict(records.calls),
                         other_actions=dict(records.other_actions), records=records.records,
                         processes=len(records.pids))
    finally:
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        collector.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


APPLY_EXIT_CODES = (exitcodes.APPLY_FAILED, exitcodes.CANNOT_EXECUTE, exitcodes.NOT_FOUND)


def command_text(argv: list[str]) -> str:
    return shlex.join(argv)
