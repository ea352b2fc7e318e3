"""Landlock as the kernel defines it: access rights, scopes, restrict flags,
which ABI version brought each, and what a policy's words grant.

One table, imported by the policy checker, the compiler, the apply step of
`enforcer run`, the shim (which hands the result to its static helper) and
the monitor. Standard library only: the apply step imports it on every
start. The values are kernel ABI (include/uapi/linux/landlock.h); a unit
test compiles a C program against the host's header and compares.

ABI history (Documentation/userspace-api/landlock.rst):
  1  (5.13)  filesystem: execute, write_file, read_file, read_dir,
             remove_dir, remove_file, make_char/dir/reg/sock/fifo/block/sym
  2  (5.19)  filesystem: refer (link or rename across directories)
  3  (6.2)   filesystem: truncate
  4  (6.7)   network: bind_tcp, connect_tcp
  5  (6.10)  filesystem: ioctl_dev
  6  (6.12)  scope: abstract_unix_socket, signal
  7  (6.15)  audit: denials are logged; landlock_restrict_self log flags
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs ms on the start path; only checkers need it
if TYPE_CHECKING:
    from enforcer.plan import LandlockPlan

# -- access rights (bit -> the kernel's audit name, "fs.read_file" etc.) ------

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15

NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

# landlock_restrict_self(2) flags (ABI 7)
RESTRICT_SELF_LOG_SAME_EXEC_OFF = 1 << 0
RESTRICT_SELF_LOG_NEW_EXEC_ON = 1 << 1
RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 2

# landlock_create_ruleset(2) flag: return the ABI version instead
CREATE_RULESET_VERSION = 1 << 0
# landlock_add_rule(2) rule types
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

FS_NAMES = {
    FS_EXECUTE: "execute", FS_WRITE_FILE: "write_file", FS_READ_FILE: "read_file",
    FS_READ_DIR: "read_dir", FS_REMOVE_DIR: "remove_dir", FS_REMOVE_FILE: "remove_file",
    FS_MAKE_CHAR: "make_char", FS_MAKE_DIR: "make_dir", FS_MAKE_REG: "make_reg",
    FS_MAKE_SOCK: "make_sock", FS_MAKE_FIFO: "make_fifo", FS_MAKE_BLOCK: "make_block",
    FS_MAKE_SYM: "make_sym", FS_REFER: "refer", FS_TRUNCATE: "truncate",
    FS_IOCTL_DEV: "ioctl_dev",
}
NET_NAMES = {NET_BIND_TCP: "bind_tcp", NET_CONNECT_TCP: "connect_tcp"}
SCOPE_NAMES = {SCOPE_ABSTRACT_UNIX_SOCKET: "abstract_unix_socket", SCOPE_SIGNAL: "signal"}

# The rights that mean something on a file (not a directory). A rule on a
# file may hold only these (the kernel refuses others with EINVAL).
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

# -- which ABI brought what ----------------------------------------------------

# The newest ABI this enforcer knows. A newer kernel is used at this level:
# rights it adds later are not handled (the kernel then allows them), which
# is what every older program that uses Landlock gets too.
KNOWN_ABI = 7

_FS_BY_ABI = {
    1: (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_READ_DIR | FS_REMOVE_DIR | FS_REMOVE_FILE
        | FS_MAKE_CHAR | FS_MAKE_DIR | FS_MAKE_REG | FS_MAKE_SOCK | FS_MAKE_FIFO
        | FS_MAKE_BLOCK | FS_MAKE_SYM),
    2: FS_REFER,
    3: FS_TRUNCATE,
    5: FS_IOCTL_DEV,
}
_NET_BY_ABI = {4: NET_BIND_TCP | NET_CONNECT_TCP}
_SCOPE_BY_ABI = {6: SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL}
NETWORK_ABI = 4  # the first ABI with TCP port rules
SCOPE_ABI = 6  # the first ABI with scopes
LOG_ABI = 7  # the first ABI that logs denials to the audit stream


def _upto(table: dict[int, int], abi: int) -> int:
    mask = 0
    for version, bits in table.items():
        if version <= abi:
            mask |= bits
    return mask


def fs_rights(abi: int) -> int:
    """Every filesystem right ABI `abi` knows (capped at KNOWN_ABI)."""
    return _upto(_FS_BY_ABI, min(abi, KNOWN_ABI))


def net_rights(abi: int) -> int:
    return _upto(_NET_BY_ABI, min(abi, KNOWN_ABI))


def scopes(abi: int) -> int:
    return _upto(_SCOPE_BY_ABI, min(abi, KNOWN_ABI))


def abi_of_fs_right(bit: int) -> int:
    """The ABI that brought filesystem right `bit`."""
    for version, bits in _FS_BY_ABI.items():
        if bits & bit:
            return version
    raise ValueError(f"unknown Landlock filesystem right {bit:#x}")


# -- the policy's words ------------------------------------------------------

# What `landlock.filesystem.{read,write,execute}` grant beneath a path.
# execute includes read_file: the kernel opens a program for reading to run
# it. write is "read, write, create, remove, rename inside" -- but never
# device nodes (make_char, make_block): no workload needs to create them in
# its data directory, and a root one with CAP_MKNOD could reach a disk.
GRANT_READ = FS_READ_FILE | FS_READ_DIR
GRANT_WRITE = (GRANT_READ | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR
               | FS_MAKE_REG | FS_MAKE_SOCK | FS_MAKE_FIFO | FS_MAKE_SYM | FS_REFER
               | FS_TRUNCATE | FS_IOCTL_DEV)
GRANT_EXECUTE = FS_EXECUTE | FS_READ_FILE
GRANTS = {"read": GRANT_READ, "write": GRANT_WRITE, "execute": GRANT_EXECUTE}

# `landlock.scope` words -> scope bits
SCOPE_WORDS = {"signal": SCOPE_SIGNAL, "abstract-unix-socket": SCOPE_ABSTRACT_UNIX_SOCKET}
# `landlock.network` keys -> the right a port rule grants
NETWORK_WORDS = {"bind": NET_BIND_TCP, "connect": NET_CONNECT_TCP}


def describe_fs(mask: int) -> str:
    """0x7 -> "execute,write_file,read_file"."""
    return ",".join(name for bit, name in FS_NAMES.items() if mask & bit) or "none"


# -- what a kernel can enforce of a Plan -----------------------------------


class Effective:
    """What to hand the kernel for one Landlock Plan on a kernel of ABI `abi`.

    `handled_*` are what the ruleset denies unless a rule allows it: every
    right this kernel (and this enforcer) knows -- minus the network rights
    the policy leaves open with `any`. `rules` are (access, path, optional)
    with each path's rights cut to what the kernel knows; `ports` are
    (right, port). `dropped` names what the policy asked for and this
    kernel cannot enforce (best effort), for the one line the user sees.
    """

    __slots__ = ("abi", "handled_fs", "handled_net", "scoped", "rules", "ports",
                 "restrict_flags", "dropped")

    def __init__(self, abi: int, handled_fs: int, handled_net: int, scoped: int,
                 rules: list[tuple[int, str, bool]], ports: list[tuple[int, int]],
                 restrict_flags: int, dropped: list[str]) -> None:
        self.abi = abi
        self.handled_fs = handled_fs
        self.handled_net = handled_net
        self.scoped = scoped
        self.rules = rules
        self.ports = ports
        self.restrict_flags = restrict_flags
        self.dropped = dropped


class AbiTooOld(Exception):
    """The policy's `landlock.abi` is above what this kernel has."""

    def __init__(self, required: int, kernel: int) -> None:
        self.required = required
        self.kernel = kernel
        have = f"this kernel has ABI {kernel}" if kernel else "this kernel has no Landlock"
        super().__init__(f"the policy requires Landlock ABI {required} (landlock.abi); {have}")


