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

The parts: protocol.py (the front end's protocol, RemoteRunner),
worker.py (serving one request; a worker's life), health.py (--check,
finding leftovers), and here the server process (the socket, the pool of
workers, the records of finished runs) and main().

Requests are served by a few worker processes forked ahead of time and
reused (Server); each request sets the worker's working directory and
environment to the front end's own, and the shim code keeps no state
between requests. For a
foreground `runc run` a small reaper process stays until that process
ends (watching its pidfd) and then removes the registry record, as the
Python shim's reaper does; so a unit running this server uses
KillMode=process, and a restart leaves the reapers alone.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import subprocess  # noqa: F401 - preloaded for workers: main._read_pid uses it
import sys
import time

# Preloaded here so that each forked worker has them already (the start
# path's modules, and those of a Plan's first verification).
from enforcer import atomicfile, plan  # noqa: F401
from enforcer.shim import bundle, merge, patch, plans, record, runcfeatures  # noqa: F401
from enforcer.shim.health import check
from enforcer.shim.worker import _log, worker_loop

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SOCKET = "/run/enforcer-shimd/shim.sock"
SD_LISTEN_FDS_START = 3


def socket_path(environ: "dict[str, str] | os._Environ[str]" = os.environ) -> str:
    """Where the front end looks for the server (keep in step with enforcer-runc.c)."""
    return environ.get("ENFORCER_SHIM_SOCKET") or DEFAULT_SOCKET


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
            worker_loop(self.listener, self._worker_control, self._alive_r, self.server_pid,
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
