"""Exposure score for a policy, in the spirit of `systemd-analyze security`
(docs/lint.md is the user's description; keep the two in step).

Each finding has a weight between 0 and 1: roughly, how much of the way to
a full host compromise that one opening gives an attacker who controls the
workload. Findings combine like independent chances:

    score = 10 * (1 - prod(1 - weight))

so a single severe opening (CAP_SYS_ADMIN plus mount) dominates, and many
small ones add up without ever passing 10. To make the score explainable,
each finding also gets `points`, its share of the score, in proportion to
-ln(1 - weight) (about its weight, for the small ones): the points of all
findings add up to the score exactly (to the hundredth shown; see
_score and _apportion).

`suggest()` ranks the changes that lower the score most, each with the
one line of YAML that makes it; the gain is measured by linting the
changed policy, never estimated. Contradictions (a capability kept whose
syscalls are all denied) and shadowed rules are reported apart: they do
not open anything, but they show the policy does not do what its author
thinks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

from enforcer.errors import Location
from enforcer.kernel import capabilities as caps_mod
from enforcer.policy.model import (Action, ActionKind, CapabilityPolicy, Mode, Policy, SyscallRule,
                                   UserPolicy)


@dataclass(frozen=True)
class Finding:
    id: str
    weight: float
    message: str
    origin: Location | None = None
    points: float = 0.0  # this finding's share of the score (filled in by lint())


@dataclass
class LintReport:
    policy: str
    score: float
    findings: list[Finding]
    contradictions: list[Finding] = field(default_factory=list)
    shadowed: list[Finding] = field(default_factory=list)

    @property
    def rating(self) -> str:
        if self.score <= 2.0:
            return "LOW"
        if self.score <= 5.0:
            return "MEDIUM"
        if self.score <= 8.0:
            return "HIGH"
        return "CRITICAL"


# Syscall openings: (id, weight, syscalls any of which counts, why).
SYSCALL_CHECKS: tuple[tuple[str, float, tuple[str, ...], str], ...] = (
    ("syscall-mount", 0.6, ("mount", "umount2", "pivot_root", "fsopen", "fsmount", "move_mount",
                            "open_tree", "mount_setattr"), "mount: can remount or hide host paths"),
    ("syscall-module", 0.6, ("init_module", "finit_module", "delete_module"), "kernel modules can be loaded"),
    ("syscall-kexec", 0.5, ("kexec_load", "kexec_file_load"), "a new kernel can be loaded"),
    ("syscall-bpf", 0.4, ("bpf",), "bpf: eBPF programs can be loaded"),
    ("syscall-ptrace", 0.35, ("ptrace", "process_vm_readv", "process_vm_writev"),
     "ptrace: other processes can be read and controlled"),
    ("syscall-namespaces", 0.3, ("unshare", "setns"), "unshare/setns: new or foreign namespaces"),
    ("syscall-io-uring", 0.3, ("io_uring_setup", "io_uring_enter", "io_uring_register"),
     "io_uring: a large and often exploited kernel surface"),
    ("syscall-open-by-handle", 0.3, ("open_by_handle_at",), "open_by_handle_at: files outside the root"),
    ("syscall-userfaultfd", 0.25, ("userfaultfd",), "userfaultfd: a common kernel exploit primitive"),
    ("syscall-perf", 0.25, ("perf_event_open",), "perf_event_open: kernel profiling and side channels"),
    ("syscall-keyctl", 0.2, ("keyctl", "add_key", "request_key"), "keyctl: the kernel keyring is shared"),
    ("syscall-raw-io", 0.4, ("iopl", "ioperm"), "iopl/ioperm: raw hardware ports"),
    ("syscall-reboot", 0.2, ("reboot",), "reboot is allowed"),
    ("syscall-clock", 0.1, ("settimeofday", "clock_settime", "adjtimex", "clock_adjtime"),
     "the system clock can be set"),
)

CAP_WEIGHTS: dict[str, float] = {
    "CAP_SYS_ADMIN": 0.7, "CAP_SYS_MODULE": 0.7, "CAP_SYS_RAWIO": 0.5, "CAP_SYS_PTRACE": 0.4,
    "CAP_BPF": 0.4, "CAP_NET_ADMIN": 0.35, "CAP_DAC_READ_SEARCH": 0.3, "CAP_SYS_BOOT": 0.2,
    "CAP_NET_RAW": 0.2, "CAP_PERFMON": 0.2, "CAP_MAC_ADMIN": 0.3, "CAP_MAC_OVERRIDE": 0.3,
    "CAP_DAC_OVERRIDE": 0.15, "CAP_SYS_TIME": 0.1, "CAP_SYSLOG": 0.1, "CAP_SETUID": 0.05,
    "CAP_SETGID": 0.05, "CAP_SETFCAP": 0.05, "CAP_SETPCAP": 0.05, "CAP_FOWNER": 0.05,
    "CAP_CHOWN": 0.03, "CAP_MKNOD": 0.03, "CAP_SYS_CHROOT": 0.03, "CAP_AUDIT_CONTROL": 0.1,
    "CAP_LINUX_IMMUTABLE": 0.05, "CAP_SYS_RESOURCE": 0.05, "CAP_SYS_NICE": 0.03,
    "CAP_IPC_OWNER": 0.05, "CAP_CHECKPOINT_RESTORE": 0.1,
}
DEFAULT_CAP_WEIGHT = 0.02

# A kept capability is useless (a contradiction) when all of these are denied.
CAP_SYSCALLS: dict[str, tuple[str, ...]] = {
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_BOOT": ("reboot", "kexec_load", "kexec_file_load"),
    "CAP_SYS_TIME": ("settimeofday", "clock_settime", "adjtimex", "clock_adjtime"),
    "CAP_SYS_PTRACE": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp"),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_MKNOD": ("mknod", "mknodat"),
    "CAP_CHOWN": ("chown", "fchown", "fchownat", "lchown"),
    "CAP_SETUID": ("setuid", "setreuid", "setresuid", "setfsuid"),
    "CAP_SETGID": ("setgid", "setregid", "setresgid", "setfsgid", "setgroups"),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open", "bpf"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_NET_BIND_SERVICE": ("bind",),
    "CAP_NET_RAW": ("socket",),
    "CAP_SYS_ADMIN": ("mount", "umount2", "pivot_root", "unshare", "setns", "sethostname",
                      "quotactl", "fsopen", "fsmount", "move_mount", "open_tree", "swapon", "bpf"),
    "CAP_WAKE_ALARM": ("timer_create", "timerfd_create"),
}


def syscall_state(policy: Policy, name: str) -> tuple[str, list[SyscallRule]]:
    """How the filter treats `name`: ("allowed" | "denied" | "conditional", its rules).

    Audit mode allows everything (the compiler turns blocks into logs).
    """
    rules = [r for r in policy.syscalls.rules if r.syscall == name]
    return _state(policy, rules), rules


def _state(policy: Policy, rules: list[SyscallRule]) -> str:
    """syscall_state for one syscall's rules (all of them, in order)."""
    if policy.mode is Mode.AUDIT:
        return "allowed"
    uncond = [r for r in rules if not r.args]
    if uncond:
        return "denied" if uncond[0].action.blocks else "allowed"
    if rules:
        # Conditions: what passes when none match is the default action.
        if any(not r.action.blocks for r in rules) or not policy.syscalls.default_action.blocks:
            return "conditional"
        return "denied"
    return "denied" if policy.syscalls.default_action.blocks else "allowed"


