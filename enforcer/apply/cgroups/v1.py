"""cgroup v1 driver: one directory per controller the Plan's limits need.

Layout: <root>/<controller><parent>/<id>, e.g. /sys/fs/cgroup/memory/enforcer/run-1-ab.
`v1_files` renders the Plan's typed limits (enforcer/plan.py CgroupPlan)
as the v1 files; nothing else writes v1 file values.
"""

from __future__ import annotations

import os

from enforcer.apply.cgroups.base import (CgroupEvents, kill_and_remove, make_dir, read_int,
                                         read_keyed, read_pids, remove_parent_if_empty, write_file,
                                         write_lines)
from enforcer.errors import ApplyError
from enforcer.kernel.cgroup import blkio_weight

TYPE_CHECKING = False  # the Plan module loads after the fork (see supervise.py)
if TYPE_CHECKING:
    from enforcer.plan import CgroupPlan

# Block device throttles: IoDevicePlan field -> v1 file (one line per device).
_THROTTLE_FILES = (("read_bps", "blkio.throttle.read_bps_device"),
                   ("write_bps", "blkio.throttle.write_bps_device"),
                   ("read_iops", "blkio.throttle.read_iops_device"),
                   ("write_iops", "blkio.throttle.write_iops_device"))

def v1_files(cg: CgroupPlan) -> dict[str, dict[str, tuple[str, ...]]]:
    """controller -> file -> lines, in the order they must be written.

    memory.limit_in_bytes comes before memory.memsw.limit_in_bytes: the
    kernel keeps memsw >= the memory limit. v1 has no swap-only limit
    (memsw counts memory+swap), so swap without memory is not limited
    here; the compiler notes that. The io weight is converted to the v1
    scale by enforcer.kernel.cgroup.blkio_weight.
    """
    files: dict[str, dict[str, tuple[str, ...]]] = {}
    if cg.memory_max is not None:
        memory = files["memory"] = {"memory.limit_in_bytes": (str(cg.memory_max),)}
        if cg.memory_swap_max is not None:
            memory["memory.memsw.limit_in_bytes"] = (str(cg.memory_max + cg.memory_swap_max),)
    if cg.pids_max is not None:
        files["pids"] = {"pids.max": (str(cg.pids_max),)}
    if cg.cpu_quota_us is not None:
        files["cpu"] = {"cpu.cfs_period_us": (str(cg.cpu_period_us),),
                        "cpu.cfs_quota_us": (str(cg.cpu_quota_us),)}
    blkio: dict[str, tuple[str, ...]] = {}
    if cg.io_weight is not None:
        blkio["blkio.weight"] = (str(blkio_weight(cg.io_weight)),)
    for attr, name in _THROTTLE_FILES:
        lines = tuple(f"{d.device} {getattr(d, attr)}" for d in cg.io_devices
                      if getattr(d, attr) is not None)
        if lines:
            blkio[name] = lines
    if blkio:
        files["blkio"] = blkio
    return files



class CgroupV1:
    version = "v1"

    def __init__(self, files: dict[str, dict[str, tuple[str, ...]]], workload_id: str, *,
                 root: str = "/sys/fs/cgroup", parent: str = "/enforcer") -> None:
        self.files = files
        self.root = root
        self.parent = parent
        self.rel = f"{parent}/{workload_id}"
        self.controllers: list[str] = list(files)
        self.created: list[str] = []

    def dir(self, controller: str) -> str:
        return f"{self.root}/{controller}{self.rel}"

    def create(self) -> None:
        for ctrl in self.controllers:
            if not os.path.exists(f"{self.root}/{ctrl}/cgroup.procs"):
                raise ApplyError("cgroup", f"{self.root}/{ctrl}", 2,
                                 f"cgroup v1 controller {ctrl!r} is not mounted")
            make_dir(self.dir(ctrl))
            self.created.append(self.dir(ctrl))

    def adopt(self, files: dict[str, dict[str, tuple[str, ...]]], pid: int) -> None:
        """Take the Plan's files after the cgroup was made without them:
        create (and move `pid` into) any hierarchy not made yet."""
        for ctrl in files:
            if ctrl in self.controllers:
                continue
            if not os.path.exists(f"{self.root}/{ctrl}/cgroup.procs"):
                raise ApplyError("cgroup", f"{self.root}/{ctrl}", 2,
                                 f"cgroup v1 controller {ctrl!r} is not mounted")
            make_dir(self.dir(ctrl))
            self.created.append(self.dir(ctrl))
            self.controllers.append(ctrl)
            write_file(f"{self.dir(ctrl)}/cgroup.procs", str(pid))
        self.files = files

    def apply_limits(self) -> None:
        # Dict order is v1_files' order: e.g. memory.limit_in_bytes must be
        # written before memory.memsw.limit_in_bytes (memsw >= limit).
        for ctrl, files in self.files.items():
            for name, lines in files.items():
                write_lines(f"{self.dir(ctrl)}/{name}", lines)

    def add(self, pid: int) -> None:
        for ctrl in self.controllers:
            write_file(f"{self.dir(ctrl)}/cgroup.procs", str(pid))

    def add_self(self) -> None:
        """Move the calling process, which must be single-threaded (a fresh
        fork child is), into every hierarchy.

        Written as "0" to `tasks` (this thread) rather than a pid to
        `cgroup.procs` (a whole thread group): the kernel moves a whole
        group under the global threadgroup rwsem, whose write side waits
        for an RCU grace period -- 5 to 16 ms per start measured here --
        while moving the caller's own thread skips that lock. For a
        single-threaded process the two move exactly the same thing; the
        supervisor still checks cgroup.procs before the workload may run.
        """
        for ctrl in self.controllers:
            write_file(f"{self.dir(ctrl)}/tasks", "0")

    def procs(self) -> list[int]:
        seen: set[int] = set()
        for ctrl in self.controllers:
            seen.update(read_pids(f"{self.dir(ctrl)}/cgroup.procs"))
        return sorted(seen)

    def procs_files(self) -> list[str]:
        return [f"{self.dir(ctrl)}/cgroup.procs" for ctrl in self.controllers]

    def events(self) -> CgroupEvents:
        oom = 0
        if "memory" in self.controllers:
            # "oom_kill N" exists since 4.13; under_oom alone would miss a kill.
            oom = read_keyed(f"{self.dir('memory')}/memory.oom_control").get("oom_kill", 0)
        pids_max = 0
        if "pids" in self.controllers:
            pids_max = read_keyed(f"{self.dir('pids')}/pids.events").get("max", 0)
        return CgroupEvents(oom_kills=oom, pids_max_hits=pids_max)

    def peaks(self) -> dict[str, int]:
        """The most memory (bytes) and tasks the cgroup held at once so far."""
        out = {}
        if "memory" in self.controllers:
            value = read_int(f"{self.dir('memory')}/memory.max_usage_in_bytes")
            if value is not None:
                out["memory"] = value
        if "pids" in self.controllers:
            value = read_int(f"{self.dir('pids')}/pids.peak")
            if value is not None:
                out["pids"] = value
        return out

    def record_paths(self) -> dict[str, str]:
        return {ctrl: self.rel for ctrl in self.controllers}

    def remove(self) -> None:
        first: ApplyError | None = None
        for d in reversed(self.created):
            try:
                kill_and_remove([d], f"{d}/cgroup.procs")
            except ApplyError as e:
                first = first or e
        for ctrl in self.controllers:
            remove_parent_if_empty(f"{self.root}/{ctrl}{self.parent}")
        self.created = []
        if first:
            raise first
