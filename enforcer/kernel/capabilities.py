"""Linux capability names and numbers (include/uapi/linux/capability.h).

A unit test checks this table against the installed kernel header, so a
typo here cannot silently grant or drop the wrong capability.
"""

from __future__ import annotations

CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

CAP_LAST_CAP = 40
ALL_CAPS: frozenset[int] = frozenset(CAPABILITIES.values())
_BY_NUMBER = {v: k for k, v in CAPABILITIES.items()}


def normalise(name: str) -> str:
    """`net_bind_service`, `CAP_NET_BIND_SERVICE`, `Cap_Net_Bind_Service` -> CAP_NET_BIND_SERVICE."""
    upper = name.strip().upper()
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def from_name(name: str) -> int:
    """The number of a capability; KeyError when there is no such capability."""
    return CAPABILITIES[normalise(name)]


def name_of(number: int) -> str:
    return _BY_NUMBER.get(number, f"CAP_{number}")


def names(numbers: frozenset[int] | set[int]) -> list[str]:
    return [name_of(n) for n in sorted(numbers)]


Sets = tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int], frozenset[int]]


def absolute_sets(keep: frozenset[int], ambient: frozenset[int], non_root: bool) -> Sets:
    """(bounding, effective, permitted, inheritable, ambient) for a `keep` policy.

    The one place that says what a workload holds (the compiler, exporters
    and lint all ask here). Root keeps `keep` in the first four sets; its
    ambient set stays empty (root regains permitted and effective from the
    bounding set at execve anyway). A non-root uid holds only `ambient`:
    `keep` stays its bounding set, the ceiling for programs with file
    capabilities, and permitted, effective, inheritable and ambient are
    the ambient list, so execve keeps exactly that and no_new_privs caps
    any file capability at it.
    """
    if non_root:
        held = frozenset(ambient & keep)
        return keep, held, held, held, held
    return keep, keep, keep, keep, frozenset()
