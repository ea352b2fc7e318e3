"""Shared pieces of the exporters: names other tools use, and the warning list.

Every exporter returns `(output, unexpressed)`: `unexpressed` is a list of
one-line messages, each naming a part of the policy the target format cannot
say. `enforcer export` prints them on stderr; nothing is dropped silently.

This module imports only the standard library and the policy model, so the
OCI exporter stays cheap for the shim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from enforcer.kernel import capabilities as caps
from enforcer.policy.model import (
    DEFAULT_ENV_KEEP,
    Action,
    ActionKind,
    CapabilityPolicy,
    FilesystemPolicy,
    Mode,
    Policy,
    ResourcePolicy,
)

# The capabilities Docker (and containerd's CRI) give a container by default.
DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
    "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
    "AUDIT_WRITE",
)


def cap_name(number: int, prefix: str = "CAP_") -> str:
    """21 -> CAP_SYS_ADMIN (or SYS_ADMIN with prefix="")."""
    return prefix + caps.name_of(number)[4:]


def cap_number(name: str) -> int:
    """CAP_SYS_ADMIN, sys_admin, SYS_ADMIN -> 21. ValueError names the input."""
    try:
        return caps.from_name(name)
    except KeyError:
        raise ValueError(f"unknown capability {name!r}") from None


def caps_of_mask(mask: int) -> list[int]:
    return [c for c in sorted(caps.ALL_CAPS) if mask >> c & 1]


@dataclass
class Unexpressed:
    """Collects what a target cannot express, one line each, in order."""

    target: str
    lines: list[str] = field(default_factory=list)

    def add(self, what: str, consequence: str) -> None:
        line = f"export {self.target}: cannot express {what}; {consequence}"
        if line not in self.lines:
            self.lines.append(line)


@dataclass(frozen=True)
class CapSets:
    """The five capability sets as capability numbers."""

    bounding: frozenset[int]
    effective: frozenset[int]
    permitted: frozenset[int]
    inheritable: frozenset[int]
    ambient: frozenset[int]


def runs_as_non_root(policy: Policy) -> bool:
    """True when the policy switches to a uid other than 0."""
    return policy.user is not None and policy.user.non_root


def absolute_caps(policy_caps: CapabilityPolicy, parent: frozenset[int],
                  non_root: bool = False) -> CapSets:
    """The sets a workload ends up with, given what its parent would give it.

    `keep` is absolute (enforcer.kernel.capabilities.absolute_sets, as the compiler
    does): a non-root uid holds only the policy's ambient list. `drop`/`add`
    apply to the parent's sets.
    """
    if policy_caps.keep is not None:
        return CapSets(*caps.absolute_sets(frozenset(policy_caps.keep), policy_caps.ambient,
                                           non_root))
    result = (parent - policy_caps.drop) | policy_caps.add
    # Container runtimes give a process empty inheritable and ambient sets.
    return CapSets(result, result, result, frozenset(), frozenset())


def caps_for_a_runtime_without_ambient(policy: Policy, un: Unexpressed, runtime: str
                                       ) -> frozenset[int] | None:
    """What to add for Docker or Kubernetes, which put added capabilities in
    the bounding, permitted and effective sets but never in ambient (so a
    non-root user loses them at execve, unless the program carries them as
    file capabilities). None for a drop/add policy (the caller renders it).

    Root gets the kept set. A non-root user gets only its ambient list, as
    under `enforcer run`: the kept capabilities it does not hold are left
    out -- in the runtime's permitted set, a program with file capabilities
    could take them even under no_new_privileges.
    """
    c = policy.capabilities
    if c.keep is None:
        return None
    if not runs_as_non_root(policy):
        return frozenset(c.keep)
    held = frozenset(c.ambient & c.keep)
    if held:
        un.add(f"ambient capabilities for a non-root user ({', '.join(caps.names(held))})",
               f"{runtime} adds them to the bounding, permitted and effective sets, never to "
               "ambient: the user loses them at execve unless the program carries them as file "
               "capabilities (setcap)")
    unheld = frozenset(c.keep) - held
    if unheld:
        un.add(f"kept capabilities a non-root user does not hold ({', '.join(caps.names(unheld))})",
               "left out: under the policy a non-root user holds only its ambient "
               f"capabilities, and {runtime} would put these in the permitted set, where a "
               "program with file capabilities could take them")
    return held


def size_text(n: int) -> str:
    """Bytes as the largest exact binary unit (268435456 -> '256Mi')."""
    for suffix, factor in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def env_set_entries(policy: Policy) -> list[tuple[str, str]]:
    """The (name, value) pairs a target sets in the workload's environment."""
    return list(policy.env.set)


def extra_env_keep(policy: Policy) -> list[str]:
    """Names or patterns the policy keeps from the caller beyond the defaults."""
    return [k for k in policy.env.keep if k not in DEFAULT_ENV_KEEP]


def report_container_env_and_user(policy: Policy, un: Unexpressed) -> None:
    """What a container target (OCI, Docker, Kubernetes) cannot say about a
    dynamic user or the caller's environment.

    A container's environment is built from its image and the runtime's
    settings, never from the environment of whoever started it: the
    default (`env.clear` with the harmless names kept) holds as it is, and
    only `env.set` is emitted. Keeping more of the caller's variables, or
    all of them, has no container form."""
    if policy.user is not None and policy.user.dynamic:
        un.add("a dynamic user (a uid of its own per workload)",
               f"a container needs a fixed uid: {policy.user.uid} is emitted; containers are "
               "kept apart by their own pid namespaces")
    if not policy.env.clear:
        un.add("env.clear: false (the caller's whole environment)",
               "a container's environment comes from its image and runtime; only env.set is "
               "emitted")
    elif extra_env_keep(policy):
        un.add(f"env.keep {', '.join(extra_env_keep(policy))} (from the caller's environment)",
               "a container's environment comes from its image and runtime; only env.set is "
               "emitted")


# Where Landlock rules can come from instead, per export target.
_LANDLOCK_INSTEAD = {
    "docker": "run the container with the enforcer-runc runtime, whose helper applies them",
    "kubernetes": "use a RuntimeClass whose handler is enforcer-runc, whose helper applies them",
    "oci": "runc has no Landlock support; start the bundle with enforcer-runc, which adds "
           "its helper",
    "systemd": "start the service through `enforcer run --policy POLICY -- ...`",
}


def landlock_unexpressed(policy: Policy, un: Unexpressed) -> None:
    """No export format can say Landlock: one line naming what is lost."""
    if policy.landlock is None:
        return
    from enforcer.policy.landlock import describe

    un.add(f"landlock ({describe(policy.landlock)})",
           _LANDLOCK_INSTEAD.get(un.target, "the rules are left out"))


def audit_stripped(policy: Policy, un: Unexpressed) -> Policy:
    """In audit mode only the (logging) seccomp filter is exported, as in the
    compiled Plan: capabilities, mounts and limits cannot "log instead"."""
    if policy.mode is not Mode.AUDIT:
        return policy
    un.lines.append(f"export {un.target}: audit mode: capabilities, filesystem, resource "
                    "limits, rlimits, user, namespaces and landlock are left out, as in the "
                    "compiled Plan; blocked syscalls are only logged")
    return dataclasses.replace(policy, capabilities=CapabilityPolicy(),
                               filesystem=FilesystemPolicy(), resources=ResourcePolicy(),
                               rlimits=(), user=None, namespaces=(), landlock=None)
