"""enforcer-shimd: the shim kept resident, for the compiled front end.

    enforcer-shimd [--socket PATH] [--verbose]

Why: every container operation starts the runtime once, and a Python
interpreter costs ~7 ms of CPU to start before any shim code runs. The
front end (frontend/enforcer-runc.c) is a small C program; it sends its
command line, environment and working directory here, and this server
runs the very same shim code (main.run_shim) in a worker forked from a
process that already has it imported. The worker answers with what the
front end must do (exec runc, run it as a child, start an audit session,
print a warning, exit): see the protocol in frontend/enforcer-runc.c.

With no server listening the front end runs the Python shim itself, so
the server is an accelerator, never a second policy path.

Socket: $ENFORCER_SHIM_SOCKET, else /run/enforcer-shimd/shim.sock (the
front end looks in the same places), mode 0600, in a directory of its own
that only root may enter (never the registry's /run/enforcer, which is
mounted into the monitor's pod); or the first socket systemd passes
(socket activation). Whom it serves, and with what configuration, is
peer.py's business: the same uid, every capability the server holds, and
the server's own configuration (`--config`, else $ENFORCER_SHIM_CONFIG,
else /etc/enforcer/shim.json); anyone else runs the Python shim with their
own rights.

Requests are served by a few worker processes forked ahead of time and
reused (serve()); each request sets the worker's working directory and
environment to the front end's own, and the shim code keeps no state
between requests. For a
foreground `runc run` a small reaper process stays until that process
ends (watching its pidfd) and then removes the registry record, as the
Python shim's reaper does; so a unit running this server uses
KillMode=process, and a restart leaves the reapers alone.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import socket
import subprocess  # also preloaded for workers: main._read_pid uses it
import sys
import time
import traceback

# Preloaded here so that each forked worker has them already (the start
# path's modules, and those of a Plan's first verification).
from enforcer import atomicfile, plan  # noqa: F401
from enforcer.shim import bundle, merge, patch, plans, record, runcfeatures  # noqa: F401
from enforcer.shim.errors import ShimError
from enforcer.shim.main import recursion_error, run_shim
from enforcer.shim.peer import credentials, missing_capabilities, own_configuration, \
    status_capabilities
from enforcer.shim.runclog import log_target
from enforcer.shim.runner import ACTIVE_ENV, PROG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

PROTOCOL_VERSION = "1"
MAX_MESSAGE = 4 << 20  # the front end's MAX_MESSAGE
DEFAULT_SOCKET = "/run/enforcer-shimd/shim.sock"
SD_LISTEN_FDS_START = 3
_PR_SET_PDEATHSIG = 1
MADV_POPULATE_WRITE = 23  # linux/mman.h
# A worker is replaced after this many requests: a bound on anything a
# request might leave behind in the process (the shim keeps no state).
REQUESTS_PER_WORKER = 1000


def socket_path(environ: "dict[str, str] | os._Environ[str]" = os.environ) -> str:
    """Where the front end looks for the server (keep in step with enforcer-runc.c)."""
    return environ.get("ENFORCER_SHIM_SOCKET") or DEFAULT_SOCKET


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


# The capabilities this server holds: a client must hold them all (peer.py).
OWN_CAPABILITIES = status_capabilities("self")


def _decline_reason(pid: int, conn: socket.socket, view: ClientView,
                    request: Request) -> str | None:
    """Why this front end must run the Python shim itself, or None to serve it."""
    if pid <= 0:
        return "the shim server cannot see this process (another pid namespace)"
    # Paths from a front end in another mount namespace or root would name
    # other files here.
    return (view.foreign() or missing_capabilities(conn, pid, OWN_CAPABILITIES)
            or own_configuration(request.argv, request.environ))


def _serve(pid: int, uid: int, runner: RemoteRunner, verbose: bool,
           timeout: float) -> None:
    # Read the request before anything else: closing a connection with
    # unread data would reset it, and the front end would lose the answer.
    data, view = runner.receive_request(timeout)
    try:
        if uid != os.geteuid():
            raise ShimError(f"uid {uid} may not use this shim server (it serves uid "
                            f"{os.geteuid()} only)")
        try:
            request = parse_request(data)
        except ProtocolMismatch as e:
            runner.fall_back(str(e))
            return
        reason = _decline_reason(pid, runner.conn, view, request)
        if reason:
            runner.fall_back(reason)
            return
        if verbose:
            _log(f"pid {pid}: {' '.join(request.argv)}")
        try:
            if request.environ.get(ACTIVE_ENV):
                raise recursion_error()
            with _ClientCwd(view, request):
                code = run_shim(request.argv, request.self_path or None, runner)
        except ShimError as e:
            runner.refuse(str(e), log_target(request.argv))
            return
        runner.finish(code)
    finally:
        view.close()


def handle(conn: socket.socket, verbose: bool = False,
           watch: "Callable[[int, str, dict[str, Any]], None] | None" = None,
           timeout: float = 10.0) -> None:
    """Serve one front end on `conn` (in a worker); `watch` hands a foreground
    run's record to whoever removes it when the pidfd's process exits;
    `timeout`: how long the front end may be silent when it has to speak.

    Every way out answers the front end (or finds it gone): a refusal is
    one line for the user, a bug in enforcer is reported as one and logged
    with its trace here. Never an exception into the worker's loop.
    """
    try:
        pid, uid = credentials(conn)
    except OSError:
        return  # gone before we could look at it
    runner = RemoteRunner(conn, pid, watch, timeout)
    try:
        _serve(pid, uid, runner, verbose, timeout)
    except ShimError as e:
        try:
            runner.refuse(str(e))
        except ClientGone:
            pass
    except (HandedOver, ClientGone):
        pass
    except Exception as e:  # a bug in enforcer: fail closed, keep the trace for the log
        traceback.print_exc()
        try:
            runner.refuse(f"internal error in enforcer-shimd ({type(e).__name__}: {e}); "
                          "see its log")
        except ClientGone:
            pass


# -- the server ---------------------------------------------------------------------


def _log(message: str) -> None:
    os.write(2, f"enforcer-shimd: {message}\n".encode())


def _systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.type != socket.SOCK_SEQPACKET or sock.family != socket.AF_UNIX:
        raise SystemExit("enforcer-shimd: the socket systemd passed is not an AF_UNIX "
                         "SOCK_SEQPACKET socket (ListenSequentialPacket=)")
    return sock


def bind_socket(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600, in a directory only its owner
    may enter or change (made 0700 if missing); a stale socket file is replaced."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SystemExit(f"enforcer-shimd: {directory} is not this user's alone (owner uid "
                         f"{st.st_uid}, mode {st.st_mode & 0o7777:o}): the socket must sit in a "
                         "directory nobody else can change")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(path)
        raise SystemExit(f"enforcer-shimd: another server is listening on {path}")
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    finally:
        probe.close()
    if os.path.lexists(path):
        os.unlink(path)  # nobody answers there: a server that died
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(128)
    return sock


def _prefault_private_memory() -> None:
    """Take this process's copy-on-write faults now, before it has a client.

    A worker is forked from the server and shares its memory copy-on-write;
    Python's reference counting writes to every object a request touches,
    and each first write to a page is a fault that copies it: measured
    here, that doubled the time a request takes (0.7 -> 1.8 ms). An idle
    worker faults its private writable mappings in up front with
    MADV_POPULATE_WRITE (Linux 5.14); where that is missing, it is skipped.
    """
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        with open("/proc/self/maps") as f:
            maps = f.read().splitlines()
    except OSError:
        return
    for line in maps:
        fields = line.split()
        if fields[1] != "rw-p":
            continue
        if len(fields) > 5 and fields[5].startswith("[") and fields[5] != "[heap]":
            continue  # the stack grows on its own; vvar and the like are not ours
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, MADV_POPULATE_WRITE) != 0:
            return


class _WorkerState:
    """Whether a worker is inside a request, and whether its server is gone."""

    busy = False
    server_gone = False


def _die_with_server(server_pid: int, state: _WorkerState) -> None:
    """SIGTERM when the server process ends (PR_SET_PDEATHSIG): an idle worker
    exits at once, a busy one after its request. The getppid() check covers a
    server that ended before the signal was set up."""
    def server_died(_signum: int, _frame: object) -> None:
        if not state.busy:
            os._exit(0)
        state.server_gone = True

    signal.signal(signal.SIGTERM, server_died)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM),
               ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    if os.getppid() != server_pid:
        os._exit(0)


def _gone(server_alive_fd: int) -> bool:
    """Has the server's end of the "alive" pipe closed (the server ended)?"""
    waiter = select.poll()
    waiter.register(server_alive_fd, select.POLLIN)
    return bool(waiter.poll(0))


