"""Policy -> a systemd unit drop-in ([Service] section, systemd >= 247).

Install it as /etc/systemd/system/UNIT.service.d/enforcer.conf.

The syscall part uses one of systemd's two list forms, chosen by the
policy's default action:

* default blocks -> allow-list: `SystemCallFilter=` names everything the
  policy lets run, and `SystemCallErrorNumber=` is the default's errno
  (absent for kill-process, systemd's default);
* default allows -> deny-list: `SystemCallFilter=~name:ERRNO` per blocked
  syscall (`:kill` for kill-process).
`log` actions become `SystemCallLog=`.

systemd has no argument conditions, no per-syscall action in an allow
list, and no kill-thread or trap; where a policy needs them the export
picks the stricter reading and says so. systemd also always permits its
`@default` set (execve, exit, clock reads, ...): a policy that blocks one
of them is reported.
"""

from __future__ import annotations

import errno as errno_mod

from enforcer.emit.common import (
    Unexpressed,
    audit_stripped,
    landlock_unexpressed,
    cap_name,
    env_set_entries,
    extra_env_keep,
)
from enforcer.compile.oci_seccomp import effective_action
from enforcer.kernel.arch import native_arch
from enforcer.kernel.namespaces import SYSTEMD_NAMES
from enforcer.emit.oci import device_numbers
from enforcer.plan import Plan
from enforcer.policy.model import Action, ActionKind, ArgOp, Mode, Policy, SyscallRule

# `systemd-analyze syscall-filter @default` of systemd 252 (a test compares
# this with the installed systemd when there is one).
SYSTEMD_DEFAULT_SET = frozenset("""
arch_prctl brk cacheflush clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 execve exit exit_group futex futex_time64 futex_waitv
get_robust_list get_thread_area getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups
getgroups32 getpgid getpgrp getpid getppid getrandom getresgid getresgid32 getresuid
getresuid32 getrlimit getsid gettid gettimeofday getuid getuid32 membarrier mmap mmap2
mprotect munmap nanosleep pause prlimit64 restart_syscall riscv_flush_icache riscv_hwprobe
rseq rt_sigreturn sched_getaffinity sched_yield set_robust_list set_thread_area
set_tid_address set_tls sigreturn time ugetrlimit uretprobe
""".split())

# libseccomp architecture names -> systemd's (ConditionArchitecture= names).
SYSTEMD_ARCH = {
    "x86_64": "x86-64", "x86": "x86", "x32": "x32", "aarch64": "arm64", "arm": "arm",
    "ppc": "ppc", "ppc64": "ppc64", "ppc64le": "ppc64-le", "s390": "s390", "s390x": "s390x",
    "mips": "mips", "mipsel": "mips-le", "mips64": "mips64", "mipsel64": "mips64-le",
    "mips64n32": "mips64-n32", "mipsel64n32": "mips64-le-n32", "parisc": "parisc",
    "parisc64": "parisc64", "riscv64": "riscv64", "loongarch64": "loongarch64",
}

# RLIMIT_* name -> systemd Limit*= key.
_LIMITS = {
    "CPU": "LimitCPU", "FSIZE": "LimitFSIZE", "DATA": "LimitDATA", "STACK": "LimitSTACK",
    "CORE": "LimitCORE", "RSS": "LimitRSS", "NOFILE": "LimitNOFILE", "AS": "LimitAS",
    "NPROC": "LimitNPROC", "MEMLOCK": "LimitMEMLOCK", "LOCKS": "LimitLOCKS",
    "SIGPENDING": "LimitSIGPENDING", "MSGQUEUE": "LimitMSGQUEUE", "NICE": "LimitNICE",
    "RTPRIO": "LimitRTPRIO", "RTTIME": "LimitRTTIME",
}

# Masking one of these means the policy wants the kernel's knobs out of reach.
_TUNABLE_PREFIXES = ("/proc/sys", "/proc/sysrq-trigger", "/sys")
_KERNEL_LOG_PATHS = ("/proc/kmsg", "/dev/kmsg")


def _errno_name(n: int | None) -> str:
    return errno_mod.errorcode.get(n or 0, str(n))


