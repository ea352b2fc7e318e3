"""Raw Linux system calls the apply sequence needs, through ctypes.

Python 3.11's `os` module has no unshare, mount, pivot_root, prctl, capset
or seccomp, so the sequence calls libc (or the raw syscall) itself. Every
wrapper raises `ApplyError(step, what, errno)` naming the syscall and its
argument, so the parent can print one precise line.

The constants below are kernel ABI (include/uapi). They are tested against
the kernel headers' values in tests/unit/test_run_units.py; syscall numbers
are tested against libseccomp's tables there (libseccomp is a test-only
dependency: the start path never loads it).

libc is loaded lazily on first use, never at import time.
"""

from __future__ import annotations

import ctypes
import os
TYPE_CHECKING = False  # no `typing` on the start path
if TYPE_CHECKING:
    from typing import Any

from enforcer.errors import ApplyError
# Re-exported (`as`): the apply step calls them _sys.CLONE_NEW*.
from enforcer.kernel.namespaces import CLONE_FLAGS
NAMESPACE_FLAGS = CLONE_FLAGS
from enforcer.kernel.namespaces import CLONE_NEWCGROUP as CLONE_NEWCGROUP
from enforcer.kernel.namespaces import CLONE_NEWIPC as CLONE_NEWIPC
from enforcer.kernel.namespaces import CLONE_NEWNET as CLONE_NEWNET
from enforcer.kernel.namespaces import CLONE_NEWNS as CLONE_NEWNS
from enforcer.kernel.namespaces import CLONE_NEWPID as CLONE_NEWPID
from enforcer.kernel.namespaces import CLONE_NEWUSER as CLONE_NEWUSER
from enforcer.kernel.namespaces import CLONE_NEWUTS as CLONE_NEWUTS

# -- clone/unshare flags (linux/sched.h): enforcer/kernel/namespaces.py,
# imported above as NAMESPACE_FLAGS and CLONE_NEW*.

# -- mount(2) flags (linux/mount.h) --------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# mount_setattr(2)
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NODEV = 0x00000004
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x00000004
MOVE_MOUNT_T_EMPTY_PATH = 0x00000040
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6

# -- prctl(2) (linux/prctl.h) --------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# capget/capset (linux/capability.h)
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# seccomp(2) (linux/seccomp.h)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAGS = {
    "tsync": 1,  # SECCOMP_FILTER_FLAG_TSYNC
    "log": 2,  # SECCOMP_FILTER_FLAG_LOG
    "spec_allow": 4,  # SECCOMP_FILTER_FLAG_SPEC_ALLOW
}

# close_range(2)
CLOSE_RANGE_CLOEXEC = 1 << 2

# Syscall numbers we call directly (no glibc wrapper in Debian 12's glibc
# 2.36 for some, and calling them raw keeps one code path).
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "seccomp": 317,
        "pivot_root": 155,
        "capget": 125,
        "capset": 126,
        "close_range": 436,
        "mount_setattr": 442,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
    "aarch64": {
        "seccomp": 277,
        "pivot_root": 41,
        "capget": 90,
        "capset": 91,
        "close_range": 436,
        "mount_setattr": 442,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        # The unified (asm-generic) numbers, which x86_64 shares for these.
        "landlock_create_ruleset": 444,
        "landlock_add_rule": 445,
        "landlock_restrict_self": 446,
    },
}

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.unshare.argtypes = [ctypes.c_int]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                                ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def machine() -> str:
    m = os.uname().machine
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def nr(name: str) -> int:
    """The native syscall number of `name` (only the few we call)."""
    try:
        return _SYSCALLS[machine()][name]
    except KeyError:
        raise ApplyError("platform", f"syscall {name} on {machine()}", None,
                         "this architecture is not supported by enforcer run") from None


def _fail(step: str, what: str) -> ApplyError:
    return ApplyError(step, what, ctypes.get_errno() or None)


def _b(s: str | bytes | None) -> bytes | None:
    if s is None or isinstance(s, bytes):
        return s
    return os.fsencode(s)


