"""The supervisor: the parent that stays outside the policy.

It creates the workload's cgroup and writes the limits, forks the child,
moves it into the cgroup before the child runs anything (the child waits on
a sync pipe), forwards signals, passes the exit status through, says in
words why the workload died, and removes the cgroup and the registry record
afterwards, also when anything failed.

`exec_in_place` is the --exec mode: no supervisor, the sequence runs in
this process and execs the workload (as a container entrypoint). The cgroup
is created first and, with nobody left to remove it, outlives us.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import NoReturn, TextIO

from enforcer import exitcodes
from enforcer.apply import _sys
from enforcer.apply.audit import AuditListener
from enforcer.apply.cgroups import CgroupDriver, choose_driver
from enforcer.apply.sequence import ChildContext, apply_and_exec, run_child, write_id_maps
from enforcer.errors import ApplyError
from enforcer.plan import Plan

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


def new_workload_id() -> str:
    return f"run-{os.getpid()}-{os.urandom(3).hex()}"


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def exit_code_for_failure(e: ApplyError) -> int:
    if e.step == "exec":
        return exitcodes.NOT_FOUND if e.errno == errno.ENOENT else exitcodes.CANNOT_EXECUTE
    return exitcodes.APPLY_FAILED


def status_to_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return exitcodes.SIGNAL_BASE + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


@dataclass
class Supervisor:
    plan: Plan
    argv: list[str]
    workload_id: str = field(default_factory=new_workload_id)
    cgroup_root: str = "/sys/fs/cgroup"
    registry_root: str | None = None
    err: TextIO = sys.stderr
    driver: CgroupDriver | None = None
    audit: AuditListener | None = None
    child: int = 0
    record_written: bool = False

    def say(self, text: str) -> None:
        print(f"enforcer run: {text}", file=self.err, flush=True)

    @property
    def unprivileged(self) -> bool:
        return os.geteuid() != 0

    # -- before fork ---------------------------------------------------

    def make_cgroup(self) -> None:
        if self.plan.cgroup.empty:
            return
        driver = choose_driver(self.plan.cgroup, self.workload_id, root=self.cgroup_root)
        try:
            driver.create()
        except ApplyError as e:
            driver.remove()
            if self.plan.mode == "audit":
                # Audit mode enforces no limits; the cgroup was only for
                # attribution, so its absence is reported, not fatal.
                self.say(f"note: no workload cgroup ({e}); limit events will not be attributed")
                return
            raise
        self.driver = driver
        if self.plan.mode != "audit":
            driver.apply_limits()

    def prepare_pid_namespace(self) -> frozenset[str]:
        """unshare(CLONE_NEWPID) only affects the caller's future children,
        so the supervisor makes it right before its one fork: the child is
        then pid 1 of the new namespace, with no extra process in between.
        Unprivileged, a user namespace must come first to own it."""
        if "pid" not in self.plan.namespaces or self.plan.mode == "audit":
            return frozenset()
        if not self.unprivileged:
            _sys.unshare(_sys.CLONE_NEWPID, "namespaces", "unshare(CLONE_NEWPID)")
            return frozenset({"pid"})
        uid, gid = os.getuid(), os.getgid()
        _sys.unshare(_sys.CLONE_NEWUSER, "namespaces", "unshare(CLONE_NEWUSER)")
        user = self.plan.user
        write_id_maps(user.uid if user else uid, user.gid if user else gid, uid, gid)
        _sys.unshare(_sys.CLONE_NEWPID, "namespaces", "unshare(CLONE_NEWPID)")
        return frozenset({"user", "pid"})

    # -- fork and place ---------------------------------------------------

    def start_child(self, done_by_parent: frozenset[str], err_w: int, sync_r: int,
                    close_in_child: list[int]) -> None:
        ctx = ChildContext(plan=self.plan, argv=self.argv, env=dict(os.environ), err_fd=err_w,
                           sync_fd=sync_r, done_by_parent=done_by_parent,
                           unprivileged=self.unprivileged, outer_uid=os.getuid(),
                           outer_gid=os.getgid())
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            self._become_child(ctx, close_in_child)
        self.child = pid
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _become_child(self, ctx: ChildContext, close_fds: list[int]) -> NoReturn:
        try:
            for fd in close_fds:
                os.close(fd)
            # Python ignores SIGPIPE and SIGXFSZ for itself; an ignored
            # signal survives execve, so the workload must get them back.
            for sig in (*FORWARDED_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            # If the supervisor dies, the workload must not live on outside
            # its cleanup.
            _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL, step="supervise",
                       what="prctl(PR_SET_PDEATHSIG)")
        except BaseException:
            os._exit(exitcodes.APPLY_FAILED)
        run_child(ctx)

    def _forward(self, signum: int, _frame: object) -> None:
        if self.child:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass

    def place_child(self, sync_w: int) -> None:
        if self.driver is not None:
            self.driver.add(self.child)
        self.write_record()
        os.write(sync_w, b"G")

    def write_record(self) -> None:
        from enforcer import registry

        limits = {}
        if self.plan.cgroup.memory_max is not None:
            limits["memory_max"] = self.plan.cgroup.memory_max
        if self.plan.cgroup.pids_max is not None:
            limits["pids_max"] = self.plan.cgroup.pids_max
        rec = registry.WorkloadRecord(
            id=self.workload_id, kind="run", policy=self.plan.policy_name,
            policy_hash=self.plan.policy_hash, mode=self.plan.mode,
            cgroups=self.driver.record_paths() if self.driver else {}, pid=self.child,
            limits=limits)
        try:
            registry.write_record(rec, self.registry_root)
            self.record_written = True
        except PermissionError:
            if not self.unprivileged:
                raise
            # An unprivileged run cannot write the system registry; the
            # monitor (root) would not see its denials attributed anyway.

    # -- after exec -----------------------------------------------------------

    def read_failure(self, err_r: int) -> ApplyError | None:
        chunks = []
        while True:
            chunk = os.read(err_r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return None  # EOF and nothing else: execve happened
        try:
            d = json.loads(b"".join(chunks))
            return ApplyError(d["step"], d["what"], d.get("errno"), d.get("detail") or "")
        except (ValueError, KeyError, TypeError):
            return ApplyError("internal", "error pipe", None, "unreadable report from the child")

    def wait(self) -> int:
        while True:
            pid, status = os.waitpid(self.child, 0)
            if pid == self.child:
                self.child = 0
                return status

    def explain(self, status: int) -> None:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        events = self.driver.events() if self.driver else None
        if sig == signal.SIGSYS:
            self.say(self.seccomp_reason())
        elif sig == signal.SIGKILL and events and events.oom_kills:
            limit = self.plan.cgroup.memory_max
            where = f"the policy's memory limit {human_bytes(limit)}" if limit else "its memory limit"
            self.say(f"workload killed by the OOM killer at {where}")
        if events and events.pids_max_hits:
            limit = self.plan.cgroup.pids_max
            self.say(f"fork refused {events.pids_max_hits} time(s) at the policy's pids limit "
                     f"{limit if limit is not None else '(unknown)'}")

    def seccomp_reason(self) -> str:
        base = f"workload killed by SIGSYS from policy {self.plan.policy_name!r}'s seccomp filter"
        if self.audit is None:
            return base + ("; the refused syscall is unknown (reading the audit stream needs "
                           "CAP_AUDIT_READ)")
        rec = self.audit.find({self._last_pid}, timeout=1.0)
        if rec is None:
            return base + "; no audit record named the syscall"
        names = self.plan.seccomp.syscall_names if self.plan.seccomp else {}
        native = rec.arch in (0xC000003E, 0xC00000B7)  # AUDIT_ARCH_X86_64, AARCH64
        name = names.get(rec.syscall, "?") if native else f"non-native arch {rec.arch:#x}"
        return f"{base}: syscall {name} ({rec.syscall}) is not allowed"

    _last_pid: int = 0

    # -- the whole run ---------------------------------------------------------

    def run(self) -> int:
        err_r = err_w = sync_r = sync_w = -1
        try:
            if self.plan.mode == "audit":
                self.say(f"audit mode: nothing is blocked; every would-be violation of policy "
                         f"{self.plan.policy_name!r} is logged to the kernel audit log")
            self.make_cgroup()
            if self.plan.seccomp is not None and not self.unprivileged:
                self.audit = AuditListener.open()
            done = self.prepare_pid_namespace()
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
            closers = [err_r, sync_w] + ([self.audit.sock.fileno()] if self.audit else [])
            self.start_child(done, err_w, sync_r, closers)
            self._last_pid = self.child
            os.close(err_w)
            os.close(sync_r)
            err_w = sync_r = -1
            self.place_child(sync_w)
            os.close(sync_w)
            sync_w = -1
            failure = self.read_failure(err_r)
            status = self.wait()
            if failure is not None:
                self.say(str(failure))
                return exit_code_for_failure(failure)
            self.explain(status)
            return status_to_code(status)
        except ApplyError as e:
            self.say(str(e))
            return exitcodes.APPLY_FAILED
        finally:
            for fd in (err_r, err_w, sync_r, sync_w):
                if fd >= 0:
                    os.close(fd)
            self.cleanup()

    def cleanup(self) -> None:
        if self.child:
            # We are failing with a child that never exec'd (or is running):
            # it must not outlive us.
            try:
                os.kill(self.child, signal.SIGKILL)
                os.waitpid(self.child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.child = 0
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.driver is not None:
            try:
                self.driver.remove()
            except ApplyError as e:
                self.say(f"warning: {e}")
        if self.record_written:
            from enforcer import registry

            registry.remove_record(self.workload_id, self.registry_root)
        if self.audit is not None:
            self.audit.close()


def supervise(plan: Plan, argv: list[str], workload_id: str | None = None) -> int:
    sup = Supervisor(plan, argv)
    if workload_id:
        sup.workload_id = workload_id
    return sup.run()


def exec_in_place(plan: Plan, argv: list[str], workload_id: str | None = None) -> int:
    """--exec: apply the Plan to this very process and execve the workload.

    There is no parent left to remove the cgroup, forward signals or explain
    a death; the cgroup is created (and we are moved into it) first and
    outlives us. A pid namespace cannot be made without a fork: refused.
    Returns only on failure (the exit code to use).
    """
    wid = workload_id or new_workload_id()
    try:
        if "pid" in plan.namespaces and plan.mode != "audit":
            raise ApplyError("namespaces", "unshare(CLONE_NEWPID)", errno.EINVAL,
                             "--exec cannot enter a new pid namespace (only children of the "
                             "caller would); run without --exec or start enforcer in one")
        if plan.mode == "audit":
            print(f"enforcer run: audit mode: nothing is blocked; every would-be violation of "
                  f"policy {plan.policy_name!r} is logged", file=sys.stderr, flush=True)
        if not plan.cgroup.empty and plan.mode != "audit":
            driver = choose_driver(plan.cgroup, wid)
            driver.create()
            try:
                driver.apply_limits()
                driver.add(os.getpid())
            except ApplyError:
                driver.remove()
                raise
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        ctx = ChildContext(plan=plan, argv=argv, env=dict(os.environ), err_fd=-1, sync_fd=None,
                           unprivileged=os.geteuid() != 0, outer_uid=os.getuid(),
                           outer_gid=os.getgid())
        apply_and_exec(ctx)
    except ApplyError as e:
        print(f"enforcer run: {e}", file=sys.stderr, flush=True)
        return exit_code_for_failure(e)
