"""Capabilities: the policy's keep or drop/add as five bitmasks.

`keep` is absolute: the kept capabilities go in the bounding, permitted,
effective and inheritable sets, and nothing else is anywhere. Ambient gets
them too when the workload runs as a non-root uid: without ambient, execve
of an ordinary (non-setcap) program by a non-root uid clears permitted and
effective, so the workload would lose exactly what the policy keeps. As
root (or with no user switch) ambient stays empty: root regains
permitted/effective from the bounding set at execve anyway.

`drop`/`add` are relative to whatever the parent has, so the Plan carries
them as masks and the apply step computes the sets at start time. The five
absolute masks of a relative plan assume Docker's default set as the parent
(what exporters need to print concrete lists).
"""

from __future__ import annotations

from enforcer.plan import CapabilityPlan
from enforcer.policy.caps import CAPABILITIES
from enforcer.policy.model import CapabilityPolicy, UserPolicy

# The capabilities Docker and containerd's CRI give a container by default.
DOCKER_DEFAULT_CAPS: frozenset[int] = frozenset(
    CAPABILITIES["CAP_" + n]
    for n in ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
              "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
              "AUDIT_WRITE")
)


def mask_of(caps: frozenset[int] | set[int]) -> int:
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def compile_caps(caps: CapabilityPolicy, uid: int | None) -> CapabilityPlan | None:
    """None when the policy says nothing about capabilities (nothing to apply)."""
    if caps.keep is not None:
        keep = mask_of(caps.keep)
        non_root = uid is not None and uid != 0
        return CapabilityPlan(bounding=keep, effective=keep, permitted=keep, inheritable=keep,
                              ambient=keep if non_root else 0)
    if not caps.drop and not caps.add:
        return None
    drop, add = mask_of(caps.drop), mask_of(caps.add)
    assumed = (mask_of(DOCKER_DEFAULT_CAPS) & ~drop) | add
    return CapabilityPlan(bounding=assumed, effective=assumed, permitted=assumed,
                          inheritable=0, ambient=0, relative=True, drop=drop, add=add)


def uid_of(user: UserPolicy | None) -> int | None:
    return None if user is None else user.uid
