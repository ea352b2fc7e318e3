"""Namespaces: the one table of their names and numbers.

Each row is a namespace a policy can ask for (`namespaces:`), by

* `name`: the policy's and the Plan's name (`mount`, `net`, ...);
* `clone_flag`: CLONE_NEW* (linux/sched.h), for unshare(2) and clone(2);
* `oci`: the OCI runtime spec's `linux.namespaces[].type`;
* `systemd`: the name systemd's RestrictNamespaces= uses.

The time namespace is listed for systemd's RestrictNamespaces= (a filter
that allows no other namespace type must name it too), but a policy cannot
ask for one: enforcer does not create time namespaces.

Plain rows, not an Enum: `enum` costs ~4 ms on the start path, which reads
this table (the Plan loader, the apply step).
"""

from __future__ import annotations


class Namespace:
    __slots__ = ("name", "clone_flag", "oci", "systemd")

    def __init__(self, name: str, clone_flag: int, oci: str, systemd: str) -> None:
        self.name = name
        self.clone_flag = clone_flag
        self.oci = oci
        self.systemd = systemd

    def __repr__(self) -> str:
        return f"Namespace({self.name!r}, {self.clone_flag:#x})"


CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The namespaces a policy may ask for, in the order policies list them.
POLICY_NAMESPACES: tuple[Namespace, ...] = (
    Namespace("mount", CLONE_NEWNS, "mount", "mnt"),
    Namespace("pid", CLONE_NEWPID, "pid", "pid"),
    Namespace("ipc", CLONE_NEWIPC, "ipc", "ipc"),
    Namespace("uts", CLONE_NEWUTS, "uts", "uts"),
    Namespace("net", CLONE_NEWNET, "network", "net"),
    Namespace("user", CLONE_NEWUSER, "user", "user"),
    Namespace("cgroup", CLONE_NEWCGROUP, "cgroup", "cgroup"),
)
TIME = Namespace("time", CLONE_NEWTIME, "time", "time")

NAMES: tuple[str, ...] = tuple(ns.name for ns in POLICY_NAMESPACES)
BY_NAME: dict[str, Namespace] = {ns.name: ns for ns in POLICY_NAMESPACES}
# policy name -> CLONE_NEW* flag
CLONE_FLAGS: dict[str, int] = {ns.name: ns.clone_flag for ns in POLICY_NAMESPACES}
# policy name -> OCI linux.namespaces[].type
OCI_TYPES: dict[str, str] = {ns.name: ns.oci for ns in POLICY_NAMESPACES}
# CLONE_NEW* flag -> systemd RestrictNamespaces= name (every namespace the kernel has)
SYSTEMD_NAMES: dict[int, str] = {ns.clone_flag: ns.systemd for ns in (*POLICY_NAMESPACES, TIME)}