def _arch_list(policy: Policy, machine: str | None) -> str:
    native = native_arch(machine)
    out = []
    for a in policy.syscalls.architectures or ("native",):
        out.append("native" if a in ("native", native) else SYSTEMD_ARCH[a])
    return " ".join(dict.fromkeys(out))


def _blocking_suffix(action: Action, un: Unexpressed, what: str) -> str:
    """The `:ERRNO` / `:kill` suffix of a deny-list entry."""
    if action.kind is ActionKind.ERRNO:
        return f":{_errno_name(action.errno)}"
    if action.kind is not ActionKind.KILL_PROCESS:
        un.add(f"{what}: action {action}", "systemd kills the process instead")
    return ":kill"


# clone(2) namespace flags -> RestrictNamespaces= type names.
_NAMESPACE_FLAGS = SYSTEMD_NAMES  # enforcer/kernel/namespaces.py
_ALL_NAMESPACE_FLAGS = sum(_NAMESPACE_FLAGS)


def _namespace_guard(rule: SyscallRule, action: Action) -> list[str] | None:
    """The namespace types a `clone` rule keeps out, if that is all it does.

    The common rule "allow clone when (flags & CLONE_NEW*) == 0" (Docker's
    default, enforcer's shipped policies) is what systemd's
    RestrictNamespaces= does, so it need not be lost with the argument.
    """
    if rule.syscall != "clone" or action.blocks or len(rule.args) != 1:
        return None
    (cond,) = rule.args
    if cond.index != 0 or cond.op is not ArgOp.MASKED_EQ or cond.value != 0 or not cond.mask:
        return None
    if cond.mask & ~_ALL_NAMESPACE_FLAGS:
        return None
    return [name for flag, name in sorted(_NAMESPACE_FLAGS.items()) if cond.mask & flag]


def _unconditional(policy: Policy, rules: list[SyscallRule], default: Action,
                   un: Unexpressed, restricted: list[str]) -> list[tuple[str, Action]]:
    """(syscall, action) for rules systemd can express; the rest reported.

    A conditional rule becomes the stricter of "always" and "never": a
    conditional allow is left out (the default blocks it), a conditional
    block applies always. A clone rule that only keeps out namespace flags
    becomes an allowed clone plus RestrictNamespaces= (into `restricted`).
    """
    from enforcer.policy import syscalls

    out: list[tuple[str, Action]] = []
    unresolvable: list[str] = []
    for rule in rules:
        action = effective_action(policy, rule.action)
        if not syscalls.libseccomp_knows(rule.syscall):
            # systemd resolves SystemCallFilter= names with the system's
            # libseccomp and ignores the ones it does not know: say so.
            if rule.syscall not in unresolvable:
                unresolvable.append(rule.syscall)
            continue
        guard = _namespace_guard(rule, action)
        if guard is not None:
            restricted.extend(t for t in guard if t not in restricted)
            out.append((rule.syscall, action))
            continue
        if rule.args:
            if action.blocks:
                un.add(f"argument conditions of {rule.syscall} ({action})",
                       "systemd has none; the syscall is blocked whatever its arguments")
            else:
                un.add(f"argument conditions of {rule.syscall} ({action})",
                       "systemd has none; the rule is left out, so the default applies")
                continue
        out.append((rule.syscall, action))
    if unresolvable:
        un.add(f"syscalls newer than libseccomp {syscalls.libseccomp_version()} "
               f"({', '.join(unresolvable)})",
               f"systemd cannot resolve their names and they are left out, so they get "
               f"the default ({default})")
    # Several rules for one syscall: keep the strictest (a block beats allow).
    strictest: dict[str, Action] = {}
    for name, action in out:
        prev = strictest.get(name)
        if prev is None or (action.blocks and not prev.blocks):
            strictest[name] = action
    return [(n, strictest[n]) for n in dict.fromkeys(n for n, _ in out)]


