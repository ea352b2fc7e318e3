"""Symbolic constants for syscall argument values, errno names, rlimits.

Argument values in a policy may be written as numbers or as names joined
with `|`, e.g. `CLONE_NEWUSER|CLONE_NEWNS` or `AF_INET`. The table is kept
small on purpose: only flags that are useful in seccomp argument rules, and
only values that are the SAME on x86_64 and aarch64 (the arches we test).
That is why O_DIRECTORY, O_NOFOLLOW, O_DIRECT and O_LARGEFILE are absent:
their numbers differ between the two. Each value is checked in a unit test
against Python's own socket/os/mmap/termios constants where those exist.
"""

from __future__ import annotations

import errno as _errno
import re

CONSTANTS: dict[str, int] = {
    # clone(2) / unshare(2) flags (include/uapi/linux/sched.h)
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_VM": 0x00000100,
    "CLONE_FS": 0x00000200,
    "CLONE_FILES": 0x00000400,
    "CLONE_SIGHAND": 0x00000800,
    "CLONE_PIDFD": 0x00001000,
    "CLONE_PTRACE": 0x00002000,
    "CLONE_VFORK": 0x00004000,
    "CLONE_PARENT": 0x00008000,
    "CLONE_THREAD": 0x00010000,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_SYSVSEM": 0x00040000,
    "CLONE_SETTLS": 0x00080000,
    "CLONE_PARENT_SETTID": 0x00100000,
    "CLONE_CHILD_CLEARTID": 0x00200000,
    "CLONE_UNTRACED": 0x00800000,
    "CLONE_CHILD_SETTID": 0x01000000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
    "CLONE_IO": 0x80000000,
    # socket(2) address families (include/linux/socket.h)
    "AF_UNSPEC": 0,
    "AF_UNIX": 1,
    "AF_LOCAL": 1,
    "AF_INET": 2,
    "AF_AX25": 3,
    "AF_IPX": 4,
    "AF_APPLETALK": 5,
    "AF_INET6": 10,
    "AF_KEY": 15,
    "AF_NETLINK": 16,
    "AF_PACKET": 17,
    "AF_RDS": 21,
    "AF_CAN": 29,
    "AF_TIPC": 30,
    "AF_BLUETOOTH": 31,
    "AF_ALG": 38,
    "AF_VSOCK": 40,
    "AF_XDP": 44,
    # socket(2) types and flags
    "SOCK_STREAM": 1,
    "SOCK_DGRAM": 2,
    "SOCK_RAW": 3,
    "SOCK_RDM": 4,
    "SOCK_SEQPACKET": 5,
    "SOCK_PACKET": 10,
    "SOCK_NONBLOCK": 0o4000,
    "SOCK_CLOEXEC": 0o2000000,
    # mmap(2) / mprotect(2)
    "PROT_NONE": 0,
    # File mode bits (chmod(2) mode argument; include/uapi/linux/stat.h)
    "S_ISUID": 0o4000,
    "S_ISGID": 0o2000,
    "S_ISVTX": 0o1000,
    "PROT_READ": 1,
    "PROT_WRITE": 2,
    "PROT_EXEC": 4,
    "MAP_SHARED": 0x01,
    "MAP_PRIVATE": 0x02,
    "MAP_SHARED_VALIDATE": 0x03,
    "MAP_FIXED": 0x10,
    "MAP_ANONYMOUS": 0x20,
    "MAP_GROWSDOWN": 0x0100,
    "MAP_DENYWRITE": 0x0800,
    "MAP_EXECUTABLE": 0x1000,
    "MAP_LOCKED": 0x2000,
    "MAP_NORESERVE": 0x4000,
    "MAP_POPULATE": 0x8000,
    "MAP_NONBLOCK": 0x10000,
    "MAP_STACK": 0x20000,
    "MAP_HUGETLB": 0x40000,
    "MAP_FIXED_NOREPLACE": 0x100000,
    # open(2) flags identical on x86_64 and aarch64
    "O_RDONLY": 0,
    "O_WRONLY": 0o1,
    "O_RDWR": 0o2,
    "O_ACCMODE": 0o3,
    "O_CREAT": 0o100,
    "O_EXCL": 0o200,
    "O_NOCTTY": 0o400,
    "O_TRUNC": 0o1000,
    "O_APPEND": 0o2000,
    "O_NONBLOCK": 0o4000,
    "O_DSYNC": 0o10000,
    "O_ASYNC": 0o20000,
    "O_NOATIME": 0o1000000,
    "O_CLOEXEC": 0o2000000,
    "O_SYNC": 0o4010000,
    "O_PATH": 0o10000000,
    # The bit that makes O_TMPFILE create an unnamed file (O_TMPFILE itself
    # adds O_DIRECTORY, whose number differs between x86_64 and aarch64).
    "__O_TMPFILE": 0o20000000,
    # personality(2) (include/uapi/linux/personality.h)
    "PER_LINUX": 0x0000,
    "PER_LINUX32": 0x0008,
    "UNAME26": 0x0020000,
    "ADDR_NO_RANDOMIZE": 0x0040000,
    "READ_IMPLIES_EXEC": 0x0400000,
    "PER_QUERY": 0xFFFFFFFF,
    # ioctl(2) requests worth filtering (terminal injection)
    "TIOCSTI": 0x5412,
    "TIOCLINUX": 0x541C,
}

U64_MAX = (1 << 64) - 1
_NUMBER = re.compile(r"^(0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+|[0-9]+)$")


def parse_value(text: str) -> int:
    """`CLONE_NEWUSER|CLONE_NEWNS`, `0x10|MAP_FIXED`, `42` -> an unsigned 64-bit int.

    Raises ValueError naming the first unknown word.
    """
    total = 0
    parts = [p.strip() for p in text.split("|")]
    if not parts or any(not p for p in parts):
        raise ValueError(f"{text!r} is not a value: write numbers or constants joined by |")
    for part in parts:
        if _NUMBER.match(part):
            total |= int(part, 0)
        elif part.upper() in CONSTANTS:
            total |= CONSTANTS[part.upper()]
        else:
            raise ValueError(f"unknown constant {part!r}")
    if total > U64_MAX:
        raise ValueError(f"{text!r} does not fit in 64 bits")
    return total


def errno_number(name: str) -> int | None:
    """EPERM -> 1; None if not an errno name on this system."""
    value = getattr(_errno, name.upper(), None)
    if isinstance(value, int) and name.upper().startswith("E") and value in _errno.errorcode:
        return value
    return None


ERRNO_NAMES: tuple[str, ...] = tuple(sorted(set(_errno.errorcode.values())))
MAX_ERRNO = 4095  # the kernel's MAX_ERRNO: larger SECCOMP_RET_ERRNO data is not an errno

# Resource numbers for prlimit(2) (asm-generic; the same on x86_64 and aarch64).
RLIMIT_NUMBERS: dict[str, int] = {
    "CPU": 0, "FSIZE": 1, "DATA": 2, "STACK": 3, "CORE": 4, "RSS": 5, "NPROC": 6,
    "NOFILE": 7, "MEMLOCK": 8, "AS": 9, "LOCKS": 10, "SIGPENDING": 11, "MSGQUEUE": 12,
    "NICE": 13, "RTPRIO": 14, "RTTIME": 15,
}
RLIMITS: tuple[str, ...] = tuple(sorted(RLIMIT_NUMBERS))
