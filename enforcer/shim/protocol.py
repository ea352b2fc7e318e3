"""The shim server's side of the front end's protocol (frontend/enforcer-runc.c).

One request per connection: the front end sends its command line,
environment and working directory (and descriptors of its cwd, root and
mount namespace, `ClientView`); `RemoteRunner` answers with what it must do
-- exec runc, run it as a child, start an audit session, print a warning,
run the Python shim in its place, exit -- as the Python shim's runner
would do in-process (enforcer/shim/runner.py).
"""

from __future__ import annotations

import os
import socket

from enforcer.shim import record
from enforcer.shim.errors import ShimError
from enforcer.shim.runner import PROG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

PROTOCOL_VERSION = "1"
MAX_MESSAGE = 4 << 20  # the front end's MAX_MESSAGE
# The settings the server serves with, handed to the Python shim it falls
# back to (the front end accepts exactly these names: enforcer-runc.c).
SERVER_SETTINGS = ("ENFORCER_SHIM_CONFIG", "ENFORCER_RUNTIME_DIR", "ENFORCER_CACHE_DIR")


class ClientGone(Exception):
    """The front end closed the connection: nothing more can be done for it.

    Not a ShimError on purpose: the shim's cleanup on refusal (removing the
    registry record) must not run, because the front end may have been
    killed while its runc child goes on to create the container.
    """


class ProtocolMismatch(ShimError):
    """Front end and server come from different enforcer versions (an upgrade
    without a server restart): the front end is told to run the Python shim,
    which is as new as the front end, rather than to fail."""


class HandedOver(Exception):
    """The front end has been told to exec runc: this request is done."""


def _encode(fields: "tuple[str, ...]") -> bytes:
    return b"".join(os.fsencode(f) + b"\0" for f in fields)


class RemoteRunner:
    """runner.LocalRunner's interface, carried out by the front end.

    A front end that goes away is ClientGone. Whether that is a refusal
    depends on when: before it was told to start runc, runc certainly did
    not start, and the shim's cleanup must run (ShimError); after, runc may
    be running, and nothing may be undone (ClientGone).
    """

    def __init__(self, conn: socket.socket, pid: int,
                 watch: "Callable[[int, str, dict[str, Any]], None] | None" = None,
                 timeout: float | None = 10.0) -> None:
        self.conn = conn
        self._watch = watch
        self.proc = str(pid)  # runc starts from the front end: its rlimits, its cgroup
        self._pid = pid
        self._timeout = timeout  # for the request and short answers; not runc's run
        self._on_exit: "tuple[str, dict[str, Any]] | None" = None

    def _send(self, *fields: str) -> None:
        try:
            self.conn.settimeout(self._timeout)
            self.conn.send(_encode(fields))
        except OSError:
            raise ClientGone() from None

    def receive_raw(self, timeout: float | None) -> bytes:
        try:
            self.conn.settimeout(timeout)
            data = self.conn.recv(MAX_MESSAGE)
        except OSError:  # reset, or silent for `timeout` seconds
            raise ClientGone() from None
        if not data:
            raise ClientGone()
        return data

    def receive_request(self, timeout: float) -> "tuple[bytes, ClientView]":
        """The request and the descriptors that came with it."""
        try:
            self.conn.settimeout(timeout)
            data, fds, _flags, _addr = socket.recv_fds(self.conn, MAX_MESSAGE, VIEW_FDS)
        except OSError:  # reset, or silent for `timeout` seconds
            raise ClientGone() from None
        if not data:
            for fd in fds:
                os.close(fd)
            raise ClientGone()
        return data, ClientView(list(fds))

    def _receive(self, timeout: float | None) -> list[str]:
        data = self.receive_raw(timeout)
        if not data.endswith(b"\0"):
            raise ShimError("malformed message from the front end")
        return [os.fsdecode(f) for f in data[:-1].split(b"\0")]

    def warn(self, message: str) -> None:
        self._send("W", f"{PROG}: warning: {message}")

    def new_audit_session(self) -> int | None:
        self._send("S")
        reply = self._receive(self._timeout)
        if reply[0] != "s" or len(reply) != 2:
            raise ShimError("malformed audit session answer from the front end")
        return int(reply[1]) if reply[1].isdigit() else None

    def remove_record_on_exit(self, root: str, record: "dict[str, Any]") -> None:
        self._on_exit = (root, record)

    def require_own_process(self, reason: str) -> None:
        """What is left to do needs the front end's own process (its stdin,
        its caller's privileges): the Python shim runs in its place, from
        the start, with the same checks."""
        self.fall_back(reason, same_settings=True)
        raise HandedOver()

    def read_stdin(self, limit: int) -> bytes:
        self.require_own_process("the request reads stdin (update -r -), which only the front "
                                 "end's own process can read")
        raise AssertionError("not reached")  # pragma: no cover

    def exec_runc(self, runc: str, args: list[str], stdin: bytes | None = None) -> "NoReturn":
        if stdin is not None:
            self.require_own_process("runc must be given a new stdin, which only the front "
                                     "end's own process can do")
        if self._on_exit is None:
            self._send("X", runc, runc, *args)
            raise HandedOver()
        root, rec = self._on_exit
        # Open the pidfd before the front end can exec and exit: its pid is
        # certainly the one to watch while it waits for this answer.
        try:
            pidfd = os.pidfd_open(self._pid)
        except OSError:
            record.remove_record_if_same(root, rec)  # it is gone: runc never ran
            raise ClientGone() from None
        try:
            try:
                self._send("X", runc, runc, *args)
            finally:
                # Whether or not the answer got through, the record goes when
                # that process ends (at once, if it already has). The server
                # takes the watch, off the start path.
                (self._watch or _watch_in_reaper)(pidfd, root, rec)
        finally:
            os.close(pidfd)
        raise HandedOver()

    def run_child(self, runc: str, args: list[str]) -> int:
        try:
            self._send("C", runc, runc, *args)
        except ClientGone:
            raise ShimError("the front end went away before starting runc") from None
        reply = self._receive(None)  # as long as runc takes
        if reply[0] == "f" and len(reply) == 2:
            raise ShimError(f"cannot execute {runc}: {reply[1]}")
        if reply[0] != "c" or len(reply) != 2 or not reply[1].isdigit():
            raise ShimError("malformed child status from the front end")
        return int(reply[1])

    def fall_back(self, reason: str, same_settings: bool = False) -> None:
        """Let the front end run the Python shim instead. `same_settings`: the
        request was accepted and must be finished with this server's
        registry, cache and configuration -- which a unit sets in the
        server's environment, not the caller's. (Without them, `update -r -`
        of a policy container would look in the default registry, find no
        record and pass straight to runc.) A declined request keeps the
        caller's own settings: that is why it was declined."""
        settings = [f"{key}={os.environ[key]}" for key in SERVER_SETTINGS
                    if same_settings and os.environ.get(key)]
        self._send("P", reason, *settings)

    def finish(self, code: int) -> None:
        self._send("Q", str(code))

    def refuse(self, message: str, log: tuple[str, str] | None = None) -> None:
        """`log`: runc's --log file and format, where the front end also writes
        the line (containerd reads that file, not stderr: runclog.py)."""
        self._send("E", message, *(log or ()))