def _hand_back(conn: socket.socket, request_timeout: float) -> None:
    """A connection taken just as the server ended: this worker's code may be
    older than what is installed now, so the front end runs the Python shim."""
    runner = RemoteRunner(conn, 0, timeout=request_timeout)
    try:
        _data, view = runner.receive_request(request_timeout)
        view.close()
        runner.fall_back("the shim server is stopping")
    except ClientGone:
        pass


def _worker(listener: socket.socket, control: socket.socket, server_alive_fd: int,
            server_pid: int, verbose: bool, request_timeout: float) -> "NoReturn":
    """Serve connections one at a time until the server goes or the quota is used.

    Old code never serves after its server ended: when the server process
    ends, the last copy of the "alive" pipe's write end closes and the read
    end hangs up, and the kernel sends SIGTERM (PR_SET_PDEATHSIG). An idle
    worker ends at once; a busy one after its request (a container operation
    is never cut in half); a connection accepted in between is handed back
    to the front end's Python shim. The listening socket is non-blocking: of
    the workers woken for one connection only one gets it, and the others
    go back to waiting where they see the pipe, instead of blocking in
    accept(2) where nothing would (the bug that let workers outlive their
    server and serve requests with old code).
    """
    def watch(pidfd: int, root: str, rec: "dict[str, Any]") -> None:
        data = json.dumps({"root": root, "record": rec}).encode()
        try:
            socket.send_fds(control, [data], [pidfd])
        except OSError:
            _watch_in_reaper(pidfd, root, rec)  # the server is gone

    code = 0
    state = _WorkerState()
    try:
        signal.set_wakeup_fd(-1)  # the server's wakeup pipe is not ours
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess must reap its runc
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the server
        _die_with_server(server_pid, state)
        listener.setblocking(False)
        _prefault_private_memory()
        waiter = select.epoll()
        # EPOLLEXCLUSIVE: the kernel wakes one idle worker per connection
        # (or a few), not all of them; the pipe wakes every one of them.
        waiter.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        waiter.register(server_alive_fd, select.EPOLLIN)
        served = 0
        while served < REQUESTS_PER_WORKER and not state.server_gone:
            if any(fd == server_alive_fd for fd, _ in waiter.poll()):
                break  # the server is gone
            state.busy = True
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                state.busy = False
                continue  # another worker took it
            with conn:
                if state.server_gone or _gone(server_alive_fd):
                    _hand_back(conn, request_timeout)
                    break
                served += 1
                handle(conn, verbose, watch, request_timeout)
            state.busy = False
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