def _seccomp_lines(policy: Policy, machine: str | None, un: Unexpressed) -> list[str]:
    sp = policy.syscalls
    default = effective_action(policy, sp.default_action)
    restricted: list[str] = []
    calls = _unconditional(policy, list(sp.rules), default, un, restricted)
    lines: list[str] = []
    if restricted:
        lines.append("RestrictNamespaces=~" + " ".join(restricted))
        loosened = [n for n, a in calls if n in ("unshare", "setns") and not a.blocks]
        if loosened:
            un.add("clone's namespace-flag condition alone",
                   "RestrictNamespaces= also restricts " + " and ".join(loosened)
                   + ", which the policy allows")
    logged = [n for n, a in calls if a.kind is ActionKind.LOG]
    if default.blocks:
        allowed = [n for n, a in calls if not a.blocks]
        # One line per action, naming its syscalls.
        other_blocks: dict[str, list[str]] = {}
        for n, a in calls:
            if a.blocks and a != default:
                other_blocks.setdefault(str(a), []).append(n)
        for action_text, names in other_blocks.items():
            un.add(f"{action_text} for {', '.join(names)} in an allow-list filter",
                   f"systemd gives every unlisted syscall the default ({default})")
        for n in sorted({n for n, a in calls if a.blocks} & SYSTEMD_DEFAULT_SET):
            un.add(f"blocking {n}", "systemd always permits its @default set")
        lines.append(f"SystemCallFilter={' '.join(allowed)}" if allowed else
                     "SystemCallFilter=@default")
        if default.kind is ActionKind.ERRNO:
            lines.append(f"SystemCallErrorNumber={_errno_name(default.errno)}")
        elif default.kind is not ActionKind.KILL_PROCESS:
            un.add(f"default action {default}", "systemd kills the process instead")
        if all(n != "clone3" for n, _ in calls) and not (default.kind is ActionKind.ERRNO
                                             and default.errno == errno_mod.ENOSYS):
            un.add("clone3 -> ENOSYS (glibc's fallback to clone)",
                   f"in an allow list clone3 gets the default ({default})")
    else:
        denied = [f"{n}{_blocking_suffix(a, un, n)}" for n, a in calls if a.blocks]
        for n in sorted({n for n, a in calls if a.blocks} & SYSTEMD_DEFAULT_SET):
            un.add(f"blocking {n}", "systemd always permits its @default set")
        if denied:
            lines.append(f"SystemCallFilter=~{' '.join(denied)}")
    if default.kind is ActionKind.LOG:
        # Log everything but what the policy explicitly allows.
        allowed = [n for n, a in calls if a.kind is ActionKind.ALLOW]
        lines.append(f"SystemCallLog=~{' '.join(allowed)}" if allowed else "SystemCallLog=~")
    elif logged:
        lines.append(f"SystemCallLog={' '.join(logged)}")
    if lines and any(line.startswith("SystemCallFilter=") for line in lines):
        lines.insert(0, f"SystemCallArchitectures={_arch_list(policy, machine)}")
    elif sp.architectures:
        lines.insert(0, f"SystemCallArchitectures={_arch_list(policy, machine)}")
    if sp.log_denials and policy.mode is Mode.ENFORCE and default.kind is ActionKind.ERRNO:
        un.add("log_denials (SECCOMP_FILTER_FLAG_LOG)",
               "systemd does not log ERRNO denials; only kills reach the audit log")
    return lines


def _caps_lines(policy: Policy) -> list[str]:
    """systemd says exactly what enforcer does: the kept capabilities bound
    the service, and a service with a non-root User= holds only its
    AmbientCapabilities= -- the policy's ambient list, nothing more. (`add`
    of a drop/add policy is not made ambient, as under `enforcer run`.)"""
    caps = policy.capabilities
    if caps.keep is not None:
        lines = ["CapabilityBoundingSet=" + " ".join(cap_name(c) for c in sorted(caps.keep))]
        if caps.ambient:
            lines.append("AmbientCapabilities="
                         + " ".join(cap_name(c) for c in sorted(caps.ambient & caps.keep)))
        return lines
    if caps.drop:
        return ["CapabilityBoundingSet=~" + " ".join(cap_name(c) for c in sorted(caps.drop))]
    return []


def _optional(path: str) -> str:
    # "-": a path missing on this host is skipped rather than failing the unit.
    return f"-{path}"


