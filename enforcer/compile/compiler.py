"""The compiler: a validated Policy in, a Plan out (see enforcer.compile).

Each kernel mechanism has its own module (seccomp, caps, mounts, cgroups);
this one puts their results together, resolves what must be resolved on the
compiling side (user names, /dev paths, rlimit names), and writes the notes
the user should see. Nothing here runs on the start path: a Plan is loaded
from the Plan store (enforcer/planstore.py), and a miss is compiled in a
confined child (enforcer/confined_compile.py).

Audit mode: the seccomp filter logs instead of blocking, and everything
that cannot "log instead" -- capabilities, mounts, cgroup limits, rlimits,
the user switch, namespaces and Landlock -- is left out of the Plan, with a note. The
Plan holds exactly what is applied, so `enforcer run` and the shim agree on
what audit mode does (run still creates a cgroup without limits for
attribution).
"""

from __future__ import annotations

import dataclasses
import hashlib
import resource

from enforcer import __version__
from enforcer.errors import CompileError
from enforcer.plan import PLAN_FORMAT, CgroupPlan, EnvPlan, Plan, RlimitPlan, UserPlan
from enforcer.plan import replace as plan_replace
from enforcer.policy.model import Mode, Policy, UserPolicy

def policy_hash(policy: Policy) -> str:
    """sha256 over the source files' digests, in extends order (child last).

    A Policy built in code (no sources) hashes its own repr instead, so the
    hash still changes whenever the policy does.
    """
    h = hashlib.sha256()
    if policy.sources:
        for _path, digest in policy.sources:
            h.update(digest.encode() + b"\n")
    else:
        h.update(repr(dataclasses.replace(policy, origins={})).encode())
    return h.hexdigest()


def compile_policy(policy: Policy, *, mode: Mode | str | None = None) -> Plan:
    """Compile `policy` (in its own mode, or `mode` if given) into a Plan.

    Raises CompileError for a valid policy that cannot be compiled here.
    """
    from enforcer.compile.caps import compile_caps
    from enforcer.compile.cgroups import compile_cgroups
    from enforcer.compile.landlock import compile_landlock
    from enforcer.compile.mounts import compile_mounts
    from enforcer.compile.seccomp import compile_seccomp

    if mode is not None:
        policy = dataclasses.replace(policy, mode=Mode(mode))
    notes: list[str] = []

    sec = compile_seccomp(policy)
    notes += sec.notes
    seccomp = plan_replace(sec.plan, oci=_oci_seccomp(policy, notes))

    user = resolve_user(policy.user, policy.filesystem.rootfs)
    caps = compile_caps(policy.capabilities, user.uid if user else None)
    if caps is not None and caps.relative and caps.add and user is not None and user.uid != 0:
        # execve by a non-root uid keeps only ambient capabilities, and a
        # relative plan raises none: the added ones would be gone.
        notes.append("capabilities: `add` with a non-root user does not survive execve (only "
                     "ambient capabilities do); use `keep` and list them under "
                     "`capabilities.ambient` to give a non-root workload capabilities")
    mounts = compile_mounts(policy.filesystem)
    if user is not None and user.dynamic and policy.filesystem.writable_paths:
        notes.append("user: files the workload creates in writable_paths are owned by its "
                     "dynamic uid, which a later workload may be given; keep data that must "
                     "persist or stay private out of them, or give the policy a fixed uid")
    cgroup = compile_cgroups(policy.resources, notes)
    rlimits = compile_rlimits(policy)
    landlock = compile_landlock(policy.landlock, notes)

    namespaces = list(policy.namespaces)
    if mounts and "mount" not in namespaces:
        # Mount operations outside a private mount namespace would change the
        # host's mounts: never do that, whatever the policy forgot to say.
        namespaces.insert(0, "mount")
        notes.append("namespaces: added `mount` because the policy changes mounts "
                     "(they must not reach the host)")

    if policy.mode is Mode.AUDIT:
        # The Plan holds exactly what is applied, so `enforcer run` and the
        # shim cannot disagree about what audit mode enforces.
        skipped = [what for what, present in (
            ("capabilities", caps is not None), ("mounts", bool(mounts)),
            ("cgroup limits", not cgroup.empty), ("rlimits", bool(rlimits)),
            ("user", user is not None), ("namespaces", bool(namespaces)),
            ("landlock", landlock is not None)) if present]
        if skipped:
            notes = [n for n in notes if not n.startswith("namespaces: added")]
            notes.append(f"audit mode: {', '.join(skipped)} are not applied; syscalls that "
                         "the policy blocks are logged (SCMP_ACT_LOG) and allowed")
        else:
            notes.append("audit mode: syscalls the policy blocks are logged and allowed")
        caps, mounts, cgroup, rlimits, user, namespaces = None, [], CgroupPlan(), [], None, []
        # Landlock has no "log instead": it is left out like the mounts.
        notes = [n for n in notes if not n.startswith("landlock:")]
        landlock = None

    return Plan(
        format=PLAN_FORMAT,
        enforcer_version=__version__,
        policy_name=policy.name,
        policy_hash=policy_hash(policy),
        mode=policy.mode.value,
        seccomp=seccomp,
        capabilities=caps,
        mounts=tuple(mounts),
        cgroup=cgroup,
        rlimits=tuple(rlimits),
        user=user,
        namespaces=tuple(namespaces),
        no_new_privileges=policy.no_new_privileges,
        notes=tuple(notes),
        env=EnvPlan(clear=policy.env.clear, keep=policy.env.keep, set=dict(policy.env.set)),
        landlock=landlock,
    )


