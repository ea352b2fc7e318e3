"""Helpers for the bench area's tests: bench/ is a directory of scripts, not
a package, so tests import its modules by putting it on sys.path."""

from __future__ import annotations

import ctypes
import os
import sys

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
DOCKER_PROFILE = os.path.join(os.path.dirname(os.path.dirname(BENCH_DIR)), "shared", "fixtures",
                              "docker-default-seccomp.json")

if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)


def run_under_filter(bpf: bytes, calls: list[tuple[int, tuple[int, ...]]]) -> list[int]:
    """Load `bpf` in a forked child and make each raw syscall there.

    Returns each call's errno (0 = it ran) as the kernel answered; the
    parent never carries the filter. Only harmless calls belong in `calls`.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: load, call, report, _exit -- never return to pytest
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            prog = (ctypes.c_ubyte * len(bpf)).from_buffer_copy(bpf)

            class Fprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            fprog = Fprog(len(bpf) // 8, ctypes.addressof(prog))
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                os._exit(3)
            if libc.syscall(317, 1, 0, ctypes.byref(fprog)) != 0:  # seccomp(SET_MODE_FILTER)
                os._exit(4)
            out = []
            for nr, args in calls:
                ret = libc.syscall(nr, *[ctypes.c_ulong(a) for a in args])
                out.append(ctypes.get_errno() if ret < 0 else 0)
            os.write(w, (" ".join(map(str, out)) + "\n").encode())
            os._exit(0)
        except BaseException:
            os._exit(5)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status:#x}"
    return [int(x) for x in data.split()]
