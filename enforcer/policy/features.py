"""What this host supports: seccomp actions, cgroup layout, Landlock, libseccomp.

Used by `enforcer features` and by tests that need to skip on hosts without
a feature. Paths are parameters so tests can point them at fixture trees.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0


@dataclass(frozen=True)
class Features:
    kernel: str
    arch: str
    seccomp_actions: tuple[str, ...]
    cgroup_mode: str  # "v2", "v1", "hybrid" or "none"
    cgroup_v2_path: str | None
    cgroup_v1_controllers: tuple[str, ...]
    cgroup_v2_controllers: tuple[str, ...]
    landlock_abi: int | None  # None: not available (reason in landlock_detail)
    landlock_detail: str
    libseccomp_version: str | None
    libseccomp_api: int | None
    syscall_table_kernel: str = ""  # newest kernel enforcer's syscall table covers
    # Syscalls of this architecture enforcer's table has and libseccomp does
    # not: name -> number (compiled by number).
    newer_than_libseccomp: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def seccomp_actions(path: str = "/proc/sys/kernel/seccomp/actions_avail") -> tuple[str, ...]:
    try:
        with open(path, encoding="ascii") as f:
            return tuple(f.read().split())
    except OSError:
        return ()


def cgroup_layout(mounts: str = "/proc/self/mounts") -> tuple[str, str | None, tuple[str, ...], tuple[str, ...]]:
    """(mode, v2 mount point, v1 controllers, v2 controllers) from a mounts table."""
    v1: list[str] = []
    v2_path: str | None = None
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        mount_point, fstype, options = parts[1], parts[2], parts[3].split(",")
        if fstype == "cgroup2" and v2_path is None:
            v2_path = mount_point
        elif fstype == "cgroup":
            known = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer",
                     "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc")
            v1.extend(o for o in options if o in known and o not in v1)
    v2_controllers: tuple[str, ...] = ()
    if v2_path is not None:
        try:
            with open(os.path.join(v2_path, "cgroup.controllers"), encoding="ascii") as f:
                v2_controllers = tuple(f.read().split())
        except OSError:
            pass
    if v1 and v2_path:
        mode = "hybrid"
    elif v1:
        mode = "v1"
    elif v2_path:
        mode = "v2"
    else:
        mode = "none"
    return mode, v2_path, tuple(sorted(v1)), v2_controllers


def landlock_abi() -> tuple[int | None, str]:
    """Ask the kernel: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)."""
    from enforcer.policy import syscalls

    try:
        nr = syscalls.syscall_number("landlock_create_ruleset", syscalls.native_arch())
    except OSError as e:
        return None, f"libseccomp unavailable: {e}"
    if nr < 0:
        return None, "libseccomp does not know landlock_create_ruleset for this architecture"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    res = libc.syscall(ctypes.c_long(nr), None, ctypes.c_size_t(0), ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if res >= 0:
        return int(res), "available"
    err = ctypes.get_errno()
    if err == errno.EOPNOTSUPP:
        return None, "built into the kernel but disabled at boot (lsm=)"
    if err == errno.ENOSYS:
        return None, "not built into this kernel"
    return None, f"landlock_create_ruleset failed: {os.strerror(err)}"


def detect() -> Features:
    from enforcer.policy import syscalls

    notes: list[str] = []
    try:
        version: str | None = syscalls.libseccomp_version()
        arch = syscalls.native_arch()
        lib = syscalls._lib()
        lib.seccomp_api_get.restype = ctypes.c_uint
        api: int | None = int(lib.seccomp_api_get())
    except OSError as e:
        version, api, arch = None, None, platform.machine()
        notes.append(f"libseccomp could not be loaded: {e}")
    from enforcer.policy import syscall_table

    newer: dict[str, int] = {}
    if version is not None:
        newer = syscalls.newer_than_libseccomp(arch)
    mode, v2_path, v1, v2c = cgroup_layout()
    abi, detail = landlock_abi()
    actions = seccomp_actions()
    if not actions:
        notes.append("seccomp: /proc/sys/kernel/seccomp/actions_avail is missing (no seccomp filter support?)")
    return Features(
        kernel=platform.release(), arch=arch, seccomp_actions=actions, cgroup_mode=mode,
        cgroup_v2_path=v2_path, cgroup_v1_controllers=v1, cgroup_v2_controllers=v2c,
        landlock_abi=abi, landlock_detail=detail, libseccomp_version=version,
        libseccomp_api=api, syscall_table_kernel=syscall_table.kernel_version(),
        newer_than_libseccomp=newer, notes=notes,
    )
