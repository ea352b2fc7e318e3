"""cgroup v2 driver: one directory in the unified hierarchy.

Layout: <root><parent>/<id>. The controllers the Plan's files need are
enabled in cgroup.subtree_control of every ancestor we own (the root's and
the parent's), because a v2 file such as memory.max only appears in a
cgroup whose parent delegates the memory controller to it. `v2_files`
renders the Plan's typed limits (enforcer/plan.py CgroupPlan) as the v2
files; nothing else writes v2 file values.
"""

from __future__ import annotations

import os

from enforcer.apply.cgroups.base import (CgroupEvents, kill_and_remove, make_dir, read_int,
                                         read_keyed, read_pids, remove_parent_if_empty, write_file,
                                         write_lines)
from enforcer.errors import ApplyError

TYPE_CHECKING = False  # the Plan module loads after the fork (see supervise.py)
if TYPE_CHECKING:
    from enforcer.plan import CgroupPlan

# io.max keys, in the order the kernel prints them.
_IO_MAX_KEYS = (("read_bps", "rbps"), ("write_bps", "wbps"), ("read_iops", "riops"),
                ("write_iops", "wiops"))


def v2_files(cg: CgroupPlan) -> dict[str, tuple[str, ...]]:
    """file -> lines, in the order they are written (io.max: one line per device)."""
    files: dict[str, tuple[str, ...]] = {}
    if cg.memory_max is not None:
        files["memory.max"] = (str(cg.memory_max),)
    if cg.memory_swap_max is not None:
        files["memory.swap.max"] = (str(cg.memory_swap_max),)
    if cg.pids_max is not None:
        files["pids.max"] = (str(cg.pids_max),)
    if cg.cpu_quota_us is not None:
        files["cpu.max"] = (f"{cg.cpu_quota_us} {cg.cpu_period_us}",)
    if cg.io_weight is not None:
        files["io.weight"] = (f"default {cg.io_weight}",)
    io_max = tuple(" ".join([d.device] + [f"{key}={getattr(d, attr)}" for attr, key in _IO_MAX_KEYS
                                          if getattr(d, attr) is not None])
                   for d in cg.io_devices)
    if io_max:
        files["io.max"] = io_max
    return files



def controllers_for(files: dict[str, tuple[str, ...]]) -> list[str]:
    out: list[str] = []
    for name in files:
        ctrl = name.split(".", 1)[0]
        if ctrl not in out and ctrl != "cgroup":
            out.append(ctrl)
    return out


class CgroupV2:
    version = "v2"

    def __init__(self, files: dict[str, tuple[str, ...]], workload_id: str, *,
                 root: str = "/sys/fs/cgroup", parent: str = "/enforcer") -> None:
        self.files = files
        self.root = root.rstrip("/")
        self.parent = parent
        self.rel = f"{parent}/{workload_id}"
        self.path = f"{self.root}{self.rel}"
        self.created = False
        self.parent_created = False

    def available(self) -> list[str]:
        try:
            with open(f"{self.root}/cgroup.controllers") as f:
                return f.read().split()
        except OSError:
            return []

    def create(self) -> None:
        parent_dir = f"{self.root}{self.parent}"
        if not os.path.isdir(parent_dir):
            make_dir(parent_dir)
            self.parent_created = True
        self.enable_controllers()
        make_dir(self.path)
        self.created = True

    def enable_controllers(self) -> None:
        needed = controllers_for(self.files)
        missing = [c for c in needed if c not in self.available()]
        if missing:
            raise ApplyError("cgroup", f"{self.root}/cgroup.controllers", 2,
                             f"cgroup v2 controller(s) {', '.join(missing)} not available")
        enable = " ".join(f"+{c}" for c in needed)
        if enable:
            # Only our parent's subtree_control and the root's: a leaf with
            # the workload in it may have controllers enabled above it.
            write_file(f"{self.root}/cgroup.subtree_control", enable)
            write_file(f"{self.root}{self.parent}/cgroup.subtree_control", enable)

    def adopt(self, files: dict[str, tuple[str, ...]], pid: int) -> None:
        """Take the Plan's files after the cgroup was made without them."""
        self.files = files
        self.enable_controllers()

    def apply_limits(self) -> None:
        for name, lines in self.files.items():
            write_lines(f"{self.path}/{name}", lines)

    def add(self, pid: int) -> None:
        write_file(f"{self.path}/cgroup.procs", str(pid))

    def add_self(self) -> None:
        """Move the calling process (v2 has no per-thread shortcut here)."""
        self.add(os.getpid())

    def procs(self) -> list[int]:
        return read_pids(f"{self.path}/cgroup.procs")

    def procs_files(self) -> list[str]:
        return [f"{self.path}/cgroup.procs"]

    def events(self) -> CgroupEvents:
        return CgroupEvents(
            oom_kills=read_keyed(f"{self.path}/memory.events").get("oom_kill", 0),
            pids_max_hits=read_keyed(f"{self.path}/pids.events").get("max", 0),
        )

    def peaks(self) -> dict[str, int]:
        """The most memory (bytes) and tasks the cgroup held at once so far
        (memory.peak since 5.19, pids.peak since 6.13; absent: not said)."""
        out = {}
        for key, name in (("memory", "memory.peak"), ("pids", "pids.peak")):
            value = read_int(f"{self.path}/{name}")
            if value is not None:
                out[key] = value
        return out

    def record_paths(self) -> dict[str, str]:
        return {"": self.rel}

    def remove(self) -> None:
        if self.created:
            kill_and_remove([self.path], f"{self.path}/cgroup.procs",
                            kill_file=f"{self.path}/cgroup.kill")
            self.created = False
        remove_parent_if_empty(f"{self.root}{self.parent}")
