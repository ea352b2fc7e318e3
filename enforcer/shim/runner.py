"""How the shim reaches runc and the process runc starts from.

The shim's decisions (main.py) are the same wherever they run; what
differs is who executes runc:

  LocalRunner   the shim is its own process (`enforcer-runc-py`, `enforcer
                shim`): it execs runc, or spawns it and waits.
  RemoteRunner  the shim runs inside enforcer-shimd on behalf of the
                compiled front end (server.py): every step here becomes a
                message, and the front end, whose pid runc keeps, does it.

A runner's `proc` names the process whose rlimits and cgroup runc will
inherit, for /proc/PROC/...: "self" locally, the front end's pid remotely.
"""

from __future__ import annotations

import os

from enforcer.shim.errors import ShimError

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol

    class Runner(Protocol):
        """What main.py needs from whoever executes runc."""

        proc: str

        def warn(self, message: str) -> None: ...
        def new_audit_session(self) -> int | None: ...
        def require_own_process(self, reason: str) -> None: ...
        def read_stdin(self, limit: int) -> bytes: ...
        def exec_runc(self, runc: str, args: list[str],
                      stdin: bytes | None = None) -> NoReturn: ...
        def remove_record_on_exit(self, root: str, record: dict[str, Any]) -> None: ...
        def run_child(self, runc: str, args: list[str]) -> int: ...

PROG = "enforcer-runc"
# Set in the environment runc gets: if runc turns out to be this shim again
# (a PATH or config mistake), the second instance refuses instead of looping.
ACTIVE_ENV = "ENFORCER_SHIM_ACTIVE"


class LocalRunner:
    """The shim in its own process."""

    proc = "self"

    def warn(self, message: str) -> None:
        os.write(2, f"{PROG}: warning: {message}\n".encode())

    def new_audit_session(self) -> int | None:
        from enforcer.audit_session import start_new_session

        return start_new_session()

    def require_own_process(self, reason: str) -> None:
        """Go on only in the process that becomes runc: this one."""

    def read_stdin(self, limit: int) -> bytes:
        """All of stdin (what containerd sends with `update -r -`), at most `limit` bytes."""
        chunks, size = [], 0
        while chunk := os.read(0, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ShimError(f"stdin: too large (more than {limit} bytes); refusing to read on")
        return b"".join(chunks)

    def exec_runc(self, runc: str, args: list[str], stdin: bytes | None = None) -> "NoReturn":
        """Become runc; with `stdin`, runc reads exactly those bytes as its stdin
        (a private memfd: what the shim checked is what runc reads)."""
        os.environ[ACTIVE_ENV] = "1"
        try:
            if stdin is not None:
                fd = os.memfd_create("enforcer-runc-stdin", 0)
                os.write(fd, stdin)  # a memfd takes it all in one write
                os.lseek(fd, 0, os.SEEK_SET)
                os.dup2(fd, 0)
                os.close(fd)
            os.execv(runc, [runc] + args)
        except OSError as e:
            raise ShimError(f"cannot execute {runc}: {e.strerror}") from None

    def remove_record_on_exit(self, root: str, record: "dict[str, Any]") -> None:
        """Before a foreground `runc run` exec: drop the record when runc ends."""
        from enforcer.shim.record import start_record_reaper

        start_record_reaper(root, record)

    def run_child(self, runc: str, args: list[str]) -> int:
        """Run runc as a child, forward signals, return its exit status (128+N if killed)."""
        import _signal  # the C module: `signal` imports enum (~6 ms)

        os.environ[ACTIVE_ENV] = "1"
        child = [0]

        def forward(signum: int, _frame: object) -> None:
            if child[0]:
                try:
                    os.kill(child[0], signum)
                except ProcessLookupError:
                    pass

        forwarded = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT,
                     _signal.SIGUSR1, _signal.SIGUSR2)
        previous = {s: _signal.signal(s, forward) for s in forwarded}
        try:
            # posix_spawn (vfork-style in glibc), not fork: a forked Python child
            # takes copy-on-write faults on every page it touches before exec.
            try:
                pid = os.posix_spawn(runc, [runc] + args, os.environ)
            except OSError as e:
                raise ShimError(f"cannot execute {runc}: {e.strerror}") from None
            child[0] = pid
            _, status = os.waitpid(pid, 0)
        finally:
            for s, handler in previous.items():
                _signal.signal(s, handler)
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code
