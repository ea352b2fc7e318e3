"""cgroup limits: the files to write, for a v1 and for a v2 hierarchy.

The Plan carries both, because the compiling host and the applying host
may differ (and this one is hybrid); the apply step picks the one that
matches the hierarchy it finds.

Conventions the apply step relies on:
* v1 files are written in sorted order within a controller. Sorting puts
  memory.limit_in_bytes before memory.memsw.limit_in_bytes, which the
  kernel requires (memsw must stay >= the memory limit).
* A value with several lines (one per block device: blkio.throttle.*,
  io.max) is written one line per write(2): the kernel parses one device
  per write.

/dev paths in io device limits are resolved to MAJOR:MINOR here, at
compile time, so the start path never stats devices.
"""

from __future__ import annotations

import os
import re
import stat

from enforcer.errors import CompileError
from enforcer.plan import CgroupPlan
from enforcer.policy.model import IoDeviceLimit, ResourcePolicy

_MAJ_MIN = re.compile(r"^(\d+):(\d+)$")


def resolve_device(device: str) -> str:
    """'8:0' stays; '/dev/sda' becomes '8:0' (must be a block device)."""
    if _MAJ_MIN.match(device):
        return device
    if not device.startswith("/"):
        raise CompileError(f"resources.io.devices: {device!r} is neither MAJOR:MINOR nor a /dev path")
    try:
        st = os.stat(device)
    except OSError as e:
        raise CompileError(f"resources.io.devices: {device}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise CompileError(f"resources.io.devices: {device} is not a block device")
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def blkio_weight(io_weight: int) -> int:
    """cgroup v2 io.weight (1..10000, default 100) -> v1 blkio.weight
    (10..1000, default 500): scale around the defaults and clamp, the same
    mapping systemd uses between IOWeight= and BlockIOWeight=."""
    return max(10, min(1000, io_weight * 500 // 100))


def _v2_io_max_line(dev: str, d: IoDeviceLimit) -> str:
    parts = [dev]
    for key, value in (("rbps", d.read_bps), ("wbps", d.write_bps),
                       ("riops", d.read_iops), ("wiops", d.write_iops)):
        if value is not None:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def compile_cgroups(res: ResourcePolicy, notes: list[str] | None = None) -> CgroupPlan:
    notes = notes if notes is not None else []
    v1: dict[str, dict[str, str]] = {}
    v2: dict[str, str] = {}

    if res.memory_max is not None:
        v1.setdefault("memory", {})["memory.limit_in_bytes"] = str(res.memory_max)
        v2["memory.max"] = str(res.memory_max)
    if res.memory_swap_max is not None:
        v2["memory.swap.max"] = str(res.memory_swap_max)
        if res.memory_max is not None:
            # v1 limits memory+swap together.
            v1["memory"]["memory.memsw.limit_in_bytes"] = str(res.memory_max + res.memory_swap_max)
        else:
            notes.append("cgroup v1: a swap limit needs memory.max (memsw counts memory+swap); "
                         "on a v1 host swap is not limited")
    if res.pids_max is not None:
        v1["pids"] = {"pids.max": str(res.pids_max)}
        v2["pids.max"] = str(res.pids_max)
    if res.cpu_quota_us is not None:
        if res.cpu_period_us <= 0 or res.cpu_quota_us <= 0:
            raise CompileError("resources.cpu: quota and period must be positive")
        v1["cpu"] = {"cpu.cfs_period_us": str(res.cpu_period_us),
                     "cpu.cfs_quota_us": str(res.cpu_quota_us)}
        v2["cpu.max"] = f"{res.cpu_quota_us} {res.cpu_period_us}"
    if res.io_weight is not None:
        if not 1 <= res.io_weight <= 10000:
            raise CompileError(f"resources.io.weight: {res.io_weight} is not 1..10000")
        v1.setdefault("blkio", {})["blkio.weight"] = str(blkio_weight(res.io_weight))
        v2["io.weight"] = f"default {res.io_weight}"
    if res.io_devices:
        throttle: dict[str, list[str]] = {}
        io_max: list[str] = []
        seen: set[str] = set()
        for d in res.io_devices:
            dev = resolve_device(d.device)
            if dev in seen:
                raise CompileError(f"resources.io.devices: device {dev} ({d.device}) is listed twice")
            seen.add(dev)
            for name, value in (("read_bps_device", d.read_bps), ("write_bps_device", d.write_bps),
                                ("read_iops_device", d.read_iops),
                                ("write_iops_device", d.write_iops)):
                if value is not None:
                    throttle.setdefault(f"blkio.throttle.{name}", []).append(f"{dev} {value}")
            if any(v is not None for v in (d.read_bps, d.write_bps, d.read_iops, d.write_iops)):
                io_max.append(_v2_io_max_line(dev, d))
        for file, lines in throttle.items():
            v1.setdefault("blkio", {})[file] = "\n".join(lines)
        if io_max:
            v2["io.max"] = "\n".join(io_max)

    return CgroupPlan(v1=v1, v2=v2, memory_max=res.memory_max, pids_max=res.pids_max)