def syscall(step: str, what: str, name: str, *args: Any) -> int:
    ret = int(libc().syscall(ctypes.c_long(nr(name)), *args))
    if ret < 0:
        raise _fail(step, what)
    return ret


def unshare(flags: int, step: str = "namespaces", what: str = "unshare") -> None:
    if libc().unshare(flags) != 0:
        raise _fail(step, what)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None, step: str = "mounts") -> None:
    if libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail(step, f"mount {target}")


def umount2(target: str, flags: int, step: str = "mounts") -> None:
    if libc().umount2(_b(target), flags) != 0:
        raise _fail(step, f"umount {target}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0,
          *, step: str, what: str) -> int:
    ret = int(libc().prctl(option, arg2, arg3, arg4, arg5))
    if ret < 0:
        raise _fail(step, what)
    return ret


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, flags: int, attr_set: int, attr_clr: int,
                  step: str = "mounts") -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    syscall(step, f"mount_setattr {path}", "mount_setattr", ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(_b(path)), ctypes.c_uint(flags), ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)))


def mount_setattr_fd(fd: int, flags: int, attr_set: int, attr_clr: int,
                     step: str = "mounts") -> None:
    """mount_setattr on the mount `fd` is (an open_tree result, say)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    syscall(step, "mount_setattr on a detached mount", "mount_setattr", ctypes.c_int(fd),
            ctypes.c_char_p(b""), ctypes.c_uint(flags | AT_EMPTY_PATH), ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of this thread as 64-bit masks."""
    hdr = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    syscall("capabilities", "capget", "capget", ctypes.byref(hdr), data)
    return (data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    syscall("capabilities", f"capset(effective={effective:#x}, permitted={permitted:#x}, "
            f"inheritable={inheritable:#x})", "capset", ctypes.byref(hdr), data)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(bpf: bytes, flags: int) -> None:
    if len(bpf) % 8 or not bpf:
        raise ApplyError("seccomp", "seccomp(SECCOMP_SET_MODE_FILTER)", None,
                         f"BPF of {len(bpf)} bytes is not a whole number of instructions")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    syscall("seccomp", "seccomp(SECCOMP_SET_MODE_FILTER)", "seccomp",
            ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(flags), ctypes.byref(prog))


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


POLLIN = 0x001
POLLHUP = 0x010


def poll_fd(fd: int, events: int, timeout_ms: int, step: str = "supervise") -> int:
    """poll(2) on one fd: its revents (0 on timeout). Through libc, not the
    `select` module: the child may no longer be able to read the standard
    library's extension modules once it runs as the policy's user."""
    pfd = _PollFd(fd, events, 0)
    while True:
        ret = int(libc().poll(ctypes.byref(pfd), ctypes.c_ulong(1), ctypes.c_int(timeout_ms)))
        if ret >= 0:
            return int(pfd.revents)
        if ctypes.get_errno() != 4:  # EINTR: poll again
            raise _fail(step, f"poll(fd {fd})")


def close_fds_from(first: int) -> None:
    """Close every fd >= first (close_range(2); each fd on older kernels)."""
    ret = int(libc().syscall(ctypes.c_long(nr("close_range")), ctypes.c_uint(first),
                             ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(0)))
    if ret == 0:
        return
    for name in os.listdir("/proc/self/fd"):
        if int(name) >= first:
            try:
                os.close(int(name))
            except OSError:
                pass  # the listdir fd itself, already closed


def setns(fd: int, nstype: int, step: str = "namespaces", what: str = "setns") -> None:
    if libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail(step, what)


def close_range_cloexec(first: int) -> bool:
    """Mark every fd >= first close-on-exec. False if the kernel lacks it."""
    ret = int(libc().syscall(ctypes.c_long(nr("close_range")), ctypes.c_uint(first),
                             ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC)))
    if ret == 0:
        return True
    if ctypes.get_errno() in (38, 22):  # ENOSYS, EINVAL (flag unknown before 5.11)
        return False
    raise _fail("fds", "close_range(CLOSE_RANGE_CLOEXEC)")
