"""Merge a policy patch into an OCI config.json: the policy only tightens.

One function per field group, each documented with its rule; the rules are
written up for users in docs/shim.md and each has a unit test in
tests/unit/test_shim_merge.py. `merge_patch` mutates and returns `config`.

Rules, in short:
  seccomp          the intersection of the config's profile and the
                   policy's (seccomp_merge.py): allowed only if both allow
  capabilities     each set intersected with the policy's set (ambient: with
                   permitted & inheritable when the policy names no user)
  sysctl           net.ipv4.ip_unprivileged_port_start dropped when the
                   policy removes CAP_NET_BIND_SERVICE
  readonlyPaths    the policy's paths added
  maskedPaths      the policy's masked and hidden paths added
  root.readonly    forced true when the policy asks
  mounts           policy tmpfs mounts added; one at the same destination
                   is replaced in place (a tmpfs exposes nothing of the host)
  writable paths   under a read-only root: bound read-write from the rootfs
  resources        the smaller limit wins (memory, swap, pids, cpu
                   quota/period ratio, blkio weight and throttles)
  rlimits          the lower soft and hard value, per resource
  noNewPrivileges  forced true when the policy says so
  user             the policy's user replaces root (uid 0) only
  namespaces       the policy's namespaces added (user: refused, see below)
  landlock         the process starts through the Landlock helper
                   (enforcer/shim/landlock.py)
"""

from __future__ import annotations

import os
# `typing` costs ~9 ms to import here; annotations are strings (PEP 563),
# so it is only needed by type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from enforcer.kernel.cgroup import CPU_PERIOD_DEFAULT_US
from enforcer.kernel.capabilities import CAP_LAST_CAP, CAPABILITIES
from enforcer.shim.errors import ShimError

if TYPE_CHECKING:
    from enforcer.shim.staging import Stager