class Server:
    """The server process: keeps the workers and removes finished runs' records.

    One poll loop over: the workers' pidfds (one exits: collect it, fork a
    replacement), the control socket (a worker hands over the pidfd of a
    foreground `runc run` and its registry record), those pidfds (the run
    ended: remove the record, as the Python shim's reaper would) and the
    signal wakeup pipe (SIGTERM/SIGINT: stop, see shutdown()).
    """

    RESPAWN_DELAY = 1.0  # after a worker that died young: no fork storm

    def __init__(self, listener: socket.socket, workers: int = 4, verbose: bool = False,
                 request_timeout: float = 10.0):
        self.listener = listener
        self.size = workers
        self.verbose = verbose
        self.request_timeout = request_timeout
        self.control, self._worker_control = socket.socketpair(socket.AF_UNIX,
                                                               socket.SOCK_SEQPACKET)
        # Read only when poll says so, and drained to empty: never block on it.
        # (socket.recv_fds ignores its flags argument, so no MSG_DONTWAIT.)
        self.control.setblocking(False)
        # Held open by the server only: idle workers watch the read end.
        self._alive_r, self._alive_w = os.pipe()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller = select.poll()
        for fd in (self.control.fileno(), self._wakeup_r):
            self.poller.register(fd, select.POLLIN)
        self.workers: dict[int, tuple[int, float]] = {}  # pidfd -> (pid, forked at)
        self.watches: dict[int, tuple[str, dict[str, Any]]] = {}  # pidfd -> (root, record)
        self.respawn_at: float | None = None
        self.stopping = False
        self.server_pid = os.getpid()

    def spawn(self) -> None:
        try:
            pid = os.fork()
        except OSError as e:
            _log(f"cannot fork a worker: {e.strerror}")
            self.respawn_at = time.monotonic() + self.RESPAWN_DELAY
            return
        if pid == 0:
            # Nothing of the server's bookkeeping belongs in a worker.
            for fd in [*self.workers, *self.watches, self._alive_w, self._wakeup_r,
                       self._wakeup_w]:
                os.close(fd)
            self.control.close()
            _worker(self.listener, self._worker_control, self._alive_r, self.server_pid,
                    self.verbose, self.request_timeout)
        pidfd = os.pidfd_open(pid)
        self.workers[pidfd] = (pid, time.monotonic())
        self.poller.register(pidfd, select.POLLIN)

    def _worker_ended(self, pidfd: int) -> None:
        pid, forked_at = self.workers.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if status == 0:
            self.spawn()  # its quota of requests was used: replace it now
            return
        _log(f"worker {pid} ended with status {os.waitstatus_to_exitcode(status)}")
        if time.monotonic() - forked_at < self.RESPAWN_DELAY:
            self.respawn_at = time.monotonic() + self.RESPAWN_DELAY
        else:
            self.spawn()

    def _take_watches(self) -> None:
        """Every watch a worker has handed over (and is waiting in the socket)."""
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.control, 1 << 20, 1)
            except BlockingIOError:
                return
            if not fds:
                continue
            try:
                doc = json.loads(data)
                self.watches[fds[0]] = (doc["root"], doc["record"])
                self.poller.register(fds[0], select.POLLIN)
            except (ValueError, KeyError, TypeError):
                os.close(fds[0])

    def _run_ended(self, pidfd: int) -> None:
        root, rec = self.watches.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        record.remove_record_if_same(root, rec)

    def _wake(self, _signum: int, _frame: object) -> None:
        self.stopping = True  # the loop sees it through the wakeup pipe

    def _timeout_ms(self) -> int | None:
        if self.respawn_at is None:
            return None
        return max(0, int((self.respawn_at - time.monotonic()) * 1000))

    def serve_forever(self) -> None:
        """Until SIGTERM or SIGINT; then shutdown()."""
        signal.set_wakeup_fd(self._wakeup_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._wake)
        gc.freeze()  # keep the collector from touching (and so copying) shared objects
        for _ in range(self.size):
            self.spawn()
        control = self.control.fileno()
        while not self.stopping:
            for fd, _events in self.poller.poll(self._timeout_ms()):
                if fd == self._wakeup_r:
                    os.read(self._wakeup_r, 64)  # the handler has set self.stopping
                elif fd == control:
                    self._take_watches()
                elif fd in self.workers:
                    self._worker_ended(fd)
                elif fd in self.watches:
                    self._run_ended(fd)
            if self.respawn_at is not None and time.monotonic() >= self.respawn_at:
                self.respawn_at = None
                for _ in range(self.size - len(self.workers)):
                    self.spawn()
        self.shutdown()

    def shutdown(self) -> None:
        """Let the workers go (idle ones at once, busy ones after their
        request) and hand every watch, including those still in the control
        socket, to a detached process: a restart leaves no stale record."""
        os.close(self._alive_w)
        self._take_watches()
        if self.watches:
            record.detach_record_remover(self.watches)


