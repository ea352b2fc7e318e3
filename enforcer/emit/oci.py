"""Policy -> OCI runtime spec (config.json) fragments.

`oci_seccomp(policy)` is the `linux.seccomp` object (built by
enforcer/compile/oci_seccomp.py, which the compiler also uses for
Plan.seccomp.oci, so the shim never compiles anything at start time).
`oci_patch(policy, plan)` is a partial config.json to deep-merge into a
bundle's config: capabilities, read-only and masked paths, tmpfs mounts,
resources (the Plan's, through emit/oci_resources.py, which the shim uses
too), rlimits, no_new_privileges, user and namespaces.
"""

from __future__ import annotations

import os
from typing import Any

from enforcer.compile.oci_seccomp import oci_seccomp_object
from enforcer.emit.common import (
    DOCKER_DEFAULT_CAPS,
    CapSets,
    Unexpressed,
    absolute_caps,
    audit_stripped,
    landlock_unexpressed,
    cap_name,
    cap_number,
    caps_of_mask,
    env_set_entries,
    report_container_env_and_user,
    runs_as_non_root,
)
from enforcer.emit.oci_resources import oci_resources
from enforcer.kernel.namespaces import OCI_TYPES
from enforcer.plan import CgroupPlan, IoDevicePlan, Plan
from enforcer.policy.model import Policy, ResourcePolicy

# RLIM_INFINITY as the OCI spec's uint64.
RLIM_INFINITY = (1 << 64) - 1


# -- seccomp (built by enforcer/compile/oci_seccomp.py) ----------------------


def oci_seccomp(policy: Policy, machine: str | None = None,
                with_flags: bool = False) -> dict[str, Any]:
    """The OCI `linux.seccomp` object for `policy` (see oci_seccomp_checked).

    `with_flags` adds `flags: [SECCOMP_FILTER_FLAG_LOG]` when the policy
    logs denials; runc < 1.2 refuses any flags, so it is off by default.
    """
    return oci_seccomp_object(policy, Unexpressed("oci"), machine, with_flags)


def oci_seccomp_checked(policy: Policy, machine: str | None = None, target: str = "oci",
                        with_flags: bool = False) -> tuple[dict[str, Any], list[str]]:
    """`linux.seccomp` plus the lines saying what it cannot express."""
    unexpressed = Unexpressed(target)
    return oci_seccomp_object(policy, unexpressed, machine, with_flags), unexpressed.lines


# -- the rest of config.json ------------------------------------------------


def capability_sets(policy: Policy, plan: Plan | None, unexpressed: Unexpressed,
                    parent: tuple[str, ...] = DOCKER_DEFAULT_CAPS) -> CapSets:
    """Absolute capability sets for targets that only take absolute sets.

    A relative policy (drop/add) is resolved against `parent` (the container
    runtime's default set) and said so, since OCI has no relative form.
    """
    caps = policy.capabilities
    if plan is not None and plan.capabilities is not None and not plan.capabilities.relative:
        c = plan.capabilities
        return CapSets(*(frozenset(caps_of_mask(m)) for m in
                         (c.bounding, c.effective, c.permitted, c.inheritable, c.ambient)))
    if caps.keep is None and (caps.drop or caps.add):
        unexpressed.add(
            "capabilities drop/add relative to the parent's sets",
            "resolved against the container default set "
            f"({','.join(parent)}) into absolute sets")
    return absolute_caps(caps, frozenset(cap_number(n) for n in parent),
                         runs_as_non_root(policy))


def _cap_list(caps: frozenset[int]) -> list[str]:
    return [cap_name(c) for c in sorted(caps)]


def _tmpfs_options(mode: int, size: int | None, options: tuple[str, ...]) -> list[str]:
    opts = list(options)
    opts.append(f"mode={mode:o}")
    if size is not None:
        opts.append(f"size={size}")
    return opts