def _watch_in_reaper(pidfd: int, root: str, rec: "dict[str, Any]") -> None:
    """Watch without a server (a worker whose server is gone)."""
    record.detach_record_remover({pidfd: (root, rec)})


# -- one request -----------------------------------------------------------------


class Request:
    __slots__ = ("self_path", "cwd", "argv", "environ")

    def __init__(self, self_path: str, cwd: str, argv: list[str], environ: dict[str, str]):
        self.self_path, self.cwd, self.argv, self.environ = self_path, cwd, argv, environ


def parse_request(data: bytes) -> Request:
    """R 1 SELF CWD ARGC ARG... ENV... (NUL-ended fields); raises ShimError."""
    if not data.endswith(b"\0"):
        raise ShimError("malformed request from the front end")
    fields = [os.fsdecode(f) for f in data[:-1].split(b"\0")]
    if len(fields) < 5 or fields[0] != "R":
        raise ShimError("malformed request from the front end")
    if fields[1] != PROTOCOL_VERSION:
        raise ProtocolMismatch(f"the front end speaks protocol {fields[1]!r}, the shim "
                               f"server {PROTOCOL_VERSION!r} (restart enforcer-shimd after "
                               "an upgrade)")
    if not fields[4].isdigit() or 5 + int(fields[4]) > len(fields):
        raise ShimError("malformed request from the front end")
    argc = int(fields[4])
    argv = fields[5:5 + argc]
    environ = {}
    for entry in fields[5 + argc:]:
        key, sep, value = entry.partition("=")
        if sep and key:
            environ[key] = value
    return Request(fields[2], fields[3], argv, environ)


VIEW_FDS = 3  # with the request: the front end's cwd, root and mount namespace


class ClientView:
    """The descriptors a front end sends with its request: its working
    directory, its root and its mount namespace (O_PATH). Comparing and
    using these needs no ptrace access to its /proc entries, which the
    server's unit does not grant."""

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def foreign(self) -> str | None:
        """Why paths from this front end may not mean the same files here, or None.

        A front end in another mount namespace or under another root (a
        containerised containerd, a chroot) sends paths of its own world.
        """
        if len(self.fds) != VIEW_FDS:
            return "the front end did not describe its view (an older enforcer-runc?)"
        _cwd, root, namespace = self.fds
        if not _same_file(os.fstat(namespace), os.stat("/proc/self/ns/mnt")):
            return "the shim server is in another mount namespace"
        if not _same_file(os.fstat(root), os.stat("/")):
            return "the shim server has another root directory"
        return None

    def enter_cwd(self) -> None:
        os.fchdir(self.fds[0])


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _ClientCwd:
    """Inside: this worker works in the front end's working directory, as if
    the shim ran in its place (its environment is not taken: the server's
    configuration is its own, peer.py). Outside again: `/`, so nothing of
    one request reaches the next (or pins a directory)."""

    def __init__(self, view: ClientView, request: Request) -> None:
        self.view, self.request = view, request

    def __enter__(self) -> None:
        try:
            # The descriptor it sent, not the path: immune to a directory
            # renamed in between, and needs no look into its /proc entry.
            self.view.enter_cwd()
        except OSError as e:
            raise ShimError(f"working directory {self.request.cwd}: {e.strerror}") from None

    def __exit__(self, *_exc: object) -> None:
        os.chdir("/")
