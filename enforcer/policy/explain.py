"""The effective policy as rows of (field, value, origin), for `enforcer explain`.

Every row names the file:line its value came from, or "(built-in default)"
when no file in the `extends` chain set it.
"""

from __future__ import annotations

from typing import Any

from enforcer.errors import Location
from enforcer.kernel import capabilities as caps_mod
from enforcer.policy.model import DEFAULT_ENV_KEEP, ArgCondition, ArgOp, Policy

BUILTIN = "(built-in default)"


def where(loc: Location | None) -> str:
    """file:line:col, or what set the value when no file did."""
    if loc is None:
        return BUILTIN
    if loc.line == 0:  # e.g. `--mode audit` on the command line
        return loc.file
    return str(loc)


def _size(n: int | None) -> str:
    if n is None:
        return "max"
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def _rlim(n: int) -> str:
    return "unlimited" if n == -1 else str(n)


def describe_condition(c: ArgCondition) -> str:
    if c.op is ArgOp.MASKED_EQ:
        return f"arg{c.index} & 0x{c.mask or 0:x} == 0x{c.value:x}"
    sym = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[c.op.value]
    return f"arg{c.index} {sym} 0x{c.value:x}" if c.value > 9 else f"arg{c.index} {sym} {c.value}"


def field_rows(policy: Policy) -> list[tuple[str, str, str]]:
    o = policy.origins

    def row(key: str, value: Any, origin_key: str | None = None) -> tuple[str, str, str]:
        loc: Location | None = o.get(origin_key or key)
        return key, str(value), where(loc)

    s, fs, r = policy.syscalls, policy.filesystem, policy.resources
    rows = [
        row("name", policy.name),
        row("scope", policy.scope),
        row("mode", policy.mode.value),
        row("no_new_privileges", str(policy.no_new_privileges).lower()),
        row("syscalls.default", s.default_action),
        row("syscalls.unknown", s.unknown_action),
        row("syscalls.log_denials", str(s.log_denials).lower()),
        row("syscalls.architectures", ", ".join(s.architectures) or "native"),
    ]
    c = policy.capabilities
    if c.keep is not None:
        rows.append(row("capabilities.keep", ", ".join(caps_mod.names(c.keep)) or "(none: all dropped)",
                        "capabilities"))
        for n in sorted(c.keep):
            name = caps_mod.name_of(n)
            rows.append(row(f"capabilities.keep[{name}]", "kept", f"capabilities.{name}"))
        # What a non-root user holds after execve; root holds what it keeps.
        rows.append(row("capabilities.ambient", ", ".join(caps_mod.names(c.ambient)) or "(none)",
                        "capabilities.ambient"))
    else:
        rows.append(row("capabilities.drop", ", ".join(caps_mod.names(c.drop)) or "-", "capabilities"))
        rows.append(row("capabilities.add", ", ".join(caps_mod.names(c.add)) or "-", "capabilities"))
    rows.append(row("filesystem.read_only_root", str(fs.read_only_root).lower()))
    for key, paths in (("read_only_paths", fs.read_only_paths), ("writable_paths", fs.writable_paths),
                       ("masked_paths", fs.masked_paths), ("hidden_paths", fs.hidden_paths)):
        for p in paths:
            rows.append(row(f"filesystem.{key}[{p}]", p))
    for t in fs.tmpfs:
        rows.append(row(f"filesystem.tmpfs[{t.path}]",
                        f"size={_size(t.size) if t.size else 'unset'} mode={t.mode:o} {','.join(t.options)}"))
    for key, loc in policy.origins.items():
        if key.startswith("filesystem.tmpfs_remove["):
            rows.append(row(key, "inherited tmpfs removed"))
    for b in fs.bind:
        rows.append(row(f"filesystem.bind[{b.target}]",
                        f"{b.source} ({'read-only' if b.read_only else 'writable'})"))
    if fs.rootfs:
        rows.append(row("filesystem.rootfs", f"{fs.rootfs} (with its own /dev, /proc, "
                                             "read-only /sys)"))
    if fs.private_devices:
        rows.append(row("filesystem.private_devices", "true"))
    rows += [
        row("resources.memory.max", _size(r.memory_max)),
        row("resources.memory.swap", _size(r.memory_swap_max), "resources.memory.swap"),
        row("resources.pids.max", r.pids_max if r.pids_max is not None else "max"),
        row("resources.cpu.quota", f"{r.cpu_quota_us}us per {r.cpu_period_us}us"
            if r.cpu_quota_us else "max"),
    ]
    if r.io_weight is not None:
        rows.append(row("resources.io.weight", r.io_weight))
    for d in r.io_devices:
        vals = ", ".join(f"{k}={v}" for k, v in (("read_bps", d.read_bps), ("write_bps", d.write_bps),
                                                   ("read_iops", d.read_iops), ("write_iops", d.write_iops))
                         if v is not None)
        rows.append(row(f"resources.io.devices[{d.device}]", vals))
    for lim in policy.rlimits:
        rows.append(row(f"rlimits.{lim.resource.lower()}", f"soft={_rlim(lim.soft)} hard={_rlim(lim.hard)}"))
    if policy.user is not None and policy.user.dynamic:
        rows.append(row("user", f"dynamic (a uid/gid of its own per workload; fallback "
                                f"{policy.user.uid}) groups={list(policy.user.groups)}"))
    elif policy.user is not None:
        u = policy.user
        name = f" ({u.user_name})" if u.user_name else ""
        rows.append(row("user", f"uid={u.uid}{name} gid={u.gid} groups={list(u.groups)}"))
    else:
        rows.append(row("user", "(unchanged: the launching user)"))
    for ns in policy.namespaces:
        rows.append(row(f"namespaces[{ns}]", ns))
    e = policy.env
    rows.append(row("env.clear", str(e.clear).lower()))
    if e.clear:
        # The default names are long and always there: name only the extra ones.
        extra = [k for k in e.keep if k not in DEFAULT_ENV_KEEP]
        rows.append(row("env.keep", "the defaults" + (" + " + ", ".join(extra) if extra else ""),
                        "env.keep"))
    for name, value in e.set:
        rows.append(row(f"env.set.{name}", value))
    rows += landlock_rows(policy, row)
    return rows