def device_numbers(device: str) -> tuple[int, int] | None:
    """'8:0' -> (8, 0); '/dev/sda' -> its major/minor if it exists here."""
    if ":" in device:
        major, _, minor = device.partition(":")
        if major.isdigit() and minor.isdigit():
            return int(major), int(minor)
        return None
    try:
        st = os.stat(device)
    except OSError:
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _resources(policy: Policy, plan: Plan | None, unexpressed: Unexpressed) -> dict[str, Any]:
    """`linux.resources`: the Plan's limits through oci_resources, the one
    Plan -> OCI conversion (the shim uses it too)."""
    r = policy.resources
    if r.memory_swap_max is not None and r.memory_max is None:
        unexpressed.add("resources.memory.swap without memory.max",
                        "OCI's swap is memory+swap; no swap limit emitted")
    cgroup = plan.cgroup if plan is not None else _cgroup_of(r, unexpressed)
    return oci_resources(cgroup)


def _cgroup_of(r: ResourcePolicy, unexpressed: Unexpressed) -> CgroupPlan:
    """The limits of a policy exported without its Plan, as the compiler
    would store them; a device that is no MAJOR:MINOR here is reported."""
    devices = []
    for dev in r.io_devices:
        numbers = device_numbers(dev.device)
        if numbers is None:
            unexpressed.add(f"io limit for device {dev.device}",
                            "it is not MAJOR:MINOR and does not exist here; no limit emitted")
            continue
        devices.append(IoDevicePlan(f"{numbers[0]}:{numbers[1]}", dev.read_bps, dev.write_bps,
                                    dev.read_iops, dev.write_iops))
    quota = r.cpu_quota_us
    return CgroupPlan(memory_max=r.memory_max, memory_swap_max=r.memory_swap_max,
                      pids_max=r.pids_max, cpu_quota_us=quota,
                      cpu_period_us=r.cpu_period_us if quota is not None else None,
                      io_weight=r.io_weight, io_devices=tuple(devices))


def _rlimit_value(v: int) -> int:
    return RLIM_INFINITY if v < 0 else v


def _user(policy: Policy, plan: Plan | None, unexpressed: Unexpressed) -> dict[str, Any] | None:
    """process.user: numeric ids, from the Plan (which resolved names) if given."""
    if plan is not None and plan.user is not None:
        uid, gid, groups = plan.user.uid, plan.user.gid, plan.user.groups
    elif policy.user is None:
        return None
    else:
        u = policy.user
        if u.uid is None or u.gid is None:
            unexpressed.add(f"user {u.user_name or u.uid}:{u.group_name or u.gid} by name",
                            "OCI needs numeric ids; compile the policy first (pass a Plan)")
            return None
        uid, gid, groups = u.uid, u.gid, u.groups
    out: dict[str, Any] = {"uid": uid, "gid": gid}
    if groups:
        out["additionalGids"] = list(groups)
    return out


