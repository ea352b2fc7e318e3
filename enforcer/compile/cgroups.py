"""cgroup limits: the policy's resources section as the Plan's typed limits.

The Plan stores each limit once, in the policy's unit (CgroupPlan in
enforcer/plan.py); the cgroup v1 and v2 drivers render their files from it
at apply time and the OCI exporter its `linux.resources`, so no value is
converted twice. What happens here: the checks a Plan must already have
passed, and /dev paths in io device limits resolved to MAJOR:MINOR, so
the start path never stats devices.
"""

from __future__ import annotations

import os
import stat

from enforcer.errors import CompileError
from enforcer.kernel.cgroup import IO_WEIGHT_MAX, IO_WEIGHT_MIN, parse_device
from enforcer.plan import CgroupPlan, IoDevicePlan
from enforcer.policy.model import IoDeviceLimit, ResourcePolicy


def resolve_device(device: str) -> str:
    """'8:0' stays; '/dev/sda' becomes '8:0' (must be a block device)."""
    if parse_device(device) is not None:
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


def _io_devices(limits: tuple[IoDeviceLimit, ...]) -> tuple[IoDevicePlan, ...]:
    out: list[IoDevicePlan] = []
    seen: set[str] = set()
    for d in limits:
        dev = resolve_device(d.device)
        if dev in seen:
            raise CompileError(f"resources.io.devices: device {dev} ({d.device}) is listed twice")
        seen.add(dev)
        if any(v is not None for v in (d.read_bps, d.write_bps, d.read_iops, d.write_iops)):
            out.append(IoDevicePlan(dev, d.read_bps, d.write_bps, d.read_iops, d.write_iops))
    return tuple(out)


def compile_cgroups(res: ResourcePolicy, notes: list[str] | None = None) -> CgroupPlan:
    notes = notes if notes is not None else []
    if res.memory_swap_max is not None and res.memory_max is None:
        notes.append("cgroup v1: a swap limit needs memory.max (memsw counts memory+swap); "
                     "on a v1 host swap is not limited")
    quota = res.cpu_quota_us
    if quota is not None and (res.cpu_period_us <= 0 or quota <= 0):
        raise CompileError("resources.cpu: quota and period must be positive")
    if res.io_weight is not None and not IO_WEIGHT_MIN <= res.io_weight <= IO_WEIGHT_MAX:
        raise CompileError(f"resources.io.weight: {res.io_weight} is not "
                           f"{IO_WEIGHT_MIN}..{IO_WEIGHT_MAX}")
    return CgroupPlan(memory_max=res.memory_max, memory_swap_max=res.memory_swap_max,
                      pids_max=res.pids_max, cpu_quota_us=quota,
                      cpu_period_us=res.cpu_period_us if quota is not None else None,
                      io_weight=res.io_weight, io_devices=_io_devices(res.io_devices))