def _filesystem_lines(policy: Policy, un: Unexpressed) -> list[str]:
    fs = policy.filesystem
    lines: list[str] = []
    if fs.rootfs:
        # MountAPIVFS: /proc, /sys and a /dev in the new root, as enforcer
        # gives a rootfs.
        lines += [f"RootDirectory={fs.rootfs}", "MountAPIVFS=yes"]
    if fs.read_only_root:
        lines.append("ProtectSystem=strict")
    if fs.private_devices:
        lines.append("PrivateDevices=yes")
    if fs.read_only_paths:
        lines.append("ReadOnlyPaths=" + " ".join(_optional(p) for p in fs.read_only_paths))
    for key, read_only in (("BindPaths", False), ("BindReadOnlyPaths", True)):
        binds = [f"{b.source}:{b.target}:rbind" for b in fs.bind if b.read_only == read_only]
        if binds:
            lines.append(f"{key}=" + " ".join(binds))
    if fs.writable_paths:
        lines.append("ReadWritePaths=" + " ".join(_optional(p) for p in fs.writable_paths))
    hidden = list(fs.hidden_paths) + [p for p in fs.masked_paths if p not in fs.hidden_paths]
    if fs.masked_paths:
        un.add("masked paths (empty but readable)",
               "made inaccessible with InaccessiblePaths= instead, which is stricter")
    if hidden:
        lines.append("InaccessiblePaths=" + " ".join(_optional(p) for p in hidden))
    masked_and_ro = tuple(fs.masked_paths) + tuple(fs.read_only_paths)
    if any(p.startswith(_TUNABLE_PREFIXES) for p in masked_and_ro):
        lines.append("ProtectKernelTunables=yes")
    if any(p in _KERNEL_LOG_PATHS for p in fs.masked_paths) or "/proc/kcore" in fs.masked_paths:
        lines.append("ProtectKernelLogs=yes")
    for t in fs.tmpfs:
        opts = [f"mode={t.mode:o}", *t.options]
        if t.size is not None:
            opts.append(f"size={t.size}")
        lines.append(f"TemporaryFileSystem={t.path}:{','.join(opts)}")
    return lines


def _device_path(device: str) -> str | None:
    if device.startswith("/"):
        return device
    nums = device_numbers(device)
    return f"/dev/block/{nums[0]}:{nums[1]}" if nums else None


def _resource_lines(policy: Policy, un: Unexpressed) -> list[str]:
    r = policy.resources
    lines: list[str] = []
    if r.memory_max is not None:
        lines.append(f"MemoryMax={r.memory_max}")
    if r.memory_swap_max is not None:
        lines.append(f"MemorySwapMax={r.memory_swap_max}")  # swap only, like ours
    if r.pids_max is not None:
        lines.append(f"TasksMax={r.pids_max}")
    if r.cpu_quota_us is not None:
        percent = r.cpu_quota_us * 100 / r.cpu_period_us
        lines.append(f"CPUQuota={percent:.2f}".rstrip("0").rstrip(".") + "%")
        if r.cpu_period_us != 100_000:
            lines.append(f"CPUQuotaPeriodSec={r.cpu_period_us}us")
    if r.io_weight is not None:
        lines.append(f"IOWeight={r.io_weight}")
    keys = (("read_bps", "IOReadBandwidthMax"), ("write_bps", "IOWriteBandwidthMax"),
            ("read_iops", "IOReadIOPSMax"), ("write_iops", "IOWriteIOPSMax"))
    for dev in r.io_devices:
        path = _device_path(dev.device)
        if path is None:
            un.add(f"io limit for device {dev.device}", "it is neither a path nor MAJOR:MINOR")
            continue
        for attr, key in keys:
            value = getattr(dev, attr)
            if value is not None:
                lines.append(f"{key}={path} {value}")
    return lines


def _rlimit_lines(policy: Policy, un: Unexpressed) -> list[str]:
    lines = []
    for r in policy.rlimits:
        key = _LIMITS.get(r.resource.upper())
        if key is None:
            un.add(f"rlimit {r.resource}", "systemd has no Limit*= for it")
            continue
        soft = "infinity" if r.soft < 0 else str(r.soft)
        hard = "infinity" if r.hard < 0 else str(r.hard)
        lines.append(f"{key}={soft}" if soft == hard else f"{key}={soft}:{hard}")
    return lines


