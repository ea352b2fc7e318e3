"""The validated policy: what `load_policy()` returns and `compile` consumes.

This is the contract between the policy loader (policy/loader.py,
policy/validate.py) and everything after it (compile/, explain, lint, diff,
export). Every value here is already checked and normalised:

* syscall names are real (resolved through libseccomp), groups are expanded,
  and each rule carries where it was written and how (a name or @group);
* capabilities are `Cap` numbers, sizes are bytes, durations microseconds;
* `extends` is resolved: the model is the *effective* policy.

`origins` maps a dotted field path (e.g. "resources.memory.max",
"syscalls.default") to the Location it came from, for `enforcer explain`.

Nothing in here imports PyYAML or libseccomp: the model is plain data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from enforcer.errors import Location
from enforcer.kernel import namespaces


class Mode(enum.Enum):
    ENFORCE = "enforce"
    AUDIT = "audit"  # nothing is blocked; every would-be violation is logged


class ActionKind(enum.Enum):
    """What the seccomp filter does with a syscall.

    Spelled in YAML as `allow`, `log`, `errno` (with a name such as EPERM or a
    number), `trap`, `kill-thread`, `kill-process`.
    """

    ALLOW = "allow"
    LOG = "log"
    ERRNO = "errno"
    TRAP = "trap"
    KILL_THREAD = "kill-thread"
    KILL_PROCESS = "kill-process"


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    errno: int | None = None  # only for ERRNO; e.g. 1 (EPERM), 38 (ENOSYS)

    def __str__(self) -> str:
        if self.kind is ActionKind.ERRNO:
            import errno as errno_mod

            return f"errno {errno_mod.errorcode.get(self.errno or 0, str(self.errno))}"
        return str(self.kind.value)

    @property
    def blocks(self) -> bool:
        """True when the syscall does not run (anything but allow/log)."""
        return self.kind not in (ActionKind.ALLOW, ActionKind.LOG)


class ArgOp(enum.Enum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    MASKED_EQ = "masked_eq"  # (arg & mask) == value


@dataclass(frozen=True)
class ArgCondition:
    """A comparison on one 64-bit syscall argument (index 0..5)."""

    index: int
    op: ArgOp
    value: int  # unsigned 64-bit
    mask: int | None = None  # only for MASKED_EQ


@dataclass(frozen=True)
class SyscallRule:
    """One syscall with one action and (all of) its argument conditions.

    A syscall may have several rules only when each has argument conditions
    (e.g. allow `socket` when arg0 == AF_INET, and when arg0 == AF_INET6).
    `via` says how the policy named it: the syscall itself or a "@group".
    """

    syscall: str
    action: Action
    args: tuple[ArgCondition, ...] = ()
    via: str = ""
    origin: Location | None = None


@dataclass(frozen=True)
class SyscallPolicy:
    default_action: Action
    # Effective rules, in the order written (parents first for `extends`).
    rules: tuple[SyscallRule, ...] = ()
    # Architectures (libseccomp names: x86_64, x86, x32, aarch64, arm, ...).
    # Empty means the native architecture only.
    architectures: tuple[str, ...] = ()
    # Load with SECCOMP_FILTER_FLAG_LOG so ERRNO/TRAP denials reach the audit log.
    log_denials: bool = True
    # What a syscall libseccomp does not know (or clone3 when not allowed)
    # gets, so glibc falls back to the older call. Default: errno ENOSYS.
    unknown_action: Action = field(default_factory=lambda: Action(ActionKind.ERRNO, 38))


@dataclass(frozen=True)
class CapabilityPolicy:
    """Capabilities, as numbers (CAP_CHOWN == 0, ...).

    Either `keep` is set (everything else dropped from all five sets,
    bounding included), or `drop`/`add` are relative to the parent's sets.

    `ambient` is what a non-root user holds after execve: only the
    capabilities listed there, never the whole kept set (a kept capability
    a non-root user does not hold is only its bounding set's ceiling). It
    is a subset of `keep` and empty with drop/add (the loader checks both).
    """

    keep: frozenset[int] | None = None
    drop: frozenset[int] = frozenset()
    add: frozenset[int] = frozenset()
    ambient: frozenset[int] = frozenset()


@dataclass(frozen=True)
class TmpfsMount:
    path: str
    size: int | None = None  # bytes
    mode: int = 0o1777
    options: tuple[str, ...] = ("nosuid", "nodev")


@dataclass(frozen=True)
class BindMount:
    """A host path made visible at `target` (systemd's BindPaths= and
    BindReadOnlyPaths=, bwrap's --bind/--ro-bind). `source` is the host's;
    `target` is what the workload sees (inside `rootfs` when there is one).
    Recursive: mounts below the source come along."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class FilesystemPolicy:
    read_only_root: bool = False
    read_only_paths: tuple[str, ...] = ()
    writable_paths: tuple[str, ...] = ()
    tmpfs: tuple[TmpfsMount, ...] = ()
    masked_paths: tuple[str, ...] = ()  # files: bind /dev/null; dirs: empty ro tmpfs
    hidden_paths: tuple[str, ...] = ()  # made inaccessible (empty, mode 000)
    bind: tuple[BindMount, ...] = ()  # by target; after tmpfs above them (they stay visible)
    rootfs: str | None = None  # optional new root directory (absolute)
    # A /dev of its own with only the pseudo-devices (null, zero, full,
    # random, urandom, tty, a new devpts): no disks, no /dev/mem, no input
    # devices -- what a root workload without capabilities could otherwise
    # still open, since root owns the host's device nodes.
    private_devices: bool = False


@dataclass(frozen=True)
class IoDeviceLimit:
    device: str  # "MAJOR:MINOR" or a /dev path (resolved at compile time)
    read_bps: int | None = None
    write_bps: int | None = None
    read_iops: int | None = None
    write_iops: int | None = None


@dataclass(frozen=True)
class ResourcePolicy:
    memory_max: int | None = None  # bytes
    memory_swap_max: int | None = None  # bytes of swap on top of memory_max
    pids_max: int | None = None
    cpu_quota_us: int | None = None  # per period; from `cores` or `quota`
    cpu_period_us: int = 100_000
    io_weight: int | None = None  # 1..10000 (cgroup v2 io.weight scale)
    io_devices: tuple[IoDeviceLimit, ...] = ()

    @property
    def any_cgroup_limit(self) -> bool:
        return any(
            v is not None
            for v in (self.memory_max, self.memory_swap_max, self.pids_max,
                      self.cpu_quota_us, self.io_weight)
        ) or bool(self.io_devices)


@dataclass(frozen=True)
class Rlimit:
    resource: str  # e.g. "NOFILE" (RLIMIT_ prefix dropped)
    soft: int  # -1 means unlimited (RLIM_INFINITY)
    hard: int


@dataclass(frozen=True)
class UserPolicy:
    # Names are resolved at load time (through the rootfs's /etc/passwd and
    # /etc/group when filesystem.rootfs is set, else the host's); the names
    # as written are kept for explain and exports.
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    user_name: str | None = None
    group_name: str | None = None
    # A uid/gid of its own per workload, allocated when it starts and
    # released when it ends (systemd's DynamicUser=). uid/gid then hold
    # DYNAMIC_FALLBACK_ID: what is used where no id can be allocated (an
    # unprivileged run maps it in its user namespace; exports and the shim,
    # whose runtime isolates containers by their pid namespaces).
    dynamic: bool = False

    @property
    def non_root(self) -> bool:
        """True when the workload switches to a uid other than 0."""
        if self.uid is not None:
            return self.uid != 0
        return self.user_name not in (None, "root")


# The id a dynamic user falls back to where none can be allocated: nobody.
DYNAMIC_FALLBACK_ID = 65534

# The environment a workload keeps from its caller when a policy says no
# more (`env.clear` defaults to true): the names a program needs to behave
# as it did for the caller -- locale, terminal, time zone, search path --
# and nothing that grants access (tokens, agent sockets, LD_PRELOAD, proxy
# credentials). A name ending in `*` keeps every name with that prefix.
DEFAULT_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*",
                    "TERM", "COLORTERM", "NO_COLOR", "TZ", "COLUMNS", "LINES", "TMPDIR")


@dataclass(frozen=True)
class EnvPolicy:
    """The workload's environment: the caller's, filtered (`clear` with
    `keep`), plus `set` (which wins over a kept value)."""

    clear: bool = True
    keep: tuple[str, ...] = DEFAULT_ENV_KEEP
    set: tuple[tuple[str, str], ...] = ()  # (name, value), in the order written


NAMESPACES = namespaces.NAMES  # enforcer/kernel/namespaces.py

# Where a policy is meant to confine (`scope:`): `host` (the default) means
# it must hold as a sandbox on the host under `enforcer run`; `container`
# means it assumes what a container runtime adds (its own root file system,
# /dev and pid namespace) and is not a sandbox on the host by itself.
SCOPES = ("host", "container")


@dataclass(frozen=True)
class LandlockPath:
    """A path a Landlock grant names. `optional`: skipped when it does not
    exist where the workload runs (otherwise that is an error naming it)."""

    path: str
    optional: bool = False


@dataclass(frozen=True)
class LandlockPolicy:
    """The `landlock` section: what the workload may do; everything else
    that Landlock can restrict is denied (enforcer/landlock.py has the
    rights each word grants).

    `bind`/`connect` None means `any`: that kind of TCP access is left
    unrestricted; an empty tuple means none is allowed.
    """

    abi: int | None = None  # the minimum ABI; None: best effort on older kernels
    read: tuple[LandlockPath, ...] = ()
    write: tuple[LandlockPath, ...] = ()
    execute: tuple[LandlockPath, ...] = ()
    bind: tuple[int, ...] | None = ()
    connect: tuple[int, ...] | None = ()
    scope: tuple[str, ...] = ()  # "signal", "abstract-unix-socket"

    def grants(self) -> tuple[tuple[str, tuple[LandlockPath, ...]], ...]:
        return (("read", self.read), ("write", self.write), ("execute", self.execute))


@dataclass(frozen=True)
class Policy:
    name: str
    description: str = ""
    mode: Mode = Mode.ENFORCE
    syscalls: SyscallPolicy = field(
        default_factory=lambda: SyscallPolicy(default_action=Action(ActionKind.ALLOW))
    )
    capabilities: CapabilityPolicy = field(default_factory=CapabilityPolicy)
    no_new_privileges: bool = True
    filesystem: FilesystemPolicy = field(default_factory=FilesystemPolicy)
    resources: ResourcePolicy = field(default_factory=ResourcePolicy)
    rlimits: tuple[Rlimit, ...] = ()
    user: UserPolicy | None = None
    namespaces: tuple[str, ...] = ()  # subset of NAMESPACES
    env: EnvPolicy = field(default_factory=EnvPolicy)
    scope: str = "host"  # one of SCOPES; never inherited
    landlock: LandlockPolicy | None = None  # no `landlock` section: no Landlock at all
    # The files this policy was built from, child last, with their sha256;
    # used for the Plan's hash and the cache key.
    sources: tuple[tuple[str, str], ...] = ()
    # dotted field path -> where its effective value was written
    origins: dict[str, Location] = field(default_factory=dict, compare=False, hash=False)
