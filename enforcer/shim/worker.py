"""A worker of enforcer-shimd: serves one front end at a time, forked ahead.

`handle` serves one connection (decline it to the Python shim, or run
the shim code and answer); `worker_loop` is a worker's life: connections
one at a time until its server goes or its quota of requests is used.
The server process (enforcer/shim/server.py) forks and replaces workers.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import traceback

from enforcer.shim.errors import ShimError
from enforcer.shim.main import recursion_error, run_shim
from enforcer.shim.peer import credentials, missing_capabilities, own_configuration, \
    status_capabilities
from enforcer.shim.protocol import (ClientGone, ClientView, HandedOver, ProtocolMismatch,
                                    RemoteRunner, Request, _ClientCwd, _watch_in_reaper,
                                    parse_request)
from enforcer.shim.runclog import log_target
from enforcer.shim.runner import ACTIVE_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

_PR_SET_PDEATHSIG = 1
MADV_POPULATE_WRITE = 23  # linux/mman.h
# A worker is replaced after this many requests: a bound on anything a
# request might leave behind in the process (the shim keeps no state).
REQUESTS_PER_WORKER = 1000


def _log(message: str) -> None:
    os.write(2, f"enforcer-shimd: {message}\n".encode())


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


# -- a worker's life ----------------------------------------------------------


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


def worker_loop(listener: socket.socket, control: socket.socket, server_alive_fd: int,
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