@dataclass(frozen=True)
class SyscallCounts:
    """The one vocabulary of check, explain, lint and diff for a policy's
    syscalls: of the `known` syscalls of the native architecture, how many
    the filter allows, allows only under argument checks, and denies."""

    arch: str
    known: int
    allowed: int
    conditional: int
    denied: int

    def __str__(self) -> str:
        return (f"{self.allowed} syscalls allowed, {self.conditional} allowed under argument "
                f"checks, {self.denied} denied (of {self.known} on {self.arch})")


def syscall_states(policy: Policy) -> dict[str, str]:
    """syscall_state for every syscall of the native architecture at once."""
    from enforcer.policy import syscalls

    arch = syscalls.native_arch()
    by_name: dict[str, list[SyscallRule]] = {}
    for r in policy.syscalls.rules:
        by_name.setdefault(r.syscall, []).append(r)
    return {n: _state(policy, by_name.get(n, [])) for n in syscalls.all_names()
            if syscalls.exists_on(n, arch)}


def syscall_counts(policy: Policy) -> SyscallCounts:
    from enforcer.policy import syscalls

    states = list(syscall_states(policy).values())
    return SyscallCounts(syscalls.native_arch(), len(states), states.count("allowed"),
                         states.count("conditional"), states.count("denied"))


