"""cgroup units and scales: the one place a limit changes its unit.

A Plan stores every cgroup limit once, in the unit of the policy
(CgroupPlan in enforcer/plan.py): bytes, microseconds, a count, and the io
weight on the cgroup v2 scale. The drivers (enforcer/apply/cgroups/v1.py,
v2.py) and the OCI exporter (enforcer/emit/oci_resources.py) render their
files from those numbers; the only value that needs a conversion is the
io weight on a v1 hierarchy, done here.

The io weight scale
-------------------
cgroup v2 `io.weight` runs 1..10000 with 100 the default; cgroup v1
`blkio.weight` (and OCI's `linux.resources.blockIO.weight`, which the OCI
runtime spec defines on the v1 scale) runs 10..1000 with 500 the default.
A weight is a proportional share against the sibling cgroups, and a
sibling that sets no weight holds the default. So the conversion maps
default to default and keeps the ratio to it -- `blkio = io * 500 / 100`,
clamped to 10..1000 -- which is what systemd does between IOWeight= and
BlockIOWeight= (src/core/cgroup.c, cgroup_weight_io_to_blkio). A policy's
weight 100 ("as much as anyone by default") is blkio.weight 500.

runc maps the two ranges end to end instead (1 + (w - 10) * 9999 / 990,
libcontainer's ConvertBlkIOToIOWeightValue), which sends the v1 default
500 to io.weight 4950, not 100: the ranges' ends are kept, the share
against default siblings is not. enforcer therefore never uses runc's
formula for its own writes; where runc converts an OCI weight we wrote
(a container on a pure cgroup v2 host) docs/shim.md says so.
"""

from __future__ import annotations

IO_WEIGHT_MIN = 1
IO_WEIGHT_DEFAULT = 100
IO_WEIGHT_MAX = 10000

BLKIO_WEIGHT_MIN = 10
BLKIO_WEIGHT_DEFAULT = 500
BLKIO_WEIGHT_MAX = 1000

# The CFS period the kernel uses when only a quota is given (cpu.max "QUOTA",
# cpu.cfs_period_us's initial value), in microseconds.
CPU_PERIOD_DEFAULT_US = 100_000


def blkio_weight(io_weight: int) -> int:
    """A weight on the cgroup v2 scale as cgroup v1 / OCI blkio weight."""
    scaled = io_weight * BLKIO_WEIGHT_DEFAULT // IO_WEIGHT_DEFAULT
    return max(BLKIO_WEIGHT_MIN, min(BLKIO_WEIGHT_MAX, scaled))


def parse_device(text: str) -> tuple[int, int] | None:
    """'8:0' -> (8, 0); anything else -> None."""
    major, sep, minor = text.partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        return None
    return int(major), int(minor)


# BFQ's own weight (cgroup v2 io.bfq.weight, v1 blkio.bfq.weight): 1..1000,
# default 100.
BFQ_WEIGHT_MIN = 1
BFQ_WEIGHT_DEFAULT = 100
BFQ_WEIGHT_MAX = 1000


def bfq_weight(io_weight: int) -> int:
    """A weight on the cgroup v2 io.weight scale on BFQ's scale: default to
    default, each side of it stretched linearly to the range's end (as
    systemd does for io.bfq.weight)."""
    if io_weight <= IO_WEIGHT_DEFAULT:
        below = (IO_WEIGHT_DEFAULT - io_weight) * (BFQ_WEIGHT_DEFAULT - BFQ_WEIGHT_MIN)
        return BFQ_WEIGHT_DEFAULT - below // (IO_WEIGHT_DEFAULT - IO_WEIGHT_MIN)
    above = (io_weight - IO_WEIGHT_DEFAULT) * (BFQ_WEIGHT_MAX - BFQ_WEIGHT_DEFAULT)
    return BFQ_WEIGHT_DEFAULT + above // (IO_WEIGHT_MAX - IO_WEIGHT_DEFAULT)