def _oci_seccomp(policy: Policy, notes: list[str]) -> dict:  # type: ignore[type-arg]
    """The OCI linux.seccomp object (the shim hands it to runc so nothing
    compiles at container start)."""
    from enforcer.compile.oci_seccomp import oci_seccomp

    return oci_seccomp(policy)


# -- user ---------------------------------------------------------------------


def _passwd_entries(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()
                    and not line.startswith("#")]
    except OSError as e:
        raise CompileError(f"user: cannot read {path} to resolve names: {e.strerror}") from None


def resolve_user(user: UserPolicy | None, rootfs: str | None) -> UserPlan | None:
    """Numeric uid/gid; names are looked up in the passwd/group files of the
    root the workload will see (the rootfs when one is given)."""
    if user is None:
        return None
    if user.dynamic:
        # Picked when the workload starts; the loader gave the fallback ids.
        assert user.uid is not None and user.gid is not None
        return UserPlan(uid=user.uid, gid=user.gid, groups=tuple(user.groups), dynamic=True)
    etc = (rootfs.rstrip("/") if rootfs else "") + "/etc"
    uid, gid = user.uid, user.gid
    if uid is None:
        if user.user_name is None:
            raise CompileError("user: neither uid nor a user name is given")
        for e in _passwd_entries(f"{etc}/passwd"):
            if len(e) >= 4 and e[0] == user.user_name:
                uid = int(e[2])
                gid = gid if gid is not None or user.group_name else int(e[3])
                break
        else:
            raise CompileError(f"user: no user {user.user_name!r} in {etc}/passwd")
    if gid is None and user.group_name is not None:
        for e in _passwd_entries(f"{etc}/group"):
            if len(e) >= 3 and e[0] == user.group_name:
                gid = int(e[2])
                break
        else:
            raise CompileError(f"user: no group {user.group_name!r} in {etc}/group")
    if gid is None:
        # A uid without a gid: the passwd entry's primary group, else the uid
        # itself (the usual convention for numeric container users).
        for e in _passwd_entries(f"{etc}/passwd") if _exists(f"{etc}/passwd") else []:
            if len(e) >= 4 and e[2] == str(uid):
                gid = int(e[3])
                break
        else:
            gid = uid
    assert uid is not None and gid is not None
    return UserPlan(uid=uid, gid=gid, groups=tuple(user.groups))


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


# -- rlimits ------------------------------------------------------------------

_RLIM_INFINITY = -1  # the Plan's spelling of RLIM_INFINITY


def _rlim(value: int) -> int:
    # The loader may spell unlimited as -1 or as the kernel's 2**64 - 1.
    return _RLIM_INFINITY if value in (-1, (1 << 64) - 1) else value


def compile_rlimits(policy: Policy) -> list[RlimitPlan]:
    out: list[RlimitPlan] = []
    for r in policy.rlimits:
        name = r.resource.upper().removeprefix("RLIMIT_")
        if not hasattr(resource, f"RLIMIT_{name}"):
            raise CompileError(f"rlimits: {r.resource!r} is not a resource limit on this system")
        soft, hard = _rlim(r.soft), _rlim(r.hard)
        if hard != _RLIM_INFINITY and (soft == _RLIM_INFINITY or soft > hard):
            raise CompileError(f"rlimits.{name.lower()}: soft {soft} is above hard {hard}")
        out.append(RlimitPlan(resource=name, soft=soft, hard=hard))
    return out