# The syscall surface: every syscall allowed is kernel code the workload can
# reach. The first SURFACE_FREE cost nothing (about what a small program
# needs); a policy allowing every syscall gets SURFACE_WEIGHT. A syscall
# allowed only under argument checks counts half.
SURFACE_FREE = 40
SURFACE_WEIGHT = 0.15


def surface_weight(counts: SyscallCounts) -> float:
    exposed = counts.allowed + counts.conditional / 2
    span = max(counts.known - SURFACE_FREE, 1)
    return round(SURFACE_WEIGHT * min(max(exposed - SURFACE_FREE, 0) / span, 1.0), 4)


def effective_caps(policy: Policy) -> tuple[set[int], bool]:
    """(capabilities the workload may reach, whether that is a worst-case guess).

    The kept set: what root holds, and a non-root user's bounding set (the
    ceiling for set-user-id and file-capability programs). With drop/add
    only, the result depends on who launches the workload; we assume the
    worst (root with every capability).
    """
    c = policy.capabilities
    if c.keep is not None:
        return set(c.keep), False
    return (set(caps_mod.ALL_CAPS) - set(c.drop)) | set(c.add), True


@dataclass(frozen=True)
class CapView:
    """A policy's capabilities as the workload sees them after execve."""

    bounding: frozenset[int]  # the ceiling: effective_caps()
    held: frozenset[int]  # permitted/effective after execve
    ambient: frozenset[int]
    non_root: bool
    guessed: bool  # drop/add: the launcher decides; worst case assumed


def cap_view(policy: Policy) -> CapView:
    """Root holds what it keeps; a non-root user holds only its ambient list
    (enforcer.kernel.capabilities.absolute_sets, as compiled and exported). With
    drop/add a non-root user holds nothing after execve (nothing is ambient)."""
    reach, guessed = effective_caps(policy)
    bounding = frozenset(reach)
    non_root = policy.user is not None and policy.user.non_root
    c = policy.capabilities
    if c.keep is not None:
        sets = caps_mod.absolute_sets(frozenset(c.keep), c.ambient, non_root)
        return CapView(bounding, sets[1], sets[4], non_root, guessed)
    return CapView(bounding, frozenset() if non_root else bounding, frozenset(), non_root, guessed)


# Capabilities that undo a switch to a non-root user: each lets it become
# root, or read, write or take over what root owns.
ROOT_EQUIVALENT: tuple[str, ...] = (
    "CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
    "CAP_CHOWN", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
)


