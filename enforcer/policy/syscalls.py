"""Syscall and architecture names: enforcer's table, then libseccomp.

Two sources answer "is NAME a syscall on ARCH, and which number?":

* enforcer's own table (enforcer/policy/syscall_table.py): the kernel's numbering,
  generated from its syscall tables, up to the kernel named there;
* libseccomp, the library the compiler builds filters with. It knows the
  syscalls of its release only (2.5.4: up to Linux 6.7), but it also knows
  multiplexed calls (x86 socketcall/ipc) and a few ARM private calls that
  the kernel's tables do not list.

A name exists on an architecture when either knows it there. The compiler
asks libseccomp first, by name (it translates names between architectures
and rewrites multiplexed calls); a name only the table knows on an
architecture is compiled by number (`by_number`), and the importer and
`enforcer groups`/`features` say so.

pyseccomp leaves `seccomp_syscall_resolve_name_arch` without argtypes and
has wrong constants for some architectures, so we bind the few functions we
need ourselves with ctypes, loaded on first use (never at import time).

libseccomp answers a name with:
  >= 0              the syscall number on that architecture;
  -1                (__NR_SCMP_ERROR) no such syscall anywhere;
  -2 .. -9999       a multiplexed call (x86 socketcall/ipc): it exists;
  <= -10000         a pseudo number: known on other architectures, not this one.

A name counts as valid in a policy when it exists on at least one of the
architectures the policy targets. Written explicitly, a name that exists on
none of them is an error naming where it does exist; a group member that
exists on none is left out quietly (groups are written for all arches, and
e.g. `open` has no aarch64 number).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Any

from enforcer.policy import syscall_table

# libseccomp's architecture names (seccomp_arch_resolve_name), all of which
# a policy may list. `native` means the architecture of the compiling host.
ARCHITECTURES = (
    "x86_64", "x86", "x32", "aarch64", "arm", "mips", "mips64", "mips64n32",
    "mipsel", "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390",
    "s390x", "parisc", "parisc64", "riscv64",
)

_NR_SCMP_ERROR = -1
_PSEUDO_LIMIT = -10000


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@functools.lru_cache(maxsize=1)
def _lib() -> Any:
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_native.argtypes = ()
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_syscall_resolve_name_arch.argtypes = (ctypes.c_uint32, ctypes.c_char_p)
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_version.argtypes = ()
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    return lib


def libseccomp_version() -> str:
    v = _lib().seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


@functools.lru_cache(maxsize=None)
def arch_token(arch: str) -> int:
    """libseccomp's token for an architecture name; 0 if unknown."""
    return int(_lib().seccomp_arch_resolve_name(arch.encode()))


@functools.lru_cache(maxsize=1)
def native_arch() -> str:
    token = int(_lib().seccomp_arch_native())
    for name in ARCHITECTURES:
        if arch_token(name) == token:
            return name
    # Should not happen with a libseccomp that runs here; fall back to uname.
    return {"x86_64": "x86_64", "aarch64": "aarch64"}.get(platform.machine(), platform.machine())


@functools.lru_cache(maxsize=None)
def syscall_number(name: str, arch: str) -> int:
    """Raw libseccomp answer for `name` on `arch` (see the module docstring)."""
    token = arch_token(arch)
    if token == 0 or not name or "\0" in name:
        return _NR_SCMP_ERROR
    return int(_lib().seccomp_syscall_resolve_name_arch(token, name.encode()))


def libseccomp_knows(name: str) -> bool:
    """True when libseccomp knows the name on some architecture (what tools
    that resolve names with it -- runc, systemd -- can use)."""
    return syscall_number(name, "x86_64") != _NR_SCMP_ERROR


def libseccomp_knows_on(name: str, arch: str) -> bool:
    """True when libseccomp can compile `name` on `arch` by name (multiplexed counts)."""
    nr = syscall_number(name, arch)
    return nr >= 0 or _PSEUDO_LIMIT < nr < _NR_SCMP_ERROR


def by_number(name: str, arch: str) -> int | None:
    """The table's number for a syscall of `arch` that libseccomp does not
    know there, so the compiler must add it by number; None otherwise."""
    if libseccomp_knows_on(name, arch):
        return None
    return syscall_table.number(name, arch)


def exists_on(name: str, arch: str) -> bool:
    """True when `name` is a real syscall on `arch` (table or libseccomp)."""
    return libseccomp_knows_on(name, arch) or syscall_table.number(name, arch) is not None


def known(name: str) -> bool:
    """True when the name is a syscall anywhere (libseccomp or our table)."""
    return libseccomp_knows(name) or name in syscall_table.all_names()


def arches_with(name: str) -> list[str]:
    return [a for a in ARCHITECTURES if exists_on(name, a)]


def newer_note(name: str, arch: str) -> str | None:
    """What the compiler does with a name libseccomp does not know on `arch`:
    None when libseccomp knows it (or it is no syscall there)."""
    entry = syscall_table.entry(name, arch)
    if entry is None or libseccomp_knows_on(name, arch):
        return None
    kernel = ".".join(entry.kernel.split(".")[:2])
    return (f"unknown to libseccomp {libseccomp_version()}; compiled by number from "
            f"enforcer's table (kernel {kernel})")


def newer_than_libseccomp(arch: str) -> dict[str, int]:
    """name -> number for every syscall of `arch` libseccomp does not know there."""
    table = syscall_table.table(arch)
    if table is None:
        return {}
    return {name: e.number for name, e in sorted(table.by_name.items(), key=lambda kv: kv[1].number)
            if not libseccomp_knows_on(name, arch)}


def effective_arches(architectures: tuple[str, ...]) -> tuple[str, ...]:
    """Policy architectures with `native` replaced; empty means native."""
    if not architectures:
        return (native_arch(),)
    out: list[str] = []
    for a in architectures:
        a = native_arch() if a == "native" else a
        if a not in out:
            out.append(a)
    return tuple(out)


@functools.lru_cache(maxsize=1)
def all_names() -> tuple[str, ...]:
    """Every syscall name enforcer knows (for "did you mean" and listings):
    the table's names on every architecture, and libseccomp's on x86_64 and
    aarch64 (for the multiplexed and private calls the table lacks).

    libseccomp has no "list names" call; walking the numbers back to names
    covers the two arches we care about for suggestions.
    """
    lib = _lib()
    lib.seccomp_syscall_resolve_num_arch.argtypes = (ctypes.c_uint32, ctypes.c_int)
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    libc = ctypes.CDLL(None)
    libc.free.argtypes = (ctypes.c_void_p,)
    names: set[str] = set(syscall_table.all_names())
    for arch in ("x86_64", "aarch64"):
        token = arch_token(arch)
        for nr in range(0, 600):
            ptr = lib.seccomp_syscall_resolve_num_arch(token, nr)
            if ptr:
                names.add(ctypes.string_at(ptr).decode())
                libc.free(ptr)
    return tuple(sorted(names))
