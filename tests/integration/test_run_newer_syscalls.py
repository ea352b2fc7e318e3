"""Syscalls newer than libseccomp under `enforcer run` (issue 17 acceptance).

libseccomp 2.5.4 does not know mseal (Linux 6.10); enforcer compiles it by
number from its own syscall table. A policy that allows mseal must let a
real mseal call succeed, and one that denies it must refuse it -- on the
running kernel, through the whole path (policy, compiler, Plan, apply).
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from enforcer.policy import syscall_table

from run_helpers import PYTHON, enforcer_run, require_root

pytestmark = pytest.mark.root

def _native_arch() -> str:
    from enforcer.policy.syscalls import native_arch

    return native_arch()


MSEAL = syscall_table.number("mseal", _native_arch())

# mmap one page of our own and seal it; print the result and the errno.
WORKLOAD = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long)
libc.syscall.restype = ctypes.c_long
page = libc.mmap(None, 4096, 1, 0x22, -1, 0)  # PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS
ret = libc.syscall(ctypes.c_long({MSEAL}), ctypes.c_void_p(page), ctypes.c_size_t(4096),
                   ctypes.c_ulong(0))
print("mseal", ret, ctypes.get_errno() if ret else 0)
"""


def _kernel_has_mseal() -> bool:
    """mseal at an unaligned address: EINVAL where the kernel has it,
    ENOSYS where it does not. In a child, so nothing here is sealed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        ret = libc.syscall(ctypes.c_long(MSEAL or -1), ctypes.c_long(1), ctypes.c_long(4096),
                           ctypes.c_long(0))
        os._exit(0 if ret == 0 else min(ctypes.get_errno(), 255))
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) != errno.ENOSYS


@pytest.fixture(scope="module")
def mseal_on_this_kernel() -> None:
    require_root()
    assert MSEAL is not None, f"no mseal number for {os.uname().machine} in enforcer's table"
    if not _kernel_has_mseal():
        pytest.skip(f"this kernel ({os.uname().release}) has no mseal: syscall {MSEAL} "
                    "answers ENOSYS, so there is nothing for a policy to allow")


def _run(policy: str, tmp_path: Path) -> str:
    r = enforcer_run(["--policy", policy, "--", PYTHON, "-S", "-c", WORKLOAD],
                     env={"ENFORCER_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return r.stdout.strip()


def test_policy_allowing_mseal_lets_a_real_mseal_succeed(mseal_on_this_kernel: None,
                                                          tmp_path: Path) -> None:
    # `default` allows mseal (through @system-service -> @memory).
    assert _run("default", tmp_path) == "mseal 0 0"


def test_policy_denying_mseal_refuses_it(mseal_on_this_kernel: None, tmp_path: Path) -> None:
    policy = tmp_path / "no-mseal.yaml"
    policy.write_text("version: 1\nname: no-mseal\nextends: default\n"
                      "syscalls:\n  deny: [mseal]\n")
    assert _run(str(policy), tmp_path) == f"mseal -1 {errno.EPERM}"