def _user_lines(policy: Policy, plan: Plan | None) -> list[str]:
    if policy.user is not None and policy.user.dynamic:
        # systemd's own dynamic users: allocated per start, like enforcer's.
        groups = policy.user.groups
        return ["DynamicUser=yes"] + (
            ["SupplementaryGroups=" + " ".join(str(g) for g in groups)] if groups else [])
    if plan is not None and plan.user is not None:
        lines = [f"User={plan.user.uid}", f"Group={plan.user.gid}"]
        groups = plan.user.groups
    elif policy.user is not None:
        u = policy.user
        lines = []
        if u.uid is not None or u.user_name:
            lines.append(f"User={u.uid if u.uid is not None else u.user_name}")
        if u.gid is not None or u.group_name:
            lines.append(f"Group={u.gid if u.gid is not None else u.group_name}")
        groups = u.groups
    else:
        return []
    if groups:
        lines.append("SupplementaryGroups=" + " ".join(str(g) for g in groups))
    return lines


def _env_lines(policy: Policy, un: Unexpressed) -> list[str]:
    """A service never inherits the manager's environment (systemd.exec(5)):
    `env.clear` is what systemd does anyway. Extra names to keep become
    PassEnvironment= (names only); `set` becomes Environment=."""
    lines: list[str] = []
    if not policy.env.clear:
        un.add("env.clear: false (the caller's whole environment)",
               "a service gets only what the unit passes or sets")
    names = [k for k in extra_env_keep(policy) if not k.endswith("*")]
    patterns = [k for k in extra_env_keep(policy) if k.endswith("*")]
    if patterns:
        un.add(f"env.keep {', '.join(patterns)}", "PassEnvironment= takes names, not prefixes")
    if names:
        lines.append("PassEnvironment=" + " ".join(names))
    for name, value in env_set_entries(policy):
        # Quoted, with backslash and quote escaped and % doubled (a specifier
        # otherwise), as systemd.syntax(7) and systemd.unit(5) read it.
        text = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        lines.append(f'Environment="{name}={text}"')
    return lines


def _namespace_lines(policy: Policy, un: Unexpressed) -> list[str]:
    lines = []
    ns = set(policy.namespaces)
    if "mount" in ns:
        lines.append("PrivateMounts=yes")
    if "net" in ns:
        lines.append("PrivateNetwork=yes")
    if "ipc" in ns:
        lines.append("PrivateIPC=yes")
    if "uts" in ns:
        lines.append("ProtectHostname=yes")
    if "user" in ns:
        lines.append("PrivateUsers=yes")
    if "pid" in ns:
        un.add("a pid namespace", "systemd services share the host's pid namespace")
    if "cgroup" in ns:
        lines.append("ProtectControlGroups=yes")
        un.add("a cgroup namespace", "approximated with ProtectControlGroups=yes "
               "(the cgroup tree is read-only, not hidden)")
    return lines


def systemd_export(policy: Policy, plan: Plan | None = None,
                   machine: str | None = None) -> tuple[str, list[str]]:
    """The drop-in text and what systemd cannot express."""
    un = Unexpressed("systemd")
    policy = audit_stripped(policy, un)
    landlock_unexpressed(policy, un)
    lines = [
        f"# enforcer policy {policy.name}: generated by `enforcer export --format systemd`.",
        "[Service]",
    ]
    lines += _seccomp_lines(policy, machine, un)
    lines += _caps_lines(policy)
    lines.append(f"NoNewPrivileges={'yes' if policy.no_new_privileges else 'no'}")
    lines += _filesystem_lines(policy, un)
    lines += _resource_lines(policy, un)
    lines += _rlimit_lines(policy, un)
    lines += _user_lines(policy, plan)
    lines += _env_lines(policy, un)
    lines += _namespace_lines(policy, un)
    if policy.capabilities.keep is not None and 16 not in policy.capabilities.keep:
        # CAP_SYS_MODULE is gone anyway; this also hides the module tree.
        lines.append("ProtectKernelModules=yes")
    return "\n".join(lines) + "\n", un.lines