def effective(plan: LandlockPlan, kernel_abi: int) -> Effective:
    """Fit a Plan to a kernel; raises AbiTooOld when `landlock.abi` demands more.

    `kernel_abi` 0 means no Landlock at all (not built in, or disabled at
    boot): without `landlock.abi` that is best effort too, reported as
    everything dropped.
    """
    if plan.min_abi and kernel_abi < plan.min_abi:
        raise AbiTooOld(plan.min_abi, kernel_abi)
    abi = min(kernel_abi, KNOWN_ABI)
    fs_all = fs_rights(KNOWN_ABI)
    handled_fs = fs_rights(abi) if abi else 0
    wanted_net = plan.handled_net
    handled_net = wanted_net & net_rights(abi) if abi else 0
    scoped = plan.scopes & scopes(abi) if abi else 0
    dropped: list[str] = []
    if abi == 0:
        dropped.append("everything (no Landlock on this kernel)")
    else:
        missing_fs = fs_all & ~handled_fs
        if missing_fs:
            dropped.append("filesystem rights " + ", ".join(
                f"{FS_NAMES[bit]} (ABI {abi_of_fs_right(bit)})"
                for bit in FS_NAMES if missing_fs & bit))
        if wanted_net & ~handled_net:
            dropped.append(f"network rules (ABI {NETWORK_ABI})")
        if plan.scopes & ~scoped:
            names = [SCOPE_NAMES[bit] for bit in SCOPE_NAMES if plan.scopes & ~scoped & bit]
            dropped.append(f"scope {', '.join(names)} (ABI {SCOPE_ABI})")
    rules = [(rule.access & handled_fs, rule.path, rule.optional) for rule in plan.rules]
    ports = [(right, port) for right, ports_ in ((NET_BIND_TCP, plan.bind),
                                                  (NET_CONNECT_TCP, plan.connect))
             if handled_net & right for port in ports_]
    # Denials after execve are logged only with this flag: the process that
    # restricts itself (our child, the shim's helper) is never the workload.
    flags = RESTRICT_SELF_LOG_NEW_EXEC_ON if abi >= LOG_ABI else 0
    return Effective(abi, handled_fs, handled_net, scoped, rules, ports, flags, dropped)


def best_effort_line(eff: Effective) -> str | None:
    """The one line that names what this kernel cannot enforce, or None."""
    if not eff.dropped:
        return None
    have = f"Landlock ABI {eff.abi}" if eff.abi else "no Landlock"
    return (f"landlock: best effort: this kernel has {have}; not enforced: "
            f"{'; '.join(eff.dropped)}")
