"""THE ordered apply sequence, run in the workload's process after fork.

Read it top to bottom: `run_child()` calls one small function per step, in
the order of DESIGN.md. Each function says why it sits where it does.

This code runs in a forked child of a (single-threaded) Python process: it
uses only os, ctypes and the small modules next to it, starts no threads,
and never returns. Any failure is sent to the parent as one JSON object on
the close-on-exec error pipe and the child exits; the workload never runs
(fail closed). EOF on that pipe without data means execve succeeded.
"""

from __future__ import annotations

import errno
import os
import resource
import stat

from enforcer.apply import _sys
from enforcer.apply import landlock
from enforcer.apply.creds import apply_creds
from enforcer.apply.mounts import apply_mounts
from enforcer.apply.seccomp import load_filter
from enforcer.errors import ApplyError
from enforcer.plan import Plan, UserPlan

TYPE_CHECKING = False  # `typing` costs ms on every start; only checkers need it
if TYPE_CHECKING:
    from typing import NoReturn

# Exit status of a child that failed before execve (the parent reports the
# error from the pipe; this status is only seen if the pipe write failed).
CHILD_FAILED = 125


class ChildContext:
    """What the child needs to apply a Plan (a plain class: no dataclasses
    on the start path)."""

    def __init__(self, plan: Plan, argv: list[str], env: dict[str, str], err_fd: int,
                 sync_fd: int | None, done_by_parent: frozenset[str] = frozenset(),
                 unprivileged: bool = False, outer_uid: int = 0, outer_gid: int = 0,
                 dynamic_uid: int | None = None) -> None:
        self.plan = plan
        self.argv = argv
        self.env = env  # the workload's environment (apply/environ.py made it)
        self.err_fd = err_fd
        self.sync_fd = sync_fd  # None in --exec mode: nobody to wait for
        # Namespaces the supervisor already created before fork (pid, and the
        # user namespace when unprivileged); the child must not create them again.
        self.done_by_parent = done_by_parent
        self.unprivileged = unprivileged  # not root: mounts need our own user namespace
        self.outer_uid = outer_uid
        self.outer_gid = outer_gid
        # The uid/gid of a dynamic user; None until the supervisor sends it.
        self.dynamic_uid = dynamic_uid
        # Our parent as we saw it at the start: still it after the uid change?
        # (0 in a pid namespace: the supervisor is outside it.)
        self.expected_parent = os.getppid()
        # The Landlock ruleset built before the uid change, enforced after
        # no_new_privs: (fd, landlock_restrict_self flags).
        self.landlock: tuple[int, int] | None = None

    @property
    def audit(self) -> bool:
        return self.plan.mode == "audit"


# -- the steps -----------------------------------------------------------


def wait_for_placement(ctx: ChildContext) -> None:
    """Block until the parent says go: we are in the workload cgroup, the
    limits are written and the workload is registered.

    The workload must start under the policy's limits, so the child may not
    exec (or load the filter, after which nothing of ours runs) before the
    go byte. The wait sits here, after our own setup steps rather than
    before them, so that the parent's work (Plan load, cgroup writes,
    registry) runs while the child works; our setup does not fork, so
    nothing escapes the limits meanwhile. EOF without the go byte means the
    parent failed (it reports); we exit without running anything.
    """
    if ctx.sync_fd is None:
        return
    data = os.read(ctx.sync_fd, 1)
    os.close(ctx.sync_fd)
    if data != b"G":
        os._exit(CHILD_FAILED)


def write_id_maps(inner_uid: int, inner_gid: int, outer_uid: int, outer_gid: int) -> None:
    """Map one uid/gid of a fresh user namespace to the caller's (as bwrap does).

    setgroups must be denied before gid_map can be written unprivileged
    (CVE-2014-8989: otherwise dropping a supplementary group could unlock
    files a group-deny ACL protects).
    """
    for path, text in (("/proc/self/setgroups", "deny"),
                       ("/proc/self/uid_map", f"{inner_uid} {outer_uid} 1\n"),
                       ("/proc/self/gid_map", f"{inner_gid} {outer_gid} 1\n")):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as e:
            raise ApplyError("namespaces", f"{path} <- {text.strip()!r}", e.errno) from None