def _non_root_findings(policy: Policy, view: CapView) -> list[Finding]:
    """Heavy findings for root-equivalent capabilities of a non-root user.

    Held (ambient), they make the user switch worthless. Kept but not held,
    they still sit in its bounding set, from which a set-user-id or
    file-capability program hands them back whenever no_new_privileges is
    off -- one flag, in this file or any policy that extends it.
    """
    if not view.non_root or view.guessed:
        return []
    assert policy.user is not None
    who = f"non-root user {policy.user.user_name or policy.user.uid}"
    origin = policy.origins.get("capabilities")
    danger = {caps_mod.from_name(n) for n in ROOT_EQUIVALENT}
    out = []
    held = sorted(view.held & danger)
    if held:
        out.append(Finding("non-root-holds-root-capabilities", 0.7, (
            f"{who} holds {', '.join(caps_mod.name_of(n) for n in held)} (ambient): it can make "
            "itself root or read and write what root owns; the user switch buys nothing"),
            policy.origins.get("capabilities.ambient", origin)))
    kept = sorted((view.bounding - view.held) & danger)
    if kept:
        nnp = policy.no_new_privileges
        out.append(Finding("non-root-keeps-root-capabilities", 0.4 if nnp else 0.7, (
            f"{who} keeps {', '.join(caps_mod.name_of(n) for n in kept)} in its bounding set: "
            "not held (not ambient), but a set-user-id or file-capability program hands them "
            + ("back as soon as no_new_privileges is turned off" if nnp else
               "back now (no_new_privileges is off)")
            + "; keep only what the user needs (`keep: []`) or name it under capabilities.ambient"),
            origin))
    return out