def landlock_rows(policy: Policy, row: Any) -> list[tuple[str, str, str]]:
    """One row per Landlock grant, port list and scope; what each grant
    means in kernel rights is in docs/policy-reference.md."""
    from enforcer import landlock as ll

    lp = policy.landlock
    if lp is None:
        return [row("landlock", "(none: no Landlock rules)")]
    rows = [row("landlock.abi", lp.abi if lp.abi is not None else
                f"(none: best effort below ABI {ll.KNOWN_ABI})")]
    for grant, paths in lp.grants():
        key = f"landlock.filesystem.{grant}"
        if not paths:
            rows.append(row(key, "(none)", "landlock"))
        for entry in paths:
            rows.append(row(f"{key}[{entry.path}]",
                            f"{entry.path}{' (optional)' if entry.optional else ''}"))
    for kind in ("bind", "connect"):
        key = f"landlock.network.{kind}"
        ports = getattr(lp, kind)
        if ports is None:
            rows.append(row(key, "any (TCP not restricted)"))
        elif not ports:
            rows.append(row(key, "(none: every TCP port denied)", "landlock"))
        else:
            rows.append(row(key, ", ".join(str(p) for p in ports), f"{key}[{ports[0]}]"))
    for word in lp.scope:
        rows.append(row(f"landlock.scope[{word}]", word))
    return rows


def syscall_rows(policy: Policy) -> list[dict[str, Any]]:
    return [{
        "syscall": r.syscall,
        "action": str(r.action),
        "conditions": " && ".join(describe_condition(c) for c in r.args),
        "via": r.via,
        "origin": str(r.origin) if r.origin else BUILTIN,
    } for r in policy.syscalls.rules]


def as_json(policy: Policy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "description": policy.description,
        "sources": [{"path": p, "sha256": h} for p, h in policy.sources],
        "fields": [{"field": k, "value": v, "origin": o} for k, v, o in field_rows(policy)],
        "syscalls": syscall_rows(policy),
    }