def namespace_flags(ctx: ChildContext) -> int:
    wanted = set(ctx.plan.namespaces)
    if ctx.plan.mounts or "pid" in wanted:
        # Mount rules (and the /proc of a new pid namespace) must never
        # touch the host's mount table: they always get a mount namespace
        # of their own, whether the policy names one or not.
        wanted.add("mount")
    needs_privilege = bool(wanted or ctx.plan.user or ctx.plan.capabilities)
    if ctx.unprivileged and needs_privilege and "user" not in ctx.done_by_parent:
        # Unprivileged, only a user namespace grants the capabilities the
        # other namespaces and the mounts need (the bubblewrap model).
        wanted.add("user")
    wanted -= ctx.done_by_parent
    flags = 0
    for ns in wanted:
        flags |= _sys.NAMESPACE_FLAGS[ns]
    return flags


def enter_namespaces(ctx: ChildContext) -> None:
    """Step 1. First, because every later step acts inside them: mounts
    change only our mount namespace, and capabilities granted by a user
    namespace are what let an unprivileged user mount at all. (pid is made
    by the supervisor before fork: unshare(CLONE_NEWPID) only puts the
    caller's *children* in the new namespace.)"""
    flags = namespace_flags(ctx)
    if not flags:
        return
    _sys.unshare(flags, "namespaces", f"unshare({describe_ns(flags)})")
    if flags & _sys.CLONE_NEWUSER:
        user = ctx.plan.user
        inner_uid = user.uid if user else ctx.outer_uid
        inner_gid = user.gid if user else ctx.outer_gid
        write_id_maps(inner_uid, inner_gid, ctx.outer_uid, ctx.outer_gid)


def describe_ns(flags: int) -> str:
    names = [n for n, bit in _sys.NAMESPACE_FLAGS.items() if flags & bit]
    return "|".join(f"CLONE_NEW{'NS' if n == 'mount' else n.upper()}" for n in names)