def lint(policy: Policy) -> LintReport:
    findings: list[Finding] = []
    o = policy.origins

    def add(id_: str, weight: float, message: str, origin_key: str | None = None) -> None:
        findings.append(Finding(id_, weight, message, o.get(origin_key) if origin_key else None))

    if policy.mode is Mode.AUDIT:
        add("mode-audit", 0.9, "mode audit: nothing is blocked, violations are only logged", "mode")
    if not policy.syscalls.default_action.blocks:
        add("syscalls-default-allow", 0.5,
            f"syscalls.default is {policy.syscalls.default_action}: a denylist, new syscalls pass",
            "syscalls.default")
    for id_, weight, names, why in SYSCALL_CHECKS:
        states = {n: syscall_state(policy, n)[0] for n in names}
        open_ = [n for n, s in states.items() if s == "allowed"]
        cond = [n for n, s in states.items() if s == "conditional"]
        origin = _origin_of(policy, open_ + cond)
        if open_:
            findings.append(Finding(id_, weight, f"allows {', '.join(open_)}: {why}", origin))
        elif cond:
            findings.append(Finding(id_, round(weight / 2, 3),
                                    f"allows {', '.join(cond)} under conditions: {why}", origin))
    if syscall_state(policy, "clone")[0] == "allowed" and policy.mode is Mode.ENFORCE:
        add("clone-namespaces", 0.1, "clone is allowed without a check of its CLONE_NEW* flags")

    if syscall_state(policy, "socket")[0] != "denied" and "net" not in policy.namespaces:
        findings.append(Finding("network", 0.05, "can open sockets on the host's network (no `net` namespace)",
                                _origin_of(policy, ["socket"])))
    held, guessed = effective_caps(policy)
    if guessed:
        add("caps-not-pinned", 0.1, "capabilities use drop/add, not keep: the launcher's set is "
                                    "inherited (scored as root with every capability)", "capabilities")
    for n in sorted(held):
        name = caps_mod.name_of(n)
        w = CAP_WEIGHTS.get(name, DEFAULT_CAP_WEIGHT)
        findings.append(Finding(f"cap-{name[4:].lower().replace('_', '-')}", w,
                                f"keeps {name}", o.get(f"capabilities.{name}", o.get("capabilities"))))
    if not policy.no_new_privileges:
        add("no-new-privileges-off", 0.3, "no_new_privileges is off: setuid binaries can gain privileges",
            "no_new_privileges")
    findings.extend(_non_root_findings(policy, cap_view(policy)))
    if policy.user is None or policy.user.uid == 0:
        add("runs-as-root", 0.25, "runs as root (uid 0)" if policy.user else "runs as the launching user "
            "(root under a container runtime): no `user:`", "user")
    if not policy.filesystem.read_only_root and not landlock_confines_writes(policy):
        add("writable-root", 0.2, "the root file system is writable"
            + (" (Landlock grants write to /)" if policy.landlock is not None else ""),
            "filesystem.read_only_root")
        if (policy.scope == "host" and (policy.user is None or policy.user.uid == 0)
                and policy.filesystem.rootfs is None):
            # On the host (`enforcer run`) that root is the host's: root owns
            # most of its files, and nothing but a read-only mount (or a
            # Landlock ruleset) stops it.
            add("host-root-writable", 0.5,
                "keeps root with the host's root file system writable: under `enforcer run` the "
                "workload can change any host file root owns; set filesystem.read_only_root (and "
                "writable_paths for what it must write), give it a user, or mark a policy written "
                "for containers `scope: container`", "filesystem.read_only_root")
    # A writable root is its own finding (writable-root) already.
    root_finding = any(f.id == "writable-root" for f in findings)
    runnable = [p for p in runnable_writes(policy) if not (p == "/" and root_finding)]
    if runnable:
        add("runs-what-it-writes", 0.1, "can execute files it writes itself (downloaded tools, "
            f"dropped payloads) in {', '.join(runnable)}"
            + ("" if policy.landlock is None else " (Landlock grants write and execute there)"),
            "landlock.filesystem.execute[/]" if policy.landlock is not None else None)
    findings += _landlock_findings(policy)
    if not policy.filesystem.masked_paths:
        add("no-masked-paths", 0.1, "no masked paths: /proc/kcore, /proc/keys, /sys/firmware are visible")
    if policy.resources.memory_max is None:
        add("no-memory-limit", 0.1, "no memory limit (resources.memory.max)", "resources.memory.max")
    if policy.resources.pids_max is None:
        add("no-pids-limit", 0.1, "no pids limit: a fork bomb can exhaust the host", "resources.pids.max")
    for arch, w in (("x86", 0.2), ("x32", 0.2)):
        if arch in policy.syscalls.architectures:
            add(f"arch-{arch}", w, f"architecture {arch} is allowed: a second syscall table to get right",
                "syscalls.architectures")

    counts = syscall_counts(policy)
    surface = surface_weight(counts)
    if surface > 0:
        findings.append(Finding("syscall-surface", surface, (
            f"allows {counts.allowed} of {counts.known} syscalls"
            + (f" (+{counts.conditional} under argument checks)" if counts.conditional else "")
            + ": kernel code the workload can reach; a recorded allow-list is shorter"),
            o.get("syscalls.default")))

    score, scored = _score(findings)
    report = LintReport(policy.name, score, scored)
    report.contradictions = _contradictions(policy, held, guessed)
    report.shadowed = _shadowed(policy)
    return report


def _score(findings: list[Finding]) -> tuple[float, list[Finding]]:
    """The score, and the findings (heaviest first) with their points.

    Combining like independent chances is the same as adding up
    -ln(1 - weight) and mapping the sum back: score = 10 * (1 - e^-sum).
    So each finding's share of the score is its share of that sum --
    whatever the order, two findings of the same weight get the same
    points, and the points add up to the score.
    """
    ordered = sorted(findings, key=lambda f: (-f.weight, f.id))
    # A weight of 1 (or more) is a certain compromise: the score is 10.
    logs = [-math.log1p(-min(max(f.weight, 0.0), 0.999999)) for f in ordered]
    score = round(10.0 * -math.expm1(-sum(logs)), 1)
    points = _apportion(logs, score)
    return score, [replace(f, points=p) for f, p in zip(ordered, points)]


