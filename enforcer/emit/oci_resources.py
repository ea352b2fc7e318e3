"""A Plan's cgroup limits as OCI `linux.resources`: the one Plan -> OCI
conversion of limits.

`enforcer export --format oci|docker` and the shim (enforcer/shim/patch.py)
both call `oci_resources`; the shim's merge then only decides which of two
OCI values is the tighter one (enforcer/shim/merge.py). The numbers are
the Plan's own (bytes, microseconds, counts), except two the OCI spec
defines in cgroup v1 terms:

* `memory.swap` is memory+swap (v1 memsw), so it is the Plan's
  memory_max + memory_swap_max, and a swap limit without a memory limit
  has no OCI form;
* `blockIO.weight` is on the v1 blkio scale: enforcer.kernel.cgroup's
  `blkio_weight` (see there for why default maps to default).

Standard library and enforcer.plan only: the shim builds patches with it.
"""

from __future__ import annotations

from enforcer.kernel.cgroup import blkio_weight, parse_device

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from enforcer.plan import CgroupPlan, IoDevicePlan

# IoDevicePlan field -> OCI linux.resources.blockIO list.
THROTTLE_LISTS = (
    ("read_bps", "throttleReadBpsDevice"),
    ("write_bps", "throttleWriteBpsDevice"),
    ("read_iops", "throttleReadIOPSDevice"),
    ("write_iops", "throttleWriteIOPSDevice"),
)


def oci_resources(cg: CgroupPlan) -> dict[str, Any]:
    """`linux.resources` for the Plan's limits; {} when it sets none."""
    out: dict[str, Any] = {}
    if cg.memory_max is not None:
        out["memory"] = {"limit": cg.memory_max}
        if cg.memory_swap_max is not None:
            out["memory"]["swap"] = cg.memory_max + cg.memory_swap_max
    if cg.pids_max is not None:
        out["pids"] = {"limit": cg.pids_max}
    if cg.cpu_quota_us is not None:
        out["cpu"] = {"quota": cg.cpu_quota_us, "period": cg.cpu_period_us}
    block_io: dict[str, Any] = {}
    if cg.io_weight is not None:
        block_io["weight"] = blkio_weight(cg.io_weight)
    for dev in cg.io_devices:
        for key, rates in throttles(dev).items():
            block_io.setdefault(key, []).extend(rates)
    if block_io:
        out["blockIO"] = block_io
    return out


def throttles(dev: IoDevicePlan) -> dict[str, list[dict[str, int]]]:
    """One device's rates as OCI throttle entries, by list name."""
    numbers = parse_device(dev.device)
    if numbers is None:  # pragma: no cover - plan.py refuses other forms
        raise ValueError(f"io device {dev.device!r} is not MAJOR:MINOR")
    out: dict[str, list[dict[str, int]]] = {}
    for attr, key in THROTTLE_LISTS:
        rate = getattr(dev, attr)
        if rate is not None:
            out[key] = [{"major": numbers[0], "minor": numbers[1], "rate": rate}]
    return out
