"""cgroup drivers (v1, v2) behind one interface, chosen by what the host has.

`choose_driver()` is the only function the supervisor calls:

* a pure v2 host (cgroup.controllers at the root) -> v2 at the root;
* a v1 or hybrid host whose v1 controllers cover the Plan's v1 files -> v1;
* a hybrid host whose unified hierarchy has the controllers -> v2 there;
* otherwise the policy cannot be applied: ApplyError naming the controller.
"""

from __future__ import annotations

import os

from enforcer.apply.cgroups.base import CgroupDriver, CgroupEvents, cgroup_parent
from enforcer.apply.cgroups.v1 import CgroupV1, v1_files
from enforcer.apply.cgroups.v2 import CgroupV2, controllers_for, v2_files
from enforcer.errors import ApplyError

TYPE_CHECKING = False  # the Plan module loads after the fork (see supervise.py)
if TYPE_CHECKING:
    from enforcer.plan import CgroupPlan

__all__ = ["CgroupDriver", "CgroupEvents", "CgroupV1", "CgroupV2", "choose_driver",
           "host_driver", "same_hierarchy", "v1_files", "v2_files"]

# The v1 controllers v1_files writes limits for.
V1_CONTROLLERS = ("memory", "pids", "cpu", "blkio")


def _v2_has(root: str, files: dict[str, tuple[str, ...]]) -> bool:
    try:
        with open(f"{root}/cgroup.controllers") as f:
            have = set(f.read().split())
    except OSError:
        return False
    return set(controllers_for(files)) <= have


def choose_driver(plan: CgroupPlan, workload_id: str, *, root: str = "/sys/fs/cgroup",
                  parent: str | None = None) -> CgroupDriver:
    parent = parent or cgroup_parent()
    v1, v2 = v1_files(plan), v2_files(plan)
    if os.path.exists(f"{root}/cgroup.controllers"):
        return CgroupV2(v2, workload_id, root=root, parent=parent)
    if v1 and all(os.path.exists(f"{root}/{c}/cgroup.procs") for c in v1):
        return CgroupV1(v1, workload_id, root=root, parent=parent)
    unified = f"{root}/unified"
    if v2 and _v2_has(unified, v2):
        return CgroupV2(v2, workload_id, root=unified, parent=parent)
    missing = [c for c in v1 if not os.path.exists(f"{root}/{c}/cgroup.procs")]
    raise ApplyError("cgroup", root, 2,
                     f"no cgroup hierarchy here offers the controller(s) the policy limits "
                     f"({', '.join(missing or controllers_for(v2))})")


def host_driver(workload_id: str, *, root: str = "/sys/fs/cgroup",
                parent: str | None = None) -> CgroupDriver | None:
    """A driver for this host before the Plan is known (no files yet).

    The supervisor creates the workload cgroup while the Plan is still
    being loaded and takes the Plan's files later (`adopt`): a cgroup v1
    move costs an RCU grace period that way spent in parallel. None when
    the host has no usable hierarchy.
    """
    parent = parent or cgroup_parent()
    if os.path.exists(f"{root}/cgroup.controllers"):
        return CgroupV2({}, workload_id, root=root, parent=parent)
    ctrls = [c for c in V1_CONTROLLERS if os.path.exists(f"{root}/{c}/cgroup.procs")]
    if ctrls:
        return CgroupV1({c: {} for c in ctrls}, workload_id, root=root, parent=parent)
    return None


def same_hierarchy(a: CgroupDriver, b: CgroupDriver) -> bool:
    """Whether b's files can be adopted by the already created a."""
    return type(a) is type(b) and getattr(a, "root", None) == getattr(b, "root", None)