def _apportion(raw: list[float], total: float) -> list[float]:
    """`raw` scaled to add up to `total` (the score, rounded to tenths) and
    rounded to hundredths so that the rounded values still add up to it
    exactly: the largest-remainder method. Without it the points shown
    would miss the score shown by a rounding hundredth or two."""
    whole = sum(raw)
    target = round(total * 100)
    if whole <= 0:
        return [0.0] * len(raw)
    scaled = [r * target / whole for r in raw]
    cents = [math.floor(x) for x in scaled]
    order = sorted(range(len(raw)), key=lambda i: scaled[i] - cents[i], reverse=True)
    for i in order[:target - sum(cents)]:
        cents[i] += 1
    return [c / 100 for c in cents]


# -- set this next ----------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """One change to the policy: the YAML that makes it (one line, for this
    policy or one that extends it), the score after it, what it fixes."""

    yaml: str
    score_after: float
    fixes: tuple[str, ...]  # finding ids gone after the change


# (finding ids it answers, YAML, the change on the effective policy)
_Change = tuple[tuple[str, ...], str, Callable[[Policy], Policy]]


def _changes(policy: Policy, report: LintReport) -> list[_Change]:
    """Candidate changes for the findings at hand."""
    from functools import partial

    from enforcer.policy.validate import DEFAULT_MASKED_PATHS

    ids = {f.id for f in report.findings}
    eperm = Action(ActionKind.ERRNO, 1)

    def enforce(p: Policy) -> Policy:
        return replace(p, mode=Mode.ENFORCE)

    def default_eperm(p: Policy) -> Policy:
        return replace(p, syscalls=replace(p.syscalls, default_action=eperm))

    def dynamic_user(p: Policy) -> Policy:
        return replace(p, user=UserPolicy(uid=65534, gid=65534, dynamic=True))

    def no_caps(p: Policy) -> Policy:
        return replace(p, capabilities=CapabilityPolicy(keep=frozenset()))

    def nnp(p: Policy) -> Policy:
        return replace(p, no_new_privileges=True)

    def read_only_root(p: Policy) -> Policy:
        return replace(p, filesystem=replace(p.filesystem, read_only_root=True))

    def masked(p: Policy) -> Policy:
        return replace(p, filesystem=replace(p.filesystem, masked_paths=DEFAULT_MASKED_PATHS))

    def memory_limit(p: Policy) -> Policy:
        return replace(p, resources=replace(p.resources, memory_max=512 << 20))

    def pids_limit(p: Policy) -> Policy:
        return replace(p, resources=replace(p.resources, pids_max=256))

    def net_namespace(p: Policy) -> Policy:
        return replace(p, namespaces=p.namespaces + ("net",))

    cap_ids = tuple(i for i in ids if i.startswith(("cap-", "non-root-")) or i == "caps-not-pinned")
    out: list[_Change] = [
        (("mode-audit",), "mode: enforce", enforce),
        (("syscalls-default-allow",), "syscalls: {default: errno EPERM}", default_eperm),
        (("runs-as-root", "host-root-writable"), "user: {dynamic: true}", dynamic_user),
        (cap_ids, "capabilities: {keep: []}", no_caps),
        (("no-new-privileges-off",), "no_new_privileges: true", nnp),
        (("writable-root", "host-root-writable"), "filesystem: {read_only_root: true}",
         read_only_root),
        (("no-masked-paths",), "filesystem: {masked_paths: default}", masked),
        (("no-memory-limit",), "resources: {memory: {max: 512Mi}}", memory_limit),
        (("no-pids-limit",), "resources: {pids: {max: 256}}", pids_limit),
        (("network",), "namespaces: [net]", net_namespace),
    ]
    for f in report.findings:
        if f.id.startswith("cap-") and f.weight >= 0.1:
            cap = caps_mod.from_name("CAP_" + f.id[4:].upper().replace("-", "_"))
            out.append(((f.id,), f"capabilities: {{drop: [{caps_mod.name_of(cap)}]}}",
                        partial(_drop_cap, cap=cap)))
    for id_, _, names, _ in SYSCALL_CHECKS:
        if id_ in ids:
            open_ = tuple(n for n in names if syscall_state(policy, n)[0] != "denied")
            out.append(((id_,), f"syscalls: {{deny: [{', '.join(open_)}]}}",
                        partial(_deny, names=open_)))
    return [c for c in out if ids & set(c[0])]


def _drop_cap(policy: Policy, cap: int) -> Policy:
    """What `capabilities: {drop: [CAP]}` in a policy that extends this one does."""
    c = policy.capabilities
    if c.keep is not None:
        return replace(policy, capabilities=replace(c, keep=c.keep - {cap},
                                                    ambient=c.ambient - {cap}))
    return replace(policy, capabilities=replace(c, drop=c.drop | {cap}, add=c.add - {cap}))


def _deny(policy: Policy, names: tuple[str, ...]) -> Policy:
    """What `syscalls: {deny: [NAMES]}` in a policy that extends this one does:
    the parents' rules for them go, a deny with the deny action comes."""
    s = policy.syscalls
    action = s.default_action if s.default_action.blocks else Action(ActionKind.ERRNO, 1)
    rules = tuple(r for r in s.rules if r.syscall not in names)
    rules += tuple(SyscallRule(n, action, via="deny") for n in names)
    return replace(policy, syscalls=replace(s, rules=rules))