UNLIMITED = (1 << 64) - 1  # RLIM_INFINITY as OCI writes it (uint64)
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key] as a dict, created if absent; a wrong type is an error."""
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    if not isinstance(value, dict):
        raise ShimError(f"config.json: {key!r} is not an object")
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        value = parent[key] = []
    if not isinstance(value, list):
        raise ShimError(f"config.json: {key!r} is not a list")
    return value


# -- seccomp -------------------------------------------------------------


def merge_seccomp(config: dict[str, Any], patch: dict[str, Any],
                  cache_dir: str | None = None) -> list[str]:
    """The filter handed to runc is the intersection of the container's and
    the policy's: a call runs only if both allow it (seccomp_merge.py).

    runc loads exactly one filter from config.json, so the two cannot be
    stacked there; this writes the one profile that decides as the stacked
    pair would. Without a profile in the config the policy's is used as it
    is; a policy without a syscall section keeps the container's. Returns
    the notes on where the intersection had to be stricter than stacking.
    """
    policy = patch["seccomp"]
    if policy is None:
        return []
    linux = _obj(config, "linux")
    current = linux.get("seccomp")
    if current is None:
        linux["seccomp"] = policy
        return []
    from enforcer.shim.seccomp_merge import intersect_cached

    linux["seccomp"], notes = intersect_cached(current, policy, str(patch["plan_digest"]),
                                               cache_dir)
    return notes


# -- capabilities ----------------------------------------------------------


def merge_capabilities(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """Each capability set becomes the intersection of the config's and the policy's.

    A relative policy (drop/add) removes its `drop` set from every set; its
    `add` is never applied, because the shim only removes privilege. Names
    the shim does not know are removed too (they cannot be in the policy).

    Ambient: a policy that names a user says which capabilities that user
    holds as ambient, and the container's ambient set is intersected with
    that. A policy that names no user leaves the container's user (and so
    whether it needs ambient capabilities: `podman run --user 1000
    --cap-add NET_BIND_SERVICE`) to the runtime: its ambient set is then
    intersected with what the policy lets the process hold at all, its
    permitted and inheritable sets (the kernel's own bound for ambient).
    """
    caps = patch["caps"]
    if caps is None:
        return
    process = _obj(config, "process")
    current = process.get("capabilities")
    if current is None:
        return  # no capabilities at all: nothing to intersect
    if not isinstance(current, dict):
        raise ShimError("config.json: process.capabilities is not an object")
    for set_name in CAP_SETS:
        names = current.get(set_name)
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ShimError(f"config.json: process.capabilities.{set_name} is not a list of names")
        masks = caps["masks"]
        if caps["relative"]:
            allowed = ~caps["drop"] & ((1 << (CAP_LAST_CAP + 1)) - 1)
        elif set_name == "ambient" and patch["user"] is None:
            allowed = masks["permitted"] & masks["inheritable"]
        else:
            allowed = masks[set_name]
        kept = []
        for name in names:
            number = CAPABILITIES.get(name.upper())
            if number is not None and allowed >> number & 1 and name not in kept:
                kept.append(name)
        current[set_name] = kept


CAP_NET_BIND_SERVICE = 10
UNPRIVILEGED_PORT_SYSCTL = "net.ipv4.ip_unprivileged_port_start"


def merge_sysctl(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """Drop a sysctl that would hand back what the capability rule took away.

    Docker sets net.ipv4.ip_unprivileged_port_start=0 in every container with
    its own network namespace, so binding port 80 needs no capability there.
    When the policy removes CAP_NET_BIND_SERVICE, the sysctl is removed too
    and the namespace keeps the kernel's default (1024).
    """
    caps = patch["caps"]
    if caps is None:
        return
    if caps["relative"]:
        removed = bool(caps["drop"] >> CAP_NET_BIND_SERVICE & 1)
    else:
        removed = not caps["masks"]["effective"] >> CAP_NET_BIND_SERVICE & 1
    sysctl = (config.get("linux") or {}).get("sysctl")
    if removed and isinstance(sysctl, dict):
        sysctl.pop(UNPRIVILEGED_PORT_SYSCTL, None)


# -- filesystem ------------------------------------------------------------


def _add_paths(linux: dict[str, Any], key: str, paths: list[str]) -> None:
    existing = _list(linux, key)
    for path in paths:
        if path not in existing:
            existing.append(path)


def merge_paths(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """readonlyPaths and maskedPaths: the policy's are added, none removed."""
    if patch["readonly_paths"] or patch["masked_paths"]:
        linux = _obj(config, "linux")
        _add_paths(linux, "readonlyPaths", patch["readonly_paths"])
        _add_paths(linux, "maskedPaths", patch["masked_paths"])


def merge_root(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """root.readonly is forced true when the policy asks; never set false."""
    if patch["root_readonly"]:
        _obj(config, "root")["readonly"] = True


def _tmpfs_mount(spec: dict[str, Any]) -> dict[str, Any]:
    options = [o for o in spec["options"] if not o.startswith(("size=", "mode="))]
    if spec["mode"] is not None:
        options.append(f"mode={spec['mode']:o}")
    if spec["size"] is not None:
        options.append(f"size={spec['size']}")
    return {"destination": spec["path"], "type": "tmpfs", "source": "tmpfs", "options": options}


def _norm(path: str) -> str:
    return os.path.normpath(path) if path else path


# The pseudo-devices a private /dev keeps (as systemd's PrivateDevices= and
# `enforcer run` do): (type, major, minor), minor None for all of a major.
PSEUDO_DEVICES = {("c", 1, 3), ("c", 1, 5), ("c", 1, 7), ("c", 1, 8), ("c", 1, 9),
                  ("c", 5, 0), ("c", 5, 1), ("c", 5, 2), ("c", 136, None)}


def _pseudo(kind: Any, major: Any, minor: Any) -> bool:
    return (kind, major, minor) in PSEUDO_DEVICES or (kind, major, None) in PSEUDO_DEVICES


def merge_devices(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """`filesystem.private_devices`: the container gets no host device beyond
    the pseudo-devices -- neither a node in `linux.devices` (`docker run
    --device`) nor a cgroup rule letting it read or write one it makes
    itself. Rules that only deny, or only allow mknod, stay."""
    if not patch.get("private_devices"):
        return
    linux = config.setdefault("linux", {})
    devices = linux.get("devices")
    if isinstance(devices, list):
        linux["devices"] = [d for d in devices if isinstance(d, dict) and _pseudo(
            "b" if d.get("type") == "b" else "c", d.get("major"), d.get("minor"))]
    resources = linux.get("resources")
    rules = resources.get("devices") if isinstance(resources, dict) else None
    if isinstance(rules, list):
        kept = []
        for rule in rules:
            if not isinstance(rule, dict):
                continue
            access = str(rule.get("access") or "rwm")
            if (not rule.get("allow") or set(access) <= {"m"}
                    or _pseudo(rule.get("type"), rule.get("major"), rule.get("minor"))):
                kept.append(rule)
        # First of all, deny everything: what follows may allow the rest.
        resources["devices"] = [{"allow": False, "access": "rwm"}] + kept


def merge_tmpfs(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """The policy's tmpfs mounts are added.

    A mount the config already has at the same destination is replaced in
    place (keeping its position, so mounts beneath it still come after it):
    a fresh tmpfs shows nothing of the host or the image, so this never
    loosens; the policy author asked for exactly this mount there.
    """
    if not patch["tmpfs"]:
        return
    mounts = _list(config, "mounts")
    for spec in patch["tmpfs"]:
        new = _tmpfs_mount(spec)
        for i, m in enumerate(mounts):
            if isinstance(m, dict) and _norm(m.get("destination", "")) == _norm(spec["path"]):
                mounts[i] = new
                break
        else:
            mounts.append(new)


def merge_writable(config: dict[str, Any], patch: dict[str, Any], bundle: str,
                   stager: Stager | None) -> None:
    """Writable exceptions under a read-only root become read-write binds.

    Only when the root ends up read-only; a path that already has a mount
    (a volume, a tmpfs) is left alone. The directory is found inside the
    container's root (symlinks and `..` cannot leave it) and handed to runc
    as a staging mount the image cannot redirect: see staging.py for why a
    path through the rootfs must never be a bind source.
    """
    root = config.get("root") or {}
    if not patch["writable_paths"] or not root.get("readonly"):
        return
    rootfs = root.get("path")
    if not isinstance(rootfs, str) or not rootfs:
        raise ShimError("config.json: root.path is missing")
    rootfs = os.path.join(bundle, rootfs)
    if stager is None:  # pragma: no cover - every caller that merges writable paths passes one
        raise ShimError("internal error: writable paths need a staging area")
    mounts = _list(config, "mounts")
    taken = {_norm(m.get("destination", "")) for m in mounts if isinstance(m, dict)}
    for path in patch["writable_paths"]:
        if _norm(path) in taken:
            continue
        source = stager.stage(rootfs, path)
        mounts.append({"destination": path, "type": "bind", "source": source,
                       "options": ["rbind", "rw"]})


# -- resources ---------------------------------------------------------------


def _smaller(current: Any, policy: int | None) -> Any:
    """The smaller of two limits; None, 0 and negatives mean "no limit"."""
    if policy is None:
        return current
    if not isinstance(current, int) or isinstance(current, bool) or current <= 0:
        return policy
    return min(current, policy)


def merge_resources(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """Every limit becomes the smaller of the config's and the policy's.

    The policy's side is `patch["resources"]`, the OCI form emit/ made of
    the Plan's limits; nothing is converted here. Swap is compared as swap
    (the part on top of memory, the Plan's own number in
    `patch["limits"]`), so a lower memory limit does not quietly hand the
    difference to swap."""
    policy = patch["resources"]
    swap = patch["limits"]["swap"]
    if not policy and swap is None:
        return
    res = _obj(_obj(config, "linux"), "resources")
    if "memory" in policy or swap is not None:
        _merge_memory(_obj(res, "memory"), (policy.get("memory") or {}).get("limit"), swap)
    if "pids" in policy:
        pids = _obj(res, "pids")
        pids["limit"] = _smaller(pids.get("limit"), policy["pids"]["limit"])
    if "cpu" in policy:
        _merge_cpu(_obj(res, "cpu"), policy["cpu"]["quota"], policy["cpu"]["period"])
    if "blockIO" in policy:
        _merge_block_io(_obj(res, "blockIO"), policy["blockIO"])


def _merge_memory(memory: dict[str, Any], limit: int | None, swap: int | None) -> None:
    old_limit = memory.get("limit")
    old_total = memory.get("swap")
    new_limit = _smaller(old_limit, limit)
    # OCI's memory.swap is memory+swap; compare the swap parts.
    old_swap = None
    if isinstance(old_total, int) and old_total > 0:
        old_swap = old_total - old_limit if isinstance(old_limit, int) and old_limit > 0 \
            else None
    new_swap = old_swap if swap is None else \
        swap if old_swap is None or old_swap < 0 else min(old_swap, swap)
    if new_limit is not None:
        memory["limit"] = new_limit
    if isinstance(new_swap, int) and new_swap >= 0 and isinstance(new_limit, int) \
            and new_limit > 0:
        memory["swap"] = new_limit + new_swap
    elif isinstance(old_total, int) and old_total > 0 and isinstance(new_limit, int):
        memory["swap"] = max(old_total, new_limit)  # runc requires swap >= limit


def _merge_cpu(cpu: dict[str, Any], quota_limit: int, period_limit: int) -> None:
    """The smaller CPU share wins: the ratio decides, not the raw quota."""
    quota, period = cpu.get("quota"), cpu.get("period") or CPU_PERIOD_DEFAULT_US
    if not isinstance(quota, int) or quota <= 0 or quota_limit * period < quota * period_limit:
        cpu["quota"], cpu["period"] = quota_limit, period_limit


def _merge_block_io(blkio: dict[str, Any], policy: dict[str, Any]) -> None:
    if "weight" in policy:
        blkio["weight"] = _smaller(blkio.get("weight"), policy["weight"])
    for oci_name, wanted in sorted(policy.items()):
        if oci_name == "weight":
            continue
        entries = _list(blkio, oci_name)
        for want in wanted:
            for e in entries:
                if isinstance(e, dict) and (e.get("major"), e.get("minor")) == \
                        (want["major"], want["minor"]):
                    e["rate"] = _smaller(e.get("rate"), want["rate"])
                    break
            else:
                entries.append(dict(want))


def _as_rlim(value: Any) -> int:
    """An rlimit value as a comparable number; unlimited is the biggest."""
    if not isinstance(value, int) or value < 0 or value >= UNLIMITED:
        return UNLIMITED
    return value


def merge_rlimits(config: dict[str, Any], patch: dict[str, Any],
                  inherited: dict[str, tuple[int, int]]) -> None:
    """Per resource, the lower soft and the lower hard value.

    An rlimit the config does not set is inherited by the container from
    runc (and so from the shim); `inherited` holds those values, so the
    policy's value is compared with what would otherwise apply.
    """
    if not patch["rlimits"]:
        return
    rlimits = _list(_obj(config, "process"), "rlimits")
    for resource, soft, hard in patch["rlimits"]:
        oci_type = "RLIMIT_" + resource
        entry = next((r for r in rlimits if isinstance(r, dict) and r.get("type") == oci_type),
                     None)
        if entry is None:
            base_soft, base_hard = inherited.get(resource, (UNLIMITED, UNLIMITED))
            entry = {"type": oci_type, "soft": base_soft, "hard": base_hard}
            rlimits.append(entry)
        new_hard = min(_as_rlim(entry.get("hard")), _as_rlim(hard))
        new_soft = min(_as_rlim(entry.get("soft")), _as_rlim(soft), new_hard)
        entry["hard"], entry["soft"] = new_hard, new_soft


# /proc/self/limits row label per resource (RLIMIT_ name without the prefix).
_PROC_LIMITS_LABEL = {
    "CPU": "Max cpu time", "FSIZE": "Max file size", "DATA": "Max data size",
    "STACK": "Max stack size", "CORE": "Max core file size", "RSS": "Max resident set",
    "NPROC": "Max processes", "NOFILE": "Max open files", "MEMLOCK": "Max locked memory",
    "AS": "Max address space", "LOCKS": "Max file locks", "SIGPENDING": "Max pending signals",
    "MSGQUEUE": "Max msgqueue size", "NICE": "Max nice priority",
    "RTPRIO": "Max realtime priority", "RTTIME": "Max realtime timeout",
}


def _proc_limits(proc: str) -> dict[str, tuple[int, int]]:
    """A process's rlimits from /proc/PROC/limits (no `resource` .so to load)."""
    out: dict[str, tuple[int, int]] = {}
    with open(f"/proc/{proc}/limits") as f:
        text = f.read()
    for name, label in _PROC_LIMITS_LABEL.items():
        start = text.find(label)
        if start < 0:
            continue
        fields = text[start + len(label):text.find("\n", start)].split()
        if len(fields) >= 2:
            soft, hard = (UNLIMITED if v == "unlimited" else int(v) for v in fields[:2])
            out[name] = (soft, hard)
    return out


def inherited_rlimits(resources: list[str], proc: str = "self") -> dict[str, tuple[int, int]]:
    """The rlimits of the process runc starts from, which runc passes on to the
    container: the shim's own ("self"), or its client's pid under enforcer-shimd."""
    if not resources:
        return {}
    try:
        known = _proc_limits(proc)
    except (OSError, ValueError):
        known = {}
    out = {}
    for name in resources:
        if name in known:
            out[name] = known[name]
            continue
        import resource as resource_mod

        number = getattr(resource_mod, "RLIMIT_" + name, None)
        if number is None:
            raise ShimError(f"policy rlimit {name}: not known on this system")
        soft, hard = resource_mod.getrlimit(number) if proc == "self" \
            else resource_mod.prlimit(int(proc), number)
        out[name] = (_as_rlim(soft), _as_rlim(hard))
    return out


# -- process ---------------------------------------------------------------


def merge_no_new_privileges(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """noNewPrivileges is forced true when the policy says so; never cleared."""
    if patch["no_new_privileges"]:
        _obj(config, "process")["noNewPrivileges"] = True


def merge_user(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """The policy's user replaces root; a container already not root keeps its user.

    Switching one unprivileged user for another is not stricter, and the
    image's files belong to the image's user, so only uid 0 is replaced.
    """
    user = patch["user"]
    if user is None or user["uid"] == 0:
        return
    current = _obj(_obj(config, "process"), "user")
    if current.get("uid", 0) != 0:
        return
    current["uid"] = user["uid"]
    current["gid"] = user["gid"]
    current["additionalGids"] = list(user["groups"])


def merge_namespaces(config: dict[str, Any], patch: dict[str, Any]) -> None:
    """The policy's namespaces are added; none is removed.

    A user namespace is refused when the config has none: it needs uid/gid
    mappings that only the runtime (e.g. Docker's userns-remap) can choose.
    """
    if not patch["namespaces"]:
        return
    namespaces = _list(_obj(config, "linux"), "namespaces")
    have = {ns.get("type") for ns in namespaces if isinstance(ns, dict)}
    for ns_type in patch["namespaces"]:
        if ns_type in have:
            continue
        if ns_type == "user":
            raise ShimError("policy asks for a user namespace, which this container does not "
                            "have; the shim cannot choose uid mappings (enable them in the "
                            "runtime, e.g. Docker's userns-remap)")
        namespaces.append({"type": ns_type})
        have.add(ns_type)


def merge_process(process: dict[str, Any], patch: dict[str, Any],
                  proc: str = "self") -> dict[str, Any]:
    """The process-level rules, for a `runc exec --process` spec (same rules).

    `proc`: the process runc will be started from (see inherited_rlimits)."""
    wrapper = {"process": process}
    merge_capabilities(wrapper, patch)
    merge_rlimits(wrapper, patch, inherited_rlimits([r[0] for r in patch["rlimits"]], proc))
    merge_no_new_privileges(wrapper, patch)
    merge_user(wrapper, patch)
    if patch.get("landlock"):
        from enforcer.shim.landlock import wrap_process

        wrap_process(process, patch)
    return process


# -- all of it -----------------------------------------------------------------


def merge_patch(config: dict[str, Any], patch: dict[str, Any], bundle: str,
                inherited: dict[str, tuple[int, int]] | None = None,
                proc: str = "self", stager: Stager | None = None,
                cache_dir: str | None = None, notes: list[str] | None = None,
                landlock_helper: str | None = None) -> dict[str, Any]:
    """Apply every rule above to `config` (in place) and return it.

    What was applied is recorded in the registry (shim/record.py), not in
    the config: annotations are the caller's, and runc hands them to every
    hook as the container's state (docs/shim.md, "OCI conformance").

    `proc`: the process runc will be started from (see inherited_rlimits);
    `stager`: where writable paths get their bind sources (staging.py);
    `cache_dir`: the shim's cache (the seccomp intersection is kept there);
    `notes`: gets what the user should hear about (a stricter-than-stacked
    seccomp rule); `landlock_helper`: the host path of enforcer-landlock."""
    if inherited is None:
        inherited = inherited_rlimits([r[0] for r in patch["rlimits"]], proc)
    seccomp_notes = merge_seccomp(config, patch, cache_dir)
    if notes is not None:
        notes.extend(seccomp_notes)
    merge_capabilities(config, patch)
    merge_sysctl(config, patch)
    merge_root(config, patch)
    merge_paths(config, patch)
    merge_tmpfs(config, patch)
    merge_devices(config, patch)
    merge_writable(config, patch, bundle, stager)
    merge_resources(config, patch)
    merge_rlimits(config, patch, inherited)
    merge_no_new_privileges(config, patch)
    merge_user(config, patch)
    merge_namespaces(config, patch)
    if patch.get("landlock"):
        from enforcer.shim.landlock import merge_landlock

        merge_landlock(config, patch, landlock_helper)
    return config