def oci_patch(policy: Policy, plan: Plan | None = None, machine: str | None = None,
              with_flags: bool = False) -> tuple[dict[str, Any], list[str]]:
    """A partial config.json for `policy`, and what OCI cannot express.

    Merge rule for consumers: objects merge key by key, lists replace,
    except `mounts` (append; replace an entry with the same destination),
    `linux.namespaces` (add a type that is missing; keep an existing
    entry and its path) and `process.env` (a NAME=VALUE replaces the
    bundle's entry of that name, others are appended).
    """
    un = Unexpressed("oci")
    policy = audit_stripped(policy, un)
    landlock_unexpressed(policy, un)
    fs = policy.filesystem
    process: dict[str, Any] = {"noNewPrivileges": policy.no_new_privileges}
    caps = policy.capabilities
    if caps.keep is not None or caps.drop or caps.add:
        # A policy silent on capabilities leaves the bundle's sets alone.
        sets = capability_sets(policy, plan, un)
        process["capabilities"] = {
            "bounding": _cap_list(sets.bounding),
            "effective": _cap_list(sets.effective),
            "permitted": _cap_list(sets.permitted),
            "inheritable": _cap_list(sets.inheritable),
            "ambient": _cap_list(sets.ambient),
        }
    if policy.rlimits:
        process["rlimits"] = [
            {"type": f"RLIMIT_{r.resource.upper()}", "soft": _rlimit_value(r.soft),
             "hard": _rlimit_value(r.hard)} for r in policy.rlimits]
    user = _user(policy, plan, un)
    if user is not None:
        process["user"] = user
    report_container_env_and_user(policy, un)
    if policy.env.set:
        process["env"] = [f"{k}={v}" for k, v in env_set_entries(policy)]

    linux: dict[str, Any] = {}
    seccomp = oci_seccomp_object(policy, un, machine, with_flags)
    linux["seccomp"] = seccomp
    if fs.read_only_paths:
        linux["readonlyPaths"] = list(fs.read_only_paths)
    masked = list(fs.masked_paths)
    for path in fs.hidden_paths:
        un.add(f"hidden path {path} (inaccessible, mode 000)",
               "emitted as a masked path: empty and read-only, but readable")
        if path not in masked:
            masked.append(path)
    if masked:
        linux["maskedPaths"] = masked
    resources = _resources(policy, plan, un)
    if resources:
        linux["resources"] = resources
    if policy.namespaces:
        linux["namespaces"] = [{"type": OCI_TYPES[ns]} for ns in policy.namespaces]
        if "user" in policy.namespaces:
            un.add("a user namespace without id mappings",
                   "add linux.uidMappings/gidMappings to the bundle yourself")

    out: dict[str, Any] = {"process": process, "linux": linux}
    root: dict[str, Any] = {}
    if fs.read_only_root:
        root["readonly"] = True
    if fs.rootfs:
        root["path"] = fs.rootfs
    if root:
        out["root"] = root
    for path in fs.writable_paths:
        un.add(f"writable path {path} under a read-only root",
               "OCI can only make it writable with a bind mount from the host; "
               "it stays read-only")
    mounts = [{"destination": t.path, "type": "tmpfs", "source": "tmpfs",
               "options": _tmpfs_options(t.mode, t.size, t.options)} for t in fs.tmpfs]
    # Recursive binds, as the policy's are. Runtimes mount in list order:
    # shallow paths first, so a bind target inside a tmpfs stays visible.
    mounts += [{"destination": b.target, "type": "bind", "source": b.source,
                "options": ["rbind", "ro" if b.read_only else "rw"]} for b in fs.bind]
    mounts.sort(key=lambda m: str(m["destination"]).rstrip("/").count("/"))
    if mounts:
        out["mounts"] = mounts
    return out, un.lines


def merge_patch(config: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply an oci_patch() result to a config.json dict (returns a new dict).

    Objects merge key by key; lists replace, except `mounts` (an entry with
    the same destination is replaced, others appended),
    `linux.namespaces` (missing types are added, existing ones kept) and
    `process.env` (an entry replaces the one of the same name, others are
    appended).
    """
    merged: dict[str, Any] = _merge(config, patch, ())
    return merged


def _merge(base: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v, path + (k,)) if k in base else v
        return out
    if path == ("mounts",) and isinstance(base, list):
        dests = {m["destination"] for m in patch}
        return [m for m in base if m.get("destination") not in dests] + list(patch)
    if path == ("process", "env") and isinstance(base, list):
        names = {e.split("=", 1)[0] for e in patch}
        return [e for e in base if str(e).split("=", 1)[0] not in names] + list(patch)
    if path == ("linux", "namespaces") and isinstance(base, list):
        have = {n.get("type") for n in base}
        return list(base) + [n for n in patch if n["type"] not in have]
    return patch


__all__ = ["oci_seccomp", "oci_seccomp_checked", "oci_patch", "merge_patch"]