def server_processes(socket_path: str) -> list[int]:
    """Pids of a server started with `--socket socket_path` and of its workers
    and reapers (forks, so they carry its command line); for operators' and
    tests' checks that a stopped server left nothing behind."""
    wanted = os.fsencode(socket_path)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            pass  # gone meanwhile
    return found


def terminate(proc: "subprocess.Popen[bytes]", leftovers: "Callable[[], list[int]]",
              timeout: float = 10) -> list[int]:
    """Stop a server started as `proc` the way systemd's KillMode=process
    does (SIGTERM to the server only), wait for `leftovers()` (its other
    processes) to go, SIGKILL any still there after `timeout` and return
    their pids: for tests and benchmarks that must leave nothing behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + timeout
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftovers()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def check(path: str) -> int:
    """Ask the server at `path` what it would run for `runc --version`, as a
    front end would: exit 0 and say so if it serves, 1 with the reason if not."""
    # No environment: the server answers with its own configuration, as it
    # would for a container runtime (which sets none of enforcer's variables).
    environ: list[str] = []
    view = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in (".", "/", "/proc/self/ns/mnt")]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.settimeout(10)
            conn.connect(path)
            socket.send_fds(conn, [_encode(("R", PROTOCOL_VERSION, "", os.getcwd(), "1",
                                            "--version", *environ))], view)
            reply = conn.recv(MAX_MESSAGE).rstrip(b"\0").split(b"\0")
    except OSError as e:
        print(f"enforcer-shimd: {path}: not serving ({e.strerror or e})")
        return 1
    finally:
        for fd in view:
            os.close(fd)
    if reply[0] == b"X" and len(reply) > 1:
        print(f"enforcer-shimd: {path}: serving; runc is {os.fsdecode(reply[1])}")
        return 0
    detail = os.fsdecode(reply[1]) if len(reply) > 1 else "no answer"
    print(f"enforcer-shimd: {path}: answers, but not with runc: {detail}")
    return 1


def _positive(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(
        prog="enforcer-shimd",
        description="Serve the enforcer-runc front end: the OCI shim, kept resident.")
    parser.add_argument("--socket", help="socket path (default: $ENFORCER_SHIM_SOCKET, or "
                        f"{DEFAULT_SOCKET})")
    parser.add_argument("--config", metavar="FILE",
                        help="the shim configuration it serves with (default: "
                             "$ENFORCER_SHIM_CONFIG, or /etc/enforcer/shim.json); read on "
                             "every request")
    parser.add_argument("--workers", type=_positive, default=4, metavar="N",
                        help="worker processes, i.e. container operations served at "
                             "once (default 4)")
    parser.add_argument("--request-timeout", type=_positive, default=10, metavar="S",
                        help="seconds a front end has to send its request and short "
                             "answers before its worker gives up on it (default 10)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--check", action="store_true",
                        help="do not serve: tell whether a server answers on the socket "
                             "(exit 0) or not (exit 1), e.g. for a readiness probe")
    args = parser.parse_args(argv)
    if args.config:
        # Where load_config looks: the server's own configuration, for every request.
        os.environ["ENFORCER_SHIM_CONFIG"] = os.path.abspath(args.config)
    if args.check:
        return check(args.socket or socket_path())
    listener = _systemd_socket()
    path = None
    if listener is None:
        path = args.socket or socket_path()
        try:
            listener = bind_socket(path)
        except OSError as e:
            _log(f"cannot listen on {path}: {e.strerror}")
            return 1

    _log(f"serving on {path or 'the socket systemd passed'}")
    server = Server(listener, args.workers, args.verbose, args.request_timeout)
    try:
        server.serve_forever()  # returns after SIGTERM/SIGINT, workers let go
    finally:
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
