"""Capabilities: the policy's keep or drop/add as five bitmasks.

`keep` is absolute: enforcer.kernel.capabilities.absolute_sets says what each set
holds. As root (or with no user switch) the kept capabilities are held;
a non-root uid holds only what `capabilities.ambient` lists, never the
whole kept set. (Before, every kept capability became ambient for a
non-root uid: `extends: default` plus a `user:` handed a database server
default's 14 capabilities, CAP_SETUID and CAP_DAC_OVERRIDE included.)

`drop`/`add` are relative to whatever the parent has, so the Plan carries
them as masks and the apply step computes the sets at start time. The five
absolute masks of a relative plan assume Docker's default set as the parent
(what exporters need to print concrete lists).
"""

from __future__ import annotations

from enforcer.plan import CapabilityPlan
from enforcer.kernel.capabilities import CAPABILITIES, absolute_sets
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
        sets = absolute_sets(caps.keep, caps.ambient, non_root=uid is not None and uid != 0)
        bounding, effective, permitted, inheritable, ambient = (mask_of(s) for s in sets)
        return CapabilityPlan(bounding=bounding, effective=effective, permitted=permitted,
                              inheritable=inheritable, ambient=ambient)
    if not caps.drop and not caps.add:
        return None
    drop, add = mask_of(caps.drop), mask_of(caps.add)
    assumed = (mask_of(DOCKER_DEFAULT_CAPS) & ~drop) | add
    return CapabilityPlan(bounding=assumed, effective=assumed, permitted=assumed,
                          inheritable=0, ambient=0, relative=True, drop=drop, add=add)


def uid_of(user: UserPolicy | None) -> int | None:
    return None if user is None else user.uid
