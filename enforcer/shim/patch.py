"""The shim's view of a Plan: the parts that become an OCI config change.

`patch_from_plan(plan)` turns a compiled Plan into a plain dict (the
"patch") that `merge.merge_patch` applies to a config.json. It imports
enforcer.plan and so is off the hot path: the shim caches each patch
(see cache.py) and on the next start reads it back with fastjson.

Anything in the Plan that the shim cannot express in an OCI config makes
`patch_from_plan` raise ShimError: a container must not start with part
of its policy silently missing (fail closed).

Patch format (PATCH_FORMAT 2):
  policy, policy_hash, mode, plan_digest
  seccomp            OCI linux.seccomp object, or None (keep the config's)
  caps               {"relative": bool, "drop": int, "masks": {set: int}} or None
  root_readonly      bool
  readonly_paths, masked_paths, writable_paths: [path]
  tmpfs              [{"path", "size", "mode", "options"}]
  resources          OCI linux.resources for the Plan's limits (emit/oci_resources.py,
                     the same conversion `enforcer export --format oci` uses)
  limits             the Plan's limits as numbers: {"memory", "swap" (on top of
                     memory), "pids", "cpu_quota", "cpu_period", "io_weight"
                     (cgroup v2 scale), "throttle": {OCI list: {"MAJ:MIN": rate}}}
  rlimits            [[RESOURCE, soft, hard]]   (-1 = unlimited)
  user               {"uid", "gid", "groups"} or None
  no_new_privileges  bool
  namespaces         [OCI namespace type]
  landlock           the Landlock ruleset for the helper (shim/landlock.py), or None
  notes              [str]  what the shim left to the runtime, for docs/debug
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from enforcer.emit.oci_resources import oci_resources, throttles
from enforcer.kernel.namespaces import OCI_TYPES
from enforcer.shim.errors import ShimError

if TYPE_CHECKING:
    from enforcer.plan import CgroupPlan, Plan

# 2: `resources` (OCI) and typed `limits` from a typed CgroupPlan.
PATCH_FORMAT = 2


def limits_of(cg: "CgroupPlan") -> dict[str, Any]:
    """The Plan's limits as numbers, for the merge's swap rule and for
    checking `runc update` (update.py): straight from the typed Plan, no
    unit changed (io_weight stays on the cgroup v2 scale)."""
    throttle: dict[str, dict[str, int]] = {}
    for dev in cg.io_devices:
        for key, entries in throttles(dev).items():
            throttle.setdefault(key, {})[dev.device] = entries[0]["rate"]
    return {"memory": cg.memory_max, "swap": cg.memory_swap_max, "pids": cg.pids_max,
            "cpu_quota": cg.cpu_quota_us, "cpu_period": cg.cpu_period_us,
            "io_weight": cg.io_weight, "throttle": throttle}


def patch_from_plan(plan: "Plan") -> dict[str, Any]:
    from enforcer.shim.landlock import landlock_patch

    notes: list[str] = []
    seccomp = None
    if plan.seccomp is not None:
        if not plan.seccomp.oci:
            raise ShimError(f"plan for policy {plan.policy_name!r} has no OCI form of its "
                            "seccomp filter; recompile it with this enforcer version")
        seccomp = plan.seccomp.oci
    caps = None
    if plan.capabilities is not None:
        c = plan.capabilities
        caps = {"relative": c.relative, "drop": c.drop,
                "masks": {"bounding": c.bounding, "effective": c.effective,
                          "permitted": c.permitted, "inheritable": c.inheritable,
                          "ambient": c.ambient}}
        if c.relative and c.add:
            notes.append("capabilities.add is not applied: the shim only removes capabilities")
    root_readonly = False
    readonly: list[str] = []
    masked: list[str] = []
    writable: list[str] = []
    tmpfs: list[dict[str, Any]] = []
    private_devices = False
    for op in plan.mounts:
        if op.kind == "readonly":
            if op.path == "/":
                root_readonly = True
            else:
                readonly.append(op.path)
        elif op.kind in ("mask", "hide"):
            # runc masks a file with /dev/null and a directory with an empty
            # read-only tmpfs: the contents are unreachable, as `hide` asks.
            masked.append(op.path)
        elif op.kind == "writable":
            writable.append(op.path)
        elif op.kind == "tmpfs":
            tmpfs.append({"path": op.path, "size": op.size, "mode": op.mode,
                          "options": list(op.options)})
        elif op.kind == "devices":
            # The container has a /dev of its own already; what is left to
            # do is keep host devices out of it (merge.merge_devices).
            private_devices = True
        elif op.kind == "bind" and op.source != op.path:
            # A policy's bind gives access (it restricts nothing): a host
            # path in a container is the runtime's volume configuration.
            notes.append(f"mount bind {op.source} -> {op.path}: not applied to containers "
                         "(use a volume)")
        elif op.kind in ("make_private", "bind", "pivot_root", "proc", "sysfs"):
            # A container already has its own root and private propagation
            # (runc's rootfsPropagation); the policy's new-root steps are
            # what the runtime does anyway.
            notes.append(f"mount {op.kind} {op.path}: provided by the container runtime")
        else:  # pragma: no cover - plan.py refuses unknown kinds
            raise ShimError(f"plan: mount operation {op.kind!r} has no OCI form")
    namespaces = []
    for ns in plan.namespaces:
        namespaces.append(OCI_TYPES[ns])
    return {
        "format": PATCH_FORMAT,
        "policy": plan.policy_name,
        "policy_hash": plan.policy_hash,
        "mode": plan.mode,
        "plan_digest": plan.digest,
        "seccomp": seccomp,
        "caps": caps,
        "root_readonly": root_readonly,
        "readonly_paths": readonly,
        "masked_paths": masked,
        "writable_paths": writable,
        "tmpfs": tmpfs,
        "private_devices": private_devices,
        "resources": oci_resources(plan.cgroup),
        "limits": limits_of(plan.cgroup),
        "rlimits": [[r.resource.upper().removeprefix("RLIMIT_"), r.soft, r.hard]
                    for r in plan.rlimits],
        "user": ({"uid": plan.user.uid, "gid": plan.user.gid, "groups": list(plan.user.groups)}
                 if plan.user is not None else None),
        "no_new_privileges": plan.no_new_privileges,
        "namespaces": namespaces,
        "landlock": landlock_patch(plan),
        "notes": notes,
    }