def apply_mount_rules(ctx: ChildContext) -> None:
    """Step 2. After namespaces (they must only change our private mount
    table) and before dropping capabilities (mounting needs CAP_SYS_ADMIN,
    pivot_root too)."""
    if not ctx.plan.mounts and "pid" not in ctx.plan.namespaces:
        return  # no mount namespace was made: nothing here may touch the host's
    # Always first, whatever the Plan says: a fresh mount namespace still
    # shares propagation with the host, so without this a mount below
    # (even our /proc) would appear on the host.
    _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)
    has_rootfs = any(op.kind == "pivot_root" for op in ctx.plan.mounts)
    if "pid" in ctx.plan.namespaces and not has_rootfs:
        # A pid namespace needs its own /proc, or the workload would read
        # the host's processes there. Before the Plan's rules, so that a
        # read-only root and masked /proc paths apply to it as well. (A
        # rootfs gets its /proc from the Plan's `proc` operation, mounted
        # inside it, resolved there.)
        if os.path.isdir("/proc"):
            _sys.mount("proc", "/proc", "proc", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
    apply_mounts(ctx.plan.mounts)


def prepare_landlock(ctx: ChildContext) -> None:
    """Step 2b: build the Landlock ruleset (not yet enforced). After the
    mounts and the new root, so every path names what the workload will
    see -- the tmpfs mounted at /tmp, not the directory beneath it; inside a
    new root, a symlink resolves within it (a rule binds to the inode found
    when the path is opened). Before the uid change, so the launcher can
    still open a path that the final user cannot traverse (Landlock only
    narrows: the kernel's permission checks still apply to the workload)."""
    if ctx.plan.landlock is None:
        return
    ctx.landlock = landlock.prepare(ctx.plan.landlock, say_to_stderr)


def say_to_stderr(line: str) -> None:
    """One line for the user from the child (the best-effort report): its
    stderr is the supervisor's."""
    try:
        os.write(2, f"enforcer run: {line}\n".encode())
    except OSError:
        pass


def apply_rlimits(ctx: ChildContext) -> None:
    """Step 3. Before the uid change: raising a hard limit needs
    CAP_SYS_RESOURCE, which the capability step may drop."""
    for r in ctx.plan.rlimits:
        res = getattr(resource, f"RLIMIT_{r.resource}", None)
        if res is None:
            raise ApplyError("rlimits", f"RLIMIT_{r.resource}", errno.EINVAL,
                             "unknown on this host")
        soft = resource.RLIM_INFINITY if r.soft < 0 else r.soft
        hard = resource.RLIM_INFINITY if r.hard < 0 else r.hard
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as e:
            raise ApplyError("rlimits", f"setrlimit(RLIMIT_{r.resource}, {r.soft}, {r.hard})",
                             getattr(e, "errno", None) or errno.EPERM) from None


def workload_user(ctx: ChildContext) -> UserPlan | None:
    """The ids to run as. A dynamic user's uid comes from the supervisor,
    which picked it while we applied the steps before this one; an
    unprivileged run keeps the Plan's fallback id, mapped onto the caller
    in our user namespace (no other uid of the host can be used there)."""
    user = ctx.plan.user
    if user is None or not user.dynamic or ctx.unprivileged:
        return user
    if ctx.dynamic_uid is None:
        from enforcer.apply.supervise import read_message

        data = read_message(ctx.sync_fd, b"U") if ctx.sync_fd is not None else None
        if data is None or not data.isdigit():
            os._exit(CHILD_FAILED)  # the supervisor failed; it reports
        ctx.dynamic_uid = int(data)
    return UserPlan(uid=ctx.dynamic_uid, gid=ctx.dynamic_uid, groups=user.groups)


def apply_capabilities_and_user(ctx: ChildContext) -> None:
    """Step 4. After mounts and rlimits (they need the privileges dropped
    here), before no_new_privs and seccomp (capset/setresuid must not be
    filtered by our own policy)."""
    apply_creds(ctx.plan.capabilities, workload_user(ctx), unprivileged_userns=ctx.unprivileged)


def keep_parent_death_signal(ctx: ChildContext) -> None:
    """Step 4b. Right after the uid change: the kernel clears
    PR_SET_PDEATHSIG whenever the credentials change (commit_creds), so the
    SIGKILL the supervisor asked for at fork is gone once setresuid ran --
    and a workload with `user:` would outlive a killed supervisor, its
    record and cgroup orphaned. Set it again, then check that the parent
    did not die before it was set (runc does both): our parent must still
    be the one we started with, and the supervisor must still hold its end
    of the sync pipe (in a pid namespace getppid() is 0 whoever the parent
    is; the pipe tells)."""
    if ctx.sync_fd is None:
        return  # --exec: no supervisor to die with
    import _signal

    _sys.prctl(_sys.PR_SET_PDEATHSIG, _signal.SIGKILL, step="supervise",
               what="prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != ctx.expected_parent or supervisor_gone(ctx.sync_fd):
        os._exit(CHILD_FAILED)  # nobody is left to report to


def supervisor_gone(sync_fd: int) -> bool:
    """True once no process holds the sync pipe's write end: its only
    holder, the supervisor, has exited."""
    return bool(_sys.poll_fd(sync_fd, 0, 0) & _sys.POLLHUP)  # POLLHUP needs no asking


def set_no_new_privileges(ctx: ChildContext) -> None:
    """Step 5. After the uid change (a setuid binary can no longer regain
    privileges from here on) and before seccomp: the kernel only lets a
    process without CAP_SYS_ADMIN load a filter once no_new_privs is set."""
    if ctx.plan.no_new_privileges or (ctx.audit and os.geteuid() != 0) or ctx.unprivileged:
        _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1, step="no_new_privileges",
                   what="prctl(PR_SET_NO_NEW_PRIVS, 1)")


def restrict_landlock(ctx: ChildContext) -> None:
    """Step 5b: enforce the Landlock ruleset. After no_new_privs, because the
    kernel lets a process without CAP_SYS_ADMIN restrict itself only then
    (so a setuid program cannot be confused by a sandbox it did not ask
    for) -- with no_new_privs this works for any user, no user namespace
    needed. Before seccomp, so the policy's filter need not allow the
    landlock syscalls. The domain is inherited across execve and fork: the
    workload and all its children stay inside."""
    if ctx.landlock is None:
        return
    fd, flags = ctx.landlock
    ctx.landlock = None
    landlock.restrict(fd, flags)


def resolve_command(ctx: ChildContext) -> str:
    """Find CMD on PATH now: after mounts (the new root is what counts) and
    the uid change (access checks as the final user), before seccomp (the
    filter need not allow stat/access for us)."""
    cmd = ctx.argv[0]
    if "/" in cmd:
        candidates = [cmd]
    else:
        path = ctx.env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        candidates = [os.path.join(d or ".", cmd) for d in path.split(":")]
    denied: str | None = None
    closed: list[str] = []  # PATH directories this user cannot search
    for c in candidates:
        try:
            st = os.stat(c)
        except PermissionError:
            if os.path.dirname(c) not in closed:
                closed.append(os.path.dirname(c))
            continue
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            if os.access(c, os.X_OK):
                return c
            denied = denied or c
    if denied:
        raise ApplyError("exec", denied, errno.EACCES)
    # Enforcer's own "command not found" (exit 127) says where it looked,
    # so it is not taken for a workload's own 127 (which gets a note too).
    where = "as given" if "/" in cmd else f"on PATH {ctx.env.get('PATH', '(default)')}"
    detail = f"command not found {where}"
    if any(op.kind == "pivot_root" for op in ctx.plan.mounts):
        detail += " inside the policy's rootfs"
    if closed:
        detail += (f"; the workload's user cannot search {', '.join(closed[:3])}"
                   + (" ..." if len(closed) > 3 else ""))
    raise ApplyError("exec", cmd, errno.ENOENT, detail)


def mark_fds_close_on_exec(ctx: ChildContext) -> None:
    """Step 5c, right before seccomp (step 6). Every inherited fd but 0-2
    is closed by execve itself. Leaked fds let a workload reach files of the
    host: CVE-2016-9962 (runc exposed its directory fd to a joined
    process), CVE-2024-21626 (a leaked cgroup fd as working directory). It
    is done just before seccomp so the filter need not allow close_range;
    the close happens atomically at execve."""
    if _sys.close_range_cloexec(3):
        return
    import fcntl

    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            except OSError:
                pass  # the listdir fd itself, already closed


def load_seccomp(ctx: ChildContext) -> None:
    """Step 6. Last of our own steps: after it nothing of ours runs but
    execve, so the filter only has to allow what the workload needs (runc:
    "as close to execve as possible")."""
    if ctx.plan.seccomp is not None:
        load_filter(ctx.plan.seccomp)


def execute(ctx: ChildContext, path: str) -> NoReturn:
    """execve the workload. Through a real execve (never by reusing our
    process image) so the kernel re-evaluates the binary and its set-id
    bits under no_new_privs; the host binary behind /proc/self/exe is not
    reachable by the workload (CVE-2019-5736 was a runtime re-executing
    itself through /proc/self/exe into a container)."""
    try:
        os.execve(path, ctx.argv, ctx.env)
    except OSError as e:
        hint = ""
        if e.errno == errno.EACCES and ctx.plan.landlock is not None:
            hint = ("Landlock allows executing only beneath landlock.filesystem.execute "
                    "(a dynamically linked program needs its loader, ld-linux, there too)")
        raise ApplyError("exec", path, e.errno, hint) from None
    raise AssertionError("unreachable")


# -- the sequence --------------------------------------------------------


def report_failure(err_fd: int, e: BaseException) -> None:
    if isinstance(e, ApplyError):
        payload = {"step": e.step, "what": e.what, "errno": e.errno, "detail": e.detail}
    else:
        payload = {"step": "internal", "what": f"{type(e).__name__}: {e}", "errno": None,
                   "detail": "a bug in enforcer"}
    try:
        from enforcer import fastjson

        os.write(err_fd, fastjson.dumps(payload).encode())
    except OSError:
        pass


def apply_and_exec(ctx: ChildContext) -> NoReturn:
    """The sequence itself. Raises ApplyError on the first failure."""
    if not ctx.audit:
        # Audit mode observes: no namespaces, mounts, rlimits or capability
        # changes; only the filter (compiled with LOG actions) is loaded.
        enter_namespaces(ctx)
        apply_mount_rules(ctx)
        prepare_landlock(ctx)
        apply_rlimits(ctx)
        apply_capabilities_and_user(ctx)
        keep_parent_death_signal(ctx)
    set_no_new_privileges(ctx)
    restrict_landlock(ctx)
    path = resolve_command(ctx)
    mark_fds_close_on_exec(ctx)
    wait_for_placement(ctx)
    load_seccomp(ctx)
    execute(ctx, path)


def run_child(ctx: ChildContext) -> NoReturn:
    """Supervised mode: apply the Plan and exec; failures go to the parent."""
    try:
        apply_and_exec(ctx)
    except BaseException as e:  # noqa: BLE001 - every failure must reach the parent
        report_failure(ctx.err_fd, e)
        os._exit(CHILD_FAILED)
