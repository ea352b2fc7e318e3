"""While the workload runs: what the supervisor watches besides its exit.

* the kernel audit stream, read as records arrive (a multicast reader that
  falls behind loses records), into the workload's refusal counts
  (enforcer/apply/refusals.py); with `enforcer run --summary[=SECONDS]`
  the counts are printed every SECONDS (10 by default) when they changed;
* for a policy that gives the workload a network namespace of its own: a
  workload that listens on a TCP port there, which nothing outside can
  reach (enforcer/apply/unreachable.py), said once.

The exit is a pidfd in the same select(), so nothing here adds a wakeup
to a workload that has nothing to watch: then the supervisor just blocks
in waitpid as before. Standard library only (start path).
"""

from __future__ import annotations

import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from enforcer.apply.audit import AuditListener, SeccompRecord
    from enforcer.apply.refusals import Refusals
    from enforcer.plan import Plan

# When to look for an unreachable listener: soon after the start (servers
# bind early), then less and less often.
NET_CHECKS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
NET_CHECK_EVERY = 30.0
# After the exit, how long to wait for records still on their way from
# kauditd (only when the workload failed: a clean exit is not slowed down).
LATE_RECORDS_IDLE = 0.05
LATE_RECORDS_MAX = 0.3


def watch_for(plan: Plan, child: int, audit: AuditListener | None, session: int | None,
              say: Callable[[str], None], summary_every: float | None) -> Watch:
    """What to watch for this Plan's workload."""
    net_check = None
    if "net" in plan.namespaces and plan.mode != "audit":
        from enforcer.apply.unreachable import note_for

        net_check = note_for(plan.policy_name)
    refusals = None
    seccomp = plan.seccomp
    # A filter that logs whatever it does not refuse, in enforce mode
    # (`enforcer record`'s), would flood the reader with records that are
    # no refusals: then only a kill is looked up, after the exit.
    recording = seccomp is not None and seccomp.default_action == "log" and plan.mode != "audit"
    if audit is not None and seccomp is not None and not recording:
        from enforcer.apply.refusals import Refusals

        refusals = Refusals(session, {child}, seccomp.syscall_names,
                            audit_mode=plan.mode == "audit", bpf=seccomp.filter.bpf)
    return Watch(child, audit if refusals else None, refusals, say, plan.policy_name,
                 summary_every, net_check)


class Watch:
    def __init__(self, child: int, audit: AuditListener | None, refusals: Refusals | None,
                 say: Callable[[str], None], policy: str, summary_every: float | None = None,
                 net_check: Callable[[int], str | None] | None = None) -> None:
        self.child = child
        self.audit = audit  # None: nothing to count (no listener, or a recording filter)
        self.refusals = refusals
        self.say = say
        self.policy = policy
        self.summary_every = summary_every
        self.net_check = net_check

    def summary(self, leave_out_kill_of: int = 0, failed: bool = False) -> list[str]:
        """The refusal lines; `leave_out_kill_of`: a pid whose kill another
        line explains; `failed`: the workload failed (ENOSYS answers too)."""
        if self.refusals is None:
            return []
        leave_out = self.refusals.kill_of(leave_out_kill_of) if leave_out_kill_of else None
        return self.refusals.lines(self.policy, leave_out, failed)

    @property
    def lost(self) -> bool:
        return self.audit is not None and self.audit.lost

    def _feed(self) -> None:
        if self.audit is not None and self.refusals is not None:
            for rec in self.audit.read_ready():
                self.refusals.add(rec)

    def _print_summary(self) -> None:
        if self.refusals is not None and self.refusals.changed:
            self.refusals.changed = False
            for line in self.summary():
                self.say(line)

    def wait(self) -> int:
        """Block until the child exits; return its wait status."""
        watching = self.audit is not None or self.net_check is not None
        if watching:
            self._watch_until_exit()
        while True:
            pid, status = os.waitpid(self.child, 0)
            if pid == self.child:
                break
        self._feed()
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            self.late_records()
        return status

    def _watch_until_exit(self) -> None:
        try:
            exited = os.pidfd_open(self.child)
        except OSError:
            return  # no pidfd (an old kernel): records are read after the exit
        start = time.monotonic()
        net_at = [start + t for t in NET_CHECKS] if self.net_check else []
        summary_at = start + self.summary_every if self.summary_every else None
        fds: list[int] = [exited]
        if self.audit is not None:
            fds.append(self.audit.sock.fileno())
        try:
            while True:
                deadlines = [t for t in (summary_at, net_at[0] if net_at else None) if t]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready, _, _ = select.select(fds, [], [], timeout)
                if self.audit is not None and self.audit.sock.fileno() in ready:
                    self._feed()
                if exited in ready:
                    return
                now = time.monotonic()
                if summary_at is not None and now >= summary_at:
                    self._print_summary()
                    summary_at = now + (self.summary_every or 0)
                if net_at and now >= net_at[0] and self.net_check is not None:
                    note = self.net_check(self.child)
                    if note is not None:
                        self.say(note)
                        net_at = []  # said once
                    else:
                        net_at = net_at[1:] or [now + NET_CHECK_EVERY]
        finally:
            os.close(exited)

    def late_records(self) -> None:
        """Records of the last moments before the exit, still on their way."""
        if self.audit is None:
            return
        end = time.monotonic() + LATE_RECORDS_MAX
        while True:
            left = min(LATE_RECORDS_IDLE, end - time.monotonic())
            if left <= 0:
                return
            ready, _, _ = select.select([self.audit.sock], [], [], left)
            if not ready:
                return
            self._feed()

    def wait_for_kill(self, pid: int, timeout: float) -> SeccompRecord | None:
        """The record of `pid`'s kill, reading records until it is among
        them (kauditd delivers asynchronously, possibly after we reaped)
        or time is up."""
        if self.audit is None or self.refusals is None:
            return None
        end = time.monotonic() + timeout
        while self.refusals.kill_of(pid) is None:
            left = end - time.monotonic()
            if left <= 0:
                return None
            select.select([self.audit.sock], [], [], left)
            self._feed()
        return self.refusals.kill_of(pid)
