"""The supervisor: the parent that stays outside the policy.

It creates the workload's cgroup, forks the workload child, makes sure the
child is in the cgroup with the limits written before the child may exec
anything (the child waits on a sync pipe for the go byte "G"), forwards
signals, passes the exit status through, says in words why the workload
died, and removes the cgroup and the registry record afterwards, also when
anything failed.

The fast path is ordered for start latency without giving up any of that:
the cgroup directories are made and the child forked *before* the Plan is
loaded. The child first starts its own audit session (unless
ENFORCER_KEEP_AUDIT_SESSION=1) and moves itself into the cgroup (on v1
through `tasks`, see CgroupV1.add_self), says "R" and its session id on a
pipe, and imports the sequence while the parent loads the Plan on the
other CPU; the verified Plan body then goes to it over the sync pipe. The
parent writes the Plan's limits, checks in cgroup.procs that the child
really is there, writes the registry record (with the session id), and
only then sends "G". A dynamic user's uid is picked here while the child
applies the policy and sent after the Plan (enforcer/apply/dynamic_user.py).

A pid namespace must exist before the fork (unshare(CLONE_NEWPID) moves
only later children), so the supervisor guesses, before the Plan is
loaded, whether the Plan asks for one -- from the Plan cache's hint
(enforcer/cachehint.py), right on every start but the first of a
policy -- and forks the namespace's pid 1 (enforcer/apply/pidns.py) and
then the workload process into it. A wrong guess (no hint yet, a --plan
file) costs one more fork: the child is discarded and forked again the
right way once the Plan is known.

`exec_in_place` is the --exec mode: no supervisor, the sequence runs in
this process and execs the workload (as a container entrypoint). The cgroup
is created first and, with nobody left to remove it, outlives us.
"""

from __future__ import annotations

import errno
import gc
import os
import _signal as signal  # the C module: signal.py builds enums (enum: ~4 ms a start)
import sys

from enforcer import exitcodes
from enforcer.errors import ApplyError

# No `typing`, `dataclasses` or `json` here: this module is on every start
# (see enforcer/fastjson.py). Names below are for type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, NoReturn, TextIO

    from enforcer.apply.audit import AuditListener
    from enforcer.apply.cgroups import CgroupDriver
    from enforcer.apply.dynamic_user import DynamicId
    from enforcer.apply.watch import Watch
    from enforcer.apply.sequence import ChildContext
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


# The environment variable that keeps the caller's audit session: set by a
# launcher that started a session for this one workload itself (`enforcer
# record`, whose collector follows that session's id).
KEEP_AUDIT_SESSION_ENV = "ENFORCER_KEEP_AUDIT_SESSION"


def child_audit_session() -> int | None:
    """In the child, before anything of the policy is applied (so with the
    capabilities it was started with): a fresh kernel audit session for the
    workload, whose id then marks every audit record of it (see
    enforcer/audit_session.py). With ENFORCER_KEEP_AUDIT_SESSION=1 the
    session the launcher made is kept and reported. None when there is no
    session to report: attribution falls back to pid and cgroup."""
    from enforcer import audit_session

    if os.environ.get(KEEP_AUDIT_SESSION_ENV) == "1":
        return audit_session.current_session()
    return audit_session.start_new_session()