def suggest(policy: Policy, report: LintReport | None = None, limit: int = 3) -> list[Suggestion]:
    """The `limit` changes that lower the score most, best first; each
    measured by linting the changed policy. Changes that gain less than a
    tenth are left out."""
    report = report or lint(policy)
    found: list[Suggestion] = []
    for _, yaml, change in _changes(policy, report):
        after = lint(change(policy))
        if report.score - after.score < 0.1:
            continue
        gone = {f.id for f in report.findings} - {f.id for f in after.findings}
        found.append(Suggestion(yaml, after.score, tuple(sorted(gone))))
    found.sort(key=lambda s: s.score_after)
    return found[:limit]


# Directories whose whole tree a workload has no business writing.
SYSTEM_DIRS = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
               "/root", "/proc", "/sys", "/dev")


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def landlock_confines_writes(policy: Policy) -> bool:
    """True when a Landlock section allows writes only below some paths (not /)."""
    lp = policy.landlock
    return lp is not None and all(e.path != "/" for e in lp.write)


def runnable_writes(policy: Policy) -> list[str]:
    """Where the workload can write files and then execute them: writable
    mounts (a writable root, tmpfs, writable paths) that are not noexec,
    narrowed by Landlock to its write grants that lie under an execute
    grant. Device nodes (/dev/null) cannot be executed."""
    fs, lp = policy.filesystem, policy.landlock
    places = ["/"] if not fs.read_only_root else []
    places += [t.path for t in fs.tmpfs if "ro" not in t.options]
    places += list(fs.writable_paths)
    noexec = [t.path for t in fs.tmpfs if "noexec" in t.options]
    spots: set[str] = set()
    for place in places:
        if lp is None:
            spots.add(place)
            continue
        for grant in lp.write:
            if _under(grant.path, place):
                spots.add(grant.path)  # a grant inside the writable mount
            elif _under(place, grant.path):
                spots.add(place)  # a writable mount inside the grant
    return sorted(s for s in spots
                  if not any(_under(s, n) for n in noexec)
                  and not (s.startswith("/dev/") and s != "/dev/shm")
                  and (lp is None or any(_under(s, e.path) for e in lp.execute)))


