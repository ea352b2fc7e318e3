"""The shim's view of a Plan: the parts that become an OCI config change.

`patch_from_plan(plan)` turns a compiled Plan into a plain dict (the
"patch") that `merge.merge_patch` applies to a config.json. It imports
enforcer.plan and so is off the hot path: the shim caches each patch
(see cache.py) and on the next start reads it back with fastjson.

Anything in the Plan that the shim cannot express in an OCI config makes
`patch_from_plan` raise ShimError: a container must not start with part
of its policy silently missing (fail closed).

Patch format (PATCH_FORMAT 1):
  policy, policy_hash, mode, plan_digest
  seccomp            OCI linux.seccomp object, or None (keep the config's)
  caps               {"relative": bool, "drop": int, "masks": {set: int}} or None
  root_readonly      bool
  readonly_paths, masked_paths, writable_paths: [path]
  tmpfs              [{"path", "size", "mode", "options"}]
  limits             {"memory", "swap", "pids", "cpu_quota", "cpu_period",
                      "blkio_weight": int|None, "throttle": {kind: {"MAJ:MIN": rate}}}
  rlimits            [[RESOURCE, soft, hard]]   (-1 = unlimited)
  user               {"uid", "gid", "groups"} or None
  no_new_privileges  bool
  namespaces         [OCI namespace type]
  landlock           the Landlock ruleset for the helper (shim/landlock.py), or None
  notes              [str]  what the shim left to the runtime, for docs/debug
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from enforcer.shim.errors import ShimError

if TYPE_CHECKING:
    from enforcer.plan import CgroupPlan, Plan

PATCH_FORMAT = 1

# Plan namespace name -> OCI namespace type.
OCI_NAMESPACE = {"mount": "mount", "pid": "pid", "ipc": "ipc", "uts": "uts",
                 "net": "network", "user": "user", "cgroup": "cgroup"}

# v1 blkio file / v2 io.max key -> OCI linux.resources.blockIO list name.
_THROTTLE_V1 = {
    "blkio.throttle.read_bps_device": "throttleReadBpsDevice",
    "blkio.throttle.write_bps_device": "throttleWriteBpsDevice",
    "blkio.throttle.read_iops_device": "throttleReadIOPSDevice",
    "blkio.throttle.write_iops_device": "throttleWriteIOPSDevice",
}
_THROTTLE_V2 = {"rbps": "throttleReadBpsDevice", "wbps": "throttleWriteBpsDevice",
                "riops": "throttleReadIOPSDevice", "wiops": "throttleWriteIOPSDevice"}


def _limit(value: str | None, what: str) -> int | None:
    """A cgroup file value as a number; "max"/"-1"/absent = no limit."""
    if value is None:
        return None
    value = value.strip()
    if value in ("max", "-1", ""):
        return None
    try:
        n = int(value)
    except ValueError:
        raise ShimError(f"plan: cgroup {what}: {value!r} is not a number") from None
    return n if n >= 0 else None


def _limits_from_cgroup(cg: "CgroupPlan") -> dict[str, Any]:
    """Read the limits the shim can express in OCI from the Plan's cgroup files.

    The v2 files are preferred; v1 is the fallback. A file the shim does
    not know is an error, not a skip.
    """
    v1 = {f"{ctrl}/{name}": value for ctrl, files in cg.v1.items() for name, value in files.items()}
    v2 = dict(cg.v2)
    limits: dict[str, Any] = {"memory": None, "swap": None, "pids": None, "cpu_quota": None,
                              "cpu_period": None, "blkio_weight": None, "throttle": {}}
    known_v1 = {"memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes",
                "pids/pids.max", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us",
                "blkio/blkio.weight"} | {f"blkio/{f}" for f in _THROTTLE_V1}
    known_v2 = {"memory.max", "memory.swap.max", "pids.max", "cpu.max", "io.weight", "io.max"}
    for key in sorted(set(v1) - known_v1):
        raise ShimError(f"plan: cgroup v1 setting {key} cannot be expressed in an OCI config")
    for key in sorted(set(v2) - known_v2):
        raise ShimError(f"plan: cgroup v2 setting {key} cannot be expressed in an OCI config")

    memory = cg.memory_max
    if memory is None:
        memory = _limit(v2.get("memory.max"), "memory.max")
    if memory is None:
        memory = _limit(v1.get("memory/memory.limit_in_bytes"), "memory.limit_in_bytes")
    limits["memory"] = memory
    swap = _limit(v2.get("memory.swap.max"), "memory.swap.max")
    if swap is None:
        total = _limit(v1.get("memory/memory.memsw.limit_in_bytes"), "memory.memsw.limit_in_bytes")
        if total is not None and memory is not None:
            swap = max(total - memory, 0)
    limits["swap"] = swap  # swap only, on top of memory
    pids = cg.pids_max
    if pids is None:
        pids = _limit(v2.get("pids.max") or v1.get("pids/pids.max"), "pids.max")
    limits["pids"] = pids
    if "cpu.max" in v2:
        parts = v2["cpu.max"].split()
        quota = _limit(parts[0], "cpu.max") if parts else None
        period = _limit(parts[1], "cpu.max period") if len(parts) > 1 else 100_000
    else:
        quota = _limit(v1.get("cpu/cpu.cfs_quota_us"), "cpu.cfs_quota_us")
        period = _limit(v1.get("cpu/cpu.cfs_period_us"), "cpu.cfs_period_us") or 100_000
    if quota is not None:
        limits["cpu_quota"], limits["cpu_period"] = quota, period
    weight = _limit(v1.get("blkio/blkio.weight"), "blkio.weight")
    if weight is None and "io.weight" in v2:
        w2 = _limit(v2["io.weight"].split()[-1], "io.weight")
        if w2 is not None:
            # Inverse of runc's blkio (10..1000) -> io.weight (1..10000) mapping.
            weight = max(10, min(1000, 10 + (w2 - 1) * 990 // 9999))
    limits["blkio_weight"] = weight
    throttle: dict[str, dict[str, int]] = {}
    for fname, oci_name in _THROTTLE_V1.items():
        for line in v1.get(f"blkio/{fname}", "").splitlines():
            dev, _, rate = line.strip().partition(" ")
            if dev:
                rate_n = _limit(rate, fname)
                if rate_n is not None:
                    throttle.setdefault(oci_name, {})[dev] = rate_n
    if not throttle:
        for line in v2.get("io.max", "").splitlines():
            fields = line.split()
            if not fields:
                continue
            for kv in fields[1:]:
                k, _, val = kv.partition("=")
                if k not in _THROTTLE_V2:
                    raise ShimError(f"plan: cgroup io.max key {k!r} cannot be expressed in OCI")
                rate_n = _limit(val, "io.max")
                if rate_n is not None:
                    throttle.setdefault(_THROTTLE_V2[k], {})[fields[0]] = rate_n
    limits["throttle"] = throttle
    return limits


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
        elif op.kind in ("make_private", "bind", "pivot_root", "proc", "sysfs", "devices"):
            # (`devices`: a container's /dev is the runtime's own minimal one,
            # runc's default device set, the same pseudo-devices.)
            # A container already has its own root and private propagation
            # (runc's rootfsPropagation); the policy's new-root steps are
            # what the runtime does anyway.
            notes.append(f"mount {op.kind} {op.path}: provided by the container runtime")
        else:  # pragma: no cover - plan.py refuses unknown kinds
            raise ShimError(f"plan: mount operation {op.kind!r} has no OCI form")
    namespaces = []
    for ns in plan.namespaces:
        namespaces.append(OCI_NAMESPACE[ns])
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
        "limits": _limits_from_cgroup(plan.cgroup),
        "rlimits": [[r.resource.upper().removeprefix("RLIMIT_"), r.soft, r.hard]
                    for r in plan.rlimits],
        "user": ({"uid": plan.user.uid, "gid": plan.user.gid, "groups": list(plan.user.groups)}
                 if plan.user is not None else None),
        "no_new_privileges": plan.no_new_privileges,
        "namespaces": namespaces,
        "landlock": landlock_patch(plan),
        "notes": notes,
    }