class Supervisor:
    def __init__(self, argv: list[str], workload_id: str | None = None,
                 cgroup_root: str = "/sys/fs/cgroup", registry_root: str | None = None,
                 err: "TextIO | None" = None, summary_every: float | None = None) -> None:
        self.argv = argv
        self.workload_id = workload_id or new_workload_id()
        self.cgroup_root = cgroup_root
        self.registry_root = registry_root
        self.err = err if err is not None else sys.stderr
        self._unprivileged = os.geteuid() != 0
        self.plan: Plan | None = None
        self.driver: CgroupDriver | None = None
        self.audit: AuditListener | None = None
        self.child = 0
        self.record_written = False
        self._last_pid = 0
        self._early_cgroup_error: ApplyError | None = None
        # The child writes "R" and its audit session id on this pipe once it
        # is in its cgroup.
        self.ready_fd = -1
        # Our ends of the child's error and sync pipes (see `start_child`).
        self.err_fd = -1
        self.sync_fd = -1
        self.audit_session: int | None = None
        self.forwarded = 0  # the last signal passed on to the child
        self.init = 0  # pid 1 of the workload's pid namespace (apply/pidns.py), if any
        self.init_settled_fd = -1  # EOF once pid 1 holds nothing any more
        self.dynamic: DynamicId | None = None
        # `--summary`'s interval (None: only at exit) and what watches the
        # workload while it runs (its refused syscalls: apply/watch.py).
        self.summary_every = summary_every
        self.watcher: Watch | None = None

    def say(self, text: str) -> None:
        print(f"enforcer run: {text}", file=self.err, flush=True)

    @property
    def unprivileged(self) -> bool:
        # Decided once: after an unprivileged supervisor made the user
        # namespace of a pid namespace, its euid there may be 0.
        return self._unprivileged

    @property
    def p(self) -> "Plan":
        assert self.plan is not None
        return self.plan

    # -- the child ------------------------------------------------------------

    def fork_child(self, child_main: Callable[[], NoReturn], close_in_child: list[int],
                   first: Callable[[], None] | None = None) -> None:
        """Fork; the child resets what it inherited, runs `first` (the fast
        path's placement: as early as possible, it is on the critical
        path), sets its parent-death signal and runs child_main.

        `first` may run before PR_SET_PDEATHSIG: the child runs nothing of
        the workload before the parent's go byte, and if the parent dies
        first the child sees EOF on the sync pipe and exits."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        pid = os.fork()
        if pid == 0:
            try:
                for fd in close_in_child:
                    os.close(fd)
                # Python ignores SIGPIPE and SIGXFSZ for itself; an ignored
                # signal survives execve, so the workload must get them back.
                for sig in (*FORWARDED_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                if first is not None:
                    first()
                from enforcer.apply import _sys

                # If the supervisor dies, the workload must not live on
                # outside its cleanup.
                _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL, step="supervise",
                           what="prctl(PR_SET_PDEATHSIG)")
            except BaseException:
                os._exit(exitcodes.APPLY_FAILED)
            child_main()
        self.child = self._last_pid = pid
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def context(self, plan: "Plan", err_w: int, sync_r: int,
                done_by_parent: frozenset[str]) -> "ChildContext":
        from enforcer.apply.environ import workload_environment
        from enforcer.apply.sequence import ChildContext

        return ChildContext(plan=plan, argv=self.argv,
                            env=workload_environment(plan.env, os.environ), err_fd=err_w,
                            sync_fd=sync_r, done_by_parent=done_by_parent,
                            unprivileged=self.unprivileged, outer_uid=os.getuid(),
                            outer_gid=os.getgid())

    def early_child_place(self, err_w: int, ready_w: int) -> None:
        """First thing in the child: a fresh audit session, then into the
        workload cgroup (by itself: see CgroupV1.add_self), then "R" and the
        session id to the parent. A failure is reported on the error pipe
        and ends the child before the ready message."""
        try:
            session = child_audit_session()
            if self.driver is not None:
                self.driver.add_self()
            write_ready(ready_w, session)
        except BaseException as e:  # noqa: BLE001 - reported, then exit
            from enforcer.apply.sequence import report_failure

            report_failure(err_w, e)
            os._exit(exitcodes.APPLY_FAILED)

    def early_child_main(self, err_w: int, sync_r: int,
                         done_by_parent: frozenset[str]) -> NoReturn:
        """The child, once placed: it imports the sequence while the parent
        loads the Plan, receives the Plan on the sync pipe and applies it."""
        from enforcer.apply.environ import workload_environment  # noqa: F401 (for context())
        from enforcer.apply.sequence import report_failure, run_child

        try:
            from enforcer.plan import plan_from_body_json

            # Everything imported above loads while the parent loads the
            # Plan; from here on we wait for it.
            data = read_message(sync_r)
            if data is None:
                os._exit(exitcodes.APPLY_FAILED)  # the parent failed; it reports
            # The parent verified the Plan's digest; this pipe is private to
            # the two of us, so the child only parses (as strictly).
            plan = plan_from_body_json(data, source="plan from the supervisor")
            ctx = self.context(plan, err_w, sync_r, done_by_parent)
        except BaseException as e:  # noqa: BLE001 - reported, then exit
            report_failure(err_w, e)
            os._exit(exitcodes.APPLY_FAILED)
        run_child(ctx)

    def _forward(self, signum: int, _frame: object) -> None:
        self.forwarded = signum
        if self.child:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass

    def _kill_child(self) -> None:
        try:
            os.kill(self.child, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _reap_child(self) -> None:
        if self.child:
            self._kill_child()
            try:
                os.waitpid(self.child, 0)
            except ChildProcessError:
                pass
            self.child = 0

    # -- cgroup ---------------------------------------------------------------

    def make_early_cgroup(self) -> None:
        """Create the workload cgroup on this host's hierarchies before the
        Plan is known (only directories; the Plan's files come later, in
        `adopt_plan_cgroup`). Errors are kept until the Plan says whether
        limits, and so the cgroup, are required."""
        from enforcer.apply.cgroups import host_driver

        driver = host_driver(self.workload_id, root=self.cgroup_root)
        if driver is None:
            return
        try:
            driver.create()
        except ApplyError as e:
            self._early_cgroup_error = e
            try:
                driver.remove()
            except ApplyError:
                pass
            return
        self.driver = driver

    def check_placed(self) -> None:
        """Wait for the child's ready message ("R" and its audit session id;
        on the fast path it has then moved itself into the cgroup), then
        verify the placement before it may exec (the supervisor does not
        take the child's word for it). EOF instead means the child failed:
        its report is on the error pipe, read by the caller."""
        if self.ready_fd < 0:
            return
        ok, session = read_ready(self.ready_fd)
        if not ok:
            raise ApplyError("cgroup", "cgroup.procs", None, "the workload process failed "
                             "before it was placed in its cgroup")
        self.audit_session = session
        if self.init_settled_fd >= 0:
            # Pid 1 runs as our copy (root, our fds) until it has dropped
            # everything: the workload must not run before.
            from enforcer.apply.pidns import wait_until_settled

            fd, self.init_settled_fd = self.init_settled_fd, -1
            if not wait_until_settled(fd, self.init):
                raise ApplyError("namespaces", "pid 1 of the workload's pid namespace", None,
                                 "it failed to drop its privileges")
        if self.driver is not None and self.child not in self.driver.procs():
            raise ApplyError("cgroup", "cgroup.procs", None,
                             f"the workload process {self.child} is not in its cgroup")

    def fit_cgroup(self) -> None:
        """Before the child gets the Plan: the early cgroup must be in the
        hierarchy the Plan's limits need. When it is not (a controller only
        the other hierarchy has), make the right one and move the child
        there -- it has not forked anything yet, so it is the only process."""
        from enforcer.apply.cgroups import choose_driver, same_hierarchy

        plan = self.p
        needs_limits = not plan.cgroup.empty and plan.mode != "audit"
        if self._early_cgroup_error is not None:
            if needs_limits:
                raise self._early_cgroup_error
            if not self.unprivileged:
                self.say(f"note: no workload cgroup ({self._early_cgroup_error}); "
                         "its events will not be attributed")
            return
        if plan.cgroup.empty or self.driver is None:
            return
        wanted = choose_driver(plan.cgroup, self.workload_id, root=self.cgroup_root)
        if same_hierarchy(self.driver, wanted):
            self.driver.adopt(wanted.files, self.child)  # type: ignore[attr-defined]
            return
        wanted.create()
        early, self.driver = self.driver, wanted
        wanted.add(self.child)
        early.remove()

    def apply_plan_limits(self) -> None:
        """Write the Plan's limits (the child works on the Plan meanwhile)."""
        if (self.driver is not None and self._early_cgroup_error is None
                and not self.p.cgroup.empty and self.p.mode != "audit"):
            self.driver.apply_limits()

    def pick_dynamic_user(self, sync_w: int) -> None:
        """A policy with a dynamic user: pick its uid (held until cleanup)
        and send it to the child, which needs it at its uid change."""
        user = self.p.user
        if user is None or not user.dynamic or self.unprivileged or self.p.mode == "audit":
            return
        from enforcer.apply.dynamic_user import allocate

        procs = self.driver.procs_files() if self.driver else []
        self.dynamic = allocate(self.workload_id, procs)
        try:
            send_message(sync_w, b"%d" % self.dynamic.uid, b"U")
        except BrokenPipeError:
            pass  # the child failed applying the Plan; its report is on the error pipe

    # -- the run ---------------------------------------------------------------

    def run(self, load: "Callable[[], Plan]",
            guess_namespaces: "Callable[[], tuple[str, ...] | None] | None" = None) -> int:
        """`load` raises EnforcerError (PolicyErrors, PlanError, ...) after
        everything made so far is undone; the caller reports it.
        `guess_namespaces` cheaply names the namespaces the Plan will ask
        for (None: unknown), for the pid namespace the child must be forked
        into (see the module doc)."""
        # No garbage collection while the workload starts: a collection walks
        # (and so writes to) every tracked object, and after the fork each
        # page written costs parent or child a copy-on-write fault. The
        # start allocates little and makes no cycles worth collecting; the
        # collector runs again once the workload has the go byte.
        gc.disable()
        try:
            self.make_early_cgroup()
            # ctypes before the fork: the child needs it at once (prctl, then
            # every step), and importing it there is the longest part of the
            # child's way to the go byte (~2.5 ms after a fork vs ~1.2 ms
            # here), while the parent's own way (the Plan) is shorter.
            from enforcer.apply import _sys  # noqa: F401
            # Unprivileged, a pid namespace needs a user namespace of ours
            # first, with no way back: only once the Plan asks for it.
            guess = guess_namespaces() if guess_namespaces and not self.unprivileged else None
            in_pid_namespace = guess is not None and "pid" in guess
            self.start_child(in_pid_namespace)
            self.plan = load()
            if needs_pid_namespace(self.p) != in_pid_namespace:
                # The guess was wrong (the first start of a policy, a --plan
                # file): fork again, the right way now that the Plan is known.
                self.discard_child()
                self.start_child(needs_pid_namespace(self.p))
            self.fit_cgroup()
            from enforcer.plan import plan_body_json

            send_message(self.sync_fd, plan_body_json(self.p).encode())
            if self.p.mode == "audit":
                self.say_audit()
            self.pick_dynamic_user(self.sync_fd)
            self.apply_plan_limits()
            return self._go_and_wait(self.err_fd, self.sync_fd)
        except ApplyError as e:
            self.say(str(e))
            return exitcodes.APPLY_FAILED
        except (OSError, RuntimeError, ValueError) as e:
            # A bug or an unexpected host condition: still one line, still
            # fail closed (the child never got the go byte).
            self.say(f"internal: {type(e).__name__}: {e}")
            return exitcodes.APPLY_FAILED
        finally:
            gc.enable()
            self.close_pipes()
            self.cleanup()

    def start_child(self, in_pid_namespace: bool) -> None:
        """Fork the workload process (and, for a pid namespace, the
        namespace's pid 1 before it), with fresh pipes to it."""
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        self.err_fd, self.sync_fd, self.ready_fd = err_r, sync_w, ready_r
        done: frozenset[str] = frozenset()
        own_pid_namespace = -1
        try:
            if in_pid_namespace:
                done, own_pid_namespace = self.make_pid_namespace()
            self.fork_child(lambda: self.early_child_main(err_w, sync_r, done),
                            [err_r, sync_w, ready_r],
                            first=lambda: self.early_child_place(err_w, ready_w))
        finally:
            if own_pid_namespace >= 0:
                # Later children (none is planned) go back to our namespace.
                from enforcer.apply import _sys

                _sys.setns(own_pid_namespace, _sys.CLONE_NEWPID, what="setns(CLONE_NEWPID)")
                os.close(own_pid_namespace)
            for fd in (err_w, sync_r, ready_w):
                os.close(fd)

    def make_pid_namespace(self) -> tuple[frozenset[str], int]:
        """unshare(CLONE_NEWPID) for our next children, and fork its pid 1.
        Returns the namespaces made (for the child) and an fd of our own pid
        namespace to go back to, or -1 when there is none to go back to
        (unprivileged: the user namespace that owns the new one is ours now)."""
        from enforcer.apply import _sys
        from enforcer.apply.pidns import fork_init

        done = {"pid"}
        own = -1
        if self.unprivileged:
            from enforcer.apply.sequence import write_id_maps

            uid, gid = os.getuid(), os.getgid()
            _sys.unshare(_sys.CLONE_NEWUSER, "namespaces", "unshare(CLONE_NEWUSER)")
            user = self.p.user
            write_id_maps(user.uid if user else uid, user.gid if user else gid, uid, gid)
            done.add("user")
        else:
            own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _sys.unshare(_sys.CLONE_NEWPID, "namespaces", "unshare(CLONE_NEWPID)")
            self.init, self.init_settled_fd = fork_init(change_uid=not self.unprivileged)
        except BaseException:
            if own >= 0:
                os.close(own)
            raise
        return frozenset(done), own

    def discard_child(self) -> None:
        """Kill and reap the workload process (and pid 1) forked on a wrong
        guess: nothing of the workload ran in them."""
        self._reap_child()
        self._end_init()
        self.close_pipes()

    def close_pipes(self) -> None:
        for fd in (self.err_fd, self.sync_fd, self.ready_fd, self.init_settled_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.err_fd = self.sync_fd = self.ready_fd = self.init_settled_fd = -1

    def _end_init(self, reap: bool = True) -> None:
        """Kill pid 1 of the workload's pid namespace (the kernel then kills
        whatever is left in it) and, with `reap`, wait for it; without, the
        caller reaps it later by calling this again (its exit runs meanwhile)."""
        if self.init:
            try:
                os.kill(self.init, signal.SIGKILL)
                if reap:
                    os.waitpid(self.init, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            if reap:
                self.init = 0

    def stopped_by_forwarded_signal(self, status: int) -> bool:
        return bool(self.forwarded and os.WIFSIGNALED(status)
                    and os.WTERMSIG(status) == self.forwarded)

    def say_audit(self) -> None:
        self.say(f"audit mode: nothing is blocked; every would-be violation of policy "
                 f"{self.p.policy_name!r} is logged to the kernel audit log")

    def _go_and_wait(self, err_r: int, sync_w: int) -> int:
        """The child is in its cgroup with the limits written: open the audit
        reader, record the workload, let it go, wait, explain."""
        try:
            if self.p.seccomp is not None and not self.unprivileged:
                from enforcer.apply.audit import AuditListener

                self.audit = AuditListener.open()
            # The ready message first: it carries the audit session id the
            # record names (the record write itself is ~0.1 ms).
            self.check_placed()
            self.write_record()
        except ApplyError as e:
            # The child may have failed on its own meanwhile: its report is
            # the one worth showing.
            self._kill_child()
            failure = self.read_failure(err_r)
            status = self.wait()
            if failure is None and self.stopped_by_forwarded_signal(status):
                # A TERM/INT/... from outside arrived before the workload
                # started: it ends the run like it would have ended the workload.
                return status_to_code(status)
            failure = failure or e
            self.say(str(failure))
            return exit_code_for_failure(failure)
        else:
            try:
                os.write(sync_w, b"G")
            except BrokenPipeError:
                pass  # the child already exited; its report is on the error pipe
            gc.enable()
            failure = self.read_failure(err_r)
        if failure is not None:
            self.wait()
            self.say(str(failure))
            return exit_code_for_failure(failure)
        status = self.watch_until_exit()
        self.explain(status)
        self.say_after_exit(status)
        return status_to_code(status)

    def write_record(self) -> None:
        from enforcer import registry

        limits = {}
        if self.p.cgroup.memory_max is not None:
            limits["memory_max"] = self.p.cgroup.memory_max
        if self.p.cgroup.pids_max is not None:
            limits["pids_max"] = self.p.cgroup.pids_max
        rec = registry.WorkloadRecord(
            id=self.workload_id, kind="run", policy=self.p.policy_name,
            policy_hash=self.p.policy_hash, mode=self.p.mode,
            cgroups=self.driver.record_paths() if self.driver else {}, pid=self.child,
            limits=limits, audit_session=self.audit_session,
            uid=self.dynamic.uid if self.dynamic else None)
        try:
            registry.write_record(rec, self.registry_root)
            self.record_written = True
        except PermissionError:
            if self.unprivileged:
                # An unprivileged run cannot write the system registry; the
                # monitor (root) would not see its denials attributed anyway.
                return
            raise ApplyError("registry", registry.workloads_dir(self.registry_root),
                             errno.EACCES) from None
        except OSError as e:
            # Without its record the monitor could not attribute the
            # workload's violations: refuse rather than run unobserved.
            raise ApplyError("registry", e.filename or registry.workloads_dir(self.registry_root),
                             e.errno) from None

    # -- after exec -----------------------------------------------------------

    def read_failure(self, err_r: int) -> ApplyError | None:
        data = read_to_eof(err_r)
        if not data:
            return None  # EOF and nothing else: execve happened
        try:
            from enforcer import fastjson

            d = fastjson.loads(data)
            return ApplyError(d["step"], d["what"], d.get("errno"), d.get("detail") or "")
        except (ValueError, KeyError, TypeError):
            return ApplyError("internal", "error pipe", None, "unreadable report from the child")

    # -- while it runs and after (apply/watch.py, refusals.py, exit_notes.py) --

    def watch_until_exit(self) -> int:
        """Wait for the workload, reading its refused syscalls from the
        audit stream meanwhile (and what else apply/watch.py watches)."""
        from enforcer.apply.watch import watch_for

        self.watcher = watch_for(self.p, self.child, self.audit, self.audit_session, self.say,
                                 self.summary_every)
        status = self.watcher.wait()
        self.child = 0
        return status

    def say_after_exit(self, status: int) -> None:
        """The refusal summary, then notes on a failure the policy may have
        caused, as the last lines."""
        from enforcer.apply.exit_notes import after_exit

        assert self.watcher is not None
        for line in after_exit(self.p, self.argv, status, self.watcher, self._last_pid,
                               self.stopped_by_forwarded_signal(status)):
            self.say(line)

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
        limit = self.p.cgroup.memory_max
        where = f"the policy's memory limit {human_bytes(limit)}" if limit else "its memory limit"
        if sig == signal.SIGKILL and events and events.oom_kills:
            self.say(f"workload killed by the OOM killer at {where}")
        elif events and events.oom_kills:
            self.say(f"the OOM killer killed {events.oom_kills} process(es) of the workload "
                     f"at {where}")
        if events and events.pids_max_hits:
            limit = self.p.cgroup.pids_max
            self.say(f"fork refused {events.pids_max_hits} time(s) at the policy's pids limit "
                     f"{limit if limit is not None else '(unknown)'}")

    def seccomp_reason(self) -> str:
        base = ("workload killed by SIGSYS from the seccomp filter of policy "
                f"{self.p.policy_name!r}")
        if self.audit is None:
            return base + ("; the refused syscall is unknown (reading the audit stream needs "
                           "CAP_AUDIT_READ)")
        if self.watcher is not None and self.watcher.refusals is not None:
            # The record of the process that died: a kill elsewhere in the
            # workload (a forked child) is on a summary line of its own.
            rec = self.watcher.wait_for_kill(self._last_pid, timeout=1.0)
        else:
            rec = self.audit.find({self._last_pid}, timeout=1.0)
        if rec is None:
            return base + "; no audit record named the syscall"
        names = self.p.seccomp.syscall_names if self.p.seccomp else {}
        native = rec.arch in (0xC000003E, 0xC00000B7)  # AUDIT_ARCH_X86_64, AARCH64
        name = names.get(rec.syscall, "?") if native else f"non-native arch {rec.arch:#x}"
        return f"{base}: syscall {name} ({rec.syscall}) is not allowed"


    def report_usage(self) -> None:
        """For `enforcer record` (which learns limits from them): the
        cgroup's peaks as JSON on the descriptor it passed in
        ENFORCER_RECORD_USAGE_FD, read now, before the cgroup is removed.
        The workload never holds that descriptor (apply closes inherited
        descriptors before execve)."""
        fd_text = os.environ.get(RECORD_USAGE_FD_ENV)
        if not fd_text or self.driver is None:
            return
        try:
            fd = int(fd_text)
            peaks = self.driver.peaks()
            body = ", ".join(f'"{k}": {int(v)}' for k, v in sorted(peaks.items()))
            os.write(fd, ("{" + body + "}\n").encode())
            os.close(fd)
        except (ValueError, OSError):
            pass  # the recorder then says the peaks are unknown

    def _remove_cgroup(self) -> None:
        if self.driver is not None:
            try:
                self.driver.remove()
            except ApplyError as e:
                self.say(f"warning: {e}")
            self.driver = None

    def cleanup(self) -> None:
        # A child that never exec'd (or still runs) must not outlive us; nor
        # anything left in its pid namespace.
        self._reap_child()
        self._end_init(reap=False)  # reaped below: its exit overlaps the cgroup's removal
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.report_usage()
        self._remove_cgroup()
        self._end_init()
        if self.record_written:
            from enforcer import registry

            registry.remove_record(self.workload_id, self.registry_root)
            self.record_written = False
        if self.dynamic is not None:
            # Only now: the cgroup removal above killed whatever the
            # workload left behind, so nothing runs with this uid any more.
            self.dynamic.release()
            self.dynamic = None
        if self.audit is not None:
            self.audit.close()
            self.audit = None


RECORD_USAGE_FD_ENV = "ENFORCER_RECORD_USAGE_FD"


def needs_pid_namespace(plan: Plan) -> bool:
    return "pid" in plan.namespaces and plan.mode != "audit"


def write_ready(fd: int, audit_session: int | None) -> None:
    """The child's ready message: "R", then its audit session id (empty if
    none); closing the pipe ends it."""
    os.write(fd, b"R" + (b"%d" % audit_session if audit_session is not None else b""))
    os.close(fd)


def read_to_eof(fd: int) -> bytes:
    """Everything written to a pipe until its last writer closes it."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_ready(fd: int) -> tuple[bool, int | None]:
    """(whether the child said ready, its audit session id or None)."""
    data = read_to_eof(fd)
    if data[:1] != b"R":
        return False, None
    rest = data[1:]
    return True, int(rest) if rest.isdigit() else None


def send_message(fd: int, data: bytes, tag: bytes = b"P") -> None:
    """One length-prefixed message on the sync pipe: "P", the Plan; "U",
    the uid of a dynamic user."""
    payload = tag + len(data).to_bytes(4, "big") + data
    view = memoryview(payload)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read_message(fd: int, tag: bytes = b"P") -> bytes | None:
    """The next message, which must be a `tag` one, or None on EOF (the
    parent gave up)."""
    def read_exact(n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            chunk = os.read(fd, left)
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    head = read_exact(5)
    if head is None or head[:1] != tag:
        return None
    return read_exact(int.from_bytes(head[1:], "big"))


def supervise(load: "Callable[[], Plan]", argv: list[str], workload_id: str | None = None,
              guess_namespaces: "Callable[[], tuple[str, ...] | None] | None" = None,
              summary_every: float | None = None) -> int:
    return Supervisor(argv, workload_id, summary_every=summary_every).run(load, guess_namespaces)


def own_cgroups() -> dict[str, str]:
    """hierarchy -> path of this process, from /proc/self/cgroup ("" = v2)."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for ctrl in ctrls.split(",") if ctrls else [""]:
                out[ctrl] = path
    return out


def exec_in_place(plan: Plan, argv: list[str], workload_id: str | None = None) -> int:
    """--exec: apply the Plan to this very process and execve the workload.

    There is no parent left to remove the cgroup, forward signals or explain
    a death; the cgroup is created (and we are moved into it) first and
    outlives the workload. If the policy cannot be applied we move back to
    where we were and remove the cgroup (best effort: after a user
    namespace was entered the kernel may refuse the move; then it stays,
    empty). A pid namespace cannot be made without a fork, and nothing
    would be left to hold a dynamic user's uid and give it back: both are
    refused -- unless this process already is pid 1 of a pid namespace (a
    container's entrypoint), which is then the workload's own namespace
    and whose runtime keeps containers apart (a dynamic user runs as its
    fallback uid there). Returns only on failure (the exit code to use).
    """
    from enforcer.apply.cgroups import CgroupV1, choose_driver
    from enforcer.apply.cgroups.base import write_file
    from enforcer.apply.environ import workload_environment
    from enforcer.apply.sequence import ChildContext, apply_and_exec

    wid = workload_id or new_workload_id()
    driver = None
    before: dict[str, str] = {}
    try:
        in_own_pid_namespace = os.getpid() == 1
        if needs_pid_namespace(plan) and not in_own_pid_namespace:
            raise ApplyError("namespaces", "unshare(CLONE_NEWPID)", errno.EINVAL,
                             "--exec cannot enter a new pid namespace (only children of the "
                             "caller would); run without --exec or start enforcer in one")
        dynamic_uid = None
        if (plan.user is not None and plan.user.dynamic and plan.mode != "audit"
                and os.geteuid() == 0):
            if not in_own_pid_namespace:
                raise ApplyError("user", "dynamic user", errno.EINVAL,
                                 "--exec leaves nothing to hold a dynamic user's uid for the "
                                 "workload's life; run without --exec, or as pid 1 of a "
                                 "container, where the fallback uid is used")
            dynamic_uid = plan.user.uid
        if plan.mode == "audit":
            print(f"enforcer run: audit mode: nothing is blocked; every would-be violation of "
                  f"policy {plan.policy_name!r} is logged", file=sys.stderr, flush=True)
        if not plan.cgroup.empty and plan.mode != "audit":
            driver = choose_driver(plan.cgroup, wid)
            before = own_cgroups()
            driver.create()
            driver.apply_limits()
            driver.add(os.getpid())
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        ctx = ChildContext(plan=plan, argv=argv, env=workload_environment(plan.env, os.environ),
                           err_fd=-1, sync_fd=None,
                           done_by_parent=frozenset({"pid"}) if in_own_pid_namespace else
                           frozenset(),
                           unprivileged=os.geteuid() != 0, outer_uid=os.getuid(),
                           outer_gid=os.getgid(), dynamic_uid=dynamic_uid)
        apply_and_exec(ctx)
    except ApplyError as e:
        print(f"enforcer run: {e}", file=sys.stderr, flush=True)
        if driver is not None:
            try:
                if isinstance(driver, CgroupV1):
                    for ctrl in driver.controllers:
                        if ctrl in before:
                            write_file(f"{driver.root}/{ctrl}{before[ctrl]}/cgroup.procs",
                                       str(os.getpid()))
                elif "" in before:
                    write_file(f"{driver.root}{before['']}/cgroup.procs", str(os.getpid()))
                driver.remove()
            except (ApplyError, OSError):
                pass
        return exit_code_for_failure(e)