def _landlock_findings(policy: Policy) -> list[Finding]:
    """Broad Landlock grants: write to system directories, execute
    everywhere, TCP left open. Whether the workload can run what it writes
    is the finding `runs-what-it-writes` (with or without Landlock)."""
    lp = policy.landlock
    if lp is None:
        return []
    o = policy.origins
    out: list[Finding] = []
    system = sorted({e.path for e in lp.write for top in SYSTEM_DIRS
                     if e.path == top or (e.path != "/" and _under(top, e.path))})
    if system and not policy.filesystem.read_only_root:
        out.append(Finding("landlock-write-system", 0.1,
                           f"Landlock grants write to system directories: {', '.join(system)}",
                           o.get(f"landlock.filesystem.write[{system[0]}]")))
    if any(e.path == "/" for e in lp.execute):
        out.append(Finding("landlock-execute-everywhere", 0.0,
                           "Landlock grants execute on /: any program on the file system runs",
                           o.get("landlock.filesystem.execute[/]")))
    for kind in ("bind", "connect"):
        if getattr(lp, kind) is None:
            out.append(Finding(f"landlock-{kind}-any", 0.0,
                               f"Landlock leaves TCP {kind} unrestricted (network.{kind}: any)",
                               o.get(f"landlock.network.{kind}")))
    return out


def _origin_of(policy: Policy, names: list[str]) -> Location | None:
    for r in policy.syscalls.rules:
        if r.syscall in names and not r.action.blocks:
            return r.origin
    return policy.origins.get("syscalls.default")


def _contradictions(policy: Policy, held: set[int], guessed: bool) -> list[Finding]:
    out: list[Finding] = []
    if guessed or policy.mode is Mode.AUDIT:
        return out
    for n in sorted(held):
        name = caps_mod.name_of(n)
        needs = CAP_SYSCALLS.get(name)
        if needs and all(syscall_state(policy, s)[0] == "denied" for s in needs):
            out.append(Finding("cap-unusable", 0.0,
                               f"keeps {name} but denies every syscall that uses it ({', '.join(needs)})",
                               policy.origins.get(f"capabilities.{name}", policy.origins.get("capabilities"))))
    view = cap_view(policy)
    unheld = sorted(view.bounding - view.held) if view.non_root else []
    if unheld and policy.user is not None:
        out.append(Finding("cap-not-held", 0.0, (
            f"keeps {', '.join(caps_mod.name_of(n) for n in unheld)}, but non-root user "
            f"{policy.user.user_name or policy.user.uid} never holds them (not listed under "
            "capabilities.ambient)"), policy.origins.get("capabilities")))
    for path in policy.filesystem.writable_paths:
        if not policy.filesystem.read_only_root and not any(
            path == p or path.startswith(p + "/") for p in policy.filesystem.read_only_paths
        ):
            out.append(Finding("writable-path-unneeded", 0.0,
                               f"{path} is listed as writable, but nothing above it is read-only",
                               policy.origins.get(f"filesystem.writable_paths[{path}]")))
    return out


def _shadowed(policy: Policy) -> list[Finding]:
    out: list[Finding] = []
    uncond: dict[str, SyscallRule] = {}
    seen_cond: dict[tuple[str, tuple[object, ...]], SyscallRule] = {}
    for r in policy.syscalls.rules:
        if not r.args:
            uncond.setdefault(r.syscall, r)
    for r in policy.syscalls.rules:
        if not r.args:
            continue
        first = uncond.get(r.syscall)
        if first is not None and first.action == r.action:
            out.append(Finding("rule-shadowed", 0.0, (
                f"rule for {r.syscall} with conditions never matters: {r.syscall} is already "
                f"{r.action} unconditionally (via {first.via}, {first.origin})"), r.origin))
            continue
        key = (r.syscall, r.args)
        earlier = seen_cond.get(key)
        if earlier is not None:
            out.append(Finding("rule-shadowed", 0.0, (
                f"rule for {r.syscall} repeats the conditions of the rule at {earlier.origin} "
                f"({earlier.action}); the later one never matches"), r.origin))
            continue
        seen_cond[key] = r
        if r.action == policy.syscalls.default_action and not any(
            o.syscall == r.syscall and o.action != r.action for o in policy.syscalls.rules
        ):
            out.append(Finding("rule-redundant", 0.0, (
                f"rule for {r.syscall} has the default action ({r.action}); it changes nothing"), r.origin))
    return out


def action_word(a: Action) -> str:
    return "allow" if a.kind is ActionKind.ALLOW else str(a)
