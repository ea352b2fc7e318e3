"""Capabilities and identity, in the one order the kernel makes safe.

1. Drop the bounding set while we still hold CAP_SETPCAP.
2. PR_SET_KEEPCAPS so changing uid does not wipe the permitted set.
3. setgroups, setresgid, setresuid (groups and gid first: once the uid is
   not 0 we could no longer change them).
4. Clear keep-caps again so a later setuid by the workload behaves normally.
5. capset effective/permitted/inheritable (setresuid cleared effective).
6. Ambient last: raising one needs it in permitted and inheritable.
"""

from __future__ import annotations

import errno
import os

from enforcer.apply import _sys
from enforcer.errors import ApplyError
from enforcer.plan import CapabilityPlan, UserPlan


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def current_bounding() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0


def target_sets(caps: CapabilityPlan, current: tuple[int, int, int], bounding: int
                ) -> tuple[int, int, int, int, int]:
    """(bounding, effective, permitted, inheritable, ambient) to apply."""
    if not caps.relative:
        return caps.bounding, caps.effective, caps.permitted, caps.inheritable, caps.ambient
    eff, perm, inh = current

    def rel(mask: int) -> int:
        return (mask & ~caps.drop) | caps.add

    # A relative `add` cannot grant what the parent never had (the kernel
    # would refuse); intersecting here keeps the error message meaningful.
    new_bnd = (bounding & ~caps.drop)
    new_perm = rel(perm) & new_bnd
    return new_bnd, rel(eff) & new_perm, new_perm, rel(inh) & new_bnd, 0


def drop_bounding(keep: int, current: int | None = None) -> None:
    """Drop every capability of the bounding set (`current`, read if not
    given) that is not in `keep`."""
    if current is None:
        current = current_bounding()
    for cap in range(last_cap() + 1):
        bit = 1 << cap
        if current & bit and not keep & bit:
            _sys.prctl(_sys.PR_CAPBSET_DROP, cap, step="capabilities",
                       what=f"prctl(PR_CAPBSET_DROP, {cap})")


def check_ids(user: UserPlan) -> None:
    # (uid_t)-1 means "leave unchanged" to setresuid: a Plan asking for it
    # would silently keep running as the caller. Refuse it and anything
    # that is not a uid at all.
    for kind, value in (("uid", user.uid), ("gid", user.gid),
                        *(("group", g) for g in user.groups)):
        if not isinstance(value, int) or not 0 <= value < 0xFFFFFFFF:
            raise ApplyError("user", f"{kind} {value}", errno.EINVAL, "not a valid id")


def set_identity(user: UserPlan, keep_caps: bool, unprivileged_userns: bool) -> None:
    check_ids(user)
    if keep_caps:
        _sys.prctl(_sys.PR_SET_KEEPCAPS, 1, step="user", what="prctl(PR_SET_KEEPCAPS, 1)")
    groups = list(user.groups)
    if unprivileged_userns:
        # setgroups is denied in a user namespace an unprivileged user made
        # (CVE-2014-8989: dropping a group could grant access); only the
        # mapped gid is possible.
        if any(g != user.gid for g in groups):
            raise ApplyError("user", f"setgroups({groups})", errno.EPERM,
                             "an unprivileged user namespace cannot set supplementary groups")
    else:
        try:
            os.setgroups(groups)
        except OSError as e:
            raise ApplyError("user", f"setgroups({groups})", e.errno) from None
    try:
        os.setresgid(user.gid, user.gid, user.gid)
    except OSError as e:
        raise ApplyError("user", f"setresgid({user.gid})", e.errno) from None
    try:
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise ApplyError("user", f"setresuid({user.uid})", e.errno) from None
    if keep_caps:
        _sys.prctl(_sys.PR_SET_KEEPCAPS, 0, step="user", what="prctl(PR_SET_KEEPCAPS, 0)")


def apply_creds(caps: CapabilityPlan | None, user: UserPlan | None,
                unprivileged_userns: bool = False) -> None:
    if caps is None:
        if user is not None:
            set_identity(user, keep_caps=False, unprivileged_userns=unprivileged_userns)
        return
    bounding = current_bounding()
    bnd, eff, perm, inh, amb = target_sets(caps, _sys.capget(), bounding)
    drop_bounding(bnd, bounding)
    if user is not None:
        set_identity(user, keep_caps=True, unprivileged_userns=unprivileged_userns)
    _sys.capset(eff, perm, inh)
    _sys.prctl(_sys.PR_CAP_AMBIENT, _sys.PR_CAP_AMBIENT_CLEAR_ALL, step="capabilities",
               what="prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    for cap in range(64):
        if amb & (1 << cap):
            _sys.prctl(_sys.PR_CAP_AMBIENT, _sys.PR_CAP_AMBIENT_RAISE, cap,
                       step="capabilities", what=f"prctl(PR_CAP_AMBIENT_RAISE, {cap})")
