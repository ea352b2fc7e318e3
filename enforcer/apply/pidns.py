"""The workload's own pid namespace, and the pid 1 that keeps it.

unshare(CLONE_NEWPID) moves only the caller's *later children* into the
new namespace, and its first child becomes pid 1 there. So the supervisor
makes the namespace right before it forks (enforcer/apply/supervise.py),
forks pid 1 first -- the namespace's init, this module -- and then the
workload process, which becomes pid 2. The workload stays the
supervisor's own child: signals are forwarded to it and its wait status is
the run's exit status, exactly as without a namespace.

Pid 1 is a separate, idle process because pid 1 has duties a program does
not expect to have (docker's --init and bubblewrap keep such a process for
the same reasons):

* signals: the kernel delivers to a pid 1 only the signals it handles, so a
  program running as pid 1 would never see the SIGTERM of a Ctrl-C or a
  `kill`; as pid 2 the workload gets them like anywhere else;
* orphans: a process of the namespace whose parent exits is re-parented to
  pid 1. Ours ignores SIGCHLD, so the kernel reaps them at once (no zombies
  pile up) without pid 1 ever waking;
* the end: when pid 1 exits, the kernel kills every process left in the
  namespace. The supervisor kills it once the workload has exited; the
  parent-death signal kills it if the supervisor dies.

It holds nothing a workload could use: no fds, no capabilities,
no_new_privs, another uid than the workload's (nobody, when root started
it), not dumpable (no ptrace, no /proc/1/mem or environ), and it never
executes anything. It is not in the workload's cgroup (it uses nothing);
the supervisor kills it by pid. It is not under the workload's seccomp filter (a learned
policy need not allow what it needs), which is why it does nothing at all
but wait in pause(2).
"""

from __future__ import annotations

import os
import _signal as signal  # the C module (signal.py builds enums: ~4 ms)

from enforcer.apply import _sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, NoReturn

NOBODY = 65534


def fork_init(change_uid: bool) -> tuple[int, int]:
    """In the supervisor, right after unshare(CLONE_NEWPID): fork pid 1 of
    the new namespace. `change_uid`: become nobody (root on the host; in an
    unprivileged user namespace only the mapped ids exist). Returns its pid
    and a pipe that reaches EOF once it holds nothing any more: until then it
    still runs as the supervisor's copy (root, its fds), so the workload
    must not start before (the supervisor waits, `wait_until_settled`).

    Everything pid 1 does is a handful of system calls: every page a forked
    Python process writes costs it a copy-on-write fault, so it does not
    walk tables or build objects on its way to pause(2)."""
    supervisor = os.pidfd_open(os.getpid())  # readable once the supervisor is gone
    settled_r, settled_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            be_init(supervisor, settled_w, change_uid)
        except BaseException:  # noqa: BLE001 - nothing to report to: die
            os._exit(125)
    os.close(supervisor)
    os.close(settled_w)
    return pid, settled_r


def wait_until_settled(settled_r: int, pid: int) -> bool:
    """In the supervisor: wait until pid 1 dropped everything; False if it
    died instead (then so did its namespace)."""
    while os.read(settled_r, 64):
        pass
    os.close(settled_r)
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def be_init(supervisor_pidfd: int, settled_w: int, change_uid: bool) -> NoReturn:
    # The supervisor's pipes must reach EOF without us (EOF on the error
    # pipe means "execve happened"): keep no fd at all but the pidfd, and
    # the pipe whose end says we are done.
    os.dup2(supervisor_pidfd, 0)
    os.dup2(settled_w, 1)
    _sys.close_fds_from(2)
    # Orphans of the namespace are ours: with SIGCHLD ignored the kernel
    # reaps them the moment they exit. Python's SIGINT handler would let a
    # SIGINT from the workload end us (and the namespace): the default.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    if change_uid:
        os.setgroups(())
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)  # clears permitted, effective and ambient
    # Never executing anything, the bounding set does not matter; the rest go
    # (inheritable too; in a user namespace all of them).
    _sys.capset(0, 0, 0)
    # After the uid change (it clears the parent-death signal); if the
    # supervisor died before this, nobody is left to kill us: go.
    _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL, step="namespaces",
               what="prctl(PR_SET_PDEATHSIG)")
    if _sys.poll_fd(0, _sys.POLLIN, 0, step="namespaces"):
        os._exit(0)
    os.close(0)
    _sys.prctl(_sys.PR_SET_NO_NEW_PRIVS, 1, step="namespaces", what="prctl(PR_SET_NO_NEW_PRIVS)")
    _sys.prctl(_sys.PR_SET_DUMPABLE, 0, step="namespaces", what="prctl(PR_SET_DUMPABLE, 0)")
    os.chdir("/")
    os.close(1)  # settled: the supervisor may let the workload start
    while True:
        signal.pause()
